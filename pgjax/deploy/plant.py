"""The hardware-in-the-loop plant: pymodbus TCP server whose registers are backed by the env physics.

    plant = Plant(env, dmap, day=0, period_s=None, log_path="plant.jsonl")
    await plant.start()        # serves dmap.host:dmap.port (port 0: the OS picks; plant.port)
    ...                        # a controller reads measurements and writes setpoints
    await plant.stop()

One server, one Modbus unit id per device of the map (`pgjax.deploy.device_map`), every
point a holding register. Each plant step:
  1 read the setpoints written to the registers: action = value / full_scale in the
    column the map names (`ActionSchema` key); a unit whose setpoints were not written
    within its reversion timeout (the `RvrtTms` register, restarted by every write to the
    unit) reverts to the device's default action, as a SunSpec device does by itself;
    units never written and NaN setpoints take the default action too;
  2 step the environment (`env.step_env`, jitted) on the chosen day's profiles;
  3 publish every mapped feature of the new world state (`env.world_state`, decoded to
    physical units), availability 1 and the sequence counter `Seq` (steps mod 65535).
Steps run on a clock (`period_s`) or, with `period_s=None`, when the controller writes the
site heartbeat (lock-step hardware-in-the-loop: every controller period meets one plant
step, so a deployed day can be compared with the simulated one step by step).

The plant refuses writes outside the map's setpoint / control registers (ILLEGAL_ADDRESS)
and values outside a setpoint's [min, max] (ILLEGAL_VALUE), and logs them. Faults
(`Fault`) are scheduled by plant step: delayed or dropped responses, a server restart, a
measurement published with a bad value (out of range or NaN), frozen (stale) measurements. The JSONL log (`log_path`)
has one line per step (actions applied, reverted units, voltages, cost, info metrics) and
one per event (server down / up, refused write, fault).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import numpy as np

from pgjax.deploy import registers
from pgjax.deploy.device_map import DeviceMap, WriteRefused, check_write
from pgjax.runio import append_lines, json_line

FAULTS = ("delay", "drop", "restart", "bad_value", "freeze")
REGISTER_SPAN = 1200  # registers per unit (measurements from 0, controls from 1000)


@dataclasses.dataclass(frozen=True)
class Fault:
    """A fault from plant step `at_step` for `steps` steps.

    `delay`: every response `seconds` late; `drop`: no response (held back `seconds`, past
    any client timeout, then discarded by the client); `restart`: the server goes down for
    `seconds`, then listens again on the same port; `bad_value`: measurement `point` of
    device `unit` publishes `value` (NaN: the register's "not implemented" value); `freeze`:
    the physics goes on but the measurements (and `Seq`) stay as published at `at_step` for
    the next `steps` steps (stale data acquisition).
    """

    kind: str
    at_step: int
    steps: int = 1
    seconds: float = 0.0
    unit: str = ""
    point: str = ""
    value: float = math.nan

    def __post_init__(self):
        if self.kind not in FAULTS:
            raise ValueError(f"fault kind: expected one of {list(FAULTS)}, got {self.kind!r}")
        if self.steps < 1 or self.seconds < 0:
            raise ValueError(f"fault {self.kind}: expected steps >= 1 and seconds >= 0, "
                             f"got {self.steps}, {self.seconds}")

    def active(self, t: int) -> bool:
        return self.at_step <= t < self.at_step + self.steps


def day_params(env, day: int):
    """`env.default_params` with the episode start fixed to `starts[day]` (the day's profiles)."""
    import jax.numpy as jnp

    starts = env.default_params.starts
    if not 0 <= day < starts.shape[0]:
        raise ValueError(f"day: expected 0 <= day < {starts.shape[0]} (episode starts of the split), got {day}")
    return env.default_params.replace(starts=jnp.asarray(starts[day:day + 1]))


def action_index(env, dmap: DeviceMap) -> list[tuple]:
    """`[(unit, setpoint, agent index, column)]` of every mapped setpoint."""
    out = []
    for u in dmap.units:
        for s in u.setpoints:
            hits = [(a, c.column) for a, cols in enumerate(env.layout.action.columns) for c in cols
                    if c.key == s.action]
            if not hits:
                raise ValueError(f"device map: devices.{u.name}.{s.name}.action {s.action!r} is not an action of "
                                 f"scenario '{env.name}'")
            out += [(u, s, a, col) for a, col in hits]
    return out


class Plant:
    """The env behind Modbus registers (see the module docstring)."""

    def __init__(self, env, dmap: DeviceMap, day: int = 0, seed: int = 0, period_s: float | None = None,
                 log_path=None, faults: tuple = (), steps: int | None = None):
        import jax

        self.env, self.dmap, self.period_s, self.log_path = env, dmap, period_s, log_path
        self.faults = tuple(faults)
        self.params = day_params(env, day)
        self.key = jax.random.PRNGKey(seed)
        self.steps = int(env.episode_steps if steps is None else steps)
        self.obs, self.state = env.reset(self.key, self.params)
        actions = np.asarray(env.default_actions, env.dtype)  # compiled now, not in the first request
        self._step = jax.jit(env.step_env).lower(self.key, self.state, actions, self.params).compile()
        self._world = jax.jit(env.world_state).lower(self.state, self.params).compile()
        self.t, self.done = 0, False
        self.regs = {u.unit_id: [0] * REGISTER_SPAN for u in dmap.units}
        self.last_write = {u.unit_id: time.monotonic() for u in dmap.units}
        self.written = {u.unit_id: False for u in dmap.units}
        self.index = action_index(env, dmap)
        self.schema = env.layout.observation
        self.rows: list[dict] = []  # per-step records (also in the log)
        self.server = None
        self.port = dmap.port
        self._tasks: list = []
        self._publish()

    # ------------------------------------------------------------------ registers

    def _put(self, unit_id: int, point, value: float) -> None:
        lo, hi = registers.raw_range(point.dtype, point.sf)
        value = value if math.isnan(value) else min(max(value, lo), hi)
        self.regs[unit_id][point.address:point.address + point.width] = registers.encode(value, point.dtype, point.sf)

    def _get(self, unit_id: int, point) -> float:
        return registers.decode(self.regs[unit_id][point.address:point.address + point.width], point.dtype, point.sf)

    def value(self, unit: str, point: str) -> float:
        """The physical value register point `point` of device `unit` holds now."""
        u = self.dmap.unit(unit)
        return self._get(u.unit_id, next(p for p in u.points() if p.name == point))

    def _publish(self) -> None:
        if any(f.kind == "freeze" and f.at_step < self.t <= f.at_step + f.steps for f in self.faults):
            return
        world = np.asarray(self._world(self.state, self.params), np.float64)
        for u in self.dmap.units:
            for m in u.measurements:
                if m.role == "sequence":
                    value = float(self.t % 65535)
                elif m.role == "availability":
                    value = 1.0
                else:
                    f = self.schema.feature(m.feature)
                    value = float(f.decode(world[self.schema.position(m.feature)]))
                bad = next((f for f in self.faults if f.kind == "bad_value" and f.active(self.t)
                            and f.unit == u.name and f.point == m.name), None)
                self._put(u.unit_id, m, bad.value if bad is not None else value)

    def applied_actions(self) -> tuple[np.ndarray, list[str], list[str]]:
        """`(actions [n_agents, act_dim], reverted units, units never written)` from the setpoint registers now;
        both kinds of unit act by their default action."""
        now = time.monotonic()
        actions = np.array(self.env.default_actions, np.float64)
        unset = [u.name for u in self.dmap.units if u.setpoints and not self.written[u.unit_id]]
        reverted = [u.name for u in self.dmap.units if u.setpoints and self.written[u.unit_id] and
                    u.reversion_timeout is not None and (rv := self._get(u.unit_id, u.reversion_timeout)) > 0
                    and now - self.last_write[u.unit_id] > rv]
        for u, s, a, col in self.index:
            value = self._get(u.unit_id, s)
            if u.name not in reverted and u.name not in unset and not math.isnan(value):
                actions[a, col] = value / s.full_scale
        return actions, reverted, unset

    # ------------------------------------------------------------------ physics

    def step(self) -> None:
        """One plant step (module docstring, 1-3); does nothing once `steps` steps are done."""
        import jax

        if self.done:
            return
        actions, reverted, unset = self.applied_actions()
        k = jax.random.fold_in(self.key, self.t)
        self.obs, self.state, _, _, _, info = self._step(k, self.state, actions.astype(self.env.dtype), self.params)
        info = jax.device_get(info)
        row = {"t": self.t, "wall_s": time.time(), "actions": actions.tolist(), "reverted": reverted,
               "unset": unset,
               "vm_pu": np.asarray(self.state.vm_pu, np.float64).tolist(),
               "info": {k: float(np.sum(v)) for k, v in info.items() if np.ndim(v) <= 1 and k != "final_observation"}}
        self.rows.append(row)
        self._log(row)
        self.t += 1
        self.done = self.t >= self.steps
        self._publish()
        restart = next((f for f in self.faults if f.kind == "restart" and f.at_step == self.t), None)
        if restart is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.restart(restart.seconds)))

    def _log(self, obj: dict) -> None:
        if self.log_path is not None:
            append_lines(self.log_path, [json_line(obj)])

    # ------------------------------------------------------------------ Modbus

    def _unit(self, unit_id: int):
        return next(u for u in self.dmap.units if u.unit_id == unit_id)

    def _write(self, unit, address: int, values: list[int]):
        """A write checked against the map (`check_write`), stored, and the heartbeat's step; refused writes are
        logged and answered ILLEGAL_ADDRESS / ILLEGAL_VALUE."""
        from pymodbus.constants import ExcCodes

        try:
            covered = check_write(self.dmap, unit.unit_id, address, values)
        except WriteRefused as e:
            self._log({"event": "refused", "t": self.t, "unit": unit.name, "address": address, "values": values,
                       "why": str(e)})
            return ExcCodes.ILLEGAL_VALUE if "outside" in str(e) else ExcCodes.ILLEGAL_ADDRESS
        self.regs[unit.unit_id][address:address + len(values)] = list(values)
        self.last_write[unit.unit_id] = time.monotonic()
        self.written[unit.unit_id] = True
        if self.period_s is None and unit.heartbeat is not None and unit.heartbeat in covered:
            self.step()
        return None

    async def _action(self, unit_id, func_code, start, address, count, current, set_values):
        """pymodbus `SimDevice.action`: faults, then reads from / writes to the plant's registers."""
        fault = next((f for f in self.faults if f.kind in ("delay", "drop") and f.active(self.t)), None)
        if fault is not None:
            self._log({"event": fault.kind, "t": self.t, "unit_id": unit_id, "seconds": fault.seconds})
            await asyncio.sleep(fault.seconds)
            if fault.kind == "drop":
                return None
        unit = self._unit(unit_id)
        if set_values is not None:
            rc = self._write(unit, address, list(set_values))
            if rc is not None:
                return rc
        regs = self.regs[unit_id]
        current[address - start:address - start + count] = regs[address:address + count]
        return None

    def _devices(self):
        import functools

        from pymodbus.simulator import DataType, SimData, SimDevice

        block = [SimData(0, count=REGISTER_SPAN, values=0, datatype=DataType.REGISTERS)]
        return [SimDevice(id=u.unit_id, simdata=block, action=functools.partial(self._action, u.unit_id))
                for u in self.dmap.units]

    async def _serve(self) -> None:
        from pymodbus.server import ModbusTcpServer

        self.server = ModbusTcpServer(self._devices(), address=(self.dmap.host, self.port))
        await self.server.serve_forever(background=True)
        if self.port == 0:
            self.port = self.server.transport.sockets[0].getsockname()[1]
        self._log({"event": "server_up", "t": self.t, "port": self.port, "wall_s": time.time()})

    async def start(self) -> None:
        """Listen, and step on the clock when `period_s` is set."""
        await self._serve()
        if self.period_s is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._clock()))

    async def _clock(self) -> None:
        t0 = time.monotonic()
        while not self.done:
            await asyncio.sleep(max(0.0, t0 + (self.t + 1) * self.period_s - time.monotonic()))
            self.step()

    async def restart(self, down_s: float) -> None:
        """Server down for `down_s` seconds (connections dropped), then up on the same port."""
        await self.server.shutdown()
        self._log({"event": "server_down", "t": self.t, "seconds": down_s, "wall_s": time.time()})
        await asyncio.sleep(down_s)
        await self._serve()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            await self.server.shutdown()

    def summary(self) -> dict:
        """Totals of the steps run: `{info name: [sum over steps]}` (`pgjax eval`'s totals) and the step count."""
        totals = {}
        for row in self.rows:
            for k, v in row["info"].items():
                totals[k] = totals.get(k, 0.0) + v
        return {"steps": len(self.rows), "totals": {k: [v] for k, v in totals.items()},
                "reverted_steps": sum(bool(r["reverted"]) for r in self.rows)}


def simulate_day(env, policies: dict, day: int = 0, seed: int = 0, steps: int | None = None,
                 dmap: DeviceMap | None = None) -> list[dict]:
    """The in-simulation rollout the plant is compared with: same day, same initial state, actions
    from `policies` (agent name -> `NumpyPolicy`, others at their default); rows like `Plant.rows`.
    With `dmap`, observations and actions pass through the map's register quantization (each
    observed feature as its measurement register reads it, each action as its setpoint register
    holds it): what a lock-step deployment must reproduce exactly."""
    import jax

    params = day_params(env, day)
    key = jax.random.PRNGKey(seed)
    step = jax.jit(env.step_env)
    obs, state = env.reset(key, params)
    schema = env.layout.observation
    rows = []
    for t in range(int(env.episode_steps if steps is None else steps)):
        actions = np.array(env.default_actions, np.float64)
        for a, name in enumerate(env.agents):
            if name not in policies:
                continue
            o = np.asarray(obs, np.float64)[a, :env.obs_sizes[a]]
            if dmap is not None:
                feats = schema.agent_features(a)
                o = np.array([x if hit is None else f.encode(registers.quantize(f.decode(x), hit[1].dtype, hit[1].sf))
                              for f, x in zip(feats, o) for hit in [dmap.measurement(f.key)]])  # messages: no register
            act = policies[name](o)
            if dmap is not None:
                for c in env.layout.action.columns[a]:
                    _, s = dmap.setpoint(c.key)
                    act[c.column] = registers.bounded(act[c.column] * s.full_scale, s) / s.full_scale
            actions[a, :env.act_sizes[a]] = act
        obs, state, _, _, _, info = step(jax.random.fold_in(key, t), state, actions.astype(env.dtype), params)
        info = jax.device_get(info)
        rows.append({"t": t, "actions": actions.tolist(), "vm_pu": np.asarray(state.vm_pu, np.float64).tolist(),
                     "info": {k: float(np.sum(v)) for k, v in info.items() if np.ndim(v) <= 1}})
    return rows

"""The controller runtime: an exported policy driving Modbus TCP devices (`pgjax deploy`).

    ctl = Controller(export_dir, dmap, period_s=1.0, log_path="deploy.jsonl")
    summary = await ctl.run(periods=None)        # until cancelled (Ctrl-C) or `periods` done

`agents` selects some of the exported agents (one controller process per microgrid, say):
the controller then reads what they observe and writes only their setpoints; with several
controllers, one writes the heartbeat (`heartbeat=False` for the others) and a lock-step
plant steps on it, or the plant runs on its clock.

Every control period:
  1 read the measurement registers of each unit that carries an observed feature (one
    asyncio pymodbus client, timeout per request);
  2 check them: a unit that does not answer (timeout, connection lost, Modbus exception),
    a reading that is NaN ("not implemented") or outside its [min, max], a device reporting
    itself unavailable, or a site sequence counter that has not moved for `stale_periods`
    periods is a fault of every feature it carries;
  3 per agent: if every feature it observes is good, observation = (physical - offset) /
    scale in the exported order (`pgjax.deploy.policy`) and the numpy policy's action;
    otherwise the agent is in *safe* mode: each of its setpoints takes its safe value
    (`default`: the device's safe action, e.g. zero storage power; `hold`: the last value);
  4 setpoint = action * full_scale, bounded to the map's [min, max], ramp-limited by
    `ramp_per_s` (policy values; safe values go at once), quantized to the register;
  5 write per unit [reversion timeout, setpoints] in one request (so the device's reversion
    timer restarts every period: if the controller dies, devices fall back by themselves),
    then the site heartbeat. Every write goes through `device_map.check_write`: nothing
    outside the map or its bounds is ever sent (`WriteRefused`, logged).
A timed-out request closes the connection (a late answer would be taken for the next
request's) and the period's remaining reads are skipped. Connection loss: the client
reconnects with exponential backoff (`backoff_s` doubling to `backoff_max_s`), periods go on
meanwhile (all agents safe, nothing to write to). `stop()`
(Ctrl-C or SIGTERM in `pgjax deploy`) ends `run` after the period in progress; then, as
when the task is cancelled, every setpoint's safe value is written once before closing.

The JSONL log (`log_path`, one full line per period, appended and fsynced) holds: period
index, start time, lateness against the schedule, slots skipped after an overrun, loop
period, compute time, faults, mode, observation and action per agent, setpoints, writes
and refused writes. `run` returns (and
`summary_path` gets, atomically) the period count, modes, fault counts, writes and timing:
mean period and jitter (std of the period, max lateness).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from pgjax.deploy import registers
from pgjax.deploy.device_map import DeviceMap, WriteRefused, check_against_schema, check_write
from pgjax.deploy.policy import PolicyFileError, load_policy, read_manifest
from pgjax.errors import DataError
from pgjax.runio import append_lines, json_line, write_json

MESSAGE_PREFIX = "message/"  # observation keys of protocol message features
MAX_READ = 120  # registers per read request (Modbus allows 125)
# what a request can raise: our timeout, pymodbus's own (connection, I/O), an exception response, the socket's
REQUEST_ERRORS = (asyncio.TimeoutError, ModbusException, ConnectionError, OSError)


class Controller:
    """The deployed controller (see the module docstring)."""

    messaging = False  # True: the agents' protocol messages go over a broker (`pgjax.deploy.agents`)

    def __init__(self, export_dir, dmap: DeviceMap, period_s: float = 1.0, read_timeout_s: float = 0.5,
                 log_path=None, summary_path=None, stale_periods: int = 3, backoff_s: float = 0.1,
                 backoff_max_s: float = 5.0, host: str | None = None, port: int | None = None,
                 agents: tuple | None = None, heartbeat: bool = True):
        self.dmap, self.period_s, self.read_timeout_s = dmap, float(period_s), float(read_timeout_s)
        self.log_path, self.summary_path, self.stale_periods = log_path, summary_path, int(stale_periods)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.host, self.port = host or dmap.host, int(dmap.port if port is None else port)
        manifest = read_manifest(export_dir)
        self.manifest = manifest
        names = [a["name"] for a in manifest["agents"]]
        unknown = sorted(set(agents or ()) - set(names))
        if unknown:
            raise PolicyFileError(f"{Path(export_dir) / 'manifest.json'}: no agent(s) {unknown}; it has {names}")
        self.agents = [(a["name"], load_policy(export_dir, a["name"]), a["observation"], a["action"])
                       for a in manifest["agents"] if agents is None or a["name"] in agents]
        self.heartbeat = bool(heartbeat)
        obs_keys, act_keys = {}, {}
        for name, _, obs, _ in self.agents:
            for o in obs:
                obs_keys.setdefault(o["key"], []).append(name)
        for a in manifest["agents"]:  # the map may carry every exported agent's setpoints
            for c in a["action"]:
                act_keys.setdefault(c["key"], []).append(a["name"])
        # protocol messages the agents observe come over the broker (`pgjax.deploy.agents`), not from a device
        self.message_keys = sorted(k for k in obs_keys if k.startswith(MESSAGE_PREFIX))
        if self.message_keys and not self.messaging:
            raise DataError(f"{Path(export_dir) / 'manifest.json'}: the agents observe protocol messages "
                            f"{self.message_keys[:4]}: run them with --broker mqtt://HOST:PORT (pgjax.deploy.agents)")
        obs_keys = {k: v for k, v in obs_keys.items() if not k.startswith(MESSAGE_PREFIX)}
        check_against_schema(dmap, obs_keys, act_keys, f"{Path(export_dir) / 'manifest.json'} with the device map")
        # units read each period: those carrying a feature these agents observe, and the sequence counter's
        self.read_units = tuple(u for u in dmap.units if any(m.feature in obs_keys or m.role == "sequence"
                                                             for m in u.measurements))
        self.setpoints = {c["key"]: dmap.setpoint(c["key"]) for _, _, _, act in self.agents for c in act}
        self.last = {}  # (unit_id, address) -> last value written
        self.client = None
        self._next_connect, self._backoff = 0.0, self.backoff_s
        self._seq, self._seq_same = None, 0
        self._stop: asyncio.Event | None = None
        self.rows: list[dict] = []

    # ------------------------------------------------------------------ connection

    async def _connected(self, faults: list) -> bool:
        """True if connected, else one connection attempt when the backoff allows it (a fault either way)."""
        if self.client is not None and self.client.connected:
            return True
        now = time.monotonic()
        if now < self._next_connect:
            faults.append({"kind": "connection", "detail": "down, waiting to reconnect"})
            return False
        if self.client is not None:
            self.client.close()
        self.client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.read_timeout_s, retries=0,
                                           reconnect_delay=0)
        try:
            ok = await asyncio.wait_for(self.client.connect(), self.read_timeout_s)
        except (asyncio.TimeoutError, OSError):
            ok = False
        if ok and self.client.connected:
            self._backoff = self.backoff_s
            return True
        self._next_connect = now + self._backoff
        faults.append({"kind": "connection", "detail": f"connect to {self.host}:{self.port} failed, "
                                                       f"next try in {self._backoff:.2f} s"})
        self._backoff = min(2 * self._backoff, self.backoff_max_s)
        return False

    async def _request(self, coro):
        return await asyncio.wait_for(coro, self.read_timeout_s)

    # ------------------------------------------------------------------ reading

    async def _read_unit(self, unit) -> list[int]:
        lo = min(m.address for m in unit.measurements)
        hi = max(m.address + m.width for m in unit.measurements)
        regs = []
        for start in range(lo, hi, MAX_READ):
            rr = await self._request(self.client.read_holding_registers(start, count=min(MAX_READ, hi - start),
                                                                        device_id=unit.unit_id))
            if rr.isError():
                raise ModbusException(f"exception response {rr}")
            regs += list(rr.registers)
        return [0] * lo + regs

    async def read(self, faults: list) -> dict:
        """`feature key -> physical value` of the good readings; faults appended as `{kind, unit, ...}`."""
        values = {}
        if not await self._connected(faults):
            return values
        for unit in self.read_units:
            try:
                regs = await self._read_unit(unit)
            except REQUEST_ERRORS as e:
                timeout = isinstance(e, asyncio.TimeoutError)
                faults.append({"kind": "timeout" if timeout else "read", "unit": unit.name,
                               "detail": type(e).__name__ + (f": {e}" if str(e) else "")})
                if timeout:  # a late answer would be taken for the next request's: start a new connection
                    self.client.close()
                if not self.client.connected:
                    faults.append({"kind": "connection", "detail": "closed after a timeout" if timeout else "lost"})
                    return {}
                continue
            good, unit_values = True, {}
            for m in unit.measurements:
                v = registers.decode(regs[m.address:m.address + m.width], m.dtype, m.sf)
                if math.isnan(v) or not m.min <= v <= m.max:
                    faults.append({"kind": "implausible", "unit": unit.name, "point": m.name, "value": v,
                                   "limits": [m.min, m.max]})
                    good = good and m.feature is not None  # a bad feature only spoils itself
                    continue
                if m.role == "availability" and v < 1:
                    faults.append({"kind": "unavailable", "unit": unit.name})
                    good = False
                elif m.role == "sequence":
                    self._seq_same = self._seq_same + 1 if v == self._seq else 0
                    self._seq = v
                    if self._seq_same >= self.stale_periods:
                        faults.append({"kind": "stale", "unit": unit.name, "periods": self._seq_same})
                        return {}
                elif m.feature is not None:
                    unit_values[m.feature] = v
            if good:
                values.update(unit_values)
        return values

    # ------------------------------------------------------------------ acting

    def decide(self, values: dict) -> tuple[dict, dict, dict]:
        """`(observations, actions, modes)` per agent from the good readings (policy or safe)."""
        obs, actions, modes = {}, {}, {}
        for name, policy, features, _ in self.agents:
            if all(f["key"] in values for f in features):
                o = np.array([(values[f["key"]] - f["offset"]) / f["scale"] for f in features])
                obs[name], actions[name], modes[name] = o.tolist(), policy(o).tolist(), "policy"
            else:
                modes[name] = "safe"
        return obs, actions, modes

    def targets(self, actions: dict, modes: dict, safe_all: bool = False) -> dict:
        """`(unit_id, address) -> value` of every setpoint this period (bounded, ramp-limited, quantized)."""
        out = {}
        for name, _, _, cols in self.agents:
            for c in cols:
                hit = self.setpoints.get(c["key"])
                if hit is None:
                    continue
                unit, s = hit
                last = self.last.get((unit.unit_id, s.address))
                if safe_all or modes[name] == "safe":
                    value = last if (s.safe == "hold" and last is not None) else s.default * s.full_scale
                else:
                    value = actions[name][c["column"]] * s.full_scale
                    if s.ramp_per_s is not None and last is not None:
                        dv = s.ramp_per_s * self.period_s
                        value = min(max(value, last - dv), last + dv)
                out[(unit.unit_id, s.address)] = registers.bounded(value, s)
        return out

    async def _send(self, unit_id: int, address: int, values: list[int], writes: list, refused: list) -> bool:
        """Write `values` if the map allows it (`check_write`); True if written, False if refused."""
        try:
            check_write(self.dmap, unit_id, address, values)
        except WriteRefused as e:
            refused.append({"unit_id": unit_id, "address": address, "why": str(e)})
            return False
        rr = await self._request(self.client.write_registers(address, values, device_id=unit_id))
        if rr.isError():
            raise ModbusException(f"exception response {rr}")
        writes.append({"unit_id": unit_id, "address": address, "registers": list(values)})
        return True

    async def _guarded(self, coro, unit, faults: list) -> bool:
        """Await a write; a timeout / lost connection / Modbus exception is a `write` fault (False)."""
        try:
            return await coro
        except REQUEST_ERRORS as e:
            faults.append({"kind": "write", "unit": unit.name,
                           "detail": type(e).__name__ + (f": {e}" if str(e) else "")})
            if isinstance(e, asyncio.TimeoutError):
                self.client.close()
            return False

    async def write(self, targets: dict, heartbeat: int, faults: list) -> tuple[list, list]:
        """Write the setpoints (with each unit's reversion timeout first) and the heartbeat."""
        writes, refused = [], []
        if self.client is None or not self.client.connected:
            return writes, refused
        for unit in self.dmap.units:
            pts = [s for s in unit.setpoints if (unit.unit_id, s.address) in targets]
            if not pts:
                continue
            block = ([unit.reversion_timeout] if unit.reversion_timeout is not None else []) + \
                sorted(pts, key=lambda p: p.address)
            start = block[0].address
            regs = [0] * (block[-1].address + block[-1].width - start)
            for p in block:
                v = unit.reversion_s if p is unit.reversion_timeout else targets[(unit.unit_id, p.address)]
                regs[p.address - start:p.address - start + p.width] = registers.encode(v, p.dtype, p.sf)
            if await self._guarded(self._send(unit.unit_id, start, regs, writes, refused), unit, faults):
                for p in pts:
                    self.last[(unit.unit_id, p.address)] = targets[(unit.unit_id, p.address)]
            elif not self.client.connected:
                return writes, refused
        if self.heartbeat:  # the heartbeat last: a lock-step plant steps on it
            await self.write_heartbeat(heartbeat, faults, writes, refused)
        return writes, refused

    async def write_heartbeat(self, heartbeat: int, faults: list, writes: list, refused: list) -> None:
        """Write the heartbeat register(s) of the map (a lock-step plant steps on it)."""
        if self.client is None or not self.client.connected:
            return
        for unit in self.dmap.units:
            if unit.heartbeat is not None:
                hb = registers.encode(heartbeat % 65535, unit.heartbeat.dtype, unit.heartbeat.sf)
                await self._guarded(self._send(unit.unit_id, unit.heartbeat.address, hb, writes, refused), unit, faults)

    # ------------------------------------------------------------------ loop

    async def period(self, k: int) -> dict:
        """One control period (module docstring, 1-5); returns its log row (without timing)."""
        faults = []
        t0 = time.perf_counter()
        values = await self.read(faults)
        obs, actions, modes = self.decide(values)
        targets = self.targets(actions, modes)
        t1 = time.perf_counter()
        writes, refused = await self.write(targets, k + 1, faults)
        return {"k": k, "faults": faults, "modes": modes, "observations": obs, "actions": actions,
                "setpoints": [[u, a, v] for (u, a), v in targets.items()], "writes": len(writes),
                "refused": refused, "compute_s": t1 - t0}

    async def run(self, periods: int | None = None) -> dict:
        """Periods on the clock until `periods` are done or the task is cancelled; then the summary.
        A period that overruns the next one's start does not cause a burst: the schedule moves on to
        the next slot still ahead (the row's `skipped` counts the slots missed)."""
        start = time.monotonic()
        k, slot, prev = 0, 0, None
        self._stop = asyncio.Event()
        try:
            while periods is None or k < periods:
                due = start + slot * self.period_s
                try:
                    await asyncio.wait_for(self._stop.wait(), max(0.0, due - time.monotonic()))
                    break  # stop() was called
                except asyncio.TimeoutError:
                    pass
                t = time.monotonic()
                row = await self.period(k)
                nxt = max(slot + 1, math.ceil((time.monotonic() - start) / self.period_s - 1e-9))
                row.update({"wall_s": time.time(), "lateness_s": t - due, "skipped": nxt - slot - 1,
                            "loop_period_s": None if prev is None else t - prev})
                prev, slot = t, nxt
                self.rows.append(row)
                if self.log_path is not None:
                    append_lines(self.log_path, [json_line(row)])
                k += 1
        finally:
            await self.shutdown()
        return self.summary()

    def stop(self) -> None:
        """End `run` after the period in progress (its requests complete), then `shutdown`."""
        if self._stop is not None:
            self._stop.set()

    async def shutdown(self) -> None:
        """Write every setpoint's safe value once (if connected), then close the client."""
        faults = []
        if self.client is not None and self.client.connected:
            modes = {name: "safe" for name, *_ in self.agents}
            try:
                writes, refused = await self.write(self.targets({}, modes, safe_all=True), len(self.rows) + 1, faults)
            except asyncio.CancelledError:
                writes, refused = [], []
            if self.log_path is not None:
                append_lines(self.log_path, [json_line({"event": "shutdown", "writes": len(writes), "refused": refused,
                                                        "faults": faults})])
        if self.client is not None:
            self.client.close()

    def summary(self) -> dict:
        periods = [r["loop_period_s"] for r in self.rows if r["loop_period_s"] is not None]
        late = [r["lateness_s"] for r in self.rows]
        modes = Counter(m for r in self.rows for m in r["modes"].values())
        out = {"periods": len(self.rows), "period_s": self.period_s, "agent_periods": dict(modes),
               "faults": dict(Counter(f["kind"] for r in self.rows for f in r["faults"])),
               "writes": sum(r["writes"] for r in self.rows),
               "refused_writes": sum(len(r["refused"]) for r in self.rows),
               "timing": {"loop_period_mean_s": float(np.mean(periods)) if periods else None,
                          "loop_period_std_s": float(np.std(periods)) if periods else None,
                          "lateness_mean_s": float(np.mean(late)) if late else None,
                          "lateness_max_s": float(np.max(late)) if late else None,
                          "skipped_periods": int(sum(r["skipped"] for r in self.rows)),
                          "compute_mean_s": float(np.mean([r["compute_s"] for r in self.rows])) if self.rows else None}}
        if self.summary_path is not None:
            write_json(self.summary_path, out)
        return out

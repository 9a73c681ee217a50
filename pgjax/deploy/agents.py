"""Deployed agents that exchange their protocol's messages over an MQTT broker (`pgjax deploy --broker`).

    ctl = MessagingController(export_dir, dmap, "mqtt://127.0.0.1:1883", agents=("MG1",), lockstep=True)
    summary = await ctl.run(periods=24)

A `Controller` (`pgjax.deploy.runtime`: Modbus reads, checks, numpy policy, bounded writes)
whose agents also talk to their peers through the broker (`pgjax.deploy.bus`), with the
protocol logic of the compiled step run per agent (`pgjax.protocols.host`). Each period `k`,
per agent of this process (grid agent `i` of the scenario's coordinator):

  1 (lock-step, not the heartbeat process) wait for the clock of period `k`;
  2 read the devices over Modbus (the agent's import, the price);
  3 publish its message of period `k` (e.g. its bid), unless its readings are bad;
  4 observe the message features of the last exchange (the simulated step observes what the
    exchange of the step before produced), run the policy, write the setpoints;
  5 collect the peers' messages due in period `k` (sent in `k - msg_delay`; late ones are
    dropped, lost ones missing), publish a receipt of what arrived and collect the peers'
    receipts, so every agent knows which links delivered (the simulated channel's mask);
    run the protocol's receive (the same clearing in every agent): the features of period
    `k`, the agent's trades and payment (logged);
  6 (lock-step) acknowledge; the heartbeat process waits for every agent's ack, writes the
    heartbeat (the plant steps) and publishes the clock of period `k + 1`.

Safe behaviour: an agent whose readings are bad sends nothing (no trade) and takes its safe
action; messages that do not come (broker down, a partitioned agent, a late peer) are a
protocol step without them (p2p: no trade with that peer; alone: no trade at all); waits end
at their timeouts, so the agent never stops controlling its devices, and it resumes when
messages return (paho reconnects by itself). The features an agent acts on are never older
than `max_age` periods: older ones are replaced by the protocol's zero message (no trade).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from pgjax.deploy.bus import Bus
from pgjax.deploy.runtime import Controller
from pgjax.errors import DataError
from pgjax.runio import append_lines, json_line

KIND = {"p2p_trading": "bid", "consensus": "value", "admm_dispatch": "report"}
PRICE_KEY = "time//price"  # the market price feature of the site unit


def scenario_env(manifest: dict):
    """The exported scenario's environment (its protocol, links, tariffs and delays)."""
    import pgjax

    sc = manifest["scenario"]
    return pgjax.make(sc["env"], **sc.get("env_kwargs", {}))


def peers_of(env) -> dict:
    """Learned grid agent name -> the agents whose messages it reads (its peers on the protocol's graph)."""
    links, names = env.coordinator.links, env.agents
    grid = [names[i] for i in range(len(names))]
    return {grid[i]: [grid[j] for j in np.flatnonzero(links.adjacency[:, i])] for i in range(links.n_grid)}


def acl_reads(env) -> tuple[str, dict]:
    """`(protocol, {agent: agents it reads})` of a scenario's messages between processes (`--write-acl`):
    peers on the horizontal protocol's graph, or a vertical parent and its children."""
    from pgjax.protocols import host

    coord = env.coordinator
    if coord.vertical.values is not None and coord.links.tracked.any():
        spec, parent, children, _ = vertical_setup(env)
        return spec.name, {parent: children, **{c: [parent] for c in children}}
    return host.spec(coord, "horizontal").name, peers_of(env)


def channel_losses(env, steps: int, seed: int = 0) -> dict:
    """The messages the simulated channel loses on the plant's day (`Plant(seed=seed)`: step `t` runs
    on `fold_in(PRNGKey(seed), t)`), as `drop` for `MessagingController`: receiver -> `[(period, sender)]`.
    The same draws as `channels.send` (`uniform < loss_prob` per link), so a deployment with these
    losses injected on its receivers meets exactly the simulated channel's losses."""
    import jax

    links, names = env.coordinator.links, list(env.agents)
    key, out = jax.random.PRNGKey(seed), {names[i]: [] for i in range(links.n_grid)}
    for t in range(steps):
        _, k_horizontal = jax.random.split(jax.random.fold_in(key, t))
        _, k_loss = jax.random.split(k_horizontal)
        lost = np.asarray(jax.random.uniform(k_loss, links.adjacency.shape) < links.hparams.loss_prob)
        for s, r in zip(*np.nonzero(lost & links.adjacency)):
            out[names[r]].append((t, names[s]))
    return out


class MessagingController(Controller):
    """A controller whose agents exchange protocol messages over a broker (module docstring)."""

    messaging = True

    def __init__(self, export_dir, dmap, broker_url: str, *, env=None, lockstep: bool = False,
                 wait_s: float = 2.0, max_age: int = 1, bus_log=None, credentials=None, tls=None,
                 drop=None, **kw):
        super().__init__(export_dir, dmap, **kw)
        self.env = env if env is not None else scenario_env(self.manifest)
        coord = self.env.coordinator
        if coord.vertical.values is not None and coord.links.v_links.any():
            raise DataError(f"scenario '{self.env.name}': its agents send vertical messages: run the parent with "
                            "`VerticalParent` and each child with `ChildRelay` (pgjax deploy --broker does)")
        from pgjax.protocols import host

        self.spec = host.spec(coord, "horizontal")
        self.kind = KIND.get(self.spec.name)
        self.links, self.dtype = coord.links, np.dtype(self.env.dtype)
        self.names = list(self.env.agents)
        self.participants = self.names[:self.links.n_grid]
        if self.env.num_agents != self.links.n_grid or self.spec.name not in KIND:
            raise DataError(f"scenario '{self.env.name}': messages over the broker need the learned agents to be "
                            f"the grid agents and a horizontal protocol of {sorted(KIND)} "
                            f"(learned {self.names}, {self.links.n_grid} grid agents, protocol {self.spec.name})")
        self.grid = {name: self.names.index(name) for name, *_ in self.agents}
        delays = np.asarray(self.links.hparams.delay)[:, 0] if self.links.n_grid else []
        self.delay = {self.names[i]: int(delays[i]) for i in range(self.links.n_grid)}
        self.lockstep, self.wait_s, self.max_age = bool(lockstep), float(wait_s), int(max_age)
        self.bus_log = bus_log
        reads = peers_of(self.env)
        credentials = credentials or {}
        site = self.env.name
        self.buses = {name: Bus(broker_url, site, self.spec.name, name, self.names, reads.get(name, ()),
                                delay=self.delay, log_path=bus_log, tls=tls, drop=(drop or {}).get(name, ()),
                                **({"username": name, "password": credentials[name]} if name in credentials else {}))
                      for name, *_ in self.agents}
        discount, scale = self._tariffs()
        self.tariff = {name: (float(discount[i]), float(scale[i])) for name, i in self.grid.items()}
        self.sent = {name: {} for name in self.grid}  # agent -> {period: payload}
        self.held = {name: (np.zeros(len(coord.horizontal.features), self.dtype), -1) for name in self.grid}
        self.feature_keys = [f"message/{{}}/{f.name}" for f in coord.horizontal.features]
        self.import_key = self._import_keys()
        self._warm_up()

    def _warm_up(self) -> None:
        """One send and receive per agent now: JAX compiles the protocol's operations at start, not in the
        first period (seconds on a small machine, past the devices' reversion timeouts)."""
        from pgjax.protocols import host

        for i in self.grid.values():
            local = host.Local()
            payload = self.spec.send(self.links, i, local, self.dtype)
            self.spec.receive(self.links, i, {} if payload is None else {i: payload}, local, self.dtype,
                              mask=np.ones((self.links.n_grid, self.links.n_grid), bool))

    def _tariffs(self):
        from pgjax.protocols.coupling import connection_terms

        d, s = connection_terms(self.links, self.env.default_params.devices, self.env.dtype)
        return np.asarray(d), np.asarray(s)

    # ------------------------------------------------------------------ messages

    def local(self, name: str, values: dict):
        """The agent's `host.Local` from its readings (None when they lack its import or the price)."""
        from pgjax.protocols import host

        key = self.import_key.get(name)
        if key is None or key not in values or PRICE_KEY not in values:
            return None
        discount, scale = self.tariff[name]
        return host.Local(import_mw=values[key], price=values[PRICE_KEY], sell_discount=discount, price_scale=scale)

    def _import_keys(self) -> dict:
        """Agent -> the observation key of its grid connection's import (what its bids are made of)."""
        links, out = self.links, {}
        group = next((g for g in self.env.layout.groups if g.type == links.connection_type), None)
        for name, i in self.grid.items():
            conn = int(links.connection_of_grid[i])
            if group is not None and conn >= 0:
                out[name] = f"{links.connection_type}/{group.names[conn]}/import_mw"
        return out

    def features_now(self, name: str, k: int) -> np.ndarray:
        """The message features the agent acts on in period `k`: those of the last exchange, or zeros
        (the protocol's "nothing arrived") when older than `max_age` periods."""
        feats, at = self.held[name]
        return feats if at >= 0 and k - at <= self.max_age else np.zeros_like(feats)

    async def exchange(self, k: int, locals_: dict, faults: list) -> dict:
        """Step 5 of the module docstring for every agent of this process: `{agent: extra}`."""
        out = {}
        for name, bus in self.buses.items():
            due = [p for p in self.peers(name) if k - self.delay[p] >= 0]
            got = await bus.collect(self.kind, k, due, self.wait_s)
            mine = self.sent[name].pop(k - self.delay[name], None)
            received = {self.names.index(s): v for s, v in got.items()}
            if mine is not None:
                received[self.grid[name]] = mine
            bus.publish("receipt", k, [[s, v] for s, v in got.items()] + ([[name, mine]] if mine is not None else []))
            out[name] = received
        for name, bus in self.buses.items():
            receipts = await bus.collect("receipt", k, self.peers(name), self.wait_s)
            mask, received = self.delivery(name, out[name], receipts)
            missing = sorted(set(self.peers(name)) - set(receipts))
            if missing:
                faults.append({"kind": "messages", "agent": name, "detail": f"no receipt from {missing}"})
            feats, extra = self.spec.receive(self.links, self.grid[name], received, locals_.get(name), self.dtype,
                                             mask=mask)
            self.held[name] = (np.asarray(feats, self.dtype), k)
            out[name] = {"features": np.asarray(feats).tolist(), **extra}
        return out

    def peers(self, name: str) -> list[str]:
        i = self.grid[name]
        return [self.names[j] for j in np.flatnonzero(self.links.adjacency[:, i] | self.links.adjacency[i, :])]

    def delivery(self, name: str, received: dict, receipts: dict):
        """`(mask [n, n], payloads)`: which links delivered this period, from this agent's own arrivals, its
        own messages (taken as delivered unless a peer's receipt says otherwise) and the peers' receipts."""
        n, i = self.links.n_grid, self.grid[name]
        mask = np.zeros((n, n), bool)
        for s in received:
            mask[s, i] = True
        if i in received:
            mask[i, :] = True
        for peer, listed in receipts.items():
            r = self.names.index(peer)
            mask[:, r] = False
            for sender, payload in listed or []:
                s = self.names.index(sender) if sender in self.names else None
                if s is None:
                    continue
                mask[s, r] = True
                received.setdefault(s, payload)
        return mask & self.links.adjacency, received

    # ------------------------------------------------------------------ the period

    async def period(self, k: int) -> dict:
        """One control period with messages (module docstring, 1-6); returns its log row."""
        faults = []
        t0 = time.perf_counter()
        if self.lockstep and not self.heartbeat and k > 0:
            await self._wait_clock(k, faults)
        values = await self.read(faults)
        locals_ = {name: self.local(name, values) for name in self.grid}
        for name, bus in self.buses.items():
            if locals_[name] is not None:
                payload = self.spec.send(self.links, self.grid[name], locals_[name], self.dtype)
                if payload is not None:
                    self.sent[name][k] = np.asarray(payload).tolist()
                    bus.publish(self.kind, k, self.sent[name][k])
        for name in self.grid:
            values.update({key.format(name): float(v) for key, v in zip(self.feature_keys, self.features_now(name, k))})
        obs, actions, modes = self.decide(values)
        targets = self.targets(actions, modes)
        t1 = time.perf_counter()
        writes, refused = await self.write(targets, k + 1, faults) if not self.lockstep else \
            await self._write_no_heartbeat(targets, k, faults)
        protocol = await self.exchange(k, locals_, faults)
        if self.lockstep:
            await self._barrier(k, faults, writes, refused)
        for bus in self.buses.values():
            bus.flush()
        return {"k": k, "faults": faults, "modes": modes, "observations": obs, "actions": actions,
                "setpoints": [[u, a, v] for (u, a), v in targets.items()], "writes": len(writes),
                "refused": refused, "compute_s": t1 - t0, "protocol": protocol}

    async def _write_no_heartbeat(self, targets, k, faults):
        heartbeat, self.heartbeat = self.heartbeat, False
        try:
            return await self.write(targets, k + 1, faults)
        finally:
            self.heartbeat = heartbeat

    async def _wait_clock(self, k: int, faults: list) -> None:
        bus = next(iter(self.buses.values()))
        got = await bus.collect("clock", k, None, self.wait_s)
        if not got:
            faults.append({"kind": "clock", "detail": f"no clock for period {k} within {self.wait_s} s"})

    async def _barrier(self, k: int, faults: list, writes: list, refused: list) -> None:
        """Lock-step: ack period `k`; the heartbeat process waits for all acks, steps the plant, sends the clock."""
        for bus in self.buses.values():
            bus.publish("ack", k, None)
        if not self.heartbeat:
            return
        bus = next(iter(self.buses.values()))
        others = [a for a in self.participants if a not in self.buses]
        got = await bus.collect("ack", k, others, self.wait_s)
        if set(got) != set(others):
            faults.append({"kind": "ack", "detail": f"no ack from {sorted(set(others) - set(got))}"})
        await self.write_heartbeat(k + 1, faults, writes, refused)
        bus.publish("clock", k + 1, None)

    async def start_buses(self, start_timeout_s: float = 120.0) -> None:
        """Connect; in lock-step, wait until every agent of the scenario is there (two hello rounds on the
        control topics: -2 "I am here", -1 "I heard everyone"), at most `start_timeout_s`."""
        for bus in self.buses.values():
            bus.start()
        for name, bus in self.buses.items():
            if not await bus.wait_connected(self.wait_s * 2):
                self._note({"event": "broker", "agent": name, "detail": "not connected at start; retrying"})
        if not self.lockstep:
            return
        first = next(iter(self.buses.values()))
        others = set(self.participants) - set(self.buses)
        for phase in (-2, -1):
            deadline = time.monotonic() + start_timeout_s
            while time.monotonic() < deadline:
                for bus in self.buses.values():
                    bus.publish("ack", phase, None)
                if others <= set(first.peek("ack", phase)):
                    break
                await asyncio.sleep(0.1)
            missing = sorted(others - set(first.take("ack", phase)))
            if missing:
                self._note({"event": "broker", "detail": f"lock-step start without {missing}"})

    async def shutdown(self) -> None:
        """Lock-step: wait for the plant's last step (the clock after the last period) before the safe values."""
        if self.lockstep and not self.heartbeat and self.rows:
            await self._wait_clock(len(self.rows), [])
        await super().shutdown()

    def _note(self, obj: dict) -> None:
        if self.log_path is not None:
            append_lines(self.log_path, [json_line(obj)])

    async def run(self, periods=None) -> dict:
        await self.start_buses()
        try:
            return await super().run(periods)
        finally:
            for bus in self.buses.values():
                bus.close()


# ----------------------------------------------------------------------------- vertical: parent and children

def vertical_setup(env):
    """`(spec, parent name, children names, delay)` of a scenario whose learned agent is the parent of grid agents."""
    from pgjax.protocols import host

    coord = env.coordinator
    links = coord.links
    spec = host.spec(coord, "vertical")
    if coord.vertical.values is None or not links.tracked.any() or env.num_agents != 1:
        raise DataError(f"scenario '{env.name}': vertical messages over the broker need one learned parent of "
                        f"tracked grid agents (learned {list(env.agents)}, protocol {spec.name})")
    children = [child_name(env, i) for i in range(links.n_grid)]
    delay = int(np.asarray(links.vparams.delay).max(initial=0))
    return spec, env.agents[0], children, delay


def child_name(env, i: int) -> str:
    """The scenario id of grid agent `i` (e.g. MG1)."""
    return str(env.scenario.tree_ids[int(env.coordinator.links.grid_nodes[i])])


class _Vertical(MessagingController):
    """Common set-up of `VerticalParent` and `ChildRelay`: the scenario, one bus, the lock-step helpers."""

    def _setup(self, export_dir, dmap, broker_url, me, env, lockstep, wait_s, max_age, bus_log, credentials, tls,
               **kw):
        Controller.__init__(self, export_dir, dmap, **kw)
        self.env = env if env is not None else scenario_env(self.manifest)
        self.spec, self.parent, self.children, self.delay_steps = vertical_setup(self.env)
        self.links, self.dtype = self.env.coordinator.links, np.dtype(self.env.dtype)
        self.participants = [self.parent] + self.children
        if me not in self.participants:
            raise DataError(f"--child {me!r}: not a grid agent of '{self.env.name}' ({self.children})")
        self.lockstep, self.wait_s, self.max_age = bool(lockstep), float(wait_s), int(max_age)
        reads = self.children if me == self.parent else [self.parent]
        auth = {"username": me, "password": credentials[me]} if me in (credentials or {}) else {}
        self.buses = {me: Bus(broker_url, self.env.name, self.spec.name, me, self.participants, reads,
                              delay={self.parent: self.delay_steps}, log_path=bus_log, tls=tls, **auth)}
        _, _, default = self.env.coordinator.vertical.values(self.links, np.zeros(self.links.n_grid, self.dtype),
                                                            np.asarray(0.0, self.dtype))
        self.default_mw = np.asarray(default, np.float64)


class VerticalParent(_Vertical):
    """The learned parent (e.g. the system operator of `multi_microgrid_dso`): its device setpoints over
    Modbus, its values for the children (message actions) over the broker, retained; it observes what
    each child reports it received (the children's receipts), as the simulated step's features."""

    def __init__(self, export_dir, dmap, broker_url: str, *, env=None, lockstep=False, wait_s=2.0, max_age=1,
                 bus_log=None, credentials=None, tls=None, **kw):
        from pgjax.deploy.policy import read_manifest

        env = env if env is not None else scenario_env(read_manifest(export_dir))
        self._setup(export_dir, dmap, broker_url, env.agents[0], env, lockstep, wait_s, max_age, bus_log,
                    credentials, tls, **kw)
        self.message_cols = {c["key"]: c["column"] for _, _, _, cols in self.agents for c in cols
                             if c["key"].startswith("message/")}
        self.setpoints = {k: v for k, v in self.setpoints.items() if k not in self.message_cols}
        self.received = {c: (0.0, -1) for c in self.children}  # child -> (value it reported, period)

    async def period(self, k: int) -> dict:
        from pgjax.protocols import host

        faults = []
        t0 = time.perf_counter()
        values = await self.read(faults)
        for c in self.children:
            v, at = self.received[c]
            values[f"message/{c}/setpoint_mw"] = v if at >= 0 and k - at <= self.max_age else 0.0
        obs, actions, modes = self.decide(values)
        targets = self.targets(actions, modes)
        t1 = time.perf_counter()
        writes, refused = await self._write_no_heartbeat(targets, k, faults)
        bus = self.buses[self.parent]
        if modes.get(self.parent) == "policy" and "time//price" in values:
            payload = self.spec.send(self.links, 0, host.Local(price=values["time//price"],
                                                               actions=np.asarray(actions[self.parent])), self.dtype)
            bus.publish("setpoint", k, [None if np.isnan(x) else float(x) for x in payload], retain=True)
        got = await bus.collect("receipt", k, self.children, self.wait_s)
        for c, payload in got.items():
            self.received[c] = (float(payload[0]), k)
        if set(got) != set(self.children):
            faults.append({"kind": "messages", "detail": f"no receipt from {sorted(set(self.children) - set(got))}"})
        if self.lockstep:
            await self._barrier(k, faults, writes, refused)
        bus.flush()
        return {"k": k, "faults": faults, "modes": modes, "observations": obs, "actions": actions,
                "setpoints": [[u, a, v] for (u, a), v in targets.items()], "writes": len(writes),
                "refused": refused, "compute_s": t1 - t0, "protocol": {"received": dict(self.received)}}


class ChildRelay(_Vertical):
    """A tracked child's process (e.g. MG1 of `multi_microgrid_dso`): writes what its parent sent over the
    broker into its `<child>_ems` exchange-setpoint register; the last valid value within `max_age`
    periods, else the coupling's default (0 MW: the microgrid balances itself, local dispatch)."""

    def __init__(self, export_dir, dmap, broker_url: str, child: str, *, env=None, lockstep=False, wait_s=2.0,
                 max_age=3, bus_log=None, credentials=None, tls=None, **kw):
        self._setup(export_dir, dmap, broker_url, child, env, lockstep, wait_s, max_age, bus_log, credentials, tls,
                    agents=(), **kw)
        self.child, self.index = child, self.children.index(child)
        hit = dmap.setpoint(f"message/{child}/setpoint_mw")
        if hit is None:
            raise DataError(f"device map: no setpoint carries message/{child}/setpoint_mw (pgjax hil --write-map "
                            "maps it to the unit '{child.lower()}_ems')")
        self.unit, self.point = hit
        cp = self.env.coordinator.vertical
        lo = np.asarray(cp.values(self.links, np.zeros(self.links.n_grid, self.dtype), np.asarray(0.0))[0])
        hi = np.asarray(cp.values(self.links, np.ones(self.links.n_grid, self.dtype), np.asarray(0.0))[0])
        self.span = (float(lo[self.index]), float(hi[self.index]))  # value at action -1 and +1 (linear)
        self.value = (float(self.default_mw[self.index]), -1)

    def action_of(self, value_mw: float) -> float:
        """The parent's action column that sends `value_mw` (the coupling's `values`, inverted)."""
        lo, hi = self.span
        return 2.0 * (value_mw - lo) / (hi - lo) - 1.0

    async def period(self, k: int) -> dict:
        from pgjax.deploy import registers

        faults = []
        if self.lockstep and k > 0:
            await self._wait_clock(k, faults)
        await self.read(faults)
        bus = self.buses[self.child]
        got = await bus.collect("setpoint", k, [self.parent] if k - self.delay_steps >= 0 else [], self.wait_s)
        if self.parent in got and got[self.parent][self.index] is not None:
            self.value = (float(got[self.parent][self.index]), k)
        value, at = self.value
        if at < 0 or k - at > self.max_age:
            value = float(self.default_mw[self.index])
            faults.append({"kind": "messages", "detail": f"no setpoint from {self.parent} within {self.max_age} periods"})
        target = {(self.unit.unit_id, self.point.address):
                  registers.bounded(self.action_of(value) * self.point.full_scale, self.point)}
        writes, refused = await self._write_no_heartbeat(target, k, faults)
        bus.publish("receipt", k, [value])
        if self.lockstep:
            await self._barrier(k, faults, writes, refused)
        bus.flush()
        return {"k": k, "faults": faults, "modes": {self.child: "relay"}, "observations": {}, "actions": {},
                "setpoints": [[u, a, v] for (u, a), v in target.items()], "writes": len(writes), "refused": refused,
                "compute_s": 0.0, "protocol": {"setpoint_mw": value}}

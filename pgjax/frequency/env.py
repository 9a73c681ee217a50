"""`frequency_68bus`: 20 agents keep the IEEE 68-bus system at 60 Hz (functional env, JaxMARL API).

    env = pgjax.make("frequency_68bus")             # or pgjax.frequency.env.make(dtype="float64")
    obs, state = env.reset(key, env.default_params)             # obs [20, 15]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, env.default_params)
    ws = env.world_state(state, env.default_params)             # [140], the centralized critic's input

Plant: `pgjax.frequency.dynamics` on the 68-bus system of `pgjax.frequency.ieee68` (16
machines with governors; the agents act on top of their primary response). One agent step
is `dt_s` seconds (default 5 s) of `dt_s / substep_s` exact sub-steps (default 0.1 s).

Agents (host table `AGENTS`, placed on load buses by operating-point load, largest first):
5 batteries (`battery_i`, ramp 50 MW/min, +-100 MW), 8 gas plants (`gas_i`, 10 MW/min,
+-150 MW around their schedule), 7 demand-response units (`dr_i`, 5 MW/min, +-50 MW);
demand response sits on the 7 largest loads, then batteries, then gas plants. An output is
an injection deviation from the operating point (MW, generation or load reduction positive).

Action `[20, 1]` in [-1, 1] (`env.action_schema`): the change of output over the step as a
fraction of the ramp limit (`a * ramp_mw_min * dt_s / 60`), clipped to the capacity; the
output moves linearly over the step's sub-steps. NaN counts as 0 (`info["nan_actions"]`).

Observation `[20, 15]` (`env.observation_schema`; keys `<kind>/<owner>/<name>`, observed
`(physical - offset) / scale`), delayed by `scada_delay` steps (default 2; a ring buffer in
the state; at reset the buffer holds the reset observation): own bus frequency and load,
own output, the centre-of-inertia frequency deviation, the frequencies of the 5 nearest
buses (fewest branches, then index), 1-, 2- and 3-step-ahead forecasts of the total renewable
output change (conditional means of its AR(1) model), sin / cos of the hour, capacity
utilisation `|p| / cap`.

World state `[140]` (`env.state_features`, not delayed): 68 bus frequencies, 20 outputs,
14 renewable outputs, the 30 largest loads, and 8 time / pattern features (sin / cos hour,
episode progress, a trip has happened, the trip is a machine, centre-of-inertia frequency
deviation and RoCoF, total load change).

Reward (shared, `[20]` equal values), per step, `reward_scale *`
`-(1000 * mean_sub-steps(sum_bus df_hz^2) + sum C_i |dP_i| + 0.1 sum W_i dP_i^2 + 10000 * violations)`,
`dP_i` the output change over the step (MW), `violations` the buses whose frequency left
[59.5, 60.5] Hz in any sub-step of the step.

Stochastic inputs (`jax.random`, seeded by the keys): loads `P0 (1 + g + u_l)` with a common
and a per-load AR(1) (`g`, `u_l`); 14 renewables (150 MW each, on the buses with neither
load nor machine) `cap * clip(base + x_k, 0, 1)` with an AR(1) `x_k` and a base drawn at
reset; deviations are taken from the reset values (the AC operating point includes them).
N-1 contingency: with probability `p_contingency` an episode has one trip, at a step drawn
in `[trip_first, trip_last]`: a branch (of `ieee68`'s candidates that keep the network
connected) or, with probability `p_machine_trip`, a machine of at most 550 MW.

`info` per step: `f_min_hz` (nadir), `f_max_hz` (zenith), `f_coi_hz`, `rocof_hz_s` (largest
|centre-of-inertia RoCoF| over the sub-steps), `outside_band_s` (time with any bus outside
the band), `violations`, `in_band` (1 if no bus left the band), `effort_mw` (sum |dP_i|),
`cost` (the reward's cost and wear terms, $), `safety` (= `violations`, the constraint
signal of pgjax envs), `freq_penalty`, `tripped` (1 once the trip happened), `nan_actions`. `truncated` after `episode_steps` (default 120 = 10 min);
`step` auto-resets (final observation in `info["final_observation"]`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import checks
from pgjax.env.base import MultiAgentEnv
from pgjax.env.types import ActionColumn, ActionSchema, CostSignal, ObservationSchema, ObservedFeature
from pgjax.errors import InputError
from pgjax.frequency import dynamics as dyn
from pgjax.frequency import ieee68


class AgentKind(NamedTuple):
    kind: str
    prefix: str
    count: int
    ramp_mw_min: float
    cap_mw: float
    cost_per_mw: float  # C_i, $ per MW of output change
    wear: float  # W_i, per MW^2 of output change


AGENTS = (AgentKind("demand_response", "dr", 7, 5.0, 50.0, 10.0, 0.2),
          AgentKind("battery", "battery", 5, 50.0, 100.0, 2.0, 1.0),
          AgentKind("gas", "gas", 8, 10.0, 150.0, 4.0, 0.5))
ORDER = ("battery", "gas", "demand_response")  # agent order: batteries, gas plants, demand response
N_RENEWABLE, RENEWABLE_CAP_MW, N_LARGEST_LOADS, N_NEAR = 14, 150.0, 30, 5
F_SCALE_HZ, P_SCALE_MW = 0.1, 100.0


@struct.dataclass
class FreqParams:
    """Everything numeric a step reads (replace fields to vary the task without retracing).

    `table` holds the sub-step maps computed from `plant` (`FrequencyEnv.discretizations`);
    a changed `plant` needs a new table: `params.replace(plant=p, table=env.discretizations(p, env.topologies()))`.
    """

    plant: dyn.Plant
    agent_bus: jax.Array  # [20] int
    ramp_mw_min: jax.Array  # [20]
    cap_mw: jax.Array  # [20]
    cost_per_mw: jax.Array  # [20]
    wear: jax.Array  # [20]
    load_bus: jax.Array  # [n_load] int
    load_p0_mw: jax.Array  # [n_load]
    renewable_bus: jax.Array  # [14] int
    renewable_cap_mw: jax.Array  # [14]
    topo_branch_on: jax.Array  # [n_topo, n_br] bool: 0 all in service, then one per candidate trip
    topo_machine_on: jax.Array  # [n_topo, n_m] bool
    table: dyn.Discrete  # [n_topo, ...] the sub-step map of each topology (`FrequencyEnv.discretizations`)
    n_branch_trips: jax.Array  # [] int, topologies 1..n are branch trips, the rest machine trips
    load_rho: jax.Array  # AR(1) coefficient of the per-load deviation, per step
    load_sigma: jax.Array  # its innovation std (fraction of P0)
    common_rho: jax.Array
    common_sigma: jax.Array
    renewable_rho: jax.Array
    renewable_sigma: jax.Array  # fraction of capacity
    p_contingency: jax.Array
    p_machine_trip: jax.Array
    trip_first: jax.Array  # int
    trip_last: jax.Array  # int
    f_low_hz: jax.Array
    f_high_hz: jax.Array
    w_freq: jax.Array  # 1000
    w_wear: jax.Array  # 0.1
    w_violation: jax.Array  # 10000
    reward_scale: jax.Array


@struct.dataclass
class FreqEnvState:
    t: jax.Array  # [] int32
    hour0: jax.Array  # [] hour of day at the episode start
    x: dyn.FreqState  # machine deviations
    p_mw: jax.Array  # [20] agent outputs
    load_u: jax.Array  # [n_load] per-load relative deviation
    load_g: jax.Array  # [] common relative deviation
    ren_base: jax.Array  # [14]
    ren_x: jax.Array  # [14]
    ren0_mw: jax.Array  # [14] output at reset (the operating point's)
    load0_mw: jax.Array  # [n_load] load deviation at reset (the operating point's)
    trip_step: jax.Array  # [] int, -1 or past the episode: none
    trip_machine: jax.Array  # [] bool
    trip_topo: jax.Array  # [] int, the topology (row of `FreqParams.table`) from `trip_step` on
    dw_bus_pu: jax.Array  # [n_bus] bus frequencies at the end of the last step
    rocof_hz_s: jax.Array  # [] centre-of-inertia RoCoF at the end of the last step
    obs_buf: jax.Array  # [scada_delay + 1, 20, 15], oldest first


def _nearest(adjacency: np.ndarray, bus: int, k: int) -> list[int]:
    """The `k` buses nearest to `bus` by branch count (then index), `bus` excluded (BFS)."""
    dist = np.full(adjacency.shape[0], -1)
    dist[bus], frontier = 0, [bus]
    while frontier:
        nxt = sorted({int(j) for i in frontier for j in np.flatnonzero(adjacency[i]) if dist[j] < 0})
        for j in nxt:
            dist[j] = dist[frontier[0]] + 1
        frontier = nxt
    order = sorted((d, i) for i, d in enumerate(dist) if d > 0)
    return [i for _, i in order[:k]]


@jax.jit
def _discretize_each(plant: dyn.Plant, topos: dyn.Topology, substep_s: jax.Array) -> dyn.Discrete:
    """`dynamics.discretize` of every topology of `topos` (leading axis), one compiled program for every build."""
    return jax.vmap(dyn.discretize, in_axes=(None, 0, None))(plant, topos, substep_s)


def _is_probability(v):
    return (v >= 0) & (v <= 1)


class FrequencyEnv(MultiAgentEnv):
    """The `frequency_68bus` environment (see the module docstring)."""

    name = "frequency_68bus"
    cost_signals = {  # the safety signals a constrained learner may budget (`algorithm: mappo_lagrangian`)
        "frequency": CostSignal("outside_band_s", "s with any bus outside [f_low_hz, f_high_hz]"),
        "band_violations": CostSignal("violations", "buses that left the frequency band within the step"),
    }
    test_data = "seeded synthetic episodes, test key stream (split='test')"  # what `pgjax eval` reports
    param_ranges = (
        *((w, lambda v: v >= 0, "a weight >= 0") for w in ("w_freq", "w_wear", "w_violation", "cost_per_mw", "wear")),
        ("reward_scale", lambda v: v > 0, "a reward scale > 0"),
        ("ramp_mw_min", lambda v: v > 0, "ramp limits > 0 MW/min"),
        ("cap_mw", lambda v: v > 0, "capacities > 0 MW"),
        *((r, lambda v: (v >= 0) & (v < 1), "an AR(1) coefficient in [0, 1)")
          for r in ("load_rho", "common_rho", "renewable_rho")),
        *((s_, lambda v: v >= 0, "a standard deviation >= 0") for s_ in ("load_sigma", "common_sigma", "renewable_sigma")),
        ("p_contingency", _is_probability, "a probability in [0, 1]"),
        ("p_machine_trip", _is_probability, "a probability in [0, 1]"),
    )

    def __init__(self, dtype="float32", split: str = "train", episode_steps: int = 120, dt_s: float = 5.0,
                 substep_s: float = 0.1, scada_delay: int = 2, plant_config: ieee68.PlantConfig = ieee68.PlantConfig()):
        if str(dtype) not in ("float32", "float64"):
            raise InputError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        if split not in ("train", "test"):
            raise InputError(f"split: expected 'train' or 'test', got {split!r}")
        n_sub = dt_s / substep_s
        if substep_s <= 0 or dt_s <= 0 or abs(n_sub - round(n_sub)) > 1e-9:
            raise InputError(f"dt_s / substep_s: expected a positive whole number of sub-steps, got {dt_s} / {substep_s}")
        if int(scada_delay) < 0 or int(episode_steps) < 1:
            raise InputError(f"scada_delay >= 0 and episode_steps >= 1 expected, got {scada_delay}, {episode_steps}")
        if str(dtype) == "float64":
            from pgjax.precision import require_x64

            require_x64("frequency_68bus with dtype float64")
        self.dtype = jnp.float32 if str(dtype) == "float32" else jnp.float64
        self.split, self.episode_steps, self.scada_delay = split, int(episode_steps), int(scada_delay)
        self.dt_s, self.substep_s, self.n_sub = float(dt_s), float(substep_s), int(round(n_sub))
        self.system = ieee68.build(plant_config)
        self._build_layout()
        self.action_mask = np.ones((self.num_agents, 1), bool)
        self.default_actions = np.zeros((self.num_agents, 1), np.float32)
        self.default_params = self.make_params()

    # ------------------------------------------------------------------ host-side layout

    def _build_layout(self) -> None:
        s = self.system
        n_bus = s.adjacency.shape[0]
        by_load = s.load_bus[np.argsort(-s.load_p_mw, kind="stable")]
        kinds, buses, start = {}, {}, 0
        for k in AGENTS:
            kinds[k.kind] = k
            buses[k.kind] = by_load[start:start + k.count]
            start += k.count
        self.agents, self.agent_kinds, rows = [], [], []
        for kind in ORDER:
            k = kinds[kind]
            for i, b in enumerate(buses[kind]):
                self.agents.append(f"{k.prefix}_{i}")
                self.agent_kinds.append(kind)
                rows.append((int(b), k.ramp_mw_min, k.cap_mw, k.cost_per_mw, k.wear))
        self.agents, self.agent_kinds = tuple(self.agents), tuple(self.agent_kinds)
        self._agent_table = np.asarray(rows)
        machine_bus = set(np.asarray(s.plant.machine_bus).tolist())
        free = [b for b in range(n_bus) if b not in machine_bus and b not in set(s.load_bus.tolist())]
        self.renewable_bus = np.asarray(free[:N_RENEWABLE], np.int32)
        self.largest_loads = np.argsort(-s.load_p_mw, kind="stable")[:N_LARGEST_LOADS]
        agent_bus = self._agent_table[:, 0].astype(int)
        self.near_bus = np.asarray([_nearest(s.adjacency, b, N_NEAR) for b in agent_bus])  # [20, 5]

        # global observed features, then each agent's selection
        f = []
        f_start = 0
        f += [ObservedFeature("bus", str(b), "f_hz", "Hz", F_SCALE_HZ, 60.0, "bus frequency") for b in range(n_bus)]
        load_start = len(f)
        load_at_bus = np.bincount(s.load_bus, s.load_p_mw, n_bus)
        f += [ObservedFeature("bus", str(b), "p_load_mw", "MW", P_SCALE_MW, float(load_at_bus[b]), "bus load")
              for b in range(n_bus)]
        p_start = len(f)
        caps = self._agent_table[:, 2]
        f += [ObservedFeature(k, a, "p_mw", "MW", float(c), 0.0, "output deviation")
              for a, k, c in zip(self.agents, self.agent_kinds, caps)]
        u_start = len(f)
        f += [ObservedFeature(k, a, "utilization", "", 1.0, 0.0, "|p| / capacity")
              for a, k in zip(self.agents, self.agent_kinds)]
        sys_pos = len(f)
        f.append(ObservedFeature("system", "", "df_hz", "Hz", F_SCALE_HZ, 0.0, "centre-of-inertia frequency deviation"))
        fc_start = len(f)
        f += [ObservedFeature("renewable", "", f"forecast_{h}_mw", "MW", P_SCALE_MW, 0.0,
                              f"forecast change of total renewable output, {h} step(s) ahead") for h in (1, 2, 3)]
        time_start = len(f)
        f += [ObservedFeature("time", "", "sin_hour"), ObservedFeature("time", "", "cos_hour")]
        index = np.asarray([[f_start + agent_bus[a], load_start + agent_bus[a], p_start + a, sys_pos,
                             *(f_start + self.near_bus[a]), fc_start, fc_start + 1, fc_start + 2,
                             time_start, time_start + 1, u_start + a] for a in range(len(self.agents))])
        self.observation_schema = ObservationSchema(self.agents, tuple(f), index, (15,) * len(self.agents))
        self._obs_index = index
        self.action_schema = ActionSchema(self.agents, tuple(
            (ActionColumn(a, 0, a, k, "ramp", "fraction of ramp limit", "output change / (ramp * dt)"),)
            for a, k in zip(self.agents, self.agent_kinds)))
        sf = [ObservedFeature("bus", str(b), "f_hz", "Hz", F_SCALE_HZ, 60.0) for b in range(n_bus)]
        sf += [ObservedFeature(k, a, "p_mw", "MW", float(c)) for a, k, c in zip(self.agents, self.agent_kinds, caps)]
        sf += [ObservedFeature("renewable", str(b), "p_mw", "MW", RENEWABLE_CAP_MW) for b in self.renewable_bus]
        sf += [ObservedFeature("load", str(int(s.load_bus[i])), "p_mw", "MW", P_SCALE_MW, float(s.load_p_mw[i]))
               for i in self.largest_loads]
        sf += [ObservedFeature("time", "", n) for n in ("sin_hour", "cos_hour", "progress")]
        sf += [ObservedFeature("contingency", "", "tripped"), ObservedFeature("contingency", "", "machine"),
               ObservedFeature("system", "", "df_hz", "Hz", F_SCALE_HZ),
               ObservedFeature("system", "", "rocof_hz_s", "Hz/s", F_SCALE_HZ),
               ObservedFeature("system", "", "load_change_mw", "MW", P_SCALE_MW)]
        self.state_features = tuple(sf)

    def topologies(self) -> dyn.Topology:
        """`[n_topo, ...]` masks: all in service, then each branch candidate out, then each machine candidate out."""
        s = self.system
        n_br, n_m = len(s.plant.branch_from), len(s.plant.m_s)
        nb, nm = len(s.branch_candidates), len(s.machine_candidates)
        branch = np.ones((1 + nb + nm, n_br), bool)
        machine = np.ones((1 + nb + nm, n_m), bool)
        branch[1 + np.arange(nb), s.branch_candidates] = False
        machine[1 + nb + np.arange(nm), s.machine_candidates] = False
        return dyn.Topology(jnp.asarray(branch), jnp.asarray(machine))

    def discretizations(self, plant: dyn.Plant, topos: dyn.Topology) -> dyn.Discrete:
        """`dynamics.discretize` of every topology, stacked (computed once: a step only gathers a row)."""
        return _discretize_each(plant, topos, jnp.asarray(self.substep_s, plant.m_s.dtype))

    def make_params(self) -> FreqParams:
        s, dt = self.system, self.dtype
        f = lambda x: jnp.asarray(x, dt)  # noqa: E731
        plant = dyn.Plant(*[jnp.asarray(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else f(v)
                            for v in s.plant])
        tab = self._agent_table
        topos = self.topologies()
        return FreqParams(
            plant=plant, agent_bus=jnp.asarray(tab[:, 0].astype(np.int32)), ramp_mw_min=f(tab[:, 1]),
            cap_mw=f(tab[:, 2]), cost_per_mw=f(tab[:, 3]), wear=f(tab[:, 4]),
            load_bus=jnp.asarray(s.load_bus.astype(np.int32)), load_p0_mw=f(s.load_p_mw),
            renewable_bus=jnp.asarray(self.renewable_bus), renewable_cap_mw=f(np.full(N_RENEWABLE, RENEWABLE_CAP_MW)),
            topo_branch_on=topos.branch_on, topo_machine_on=topos.machine_on,
            table=self.discretizations(plant, topos), n_branch_trips=jnp.asarray(len(s.branch_candidates), jnp.int32),
            load_rho=f(0.98), load_sigma=f(0.001), common_rho=f(0.995), common_sigma=f(0.0005),
            renewable_rho=f(0.99), renewable_sigma=f(0.01), p_contingency=f(1.0), p_machine_trip=f(0.5),
            trip_first=jnp.asarray(10, jnp.int32), trip_last=jnp.asarray(max(10, self.episode_steps // 2), jnp.int32),
            f_low_hz=f(59.5), f_high_hz=f(60.5), w_freq=f(1000.0), w_wear=f(0.1), w_violation=f(10000.0),
            reward_scale=f(1.0))

    # ------------------------------------------------------------------ physics helpers

    def topology_index(self, state: FreqEnvState, t) -> jax.Array:
        """`[]` int, the row of `FreqParams.table` in force during step `t` (the trip from its step on)."""
        return jnp.where((t >= state.trip_step) & (state.trip_step >= 0), state.trip_topo, 0)

    def topology(self, state: FreqEnvState, params: FreqParams, t) -> dyn.Topology:
        """The masks in force during step `t`."""
        i = self.topology_index(state, t)
        return dyn.Topology(params.topo_branch_on[i], params.topo_machine_on[i])

    def _renewable_mw(self, params, base, x):
        return params.renewable_cap_mw * jnp.clip(base + x, 0.0, 1.0)

    def _forecast_mw(self, params, state):
        """`[3]` forecast change of the total renewable output, 1-3 steps ahead (AR(1) conditional means)."""
        now = jnp.sum(self._renewable_mw(params, state.ren_base, state.ren_x))
        rho = params.renewable_rho ** jnp.arange(1, 4, dtype=self.dtype)
        ahead = jax.vmap(lambda r: jnp.sum(self._renewable_mw(params, state.ren_base, r * state.ren_x)))(rho)
        return ahead - now

    def _load_dev_mw(self, params, state):
        return params.load_p0_mw * (state.load_g + state.load_u)

    def global_features(self, state: FreqEnvState, params: FreqParams) -> jax.Array:
        """The observed features of `observation_schema.features` (undelayed), `[182]`."""
        n_bus = params.plant.load_damping_pu.shape[0]
        f0 = params.plant.f0_hz
        df_bus = f0 * state.dw_bus_pu
        load_dev = jax.ops.segment_sum(self._load_dev_mw(params, state), params.load_bus, n_bus)
        topo = self.topology(state, params, state.t - 1)
        df_coi = f0 * dyn.coi_speed(params.plant, topo, state.x.dw_pu)
        hour = 2 * jnp.pi * (state.hour0 + state.t * self.dt_s / 3600.0) / 24.0
        return jnp.concatenate([
            df_bus / F_SCALE_HZ, load_dev / P_SCALE_MW, state.p_mw / params.cap_mw, jnp.abs(state.p_mw) / params.cap_mw,
            (df_coi / F_SCALE_HZ)[None], self._forecast_mw(params, state) / P_SCALE_MW,
            jnp.stack([jnp.sin(hour), jnp.cos(hour)])]).astype(self.dtype)

    def current_obs(self, state: FreqEnvState, params: FreqParams) -> jax.Array:
        """`[20, 15]` what the agents would observe without the SCADA delay."""
        return self.global_features(state, params)[jnp.asarray(self._obs_index)]

    def get_obs(self, state: FreqEnvState, params: FreqParams | None = None) -> jax.Array:
        """`[20, 15]` the delayed observation (the oldest entry of the SCADA ring buffer)."""
        return state.obs_buf[0]

    def world_state(self, state: FreqEnvState, params: FreqParams | None = None) -> jax.Array:
        """`[140]` the centralized critic's input (`state_features`; not delayed)."""
        params = self.default_params if params is None else params
        f0 = params.plant.f0_hz
        topo = self.topology(state, params, state.t - 1)
        df_coi = f0 * dyn.coi_speed(params.plant, topo, state.x.dw_pu)
        ren = self._renewable_mw(params, state.ren_base, state.ren_x)
        loads = self._load_dev_mw(params, state)[jnp.asarray(self.largest_loads)]
        hour = 2 * jnp.pi * (state.hour0 + state.t * self.dt_s / 3600.0) / 24.0
        tripped = ((state.t > state.trip_step) & (state.trip_step >= 0)).astype(self.dtype)
        tail = jnp.stack([jnp.sin(hour), jnp.cos(hour), state.t / self.episode_steps, tripped,
                          tripped * state.trip_machine, df_coi / F_SCALE_HZ, state.rocof_hz_s / F_SCALE_HZ,
                          jnp.sum(self._load_dev_mw(params, state)) / P_SCALE_MW])
        return jnp.concatenate([f0 * state.dw_bus_pu / F_SCALE_HZ, state.p_mw / params.cap_mw,
                                ren / RENEWABLE_CAP_MW, loads / P_SCALE_MW, tail]).astype(self.dtype)

    # ------------------------------------------------------------------ reset / step

    def check_param_values(self, params: FreqParams) -> None:
        """The frequency band around the nominal frequency; contingency steps within the episode."""
        lo, hi, f0 = float(params.f_low_hz), float(params.f_high_hz), float(params.plant.f0_hz)
        if not lo < f0 < hi:
            raise InputError(f"params.f_low_hz, params.f_high_hz: expected f_low_hz < f0_hz ({f0}) < f_high_hz, "
                             f"got {lo} and {hi}")
        first, last = int(params.trip_first), int(params.trip_last)
        if not 0 <= first <= last:
            raise InputError(f"params.trip_first, params.trip_last: expected 0 <= trip_first <= trip_last "
                             f"(steps), got {first} and {last}")

    def check_step(self, key, state, actions, params) -> None:
        """The key, `state` (a `FreqEnvState`), `actions [20, 1]` (real) and `params` (`check_params`)."""
        checks.check_key("key", key)
        self.check_params(params)
        checks.check_real_array("actions", actions, (self.num_agents, self.act_dim))
        if not isinstance(state, FreqEnvState):
            raise InputError(f"state: expected a FreqEnvState from reset, got {type(state).__name__}")

    def reset_env(self, key, params: FreqParams):
        """A new episode: stationary load / renewable deviations, a contingency drawn, obs buffer filled."""
        checks.check_key("key", key)
        self.check_params(params)
        if self.split == "test":
            key = jax.random.fold_in(key, 7919)  # test episodes: a key stream apart from training's
        dt = self.dtype
        ks = jax.random.split(key, 9)
        n_load = params.load_bus.shape[0]
        u = params.load_sigma / jnp.sqrt(1 - params.load_rho ** 2) * jax.random.normal(ks[0], (n_load,), dt)
        g = params.common_sigma / jnp.sqrt(1 - params.common_rho ** 2) * jax.random.normal(ks[1], (), dt)
        base = jax.random.uniform(ks[2], (N_RENEWABLE,), dt, 0.3, 0.7)
        ren_x = params.renewable_sigma / jnp.sqrt(1 - params.renewable_rho ** 2) * \
            jax.random.normal(ks[3], (N_RENEWABLE,), dt)
        has_trip = jax.random.uniform(ks[4]) < params.p_contingency
        trip_step = jnp.where(has_trip, jax.random.randint(ks[5], (), params.trip_first, params.trip_last + 1), -1)
        machine = jax.random.uniform(ks[6]) < params.p_machine_trip
        n_topo = params.topo_branch_on.shape[0]
        i_m = params.n_branch_trips + 1 + jax.random.randint(ks[7], (), 0, n_topo - 1 - params.n_branch_trips)
        i_b = 1 + jax.random.randint(ks[7], (), 0, params.n_branch_trips)
        n_bus = params.plant.load_damping_pu.shape[0]
        state = FreqEnvState(
            t=jnp.asarray(0, jnp.int32), hour0=jax.random.uniform(ks[8], (), dt, 0.0, 24.0),
            x=dyn.zero_state(params.plant), p_mw=jnp.zeros(self.num_agents, dt), load_u=u, load_g=g,
            ren_base=base, ren_x=ren_x, ren0_mw=self._renewable_mw(params, base, ren_x),
            load0_mw=params.load_p0_mw * (g + u),
            trip_step=trip_step.astype(jnp.int32), trip_machine=machine,
            trip_topo=jnp.where(machine, i_m, i_b).astype(jnp.int32), dw_bus_pu=jnp.zeros(n_bus, dt),
            rocof_hz_s=jnp.zeros((), dt), obs_buf=jnp.zeros((self.scada_delay + 1, self.num_agents, 15), dt))
        obs = self.current_obs(state, params)
        state = state.replace(obs_buf=jnp.broadcast_to(obs, state.obs_buf.shape))
        return obs, state

    def step_env(self, key, state: FreqEnvState, actions, params: FreqParams):
        """One agent step of `n_sub` physics sub-steps, without auto-reset."""
        self.check_step(key, state, actions, params)
        dt, plant = self.dtype, params.plant
        a = jnp.asarray(actions, dt)[:, 0]
        nan = jnp.isnan(a)
        a = jnp.clip(jnp.where(nan, 0.0, a), -1.0, 1.0)
        p_new = jnp.clip(state.p_mw + a * params.ramp_mw_min * self.dt_s / 60.0, -params.cap_mw, params.cap_mw)
        dp_agent = p_new - state.p_mw

        # stochastic inputs of this step (held over its sub-steps)
        k_u, k_g, k_r = jax.random.split(key, 3)
        n_load = params.load_bus.shape[0]
        u = params.load_rho * state.load_u + params.load_sigma * jax.random.normal(k_u, (n_load,), dt)
        g = params.common_rho * state.load_g + params.common_sigma * jax.random.normal(k_g, (), dt)
        ren_x = params.renewable_rho * state.ren_x + params.renewable_sigma * jax.random.normal(k_r, (N_RENEWABLE,), dt)
        st = state.replace(load_u=u, load_g=g, ren_x=ren_x)
        n_bus = plant.load_damping_pu.shape[0]
        s_base = self.system.s_base_mva
        dp_static_mw = (jax.ops.segment_sum(self._renewable_mw(params, st.ren_base, ren_x) - state.ren0_mw,
                                            params.renewable_bus, n_bus)
                        - jax.ops.segment_sum(self._load_dev_mw(params, st) - state.load0_mw,
                                              params.load_bus, n_bus))
        topo = self.topology(state, params, state.t)
        disc = jax.tree.map(lambda x: x[self.topology_index(state, state.t)], params.table)
        dp_static = dp_static_mw / s_base + dyn.lost_injection(plant, topo, n_bus)
        frac = (jnp.arange(self.n_sub, dtype=dt) + 0.5) / self.n_sub
        p_sub = state.p_mw[None, :] + frac[:, None] * dp_agent[None, :]  # [n_sub, 20]
        s_agent = disc.red.s[params.agent_bus]  # [20, n_m]
        w_seq = (disc.red.s.T @ dp_static)[None, :] + (p_sub / s_base) @ s_agent
        x, tr = dyn.simulate(disc, state.x, w_seq)
        x = dyn.recentre(plant, topo, x)

        f0 = plant.f0_hz
        f_bus = f0 * (1.0 + tr.dw_bus_pu)  # [n_sub, n_bus]
        outside = (f_bus < params.f_low_hz) | (f_bus > params.f_high_hz)
        violations = jnp.sum(jnp.any(outside, axis=0)).astype(dt)
        rocof_coi = f0 * dyn.coi_speed(plant, topo, tr.rocof_pu_s)  # [n_sub] Hz/s
        freq_pen = jnp.mean(jnp.sum((f_bus - f0) ** 2, axis=1))
        cost = jnp.sum(params.cost_per_mw * jnp.abs(dp_agent)) + params.w_wear * jnp.sum(params.wear * dp_agent ** 2)
        shared = -params.reward_scale * (params.w_freq * freq_pen + cost + params.w_violation * violations)
        reward = jnp.full((self.num_agents,), shared, dt)

        rocof_end = f0 * dyn.coi_speed(plant, topo, dyn.derivative(disc, x, w_seq[-1]).dw_pu)
        new = st.replace(t=state.t + 1, x=x, p_mw=p_new, dw_bus_pu=tr.dw_bus_pu[-1], rocof_hz_s=rocof_end)
        buf = jnp.concatenate([state.obs_buf[1:], self.current_obs(new, params)[None]])
        new = new.replace(obs_buf=buf)
        info = {"f_min_hz": jnp.min(f_bus), "f_max_hz": jnp.max(f_bus),
                "f_coi_hz": f0 * (1 + dyn.coi_speed(plant, topo, x.dw_pu)),
                "rocof_hz_s": jnp.max(jnp.abs(rocof_coi)),
                "outside_band_s": jnp.sum(jnp.any(outside, axis=1)).astype(dt) * self.substep_s,
                "violations": violations, "in_band": (violations == 0).astype(dt),
                "effort_mw": jnp.sum(jnp.abs(dp_agent)), "cost": cost, "safety": violations, "freq_penalty": params.w_freq * freq_pen,
                "tripped": (state.t >= state.trip_step).astype(dt) * (state.trip_step >= 0),
                "nan_actions": jnp.sum(nan).astype(jnp.int32)}
        truncated = new.t >= self.episode_steps
        return self.get_obs(new), new, reward, jnp.zeros((), bool), truncated, info


def make(**kwargs) -> FrequencyEnv:
    """`FrequencyEnv(**kwargs)`: `dtype`, `split`, `episode_steps`, `dt_s`, `substep_s`, `scada_delay`,
    `plant_config` (an `ieee68.PlantConfig` or a mapping of some of its fields, e.g. from YAML)."""
    plant = kwargs.get("plant_config")
    if isinstance(plant, dict):
        unknown = sorted(set(plant) - set(ieee68.PlantConfig._fields))
        if unknown:
            raise InputError(f"plant_config: unknown field(s) {unknown}; expected some of {list(ieee68.PlantConfig._fields)}")
        kwargs["plant_config"] = ieee68.PlantConfig(**{k: float(v) for k, v in plant.items()})
    return FrequencyEnv(**kwargs)

"""The functional multi-agent environment (gymnax / JaxMARL conventions).

    env = pgjax.make("multi_microgrid")           # or a YAML path, plus overrides
    params = env.default_params
    obs, state = env.reset(key, params)           # obs [n_agents, obs_dim]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, params)

Agents sit on a leading axis. `actions [n_agents, act_dim]` in [-1, 1], padded where agents
control fewer action dimensions (`env.action_mask`); values outside are clipped and NaN is
replaced by the device's safe default (counted in `info["nan_actions"]`). `reward
[n_agents]`; `terminated` is always False, `truncated` True at the end of an episode, and
the environment then resets itself (the last observation is in `info["final_observation"]`).

One step (all pure `jnp`, one Python loop over device *types*, none over devices, agents
or environments):
  0 timing (tick hold, action delay) and protocols (`pgjax.coordination`): messages from
    parents and peers through the channel; fixed microgrid controllers turn a received
    setpoint or price into device actions (`pgjax.dispatch`); ADMM / P2P among microgrids
  1 actions -> per-device actions (learned agents; others run their fixed default policy)
  2 decode to feasible setpoints, device dynamics, grid changes (taps, shunts)
  3 bus injections = grid loads / sgens scaled by profiles + segment_sum of device setpoints
  4 AC power flow (`pgjax.powerflow.solve`, the scenario's method)
  5 cost ($) and safety (violation magnitudes) per device, bus and branch, summed per agent
  6 reward = -(cost + penalty * safety) * scale, per agent or shared
  7 observations: global features (device observations, bus voltages, time, price and
    profile values, message features per grid agent); an agent sees all of them
    (`centralized`) or its own devices, buses and messages (then the observation delay).
A power flow that does not converge keeps the last voltages and zero flows for the step:
`info["nonconverged"]` is 1 and the step is penalized, nothing becomes inf or NaN.

Cost and safety are attributed to learned agents: a learned agent's own items to itself,
items of a fixed agent split equally among the learned agents below it (else its nearest
learned ancestor, else all learned agents), so the per-agent sums add up to the totals.
At reset the voltages observed are the nominal setpoints (no power flow is run).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import coordination, dispatch
from pgjax import devices as dev
from pgjax.devices import pcc as pcc_device
from pgjax.devices.base import Context
from pgjax.grid import Grid, astype
from pgjax.powerflow import bus_injections, check_method, network, solve
from pgjax.powerflow.tree import FeederTree, tree_of
from pgjax.scenario import Compiled, compile_scenario

N_TIME_FEATURES = 4  # price / 100, sin and cos of the hour of day, episode progress
# Power-flow methods started from the previous step's voltages (`powerflow.solve(init=...)`).
WARM_START_METHODS = ("newton", "distflow")


@struct.dataclass
class EnvParams:
    """Everything numeric a step reads; replace fields to vary scenarios without retracing."""

    grid: Grid
    devices: dict  # type name -> that type's Params, arrays [n_type]
    profiles: jax.Array  # [n_steps, n_series]
    load_series: jax.Array  # [n_load] int, -1: constant
    sgen_series: jax.Array  # [n_sgen] int
    starts: jax.Array  # [n_starts] int, allowed episode starts
    hour0: jax.Array  # [] hour of day of profile step 0
    flat_price: jax.Array  # [] $/MWh when the scenario has no price series
    dt_h: jax.Array
    load_scale: jax.Array
    vm_min_pu: jax.Array
    vm_max_pu: jax.Array
    loading_max_percent: jax.Array
    penalty: jax.Array
    reward_scale: jax.Array
    tree: FeederTree | None = None  # the grid's feeder tree (`distflow`), from its topology


@struct.dataclass
class EnvState:
    t: jax.Array  # [] int, steps taken in this episode
    start: jax.Array  # [] int, profile step of the episode's first step
    devices: dict  # type name -> that type's State
    vm_pu: jax.Array  # [n_bus] voltage magnitudes of the last power flow
    va_deg: jax.Array  # [n_bus] voltage angles of the last power flow (the next one's warm start)
    coord: coordination.CoordState  # channels, timing and message features


@dataclasses.dataclass(frozen=True)
class Box:
    """A continuous space: `shape`, bounds and dtype (gymnax-style)."""

    low: float
    high: float
    shape: tuple
    dtype: Any


@dataclasses.dataclass
class _Group:
    """Static layout of one device type (host-side numpy)."""

    type: str
    names: tuple
    n: int
    controller: np.ndarray  # [n] learned agent index, -1: fixed policy
    offset: np.ndarray  # [n] first action column in the controller's action vector
    account: np.ndarray  # [n, n_agents] share of the device's cost/safety per agent
    obs_start: int  # first index of this group's features in the global feature vector


def _accounts(c: Compiled, learned_tree: list[int | None], device_agent_nodes: list[int]) -> np.ndarray:
    """`[n_tree, n_agents]`: how each tree agent's cost and safety is split among learned agents."""
    n_tree, n_agents = len(c.tree_ids), len(learned_tree)
    children = {i: [j for j in range(n_tree) if c.tree_parent[j] == i] for i in range(n_tree)}

    def subtree(i):
        out = [i]
        for j in children[i]:
            out += subtree(j)
        return out

    w = np.zeros((n_tree, n_agents))
    for i in range(n_tree):
        mine = [a for a, node in enumerate(learned_tree) if node == i]
        below = [a for a, node in enumerate(device_agent_nodes) if node in subtree(i)]
        if not mine and not below:
            k = c.tree_parent[i]
            while k >= 0 and not [a for a, node in enumerate(learned_tree) if node == k]:
                k = c.tree_parent[k]
            below = [a for a, node in enumerate(learned_tree) if node == k] if k >= 0 else list(range(n_agents))
        for a in mine or below:
            w[i, a] = 1.0 / len(mine or below)
    return w


def scaled_grid(params: EnvParams, ctx: Context, grid: Grid) -> Grid:
    """`grid` with its loads and static generators scaled by the step's profile values."""
    load_f = jnp.where(params.load_series >= 0, ctx.series[jnp.maximum(params.load_series, 0)], 1.0)
    sgen_f = jnp.where(params.sgen_series >= 0, ctx.series[jnp.maximum(params.sgen_series, 0)], 1.0)
    return grid.replace(
        load=grid.load.replace(p_mw=grid.load.p_mw * load_f * params.load_scale,
                               q_mvar=grid.load.q_mvar * load_f * params.load_scale),
        sgen=grid.sgen.replace(p_mw=grid.sgen.p_mw * sgen_f, q_mvar=grid.sgen.q_mvar * sgen_f))


class Env:
    """A compiled scenario as a functional multi-agent environment (see the module docstring)."""

    def __init__(self, compiled: Compiled):
        c = self.compiled = compiled
        self.name = c.name
        self.dtype = jnp.float32 if c.dtype == "float32" else jnp.float64
        self.method, self.jacobian, self.max_iter = c.method, c.jacobian, c.max_iter
        self.episode_steps = c.episode_steps
        self.centralized, self.shared_reward = c.centralized, c.shared
        self.price_col = c.price_col
        check_method(c.grid, c.method)
        n_bus = c.grid.n_bus

        # learned agents
        if c.learned == "device":
            agents, learned_tree, node_of_agent = [], [], []
            for g in c.groups:
                if dev.get(g.type).act_dim:
                    for name, owner in zip(g.names, g.owner):
                        agents.append(name)
                        learned_tree.append(None)
                        node_of_agent.append(int(owner))
        else:
            idx = [i for i, lv in enumerate(c.tree_level) if lv == c.learned]
            agents = [c.tree_ids[i] for i in idx]
            learned_tree, node_of_agent = list(idx), list(idx)
        if not agents:
            raise ValueError(f"scenario '{c.name}': no agent at the learned level '{c.learned}'")
        self.agents = tuple(agents)
        self.num_agents = len(agents)
        w_tree = _accounts(c, learned_tree, node_of_agent)

        self.grid_nodes = [i for i, lv in enumerate(c.tree_level) if lv == "grid"]
        proto = c.raw.get("protocol", {})
        vertical = proto.get("vertical", "none")
        # fixed grid agents under a learned parent follow the vertical protocol's messages
        tracked = [vertical != "none" and c.tree_parent[k] >= 0 and c.tree_parent[k] in learned_tree
                   and k not in learned_tree for k in self.grid_nodes]
        tracked_nodes = {k for k, tr in zip(self.grid_nodes, tracked) if tr}

        def controller_of(node):
            k = node
            while k >= 0 and k not in tracked_nodes:
                if k in learned_tree:
                    return learned_tree.index(k)
                k = c.tree_parent[k]
            return -1

        # actions: per-device controller and column offset
        used = np.zeros(self.num_agents, np.int64)
        self.groups: list[_Group] = []
        obs_pos = 0
        for g in c.groups:
            t = dev.get(g.type)
            ctrl = np.full(len(g.names), -1, np.int64)
            off = np.zeros(len(g.names), np.int64)
            account = w_tree[g.owner].copy()
            for k, (name, owner) in enumerate(zip(g.names, g.owner)):
                a = self.agents.index(name) if (c.learned == "device" and t.act_dim) else controller_of(int(owner))
                if c.learned == "device" and t.act_dim:
                    account[k] = np.eye(self.num_agents)[a]
                if a >= 0 and t.act_dim:
                    ctrl[k], off[k] = a, used[a]
                    used[a] += t.act_dim
            self.groups.append(_Group(g.type, g.names, len(g.names), ctrl, off, account, obs_pos))
            obs_pos += len(g.names) * t.obs_dim
        parent_agent = np.full(len(self.grid_nodes), -1, np.int64)
        parent_col = np.zeros(len(self.grid_nodes), np.int64)
        for i, k in enumerate(self.grid_nodes):
            if tracked[i]:
                parent_agent[i] = learned_tree.index(int(c.tree_parent[k]))
                parent_col[i] = used[parent_agent[i]]
                used[parent_agent[i]] += 1
        grid_index = {k: i for i, k in enumerate(self.grid_nodes)}
        self.tracked_of = {g.type: np.array([grid_index.get(int(o), -1) if int(o) in tracked_nodes else -1
                                             for o in cg.owner], np.int64)
                           for g, cg in zip(self.groups, c.groups)}
        self.dispatch_types = [self.groups[i].type for i in dispatch.dispatchable([g.type for g in self.groups])
                               if (self.tracked_of[self.groups[i].type] >= 0).any()]
        self.act_sizes = tuple(int(u) for u in used)
        self.act_dim = max(1, max(self.act_sizes))
        self.action_mask = np.arange(self.act_dim)[None, :] < np.asarray(used)[:, None]
        default = np.zeros((self.num_agents, self.act_dim))
        for grp in self.groups:
            t = dev.get(grp.type)
            for k in range(grp.n):
                if grp.controller[k] >= 0:
                    default[grp.controller[k], grp.offset[k]:grp.offset[k] + t.act_dim] = t.default_action
        self.default_actions = default

        # cost / safety attribution of buses and branches
        self.bus_account = w_tree[c.bus_owner]  # [n_bus, n_agents]
        self.grid_account = w_tree[self.grid_nodes].reshape(len(self.grid_nodes), self.num_agents)
        to_bus = np.asarray(c.grid.branch.to_bus)
        self.branch_account = self.bus_account[to_bus]
        self.bus_grid_onehot = (c.bus_owner[:, None] == np.asarray(self.grid_nodes)[None, :]).astype(float)

        self.coordinator = coordination.Coordinator(
            coordination.build_layout(c, self.grid_nodes, tracked, parent_agent, parent_col, self.agents), self.dtype)
        self.pcc_grid = self._pcc_grid()
        gens = next((g for g in c.groups if g.type == "generator"), None)
        self.gen_of_grid = np.array([np.flatnonzero(gens.owner == k)[0] if gens is not None and (gens.owner == k).any()
                                     else -1 for k in self.grid_nodes], np.int64)
        self.admm_dispatched = np.isin(np.arange(len(gens.names) if gens is not None else 0), self.gen_of_grid)

        # observation layout:
        # [device features | (vm - 1) / 0.05 per bus | time | profiles | message features per grid agent]
        self.n_series = c.profiles.shape[1]
        vm_start = obs_pos
        time_start = vm_start + n_bus
        msg_start = time_start + N_TIME_FEATURES + self.n_series
        self.vm_start, self.time_start, self.msg_start = vm_start, time_start, msg_start  # global feature offsets
        n_msg = self.coordinator.n_features
        self.n_features = msg_start + len(self.grid_nodes) * n_msg
        global_idx = list(range(time_start, msg_start))
        local = []
        for a in range(self.num_agents):
            idx = []
            for grp in self.groups:
                t = dev.get(grp.type)
                for k in range(grp.n):
                    owner = int(c.groups[self.groups.index(grp)].owner[k])
                    mine = grp.controller[k] == a or (c.learned != "device" and (
                        owner == node_of_agent[a] or (owner in tracked_nodes and c.tree_parent[owner] == node_of_agent[a])))
                    if mine:
                        idx += list(range(grp.obs_start + k * t.obs_dim, grp.obs_start + (k + 1) * t.obs_dim))
            if c.learned == "device":
                grp, k = next((g, list(g.names).index(self.agents[a])) for g in self.groups if self.agents[a] in g.names)
                buses = [int(np.asarray(c.groups[self.groups.index(grp)].params.bus)[k])]
            else:
                buses = list(np.flatnonzero(c.bus_owner == node_of_agent[a]))
            idx += [vm_start + b for b in buses] + global_idx
            my_grids = [i for i, k in enumerate(self.grid_nodes)
                        if k == node_of_agent[a] or (tracked[i] and c.tree_parent[k] == node_of_agent[a])]
            for i in my_grids:
                idx += list(range(msg_start + i * n_msg, msg_start + (i + 1) * n_msg))
            local.append(idx)
        if self.centralized:
            local = [list(range(self.n_features))] * self.num_agents
        self.obs_sizes = tuple(len(ix) for ix in local)
        self.obs_dim = max(self.obs_sizes)
        self.obs_index = np.full((self.num_agents, self.obs_dim), -1, np.int64)
        for a, ix in enumerate(local):
            self.obs_index[a, :len(ix)] = ix
        self.default_params = self._make_params()

    def _pcc_grid(self) -> np.ndarray:
        """`[n_pcc]` grid-agent index owning each PCC device (-1: none)."""
        cg = next((g for g in self.compiled.groups if g.type == "pcc"), None)
        if cg is None:
            return np.zeros(0, np.int64)
        pos = {k: i for i, k in enumerate(self.grid_nodes)}
        return np.array([pos.get(int(o), -1) for o in cg.owner], np.int64)

    def _grid_imports(self, import_mw) -> jax.Array:
        """Import per grid agent `[n_grid]` (MW) from the PCC devices' imports `[n_pcc]`."""
        n = len(self.grid_nodes)
        if not len(self.pcc_grid):
            return jnp.zeros(n, self.dtype)
        seg = jnp.asarray(np.where(self.pcc_grid >= 0, self.pcc_grid, n))
        return jax.ops.segment_sum(import_mw, seg, n + 1)[:n]

    # ------------------------------------------------------------------ params / spaces

    def _make_params(self) -> EnvParams:
        c, dt = self.compiled, self.dtype
        f = lambda x: jnp.asarray(x, dt)  # noqa: E731
        devices = {}
        for g in c.groups:
            devices[g.type] = jax.tree.map(
                lambda x: jnp.asarray(x, dt) if np.issubdtype(np.asarray(x).dtype, np.floating) else jnp.asarray(x),
                g.params)
        return EnvParams(
            grid=astype(c.grid, dt), devices=devices, profiles=f(c.profiles),
            load_series=jnp.asarray(c.load_series), sgen_series=jnp.asarray(c.sgen_series),
            starts=jnp.asarray(c.starts), hour0=f(c.hour0), flat_price=f(c.flat_price), dt_h=f(c.dt_h),
            load_scale=f(c.load_scale), vm_min_pu=f(c.vm_min_pu), vm_max_pu=f(c.vm_max_pu),
            loading_max_percent=f(c.loading_max_percent), penalty=f(c.penalty),
            reward_scale=f(c.reward_scale), tree=tree_of(c.grid) if self.method == "distflow" else None)

    def observation_space(self, agent: str | int = 0) -> Box:
        a = self.agents.index(agent) if isinstance(agent, str) else agent
        return Box(-np.inf, np.inf, (self.obs_sizes[a],), self.dtype)

    def action_space(self, agent: str | int = 0) -> Box:
        a = self.agents.index(agent) if isinstance(agent, str) else agent
        return Box(-1.0, 1.0, (self.act_sizes[a],), self.dtype)

    # ------------------------------------------------------------------------- pieces

    def _context(self, t_abs, params: EnvParams, vm_pu) -> Context:
        n = params.profiles.shape[0]
        series = params.profiles[jnp.clip(t_abs, 0, n - 1)]
        price = series[self.price_col] if self.price_col >= 0 else params.flat_price
        hour = jnp.mod(params.hour0 + t_abs * params.dt_h, 24.0)
        return Context(dt_h=params.dt_h, hour=hour, price=price, series=series, vm_pu=vm_pu)

    def _features(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Global feature vector `[n_features]` (the world state)."""
        ctx = self._context(state.start + state.t, params, state.vm_pu)
        parts = []
        for g in self.groups:
            t = dev.get(g.type)
            parts.append(t.observe(params.devices[g.type], state.devices[g.type], ctx).reshape(-1))
        hour_angle = 2 * jnp.pi * ctx.hour / 24.0
        time = jnp.stack([ctx.price / 100.0, jnp.sin(hour_angle), jnp.cos(hour_angle),
                          state.t / self.episode_steps]).astype(self.dtype)
        parts += [(state.vm_pu - 1.0) / 0.05, time, ctx.series, state.coord.features.reshape(-1)]
        return jnp.concatenate([p.astype(self.dtype) for p in parts])

    def world_state(self, state: EnvState, params: EnvParams | None = None) -> jax.Array:
        """Global state `[n_features]` for centralized critics (vmaps over a batch of states)."""
        return self._features(state, self.default_params if params is None else params)

    def get_obs(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Observations `[n_agents, obs_dim]`, zero-padded."""
        feats = self._features(state, params)
        idx = jnp.asarray(self.obs_index)
        return jnp.where(idx >= 0, feats[jnp.maximum(idx, 0)], 0.0)

    def _device_actions(self, g: _Group, actions, params: EnvParams, state: EnvState, ctx) -> jax.Array:
        t = dev.get(g.type)
        if t.rule is not None and t.act_dim and (g.controller < 0).any():
            default = t.rule(params.devices[g.type], state.devices[g.type], ctx).astype(actions.dtype)
        else:
            default = jnp.broadcast_to(jnp.asarray(t.default_action, actions.dtype), (g.n, t.act_dim))
        if t.act_dim == 0 or not (g.controller >= 0).any():
            return default
        ctrl = jnp.asarray(np.maximum(g.controller, 0))
        cols = jnp.asarray(g.offset[:, None] + np.arange(t.act_dim)[None, :])
        return jnp.where(jnp.asarray(g.controller >= 0)[:, None], actions[ctrl[:, None], cols], default)

    # ------------------------------------------------------------------ reset / step

    def reset_env(self, key, params: EnvParams):
        """A new episode: random start among `params.starts`, device states from `init`."""
        k_start, k_dev = jax.random.split(key)
        start = params.starts[jax.random.randint(k_start, (), 0, params.starts.shape[0])]
        keys = jax.random.split(k_dev, max(len(self.groups), 1))
        states = {g.type: dev.get(g.type).init(params.devices[g.type], keys[i]) for i, g in enumerate(self.groups)}
        vm, va = network.setpoints(params.grid)
        on = network.energized(params.grid)
        dummy_obs = jnp.zeros((self.num_agents, self.obs_dim), self.dtype)
        coord = self.coordinator.init(self.default_actions, dummy_obs)
        state = EnvState(t=jnp.asarray(0, jnp.int32), start=start.astype(jnp.int32), devices=states,
                         vm_pu=jnp.where(on, vm, 0.0).astype(self.dtype),
                         va_deg=jnp.where(on, jnp.rad2deg(va), 0.0).astype(self.dtype), coord=coord)
        obs = self.get_obs(state, params)
        state = state.replace(coord=self.coordinator.init(self.default_actions, obs))
        return obs, state

    def reset(self, key, params: EnvParams | None = None):
        return self.reset_env(key, self.default_params if params is None else params)

    def step_env(self, key, state: EnvState, actions, params: EnvParams):
        """One step without auto-reset."""
        dt = self.dtype
        actions = jnp.asarray(actions, dt)
        mask = jnp.asarray(self.action_mask)
        is_nan = jnp.isnan(actions)
        nan_actions = jnp.sum(is_nan & mask)
        actions = jnp.clip(jnp.where(is_nan, jnp.asarray(self.default_actions, dt), actions), -1.0, 1.0)
        coord_ = self.coordinator
        actions, cs = coord_.act_timing(state.coord, actions)
        k_vertical, k_horizontal = jax.random.split(key)

        ctx = self._context(state.start + state.t, params, state.vm_pu)
        grid = scaled_grid(params, ctx, params.grid)
        p_bus, q_bus = bus_injections(grid)
        n_bus, n_grid = grid.n_bus, len(self.grid_nodes)
        pcc_params = params.devices.get("pcc")
        received, h_out, n_sent = jnp.zeros(n_grid, dt), {}, jnp.zeros((), jnp.int32)
        import_last = self._grid_imports(state.devices["pcc"].import_mw) if pcc_params is not None else \
            jnp.zeros(n_grid, dt)
        if coord_.layout.vertical != "none":
            received, sent, cs = coord_.vertical(cs, k_vertical, actions, ctx.price)
            n_sent = n_sent + sent
        if coord_.layout.horizontal == "admm_dispatch":
            gp, gs = params.devices["generator"], state.devices["generator"]
            p_gen, admm_price, residual, sent, cs = coord_.admm_dispatch(cs, import_last, ctx.price, gp, gs, ctx,
                                                                         self.gen_of_grid)
            h_out = {"p_mw": p_gen, "price": admm_price, "residual": residual}
            n_sent = n_sent + sent
            target = jnp.zeros(gp.p_max_mw.shape, dt).at[jnp.asarray(np.maximum(self.gen_of_grid, 0))].set(p_gen)
            admm_act = dev.get("generator").dispatch.p_action(gp, gs, ctx, target)
        elif coord_.layout.horizontal != "none":
            h_out, sent, cs = coord_.horizontal(cs, k_horizontal, import_last, ctx.price, pcc_params)
            n_sent = n_sent + sent
        tracked = {}
        if self.dispatch_types:
            net_load = -(p_bus @ jnp.asarray(self.bus_grid_onehot, dt))
            tracked = coord_.grid_actions(received, net_load, self.dispatch_types, params.devices, state.devices,
                                          ctx, {t: jnp.asarray(self.tracked_of[t]) for t in self.dispatch_types})
        setpoints, new_states = {}, {}
        for g in self.groups:
            t = dev.get(g.type)
            prm, st = params.devices[g.type], state.devices[g.type]
            act = self._device_actions(g, actions, params, state, ctx)
            if g.type in tracked:
                act = jnp.where(jnp.asarray(self.tracked_of[g.type] >= 0)[:, None], tracked[g.type].astype(dt), act)
            if g.type == "generator" and coord_.layout.horizontal == "admm_dispatch":
                act = act.at[:, :2].set(jnp.where(jnp.asarray(self.admm_dispatched)[:, None], admm_act[:, :2].astype(dt),
                                                  act[:, :2]))
            sp = t.decode(prm, st, act, ctx)
            ns = t.dynamics(prm, st, sp, ctx)
            if t.apply_to_grid is not None:
                grid = t.apply_to_grid(prm, ns, grid)
            p_bus = p_bus + jax.ops.segment_sum(sp.p_mw, prm.bus, n_bus)
            q_bus = q_bus + jax.ops.segment_sum(sp.q_mvar, prm.bus, n_bus)
            setpoints[g.type], new_states[g.type] = sp, ns
        warm = (state.vm_pu, state.va_deg) if self.method in WARM_START_METHODS else None
        pf = solve(grid, p_bus, q_bus, method=self.method, max_iter=self.max_iter, jacobian=self.jacobian,
                   init=warm, tree=params.tree)
        # a power flow that did not converge keeps the last voltages and zero flows: it is
        # reported (`info["nonconverged"]`) and penalized, never passed on as inf / NaN
        ok = jnp.all(jnp.isfinite(pf.vm_pu)) & (pf.converged | (self.method == "lindistflow"))
        pf = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x))
                          if jnp.issubdtype(x.dtype, jnp.floating) else x, pf)
        pf = pf.replace(vm_pu=jnp.where(ok, pf.vm_pu, state.vm_pu.astype(pf.vm_pu.dtype)),
                        va_deg=jnp.where(ok, pf.va_deg, state.va_deg.astype(pf.va_deg.dtype)))
        ctx = ctx.replace(pf=pf)

        n_agents = self.num_agents
        cost = jnp.zeros(n_agents, dt)
        dev_safety = jnp.zeros(n_agents, dt)
        totals: dict[str, jax.Array] = {}
        cost_total = jnp.zeros((), dt)
        for g in self.groups:
            t = dev.get(g.type)
            prm, st, sp = params.devices[g.type], state.devices[g.type], setpoints[g.type]
            c_dev = t.cost(prm, st, sp, ctx)
            s_dev = t.safety(prm, st, sp, ctx)
            acc = jnp.asarray(g.account, dt)
            cost = cost + c_dev @ acc
            dev_safety = dev_safety + s_dev @ acc
            cost_total = cost_total + jnp.sum(c_dev)
            for k, v in t.metrics(prm, st, sp, ctx).items():
                totals[k] = totals.get(k, 0.0) + jnp.sum(v)
            new_states[g.type] = t.measure(prm, new_states[g.type], ctx)

        import_now = self._grid_imports(pcc_device.exchange(pcc_params, pf)) if pcc_params is not None else \
            jnp.zeros(n_grid, dt)
        if coord_.layout.horizontal == "p2p_trading" and pcc_params is not None:
            adjust = coord_.settle(h_out, import_now, ctx.price, params.dt_h, pcc_params)
            cost = cost + adjust @ jnp.asarray(self.grid_account, dt)
            cost_total = cost_total + jnp.sum(adjust)
        cs = cs.replace(features=coord_.features(received, h_out))

        on = network.energized(grid)
        vm = pf.vm_pu
        v_excess = jnp.where(on, jnp.maximum(params.vm_min_pu - vm, 0) + jnp.maximum(vm - params.vm_max_pu, 0), 0)
        l_excess = jnp.maximum(jnp.nan_to_num(pf.loading_percent, posinf=0.0) - params.loading_max_percent, 0) / 100
        v_safety = v_excess @ jnp.asarray(self.bus_account, dt)
        l_safety = l_excess @ jnp.asarray(self.branch_account, dt)
        nonconv = 1.0 - pf.converged.astype(dt)
        safety = v_safety + l_safety + dev_safety + nonconv
        reward_each = -(cost + params.penalty * safety) * params.reward_scale
        total = -(jnp.sum(cost) + params.penalty * jnp.sum(safety)) * params.reward_scale
        reward = jnp.full(n_agents, total, dt) if self.shared_reward else reward_each

        n_on = jnp.maximum(jnp.sum(on), 1)
        v_viol = on & (v_excess > 0)
        slack = jnp.sum(jnp.where(params.grid.ext_grid.in_service, pf.slack_p_mw, 0))
        net_load = -(p_bus @ jnp.asarray(self.bus_grid_onehot, dt)) if self.grid_nodes else jnp.zeros(1, dt)
        info = {
            "cost": cost, "safety": safety, "cost_total": cost_total,
            "safety_voltage": jnp.sum(v_excess), "safety_loading": jnp.sum(l_excess),
            "safety_devices": jnp.sum(dev_safety), "nonconverged": nonconv, "pf_iterations": pf.iterations,
            "losses_mw": pf.p_loss_mw, "voltage_violation_rate": jnp.sum(v_viol) / n_on,
            "vm_min_pu": jnp.min(jnp.where(on, vm, jnp.inf)), "vm_max_pu": jnp.max(jnp.where(on, vm, -jnp.inf)),
            "controllable": ((jnp.sum(v_viol) == 0) & (jnp.sum(l_excess) == 0) & pf.converged).astype(dt),
            "curtailment_mwh": jnp.asarray(totals.get("curtailment_mwh", 0.0), dt),
            "renewable_mwh": jnp.asarray(totals.get("renewable_mwh", 0.0), dt),
            "reactive_mvarh": jnp.asarray(totals.get("reactive_mvarh", 0.0), dt),  # |Q| of inverters (MAPDN Q cost)
            "import_mwh": jnp.maximum(slack, 0) * params.dt_h, "export_mwh": jnp.maximum(-slack, 0) * params.dt_h,
            "net_load_variance_mw2": jnp.var(net_load),
            "nan_actions": nan_actions, "price": ctx.price,
            "p_injected_mw": jnp.sum(jnp.where(on, p_bus, 0)), "slack_p_mw": slack,
            "messages_sent": n_sent, "grid_import_mw": import_now, "message_received": received,
            "p2p_mw": h_out.get("p2p_mw", jnp.zeros(n_grid, dt)).astype(dt),
            "admm_residual_mw": h_out.get("residual", jnp.zeros((), dt)).astype(dt),
            "p2p_volume_mw": jnp.sum(jnp.maximum(h_out.get("p2p_mw", jnp.zeros(n_grid, dt)), 0)).astype(dt),
        }
        new_state = EnvState(t=state.t + 1, start=state.start, devices=new_states, vm_pu=vm.astype(dt),
                             va_deg=pf.va_deg.astype(dt), coord=cs)
        truncated = new_state.t >= self.episode_steps
        terminated = jnp.zeros((), bool)
        obs, cs = coord_.obs_timing(cs, self.get_obs(new_state, params))
        return obs, new_state.replace(coord=cs), reward, terminated, truncated, info

    def step(self, key, state: EnvState, actions, params: EnvParams | None = None):
        """`step_env`, then reset where the episode ended (JaxMARL-style auto-reset)."""
        params = self.default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, truncated, info = self.step_env(k_step, state, actions, params)
        obs_re, state_re = self.reset_env(k_reset, params)
        done = terminated | truncated
        state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        info["final_observation"] = obs_st
        return obs, state, reward, terminated, truncated, info


def make(name_or_path="multi_microgrid", **overrides) -> Env:
    """An environment for a registered scenario name, a YAML path or a raw mapping.

    Overrides: flat keys such as `dt_h`, `episode_steps`, `split` ("train" / "test"),
    `penalty`, `shared_reward`, `centralized`, `learned`, `method`, `dtype`, or whole sections.
    """
    return Env(compile_scenario(name_or_path, **overrides))

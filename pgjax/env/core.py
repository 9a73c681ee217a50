"""The functional multi-agent environment (gymnax / JaxMARL conventions).

    env = pgjax.make("multi_microgrid")           # or a YAML path, plus overrides
    params = env.default_params
    obs, state = env.reset(key, params)           # obs [n_agents, obs_dim]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, params)

Agents sit on a leading axis. `actions [n_agents, act_dim]` in [-1, 1], padded where agents
control fewer action dimensions (`env.action_mask`); values outside are clipped (counted in
`info["clipped_actions"]`) and NaN is replaced by the device's safe default (counted in
`info["nan_actions"]`). `reward
[n_agents]`; `terminated` is always False, `truncated` True at the end of an episode, and
the environment then resets itself (the last observation is in `info["final_observation"]`).
What an agent observes and controls is named in `env.layout.observation` and
`env.layout.action` (`pgjax.env.types`); nothing outside the schema computes offsets.

One step, each stage a function below (all pure `jnp`, one Python loop over device *types*,
none over devices, agents or environments):
  `_clean_actions`  NaN -> safe default, clip; tick hold and action delay
  `_coordinate`     protocols (`pgjax.protocols.coordination`): messages through the channels, the
                    device actions of tracked children and of joint dispatches
  `_act`            per-device actions -> feasible setpoints, dynamics, grid changes, injections
  `_power_flow`     AC power flow (the scenario's method, warm-started; the grid model's, see
                    `pgjax.env.grid_model`); a power flow that does not converge keeps the
                    last voltages and zero flows for the step: `info["nonconverged"]` is 1 and
                    the step is penalized, never inf / NaN
  `_account`        cost and safety per device, attributed to learned agents (`Layout` accounts)
  `pgjax.env.reward` safety, reward and `info`; then observations (`get_obs`, observation delay)
At reset the voltages observed are the nominal setpoints (no power flow is run).

Inputs are checked at trace time (`pgjax.checks`, no cost under `jit`): the key must be one
PRNG key, `actions` exactly `[n_agents, act_dim]` of a real dtype (no broadcasting, no
complex), `state` an `EnvState` and `params` an `EnvParams` with the structure, shapes and
dtypes of `reset`'s / `default_params`' (the leading dimensions of `profiles` and `starts`
are free); concrete params must also hold finite values and consistent bounds. Anything
else raises `pgjax.errors.InputError` naming the argument, expected and actual. Vmap for
batches: the checks see the unbatched shapes.
"""

from __future__ import annotations

import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np

from pgjax import checks
from pgjax import devices as dev
from pgjax.protocols.coordination import Coordinator
from pgjax.devices.base import Context
from pgjax.env import grid_model as grid_model_lib
from pgjax.env import layout as layout_lib
from pgjax.env.base import MultiAgentEnv
from pgjax.env import reward as reward_lib
from pgjax.env.types import EnvParams, EnvState
from pgjax.errors import InputError
from pgjax.env.grid_model import scaled_grid
from pgjax.precision import require_x64
from pgjax.protocols.coupling import Inputs, grid_imports
from pgjax.scenario import compile_scenario

# Environment families that are not compiled scenarios: name -> "module:factory", imported on
# first use; `make(name, **kwargs)` returns `factory(**kwargs)` (same functional API).
ENV_FAMILIES: dict[str, str] = {"frequency_68bus": "pgjax.frequency.env:make"}

# Power-flow methods started from the previous step's voltages (`powerflow.solve(init=...)`).
WARM_START_METHODS = ("newton", "distflow")

__all__ = ["ENV_FAMILIES", "WARM_START_METHODS", "Env", "make", "scaled_grid"]


class Env(MultiAgentEnv):
    """A compiled scenario as a functional multi-agent environment (see the module docstring).

    `reward_fn(outcome, params, shared) -> [n_agents]` replaces `pgjax.env.reward.default_reward`.
    """

    cost_signals = reward_lib.COST_SIGNALS  # name -> CostSignal: the safety signals a learner may budget
    params_free_leading = (".profiles", ".starts")  # another profile year / other episode starts
    param_ranges = (
        ("dt_h", lambda v: v > 0, "a positive step length in hours"),
        ("vm_min_pu", lambda v: v > 0, "a lower voltage limit > 0 pu"),
        ("loading_max_percent", lambda v: v > 0, "a branch loading limit > 0 %"),
        ("penalty", lambda v: v >= 0, "a safety penalty weight >= 0"),
        ("load_scale", lambda v: v >= 0, "a load scaling factor >= 0"),
        ("reward_scale", lambda v: v > 0, "a reward scale > 0"),
    )

    def __init__(self, scenario, reward_fn=reward_lib.default_reward):
        c = self.scenario = scenario
        self.name = c.name
        if c.dtype == "float64":
            require_x64(f"scenario '{c.name}' with dtype float64")
        self.dtype = jnp.float32 if c.dtype == "float32" else jnp.float64
        self.method, self.jacobian, self.max_iter = c.method, c.jacobian, c.max_iter
        self.episode_steps = c.episode_steps
        self.centralized, self.shared_reward = c.centralized, c.shared
        self.reward_fn = reward_fn
        self.grid_model = grid_model_lib.for_scenario(c)
        self.cost_signals = types.MappingProxyType({**self.cost_signals, **self.grid_model.cost_signals})
        layout = layout_lib.build_layout(c)
        self.coordinator = Coordinator(c, layout, self.dtype)
        self.layout = layout_lib.with_message_scales(layout, self.coordinator.scales)
        self.agents = self.layout.agents
        self.observation_schema, self.action_schema = self.layout.observation, self.layout.action
        self.action_mask, self.default_actions = self.layout.action_mask, self.layout.default_actions
        self.default_params = self.make_params()
        self._checked_params = self.default_params  # the last concrete params whose values were checked
        self._state_spec = None

    # ------------------------------------------------------------------ params / spaces

    def make_params(self) -> EnvParams:
        """The scenario's parameters as arrays of the env's dtype."""
        c, dt = self.scenario, self.dtype
        f = lambda x: jnp.asarray(x, dt)  # noqa: E731
        devices = {g.type: jax.tree.map(lambda x: jnp.asarray(x, dt) if np.issubdtype(np.asarray(x).dtype, np.floating)
                                        else jnp.asarray(x), g.params) for g in c.groups}
        return EnvParams(
            **self.grid_model.params_fields(dt), devices=devices, profiles=f(c.profiles),
            load_series=jnp.asarray(c.load_series), sgen_series=jnp.asarray(c.sgen_series),
            starts=jnp.asarray(c.starts), hour0=f(c.hour0), flat_price=f(c.flat_price), dt_h=f(c.dt_h),
            load_scale=f(c.load_scale), vm_min_pu=f(c.vm_min_pu), vm_max_pu=f(c.vm_max_pu),
            loading_max_percent=f(c.loading_max_percent), penalty=f(c.penalty),
            reward_scale=f(c.reward_scale))

    # ------------------------------------------------------------------ observations

    def context(self, t_abs, params: EnvParams, vm_pu) -> Context:
        """What devices see at absolute profile step `t_abs`: price, hour, profile values, voltages."""
        n = params.profiles.shape[0]
        series = params.profiles[jnp.clip(t_abs, 0, n - 1)]
        price = series[self.scenario.price_col] if self.scenario.price_col >= 0 else params.flat_price
        hour = jnp.mod(params.hour0 + t_abs * params.dt_h, 24.0)
        return Context(dt_h=params.dt_h, hour=hour, price=price, series=series, vm_pu=vm_pu)

    def world_state(self, state: EnvState, params: EnvParams | None = None) -> jax.Array:
        """Global feature vector `[n_features]` (`layout.observation.features`; vmaps over states)."""
        params = self.default_params if params is None else params
        ctx = self.context(state.start + state.t, params, state.vm_pu)
        parts = [dev.get(g.type).observe(params.devices[g.type], state.devices[g.type], ctx).reshape(-1)
                 for g in self.layout.groups]
        hour_angle = 2 * jnp.pi * ctx.hour / 24.0
        time = jnp.stack([ctx.price / 100.0, jnp.sin(hour_angle), jnp.cos(hour_angle),
                          state.t / self.episode_steps]).astype(self.dtype)
        parts += [(state.vm_pu - layout_lib.VM_OFFSET_PU) / layout_lib.VM_SCALE_PU, time, ctx.series,
                  state.coord.features.reshape(-1)]
        return jnp.concatenate([p.astype(self.dtype) for p in parts])

    def get_obs(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Observations `[n_agents, obs_dim]`, zero-padded."""
        feats = self.world_state(state, params)
        idx = jnp.asarray(self.layout.observation.index)
        return jnp.where(idx >= 0, feats[jnp.maximum(idx, 0)], 0.0)

    # ------------------------------------------------------------------ input checks (trace time)

    def check_param_values(self, params) -> None:
        """Voltage band, episode starts within the profiles, profile columns that exist."""
        lo, hi = float(params.vm_min_pu), float(params.vm_max_pu)
        if not lo < hi:
            raise InputError(f"params.vm_min_pu, params.vm_max_pu: expected vm_min_pu < vm_max_pu, got {lo} and {hi}")
        n_steps, n_series = params.profiles.shape
        starts = np.asarray(params.starts)
        if starts.size == 0 or starts.min() < 0 or starts.max() >= n_steps:
            raise InputError(f"params.starts: expected 1 or more episode starts in [0, {n_steps}) (params.profiles "
                             f"has {n_steps} steps), got {starts.size} in [{starts.min(initial=0)}, "
                             f"{starts.max(initial=0)}]")
        for name in ("load_series", "sgen_series"):
            col = np.asarray(getattr(params, name))
            if col.size and col.max() >= n_series:
                raise InputError(f"params.{name}: expected profile columns in [-1, {n_series}) (params.profiles "
                                 f"has {n_series} series), got {int(col.max())}")

    def _check_state(self, state) -> None:
        if self._state_spec is None:
            self._state_spec = jax.eval_shape(self.reset_env, jax.random.PRNGKey(0), self.default_params)[1]
        checks.check_like("state", state, self._state_spec)

    def _check_actions(self, actions) -> None:
        checks.check_real_array("actions", actions, (self.num_agents, self.act_dim),
                                "[n_agents, act_dim], padded per env.action_mask")

    def check_step(self, key, state, actions, params) -> None:
        """The step's inputs against `reset`'s state and `default_params` (module docstring)."""
        checks.check_key("key", key)
        self.check_params(params)
        self._check_state(state)
        self._check_actions(actions)

    # ------------------------------------------------------------------ step stages

    def _clean_actions(self, state: EnvState, actions):
        """NaN -> the safe default, clip to [-1, 1], tick hold and action delay:
        `(actions, nan count, clipped count, coord)`; the counts cover the real (unpadded) entries."""
        dt = self.dtype
        actions = jnp.asarray(actions, dt)
        is_nan = jnp.isnan(actions)
        mask = jnp.asarray(self.action_mask)
        nan_actions = jnp.sum(is_nan & mask)
        clipped_actions = jnp.sum(((actions < -1.0) | (actions > 1.0)) & mask)
        actions = jnp.clip(jnp.where(is_nan, jnp.asarray(self.default_actions, dt), actions), -1.0, 1.0)
        actions, cs = self.coordinator.act_timing(state.coord, actions)
        return actions, nan_actions, clipped_actions, cs

    def _connection(self, params: EnvParams):
        t = self.coordinator.links.connection_type
        return (None, None) if t is None else (dev.get(t).grid_connection, params.devices[t])

    def _coordinate(self, key, cs, actions, params: EnvParams, state: EnvState, ctx, p_bus):
        """Protocol messages of this step: `(vertical outputs, horizontal outputs, coord)`."""
        links, dt = self.coordinator.links, self.dtype
        conn, conn_params = self._connection(params)
        import_last = grid_imports(links, conn.import_mw(conn_params, state.devices[links.connection_type])) \
            if conn is not None else jnp.zeros(links.n_grid, dt)
        net_load = -(p_bus @ jnp.asarray(self.layout.bus_grid, dt)) if links.dispatch_types else \
            jnp.zeros(links.n_grid, dt)
        inputs = Inputs(actions=actions, price=ctx.price, import_mw=import_last, net_load_mw=net_load, ctx=ctx,
                        params=params.devices, states=state.devices)
        return self.coordinator.exchange(cs, key, inputs)

    def _device_actions(self, g, actions, params: EnvParams, state: EnvState, ctx, overrides) -> jax.Array:
        """`[n, act_dim]` actions of one group: learned columns, else the type's rule or default; then overrides."""
        t, dt = dev.get(g.type), actions.dtype
        if t.rule is not None and t.act_dim and (g.controller < 0).any():
            act = t.rule(params.devices[g.type], state.devices[g.type], ctx).astype(dt)
        else:
            act = jnp.broadcast_to(jnp.asarray(t.default_action, dt), (g.n, t.act_dim))
        if t.act_dim and (g.controller >= 0).any():
            ctrl = jnp.asarray(np.maximum(g.controller, 0))
            cols = jnp.asarray(g.offset[:, None] + np.arange(t.act_dim)[None, :])
            act = jnp.where(jnp.asarray(g.controller >= 0)[:, None], actions[ctrl[:, None], cols], act)
        for out in overrides:
            if g.type in out.actions:
                mask, value = out.actions[g.type]
                act = jnp.where(mask, value.astype(dt), act)
        return act

    def _act(self, actions, params: EnvParams, state: EnvState, ctx, grid, p_bus, q_bus, overrides):
        """Decode, dynamics, grid changes and injections of every group: `(setpoints, states, grid, p, q)`."""
        setpoints, new_states = {}, {}
        for g in self.layout.groups:
            t = dev.get(g.type)
            prm, st = params.devices[g.type], state.devices[g.type]
            sp = t.decode(prm, st, self._device_actions(g, actions, params, state, ctx, overrides), ctx)
            ns = t.dynamics(prm, st, sp, ctx)
            if t.apply_to_grid is not None:
                grid = t.apply_to_grid(prm, ns, grid)
            p_bus = p_bus + jax.ops.segment_sum(sp.p_mw, prm.bus, p_bus.shape[0])
            q_bus = q_bus + jax.ops.segment_sum(sp.q_mvar, prm.bus, q_bus.shape[0])
            setpoints[g.type], new_states[g.type] = sp, ns
        return setpoints, new_states, grid, p_bus, q_bus

    def _power_flow(self, grid, p_bus, q_bus, state: EnvState, params: EnvParams):
        """The AC power flow; a non-converged one keeps the last voltages and zero flows."""
        warm = (state.vm_pu, state.va_deg) if self.method in WARM_START_METHODS else None
        pf = self.grid_model.solve(grid, p_bus, q_bus, params, warm)
        ok = jnp.all(jnp.isfinite(pf.vm_pu)) & (pf.converged | (self.method == "lindistflow"))
        pf = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x))
                          if jnp.issubdtype(x.dtype, jnp.floating) else x, pf)
        return pf.replace(vm_pu=jnp.where(ok, pf.vm_pu, state.vm_pu.astype(pf.vm_pu.dtype)),
                          va_deg=jnp.where(ok, pf.va_deg, state.va_deg.astype(pf.va_deg.dtype)))

    def _account(self, params: EnvParams, state: EnvState, setpoints, new_states, ctx):
        """Cost and device safety per learned agent, totals and metrics; the measured device states."""
        dt = self.dtype
        cost, safety = jnp.zeros(self.num_agents, dt), jnp.zeros(self.num_agents, dt)
        cost_total, totals, measured = jnp.zeros((), dt), {}, {}
        for g in self.layout.groups:
            t = dev.get(g.type)
            prm, st, sp = params.devices[g.type], state.devices[g.type], setpoints[g.type]
            c_dev = t.cost(prm, st, sp, ctx)
            acc = jnp.asarray(g.account, dt)
            cost = cost + c_dev @ acc
            safety = safety + t.safety(prm, st, sp, ctx) @ acc
            cost_total = cost_total + jnp.sum(c_dev)
            for k, v in t.metrics(prm, st, sp, ctx).items():
                totals[k] = totals.get(k, 0.0) + jnp.sum(v)
            measured[g.type] = t.measure(prm, new_states[g.type], ctx)
        return cost, safety, cost_total, totals, measured

    # ------------------------------------------------------------------ reset / step

    def reset_env(self, key, params: EnvParams):
        """A new episode: random start among `params.starts`, device states from `init`."""
        checks.check_key("key", key)
        self.check_params(params)
        k_start, k_dev = jax.random.split(key)
        start = params.starts[jax.random.randint(k_start, (), 0, params.starts.shape[0])]
        keys = jax.random.split(k_dev, max(len(self.layout.groups), 1))
        states = {g.type: dev.get(g.type).init(params.devices[g.type], keys[i])
                  for i, g in enumerate(self.layout.groups)}
        vm, va_deg = self.grid_model.start(params.grid)
        dummy_obs = jnp.zeros((self.num_agents, self.obs_dim), self.dtype)
        state = EnvState(t=jnp.asarray(0, jnp.int32), start=start.astype(jnp.int32), devices=states,
                         vm_pu=vm.astype(self.dtype), va_deg=va_deg.astype(self.dtype),
                         coord=self.coordinator.init(self.default_actions, dummy_obs))
        obs = self.get_obs(state, params)
        # fold_in: the episode's link conditions (communication.randomize) leave the other draws as they were
        return obs, state.replace(coord=self.coordinator.init(self.default_actions, obs, jax.random.fold_in(key, 1)))

    def step_env(self, key, state: EnvState, actions, params: EnvParams):
        """One step without auto-reset (the stages of the module docstring)."""
        self.check_step(key, state, actions, params)
        dt, coord = self.dtype, self.coordinator
        actions, nan_actions, clipped_actions, cs = self._clean_actions(state, actions)
        ctx = self.context(state.start + state.t, params, state.vm_pu)
        grid, p_bus, q_bus = self.grid_model.loaded(params, ctx, params.grid)
        v_out, h_out, cs = self._coordinate(key, cs, actions, params, state, ctx, p_bus)
        setpoints, new_states, grid, p_bus, q_bus = self._act(actions, params, state, ctx, grid, p_bus, q_bus,
                                                              (v_out, h_out))
        pf = self._power_flow(grid, p_bus, q_bus, state, params)
        ctx = ctx.replace(pf=pf)
        cost, dev_safety, cost_total, totals, new_states = self._account(params, state, setpoints, new_states, ctx)

        conn, conn_params = self._connection(params)
        import_now = grid_imports(coord.links, conn.exchange(conn_params, pf)) if conn is not None else \
            jnp.zeros(coord.links.n_grid, dt)
        adjust = coord.settle(h_out, import_now, ctx.price, params.dt_h, params.devices)
        if adjust is not None:
            cost = cost + adjust @ jnp.asarray(self.layout.grid_account, dt)
            cost_total = cost_total + jnp.sum(adjust)
        cs = cs.replace(features=coord.features(v_out, h_out))

        unbalance = self.grid_model.unbalance(params, pf)
        out = reward_lib.outcome(self.layout, params, self.grid_model.energized(grid), pf, cost, cost_total, dev_safety,
                                 None if unbalance is None else unbalance[0])
        reward = self.reward_fn(out, params, self.shared_reward)
        net_load = -(p_bus @ jnp.asarray(self.layout.bus_grid, dt)) if coord.links.n_grid else jnp.zeros(1, dt)
        info = {**reward_lib.info(out, params, pf, p_bus, net_load, totals, dt, self.grid_model.import_mw(params, pf)),
                **({} if unbalance is None else unbalance[1]), **coord.info(v_out, h_out),
                "nan_actions": nan_actions, "clipped_actions": clipped_actions, "price": ctx.price,
                "grid_import_mw": import_now}
        new_state = EnvState(t=state.t + 1, start=state.start, devices=new_states, vm_pu=pf.vm_pu.astype(dt),
                             va_deg=pf.va_deg.astype(dt), coord=cs)
        truncated = new_state.t >= self.episode_steps
        obs, cs = coord.obs_timing(cs, self.get_obs(new_state, params))
        return obs, new_state.replace(coord=cs), reward, jnp.zeros((), bool), truncated, info


def make(name_or_path="multi_microgrid", reward_fn=reward_lib.default_reward, **overrides) -> Env:
    """An environment for a registered scenario name, a YAML path or a raw mapping.

    Overrides: flat keys such as `dt_h`, `episode_steps`, `split` ("train" / "test"),
    `penalty`, `shared_reward`, `centralized`, `learned`, `method`, `dtype`, or whole sections.
    A name of `ENV_FAMILIES` (e.g. `frequency_68bus`) builds that family's env from the
    keyword arguments its factory takes instead.
    """
    if isinstance(name_or_path, str) and name_or_path in ENV_FAMILIES:
        module, _, factory = ENV_FAMILIES[name_or_path].partition(":")
        return getattr(importlib.import_module(module), factory)(**overrides)
    return Env(compile_scenario(name_or_path, **overrides), reward_fn=reward_fn)

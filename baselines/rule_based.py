"""Reference controllers that need no training.

    policy = random_policy(env)          # uniform in [-1, 1] on every used action column
    policy = do_nothing_policy(env)      # the env's `default_actions` (zeros if it has none)
    metrics = evaluate(env, policy, key, num_episodes=8)

    ctrl = controller("rule_based", env)  # any name of CONTROLLERS, as a (stateful) Controller
    totals, trace = rollout(env, ctrl, key, num_episodes=8, trace=True)

A policy is `policy(key, obs [n_agents, obs_dim]) -> actions [n_agents, act_dim]`. A
`Controller` also carries a state through the episode: `init() -> carry` at the episode
start and `act(carry, key, obs, aux) -> (actions, carry)` (`aux`: a run-time argument such as
trained parameters); `as_controller(policy)` wraps a policy. `make_rollout` compiles the
environment once for several controllers.

`rule_based_controller(env)`: generic over pgjax scenarios, reading only what the agent
observes (its local observation, decoded by feature key through `env.layout.observation`)
plus the parameters of its own devices, and writing the action columns that
`env.layout.action` names for them:
- storage: arbitrage on price: charge at `charge_frac` of the feasible rate when the price
  is below the median of the last 24 h of prices by `band` (relative), discharge when above
  by `band` (at most the microgrid's net load measured at its grid connection in the last
  step, so it does not export), idle between. The partial charge rate and the no-export
  limit keep the feeder's voltages in band far more often than full-rate bang-bang
  arbitrage (multi_microgrid test year: voltage safety 0.7 instead of 6 per day).
  The 24 h history is a ring buffer indexed by time of day, filled at the episode start
  with the training year's median price at that time of day (no test-year data is used);
- dispatchable generators, merit order: commit when running at the profit-maximizing
  output `p* = clip((price - b) / 2c, p_min, p_max)` earns more than it costs
  (`price p* > a + b p* + c p*^2`), then ask for `p*` (within the ramp-feasible range);
  reactive power at mid-range;
- PV / wind: full available output; reactive power by a volt-var droop on the device's
  own bus voltage, `q = -k (V - 1) / 0.05` of the inverter's headroom, clipped to [-1, 1]
  (`k = droop_gain`; voltages are those measured at the previous step, as observed). The
  loop through the one-step-old measurement oscillates when `k` is too high: on
  voltage_control_33bw (test year, 16 days) k = 0.2 / 0.4 lift the share of controllable
  steps from 0.62 (do-nothing) to 0.73 / 0.79, k >= 0.5 oscillates and is worse than
  nothing; the default 0.3 keeps a margin;
- everything else (curtailable / shiftable loads, shunts, tap changers under an agent):
  the device's default action.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.baselines.common import MARLEnv, Policy, evaluate, reduce_info
from pgjax import devices as dev
from pgjax import distributed
from pgjax.env.layout import bus_names

__all__ = ["CONTROLLERS", "Controller", "as_controller", "controller", "do_nothing_policy", "evaluate",
           "make_rollout", "random_policy", "rollout", "rule_based_controller"]

F32 = jnp.float32
V_REF_PU, DROOP_BAND_PU = 1.0, 0.05  # volt-var droop: q = -k (V - V_REF) / DROOP_BAND of the headroom
READS = {"storage": ("e_mwh", "p_mw"), "generator": ("p_mw", "on")}  # device features the rules decode


def random_policy(env, params=None) -> Policy:
    """Actions uniform in [-1, 1] on used action columns, 0 on padded ones."""
    menv = MARLEnv.wrap(env, params)
    mask = jnp.asarray(menv.action_mask, jnp.float32)

    def policy(key, obs):
        return jax.random.uniform(key, mask.shape, jnp.float32, -1.0, 1.0) * mask

    return policy


def do_nothing_policy(env, params=None) -> Policy:
    """The environment's `default_actions` (each device's safe default), else all zeros."""
    menv = MARLEnv.wrap(env, params)
    default = jnp.asarray(menv.default_actions, jnp.float32)

    def policy(key, obs):
        return default

    return policy


# ------------------------------------------------------------------------- controllers

@dataclasses.dataclass(frozen=True, eq=False)
class Controller:
    """A policy with a state carried through an episode (`init() -> carry`, `act(carry, key, obs)`)."""

    init: Callable[[], Any]
    act: Callable[[Any, Any, jax.Array, Any], tuple[jax.Array, Any]]  # (carry, key, obs, aux)


def as_controller(policy: Policy) -> Controller:
    """A stateless `policy(key, obs)` as a `Controller` (empty carry, `aux` ignored)."""
    return Controller(lambda: jnp.zeros((), F32), lambda carry, key, obs, aux: (policy(key, obs), carry))


def _observed(schema, agent: int, key: str) -> int:
    """Position of feature `key` in agent `agent`'s observation; ValueError if it does not observe it."""
    pos = schema.local(agent, key)
    if pos < 0:
        raise ValueError(f"rule_based: agent {schema.agents[agent]} does not observe {key!r}")
    return pos


def training_price_by_slot(env) -> np.ndarray:
    """Median price of the scenario's *training* profiles per time-of-day slot (`[24 / dt_h]`)."""
    from pgjax import profiles

    c = env.scenario
    pr = c.profile_spec
    n_slots = max(round(24 / c.dt_h), 1)
    if c.price_col < 0 or pr.train is None:
        return np.full(n_slots, float(c.flat_price))
    name = c.series_names[c.price_col]
    data = profiles.from_csv(pr.train) if pr.train.endswith(".csv") else profiles.load(pr.train)
    data = profiles.select(data, [name])
    if abs(data.dt_h - c.dt_h) > 1e-12:
        data = profiles.resample(data, c.dt_h, method=pr.resample)
    price = np.asarray(data.values[:, 0], np.float64)
    slot = (np.round((profiles.start_hour(data.start) + np.arange(len(price)) * c.dt_h) / c.dt_h).astype(int)) % n_slots
    return np.array([np.median(price[slot == s]) if np.any(slot == s) else np.median(price) for s in range(n_slots)])


def _device_params(prm, k: int, fields: tuple) -> dict:
    """Device `k`'s parameters `fields` as Python floats."""
    return {f: float(np.asarray(getattr(prm, f))[k]) for f in fields}


def _grid_import_keys(e) -> list:
    """Per agent, the first grid-connection import it observes (feature key), else None."""
    schema = e.layout.observation
    keys = [None] * e.num_agents
    for g in e.layout.groups:
        if dev.get(g.type).grid_connection is None:
            continue
        for name in g.names:
            key = f"{g.type}/{name}/import_mw"
            for a in range(e.num_agents):
                if keys[a] is None and schema.local(a, key) >= 0:
                    keys[a] = key
    return keys


def rule_based_controller(env, params=None, band: float = 0.1, droop_gain: float = 0.3,
                          charge_frac: float = 0.3) -> Controller:
    """Storage arbitrage, merit-order generators, full renewables with volt-var droop (module docstring)."""
    menv = MARLEnv.wrap(env, params)
    e = menv.env
    prm = menv.params
    n_agents = menv.num_agents
    schema = e.layout.observation
    default = np.asarray(menv.default_actions, np.float32)
    dt_h = float(e.scenario.dt_h)
    n_slots = max(round(24 / dt_h), 1)
    for a in range(n_agents):  # every agent reads the price; agent 0 also the time of day
        for name in ("price", "sin_hour", "cos_hour"):
            _observed(schema, a, f"time//{name}")
    import_key = _grid_import_keys(e)  # to discharge without exporting
    bus_keys = [f"bus/{b}/vm_pu" for b in bus_names(e.scenario)]  # by grid bus index

    storage_cols, gens, renewables = [], [], []
    for g in e.layout.groups:
        for k in np.flatnonzero(g.controller >= 0):
            a, name = int(g.controller[k]), g.names[k]
            col = {c.name: c.column for c in e.layout.action.columns[a] if c.kind == g.type and c.target == name}
            keys = {f: f"{g.type}/{name}/{f}" for f in READS.get(g.type, ())}  # the features its rule reads
            for key in keys.values():
                _observed(schema, a, key)
            if g.type == "storage":
                storage_cols.append(dict(a=a, col=col, keys=keys, **_device_params(prm.devices["storage"], k, (
                    "e_min_mwh", "p_charge_max_mw", "p_discharge_max_mw", "eta_discharge", "s_max_mva"))))
            elif g.type == "generator":
                gens.append(dict(a=a, col=col, keys=keys, **_device_params(prm.devices["generator"], k, (
                    "p_min_mw", "p_max_mw", "ramp_up_mw_per_h", "ramp_down_mw_per_h", "cost_a_per_h",
                    "cost_b_per_mwh", "cost_c_per_mw2h"))))
            elif g.type in ("pv", "wind"):
                # q linear in the observed voltage: the droop composed with the feature's decoding on the
                # host (decoding V ~ 1 in float32 and subtracting V_REF would cancel the deviation's low bits)
                v_key = bus_keys[int(g.bus[k])]
                vpos, f = schema.local(a, v_key), schema.feature(v_key)
                slope = -droop_gain * f.scale / DROOP_BAND_PU
                bias = -droop_gain * (f.offset - V_REF_PU) / DROOP_BAND_PU
                renewables.append((a, col, vpos, slope, bias))
    prior = jnp.asarray(training_price_by_slot(e), F32)  # [n_slots]

    def act(carry, key, obs, aux=None):
        value = lambda a, k: schema.decode(obs[a], a, k)  # noqa: E731  physical value of feature k
        price = jnp.stack([value(a, "time//price") for a in range(n_agents)])  # [n_agents] (the same price)
        hour = jnp.mod(jnp.arctan2(value(0, "time//sin_hour"), value(0, "time//cos_hour")) * 24 / (2 * jnp.pi), 24.0)
        slot = jnp.mod(jnp.round(hour / dt_h).astype(jnp.int32), n_slots)
        history = carry.at[slot].set(price[0])
        median = jnp.median(history)
        actions = jnp.asarray(default)
        for sd in storage_cols:
            a, col, p = sd["a"], sd["col"], price[sd["a"]]
            cmd = jnp.where(p > median + band * jnp.abs(median), 1.0,
                            jnp.where(p < median - band * jnp.abs(median), -charge_frac, 0.0))
            if import_key[a] is not None:  # discharge at most the microgrid's own net load (no export)
                net_load = value(a, import_key[a]) + value(a, sd["keys"]["p_mw"])
                e_mwh = value(a, sd["keys"]["e_mwh"])
                s_cap = sd["s_max_mva"] if sd["s_max_mva"] > 0 else np.inf
                dis = jnp.clip(jnp.minimum(sd["p_discharge_max_mw"], (e_mwh - sd["e_min_mwh"]) * sd["eta_discharge"] / dt_h),
                               0.0, s_cap)
                cmd = jnp.where(cmd > 0, jnp.clip(net_load / jnp.maximum(dis, 1e-9), 0.0, 1.0), cmd)
            actions = actions.at[a, col["p_mw"]].set(cmd).at[a, col["q_mvar"]].set(0.0)
        for gd in gens:
            a, col, p = gd["a"], gd["col"], price[gd["a"]]
            c2 = max(gd["cost_c_per_mw2h"], 1e-9)
            p_star = jnp.clip((p - gd["cost_b_per_mwh"]) / (2 * c2), gd["p_min_mw"], gd["p_max_mw"])
            profit = p * p_star - (gd["cost_a_per_h"] + gd["cost_b_per_mwh"] * p_star + gd["cost_c_per_mw2h"] * p_star ** 2)
            on = value(a, gd["keys"]["on"]) > 0.5
            p_prev = value(a, gd["keys"]["p_mw"])
            lo = jnp.where(on, jnp.maximum(gd["p_min_mw"], p_prev - gd["ramp_down_mw_per_h"] * dt_h), gd["p_min_mw"])
            hi_start = max(gd["p_min_mw"], min(gd["p_max_mw"], gd["ramp_up_mw_per_h"] * dt_h))
            hi = jnp.where(on, jnp.minimum(gd["p_max_mw"], p_prev + gd["ramp_up_mw_per_h"] * dt_h), hi_start)
            hi = jnp.maximum(hi, lo)
            frac = jnp.where(hi > lo, (jnp.clip(p_star, lo, hi) - lo) / jnp.maximum(hi - lo, 1e-9), 0.0)
            actions = (actions.at[a, col["commit"]].set(jnp.where(profit > 0, 1.0, -1.0))
                       .at[a, col["p_mw"]].set(2 * frac - 1).at[a, col["q_mvar"]].set(0.0))
        for a, col, vpos, slope, bias in renewables:
            q = 0.0 if vpos < 0 else jnp.clip(obs[a, vpos] * slope + bias, -1.0, 1.0)
            actions = actions.at[a, col["p_share"]].set(1.0).at[a, col["q_mvar"]].set(q)
        return actions * jnp.asarray(menv.action_mask, F32), history

    return Controller(lambda: prior, act)


# name -> factory(env, params=None) -> Policy (stateless) or Controller
CONTROLLERS = {"random": random_policy, "do_nothing": do_nothing_policy, "rule_based": rule_based_controller}


def controller(name: str, env, params=None) -> Controller:
    """`CONTROLLERS[name]` for `env`, as a `Controller`."""
    if name not in CONTROLLERS:
        raise KeyError(f"unknown controller {name!r}; known: {sorted(CONTROLLERS)}")
    made = CONTROLLERS[name](env, params)
    return made if isinstance(made, Controller) else as_controller(made)


# ---------------------------------------------------------------------------- rollouts

def make_rollout(env, controllers: list[Controller], num_episodes: int = 8, episode_steps: int | None = None,
                 params=None, trace: bool = False, state_fn: Callable | None = None, mesh=None):
    """One jitted `run(key, index, aux) -> (totals, trace)` for several controllers.

    The environment is traced and compiled once; `index` (an int) picks the controller by
    `lax.switch` and `aux` is passed to its `act` (e.g. a MAPPO `TrainState`, so other
    states of the same shapes reuse the compiled rollout). Episodes are drawn as in
    `pgjax.baselines.common.evaluate` for the same key (one per parallel env), so every
    controller sees the same days and initial states. `totals` maps every scalar info
    metric (and `return`) to its per-episode sums `[num_episodes]`; with `trace=True`,
    `trace` holds the per-step `info`, `actions` and `state_fn(env_state)` after each step
    (`[num_episodes, steps, ...]`). With a `mesh` (`pgjax.distributed.batch_mesh`) the
    episodes are split over its devices (the same episodes and totals, computed in parallel).
    """
    menv = MARLEnv.wrap(env, params)
    steps = int(episode_steps or menv.env.episode_steps)
    ctrls = list(controllers)

    def branch(i):
        def act(operand):
            carry, key, obs, aux = operand
            action, own = ctrls[i].act(carry[i], key, obs, aux)
            return jnp.asarray(action, F32), tuple(own if j == i else c for j, c in enumerate(carry))
        return act

    branches = [branch(i) for i in range(len(ctrls))]

    def episode(key, index, aux):
        k_reset, k_run = jax.random.split(key)
        obs, state = menv.reset(k_reset)

        def body(carry, key):
            obs, state, pc = carry
            k_act, k_step = jax.random.split(key)
            action, pc = jax.lax.switch(index, branches, (pc, k_act, obs, aux))
            if trace and hasattr(menv.env, "step_env"):  # no auto-reset: record the step's own state
                k_env, _ = jax.random.split(k_step)  # as `Env.step` splits its key
                obs, state, reward, term, trunc, info = menv.env.step_env(k_env, state, action, menv.params)
                done = jnp.any(jnp.asarray(term)) | jnp.any(jnp.asarray(trunc))
                info = reduce_info(info, menv.num_agents)
                reward = jnp.broadcast_to(jnp.asarray(reward, F32), (menv.num_agents,))
                obs = jnp.asarray(obs, F32)
            else:
                obs, state, reward, done, info = menv.step(k_step, state, action)
            rec = (jnp.mean(reward), done, info)
            if trace:
                rec = rec + (action, state_fn(state) if state_fn is not None else None)
            return (obs, state, pc), rec

        init = tuple(c.init() for c in ctrls)
        _, out = jax.lax.scan(body, (obs, state, init), jax.random.split(k_run, steps))
        ret, done, info = out[:3]
        totals = {"return": jnp.sum(ret), "episode_done": done[-1], **{k: jnp.sum(v) for k, v in info.items()}}
        return totals, ({"info": info, "actions": out[3], "state": out[4]} if trace else None)

    jitted = jax.jit(lambda key, index, aux: jax.vmap(episode, in_axes=(0, None, None))(
        distributed.split_batch(mesh, jax.random.split(key, num_episodes)), index, aux))

    def run(key, index: int = 0, aux=None):
        totals, tr = jax.device_get(jitted(key, jnp.asarray(index, jnp.int32), aux))
        if not bool(np.all(totals.pop("episode_done"))):
            raise ValueError(f"episodes did not end after episode_steps={steps} steps")
        return totals, tr

    return run


def rollout(env, ctrl: Controller, key, num_episodes: int = 8, episode_steps: int | None = None, params=None,
            trace: bool = False, state_fn: Callable | None = None, aux=None):
    """`make_rollout` for one controller: `(totals, trace)` (see there)."""
    return make_rollout(env, [ctrl], num_episodes, episode_steps, params, trace, state_fn)(key, 0, aux)

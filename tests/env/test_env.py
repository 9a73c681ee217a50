"""The environment: API shapes, jit + vmap without retracing, auto-reset, NaN actions,
reward = -(cost + penalty * safety), energy balance, observation modes, float32, and a
smoke test of every registered scenario. Jitted functions are built once per module."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import scenario

B = 64


@pytest.fixture(scope="module")
def mm():
    """multi_microgrid with jitted single and batched steps."""
    env = pgjax.make("multi_microgrid")
    step = jax.jit(env.step)

    @chex.assert_max_traces(n=1)
    def traced_step(key, state, actions, params):
        return env.step(key, state, actions, params)

    vstep = jax.jit(jax.vmap(traced_step, in_axes=(0, 0, 0, None)))
    vreset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    return env, step, vstep, vreset


def random_actions(key, env, shape=()):
    return jax.random.uniform(key, shape + (env.num_agents, env.act_dim), minval=-1.2, maxval=1.2)


def test_reset_step_shapes_and_spaces(mm):
    env, step, _, _ = mm
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert env.agents == ("MG1", "MG2", "MG3")
    assert obs.shape == (env.num_agents, env.obs_dim)
    obs2, state2, reward, terminated, truncated, info = step(
        jax.random.PRNGKey(1), state, random_actions(jax.random.PRNGKey(2), env), params)
    assert obs2.shape == obs.shape and reward.shape == (env.num_agents,)
    assert terminated.shape == () and truncated.shape == () and not bool(truncated)
    assert int(state2.t) == 1 and bool(jnp.all(jnp.isfinite(obs2)))
    for a in env.agents:
        assert env.action_space(a).shape[0] <= env.act_dim and env.observation_space(a).shape[0] <= env.obs_dim
    assert env.action_mask.shape == (env.num_agents, env.act_dim)
    assert env.world_state(state2).shape == (env.layout.observation.n_features,)
    for key in ("cost_total", "losses_mw", "voltage_violation_rate", "controllable", "curtailment_mwh",
                "import_mwh", "export_mwh", "net_load_variance_mw2", "nan_actions", "final_observation"):
        assert key in info


def test_vmap_jit_no_retrace_and_batch_equals_single(mm):
    env, step, vstep, vreset = mm
    params = env.default_params
    keys = jax.random.split(jax.random.PRNGKey(3), B)
    obs, state = vreset(keys, params)
    for i in range(3):  # vstep traces its step at most once (chex.assert_max_traces)
        acts = random_actions(jax.random.PRNGKey(10 + i), env, (B,))
        obs, state, reward, term, trunc, info = vstep(jax.random.split(jax.random.PRNGKey(20 + i), B), state, acts, params)
    assert obs.shape == (B, env.num_agents, env.obs_dim) and bool(jnp.all(jnp.isfinite(reward)))
    # the batch equals single-environment steps
    k = jax.random.split(jax.random.PRNGKey(99), B)
    acts = random_actions(jax.random.PRNGKey(98), env, (B,))
    batched = vstep(k, state, acts, params)
    for i in (0, 17):
        single = step(k[i], jax.tree.map(lambda x: x[i], state), acts[i], params)
        np.testing.assert_allclose(batched[0][i], single[0], atol=1e-9)
        np.testing.assert_allclose(batched[2][i], single[2], atol=1e-9)


def test_episode_bounds_auto_reset_and_invariants(mm):
    """A whole episode of random actions: SOC bounds, energy balance, reward formula, auto-reset."""
    env, step, _, _ = mm
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(4), params)
    starts = set(np.asarray(params.starts).tolist())
    assert int(state.start) in starts
    ess = params.devices["storage"]
    for t in range(env.episode_steps):
        acts = random_actions(jax.random.PRNGKey(100 + t), env)
        obs, new, reward, term, trunc, info = step(jax.random.PRNGKey(200 + t), state, acts, params)
        e = new.devices["storage"].e_mwh if t < env.episode_steps - 1 else None
        if e is not None:
            assert bool(jnp.all(e >= ess.e_min_mwh - 1e-9)) and bool(jnp.all(e <= ess.e_max_mwh + 1e-9))
        # energy balance: net injections + slack power = branch losses
        np.testing.assert_allclose(info["p_injected_mw"] + info["slack_p_mw"], info["losses_mw"], atol=1e-6)
        # reward is minus cost plus penalised safety, per agent; per-agent sums add up
        expected = -(info["cost"] + params.penalty * info["safety"]) * params.reward_scale
        np.testing.assert_allclose(reward, expected, rtol=1e-12)
        np.testing.assert_allclose(jnp.sum(info["cost"]), info["cost_total"], rtol=1e-9)
        assert bool(jnp.all(info["safety"] >= 0)) and float(info["nonconverged"]) == 0.0
        assert bool(trunc) == (t == env.episode_steps - 1) and not bool(term)
        state = new
    # the last step reset the environment and kept the final observation
    assert int(state.t) == 0 and int(state.start) in starts
    assert not np.allclose(info["final_observation"], obs)


def test_nan_actions_are_counted_and_replaced_by_default(mm):
    env, step, _, _ = mm
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(5), params)
    acts = random_actions(jax.random.PRNGKey(6), env)
    acts = jnp.where(jnp.asarray(env.action_mask), acts, 0.0)
    nan_acts = acts.at[0, 1].set(jnp.nan).at[2, 4].set(jnp.nan)
    replaced = acts.at[0, 1].set(env.default_actions[0, 1]).at[2, 4].set(env.default_actions[2, 4])
    key = jax.random.PRNGKey(7)
    out_nan = step(key, state, nan_acts, params)
    out_def = step(key, state, replaced, params)
    assert int(out_nan[5]["nan_actions"]) == 2 and int(out_def[5]["nan_actions"]) == 0
    np.testing.assert_array_equal(out_nan[0], out_def[0])
    np.testing.assert_array_equal(out_nan[2], out_def[2])
    # out-of-range actions are clipped: 5 acts like 1
    out_big = step(key, state, acts.at[1, 1].set(5.0), params)
    out_one = step(key, state, acts.at[1, 1].set(1.0), params)
    np.testing.assert_array_equal(out_big[2], out_one[2])


def test_price_enters_cost(mm):
    """Microgrid cost = fuel + degradation + price * import (closed form from the devices)."""
    env, step, _, _ = mm
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(8), params)
    acts = random_actions(jax.random.PRNGKey(9), env)
    key = jax.random.PRNGKey(1)
    base = step(key, state, acts, params)[5]
    doubled = step(key, state, acts, params.replace(profiles=params.profiles.at[:, env.price_col].multiply(2.0)))[5]
    pcc = base["cost"] - doubled["cost"]  # only the PCC term depends on the price: -(price * exchange)
    assert float(jnp.max(jnp.abs(pcc))) > 0
    np.testing.assert_allclose(doubled["price"], 2 * base["price"])


@pytest.fixture(scope="module")
def vc_pair():
    """voltage_control_33bw in distributed (default) and centralized observation modes."""
    a = pgjax.make("voltage_control_33bw")
    b = pgjax.make("voltage_control_33bw", centralized=True)
    return (a, jax.jit(a.step)), (b, jax.jit(b.step))


def test_centralized_and_distributed_differ_only_in_observations(vc_pair):
    (a, step_a), (b, step_b) = vc_pair
    assert a.obs_dim < b.obs_dim == b.n_features
    key = jax.random.PRNGKey(11)
    _, sa = a.reset(key, a.default_params)
    _, sb = b.reset(key, b.default_params)
    acts = random_actions(jax.random.PRNGKey(12), a)
    oa, sa2, ra, _, _, ia = step_a(key, sa, acts, a.default_params)
    ob, sb2, rb, _, _, ib = step_b(key, sb, acts, b.default_params)
    np.testing.assert_array_equal(ra, rb)
    jax.tree.map(np.testing.assert_array_equal, sa2, sb2)
    assert oa.shape != ob.shape
    # every local feature is also in the global vector; centralized rows are all equal
    np.testing.assert_array_equal(ob[0], a.world_state(sa2))
    np.testing.assert_array_equal(ob[0], ob[-1])
    idx = a.obs_index
    np.testing.assert_array_equal(oa, np.where(idx >= 0, np.asarray(ob[0])[np.maximum(idx, 0)], 0))
    np.testing.assert_array_equal(ra, jnp.full_like(ra, ra[0]))  # shared reward in this scenario


def test_float32_env_steps():
    env = pgjax.make("voltage_control_33bw", dtype="float32")
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(3):
        obs, state, reward, _, _, info = step(jax.random.PRNGKey(t), state, random_actions(jax.random.PRNGKey(t), env), env.default_params)
    assert obs.dtype == jnp.float32 and reward.dtype == jnp.float32 and state.vm_pu.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(obs))) and float(info["nonconverged"]) == 0.0


def test_reactive_power_control_removes_overvoltage(vc_pair):
    """voltage_control_33bw: at noon in summer, no control violates 1.05 pu and absorbing Q fixes it."""
    (env, step), _ = vc_pair
    params = env.default_params
    start = int(np.asarray(params.starts)[np.asarray(params.starts) > 4000][0])
    _, state = env.reset(jax.random.PRNGKey(0), params)
    state = state.replace(start=jnp.asarray(start, jnp.int32), t=jnp.asarray(12, jnp.int32))
    none = jnp.zeros((env.num_agents, env.act_dim))
    absorb = jnp.where(jnp.asarray(env.action_mask), -1.0, 0.0)
    _, _, r0, _, _, i0 = step(jax.random.PRNGKey(0), state, none, params)
    _, _, r1, _, _, i1 = step(jax.random.PRNGKey(0), state, absorb, params)
    assert float(i0["vm_max_pu"]) > 1.05 and float(i0["voltage_violation_rate"]) > 0
    assert float(i1["vm_max_pu"]) < float(i0["vm_max_pu"]) and float(i1["safety_voltage"]) < float(i0["safety_voltage"])
    assert float(r1[0]) > float(r0[0])


@pytest.mark.parametrize("name", scenario.names())
def test_every_registered_scenario_runs_10k_random_steps_finite(name):
    """10,240 random-action steps (256 environments x 40 steps, one jitted scan): all finite, converged."""
    env = pgjax.make(name)
    n, steps = 256, 40

    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(state, k):
            acts = jax.random.uniform(k, (n, env.num_agents, env.act_dim), minval=-1, maxval=1)
            obs, state, reward, _, _, info = jax.vmap(env.step)(jax.random.split(k, n), state, acts)
            assert obs.shape == (n, env.num_agents, env.obs_dim)
            return state, (jnp.all(jnp.isfinite(obs)) & jnp.all(jnp.isfinite(reward)), jnp.sum(info["nonconverged"]))
        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    finite, nonconverged = run(jax.random.PRNGKey(0))
    assert bool(finite.all()) and float(nonconverged.sum()) == 0.0


def test_bang_bang_actions_never_give_inf_or_nan():
    """Extreme (+-1) actions make some DistFlow steps diverge: flagged and penalized, all finite."""
    env = pgjax.make("multi_microgrid")
    n = 64
    vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, env.default_params)
    nonconv = 0.0
    for t in range(48):
        k = jax.random.fold_in(jax.random.PRNGKey(1), t)
        acts = jnp.sign(jax.random.normal(k, (n, env.num_agents, env.act_dim)))
        obs, state, reward, _, _, info = vstep(jax.random.split(k, n), state, acts, env.default_params)
        assert bool(jnp.isfinite(obs).all()) and bool(jnp.isfinite(reward).all())
        assert float(jnp.max(jnp.abs(reward))) < 1e4
        # a diverged step is penalized: every agent's safety counts it
        assert bool(jnp.all(info["safety"] >= info["nonconverged"][:, None]))
        nonconv += float(info["nonconverged"].sum())
    assert nonconv > 0  # the actions did drive some power flows to diverge (the path under test)

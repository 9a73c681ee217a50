"""The frequency_68bus environment: dimensions, SCADA delay, contingencies, reward, no retracing."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.frequency.env import FrequencyEnv


@pytest.fixture(scope="module")
def env():
    return pgjax.make("frequency_68bus", dtype="float64")


def quiet(params, **kw):
    """No load / renewable noise and no contingency (unless `kw` says otherwise)."""
    z = jnp.zeros((), params.load_sigma.dtype)
    return params.replace(**{"load_sigma": z, "common_sigma": z, "renewable_sigma": z, "p_contingency": z, **kw})


def rollout(env, params, key, actions, steps):
    """`step_env` (no auto-reset) for `steps` steps: stacked observations, rewards, infos, states."""
    obs, state = env.reset(key, params)

    def body(state, k):
        obs, state, reward, _, _, info = env.step_env(k, state, actions, params)
        return state, (obs, reward, info, state)

    _, out = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), steps))
    return obs, out


def test_dimensions_and_schema(env):
    obs, state = env.reset(jax.random.PRNGKey(0))
    assert obs.shape == (20, 15) and env.obs_dim == 15 and env.act_dim == 1
    assert env.world_state(state).shape == (140,) and len(env.state_features) == 140
    kinds = [k for k in env.agent_kinds]
    assert (kinds.count("battery"), kinds.count("gas"), kinds.count("demand_response")) == (5, 8, 7)
    schema = env.observation_schema
    assert schema.index.shape == (20, 15) and schema.sizes == (15,) * 20
    # the observation decodes to its physical value: a battery's own bus frequency at reset is 60 Hz
    b = env.agents.index("battery_0")
    bus = int(env.default_params.agent_bus[b])
    assert schema.decode(obs[b], b, f"bus/{bus}/f_hz") == pytest.approx(60.0)
    ramp = env.action_schema.find(kind="battery")
    assert len(ramp) == 5 and all(c.name == "ramp" for c in ramp)


def test_scada_delay_shifts_observations_by_two_steps(env):
    undelayed = FrequencyEnv(dtype="float64", scada_delay=0)
    key = jax.random.PRNGKey(3)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (20, 1), minval=-1, maxval=1)
    obs0_d, (obs_d, *_) = rollout(env, env.default_params, key, actions, 8)
    obs0_u, (obs_u, *_) = rollout(undelayed, undelayed.default_params, key, actions, 8)
    np.testing.assert_array_equal(obs0_d, obs0_u)
    np.testing.assert_array_equal(obs_d[0], obs0_u)  # before two steps have passed: the reset measurement
    np.testing.assert_array_equal(obs_d[1], obs0_u)
    np.testing.assert_array_equal(obs_d[2:], obs_u[:-2])
    assert np.abs(np.asarray(obs_u[1:] - obs_u[:-1])).max() > 1e-3  # the observations do change


def test_contingency_changes_the_episode_only_from_its_step(env):
    params = env.default_params
    key = jax.random.PRNGKey(11)
    _, state = env.reset(key, params)
    k = int(state.trip_step)
    assert 10 <= k <= 60
    zero = jnp.zeros((20, 1))
    _, (_, _, info_c, _) = rollout(env, params, key, zero, 80)
    _, (_, _, info_n, _) = rollout(env, params.replace(p_contingency=jnp.asarray(0.0)), key, zero, 80)
    f_c, f_n = np.asarray(info_c["f_min_hz"]), np.asarray(info_n["f_min_hz"])
    np.testing.assert_array_equal(f_c[:k], f_n[:k])
    assert np.abs(f_c[k:] - f_n[k:]).min() > 0
    assert np.all(np.asarray(info_c["tripped"])[:k] == 0) and np.all(np.asarray(info_c["tripped"])[k:] == 1)


def test_machine_trip_settles_at_the_closed_form(env):
    """No noise, no control: after a machine trip the frequency settles at -P0 / beta of the rest."""
    p = quiet(env.default_params, p_contingency=jnp.asarray(1.0), p_machine_trip=jnp.asarray(1.0))
    key = jax.random.PRNGKey(5)
    _, state = env.reset(key, p)
    _, (_, reward, info, states) = rollout(env, p, key, jnp.zeros((20, 1)), 120)
    m = int(np.flatnonzero(~np.asarray(p.topo_machine_on[int(state.trip_topo)]))[0])
    plant = p.plant
    on = np.arange(16) != m
    beta = float(np.sum(plant.d_pu[on]) + np.sum(plant.inv_r_pu[on]) + np.sum(plant.load_damping_pu))
    df = -float(plant.p0_pu[m]) / beta * 60.0
    np.testing.assert_allclose(float(info["f_coi_hz"][-1]) - 60.0, df, rtol=1e-3)
    k = int(state.trip_step)
    np.testing.assert_array_equal(np.asarray(reward[:k]), 0.0)  # at 60 Hz with no action: no penalty
    rocof = float(info["rocof_hz_s"][k])  # initial RoCoF of the centre of inertia: -P0 / sum(M) f0
    np.testing.assert_allclose(rocof, float(plant.p0_pu[m]) / float(np.sum(plant.m_s[on])) * 60.0, rtol=1e-9)


def test_reward_and_cost_of_one_action(env):
    p = quiet(env.default_params)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, p)
    b = env.agents.index("battery_0")
    a = jnp.zeros((20, 1)).at[b, 0].set(1.0)
    _, state, reward, _, _, info = env.step_env(key, state, a, p)
    dp = 50.0 * env.dt_s / 60.0
    assert float(state.p_mw[b]) == pytest.approx(dp)
    np.testing.assert_allclose(float(info["cost"]), 2.0 * dp + 0.1 * 1.0 * dp ** 2, rtol=1e-12)
    expected = -(float(info["freq_penalty"]) + float(info["cost"]) + 10000 * float(info["violations"]))
    np.testing.assert_allclose(np.asarray(reward), expected, rtol=1e-12)
    assert float(info["freq_penalty"]) > 0 and float(info["f_max_hz"]) > 60.0  # more generation: frequency rises


def test_jit_vmap_without_retracing(env):
    p = env.default_params

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, actions, params):
        return env.step(key, state, actions, params)

    _, state = env.reset(jax.random.PRNGKey(0), p)
    for i in range(3):
        _, state, *_ = step(jax.random.PRNGKey(i), state, jnp.full((20, 1), 0.1 * i), p.replace(w_freq=p.w_freq * i))
    keys = jax.random.split(jax.random.PRNGKey(9), 4)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, p)
    obs, states, reward, *_ = jax.jit(jax.vmap(env.step, in_axes=(0, 0, None, None)))(keys, states, jnp.zeros((20, 1)), p)
    assert obs.shape == (4, 20, 15) and reward.shape == (4, 20)
    assert np.all(np.isfinite(np.asarray(reward)))

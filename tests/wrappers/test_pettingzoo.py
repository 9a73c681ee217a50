"""The PettingZoo shim (`pgjax.wrappers.pettingzoo`): the PettingZoo API and seed tests on every
registered scenario, spaces, clipping, equality with the functional env under the documented
keys, rendering, and the vector env against single envs.

Compilation dominates: the shim compiles one step per scenario, shared by all its instances
(`_backend`), so the tests reuse the same few scenarios."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import pgjax
from pgjax import scenario
from pgjax.wrappers import pettingzoo as pz

VC = "voltage_control_33bw"  # agents with different observation and action sizes; cheapest to compile


def _random_actions(env, rng, scale=1.0):
    return {a: (rng.uniform(-scale, scale, env.action_space(a).shape)).astype(np.float32) for a in env.agents}


@pytest.mark.parametrize("name", scenario.names())
def test_parallel_api_every_scenario(name):
    env = pz.parallel_env(name)
    steps = env.fenv.episode_steps
    # whole episodes (twice) where they are short; long-episode variants get a few cycles
    parallel_api_test(env, num_cycles=1000 if steps <= 24 else 12)
    if steps <= 24:
        assert env.agents == []  # emptied at the end of the episode
    with pytest.raises(KeyError):
        env.reset(seed=0)
        env.step({a: np.zeros(env.action_space(a).shape) for a in env.agents[1:]})
    assert env._b is pz.parallel_env(name)._b  # compiled once per scenario, shared


def test_seed_determinism():
    parallel_seed_test(lambda: pz.parallel_env("multi_microgrid"))
    # stronger: a whole episode under the same seed and actions is identical; another seed differs
    env1, env2 = pz.parallel_env(VC), pz.parallel_env(VC)
    o1, _ = env1.reset(seed=3)
    o2, _ = env2.reset(seed=3)
    assert all(np.array_equal(o1[a], o2[a]) for a in o1)
    o3, _ = pz.parallel_env(VC).reset(seed=4)
    assert any(not np.array_equal(o1[a], o3[a]) for a in o1)
    rng = np.random.default_rng(0)
    while env1.agents:
        acts = _random_actions(env1, rng)
        r1, r2 = env1.step(acts), env2.step(acts)
        for d1, d2 in zip(r1, r2):
            for a in d1:
                if isinstance(d1[a], dict):
                    assert d1[a] == d2[a]
                else:
                    np.testing.assert_array_equal(d1[a], d2[a])
    assert env2.agents == []


@pytest.mark.parametrize("name", ["multi_microgrid", VC])
def test_observations_in_spaces_over_an_episode(name):
    env = pz.parallel_env(name, dtype="float64")
    fenv = pgjax.make(name, dtype="float64")
    assert env.possible_agents == list(fenv.agents)
    for i, a in enumerate(env.possible_agents):
        assert env.observation_space(a).shape == (fenv.obs_sizes[i],)
        assert env.action_space(a).shape == (fenv.act_sizes[i],)
        assert env.observation_space(a).dtype == np.float32 and env.action_space(a).dtype == np.float32
        assert env.observation_space(a) is env.observation_space(a)
    obs, _ = env.reset(seed=11)
    rng = np.random.default_rng(1)
    n = 0
    while env.agents:
        for a in obs:
            assert env.observation_space(a).contains(obs[a]), (a, obs[a])
            assert np.all(np.isfinite(obs[a]))
        obs, rewards, terms, truncs, _ = env.step(_random_actions(env, rng))
        assert all(np.isfinite(r) for r in rewards.values())
        n += 1
    assert n == env.fenv.episode_steps and all(truncs.values()) and not any(terms.values())
    for a in obs:  # the final observation
        assert env.observation_space(a).contains(obs[a])
    assert env.state().shape == env.state_space.shape
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_random_actions(env, rng))


def test_out_of_range_actions_are_clipped_and_reported():
    env, ref = pz.parallel_env(VC), pz.parallel_env(VC)
    env.reset(seed=5)
    ref.reset(seed=5)
    wild = {a: np.full(env.action_space(a).shape, 3.0, np.float32) for a in env.agents}
    wild["R1"][0] = -7.0
    wild["R2"][1] = 0.5  # inside
    wild["R3"][0] = np.nan  # replaced by the device's safe default
    obs, rew, _, _, info = env.step(wild)
    sizes = {a: env.action_space(a).shape[0] for a in env.agents}
    assert info["R1"]["clipped_actions"] == sizes["R1"]
    assert info["R2"]["clipped_actions"] == sizes["R2"] - 1
    assert info["R3"]["clipped_actions"] == sizes["R3"] - 1 and info["R3"]["nan_actions"] == 1
    assert info["R4"]["nan_actions"] == 0
    clipped = {a: np.clip(np.nan_to_num(x, nan=0.0), -1, 1) for a, x in wild.items()}
    clipped["R3"][0] = env.fenv.default_actions[2, 0]
    obs2, rew2, _, _, info2 = ref.step(clipped)
    for a in env.agents:
        np.testing.assert_array_equal(obs[a], obs2[a])
        assert rew[a] == rew2[a] and info2[a]["clipped_actions"] == 0
    with pytest.raises(ValueError, match="entries"):
        env.step({a: np.zeros(sizes[a] + 1) for a in env.agents})


def test_trajectory_equals_functional_env():
    """The documented key derivation reproduces the shim with `env.reset` / `env.step`."""
    shim = pz.parallel_env(VC, dtype="float64")
    env = pgjax.make(VC, dtype="float64")
    params = env.default_params
    step = jax.jit(env.step)
    seed = 123
    obs, _ = shim.reset(seed=seed)
    key = jax.random.PRNGKey(seed)
    key, k = jax.random.split(key)
    f_obs, state = env.reset(k, params)
    rng = np.random.default_rng(2)

    def check(obs, f_obs):
        for i, a in enumerate(env.agents):
            np.testing.assert_array_equal(obs[a], np.asarray(f_obs[i, :env.obs_sizes[i]], np.float32))

    check(obs, f_obs)
    for episode in range(2):
        if episode:  # reset() without a seed continues the key chain
            obs, _ = shim.reset()
            key, k = jax.random.split(key)
            f_obs, state = env.reset(k, params)
            check(obs, f_obs)
        for t in range(env.episode_steps if episode == 0 else 3):
            acts = _random_actions(shim, rng, scale=1.3)
            padded = np.zeros((env.num_agents, env.act_dim))
            for i, a in enumerate(env.agents):
                padded[i, :env.act_sizes[i]] = acts[a]
            obs, rew, term, trunc, info = shim.step(acts)
            key, k = jax.random.split(key)
            f_obs, state, f_rew, f_term, f_trunc, f_info = step(k, state, padded, params)
            check(obs, f_info["final_observation"])
            for i, a in enumerate(env.agents):
                np.testing.assert_allclose(rew[a], float(f_rew[i]), rtol=1e-12, atol=1e-12)
                assert trunc[a] == bool(f_trunc) and term[a] == bool(f_term)
                np.testing.assert_allclose(info[a]["cost"], float(f_info["cost"][i]), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(info[env.agents[0]]["losses_mw"], float(f_info["losses_mw"]), rtol=1e-12)
    assert bool(f_trunc) is False and shim.agents


def test_render_rgb_array_and_human_without_display(monkeypatch):
    env = pz.parallel_env(VC, render_mode="rgb_array")
    with pytest.raises(RuntimeError, match="reset"):
        pz.parallel_env(VC, render_mode="rgb_array").render()
    env.reset(seed=0)
    env.step({a: np.zeros(env.action_space(a).shape, np.float32) for a in env.agents})
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] > 100
    assert frame.std() > 10  # a picture, not a blank canvas
    env.close()
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(pz.sys, "platform", "linux")
    with pytest.raises(RuntimeError, match="display"):
        pz.parallel_env(VC, render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        pz.parallel_env(VC, render_mode="ansi")


def test_vector_env_matches_single_envs(caplog):
    """Environment i of `vector_env(seed=s)` = `parallel_env` reset with `s + i`, across an auto-reset;
    the batched step is traced at most once for the whole run (JAX's compile log counts traces)."""
    n, seed = 3, 40
    venv = pz.vector_env(VC, num_envs=n, dtype="float64")
    singles = [pz.parallel_env(VC, dtype="float64") for _ in range(n)]
    obs, _ = venv.reset(seed=seed)
    s_obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    agents = venv.possible_agents
    assert venv.observation_space(agents[0]).shape == (n,) + venv.single_observation_space(agents[0]).shape
    rng = np.random.default_rng(3)
    steps = venv.fenv.episode_steps + 2
    ended = 0
    caplog.set_level(logging.WARNING, logger="jax")
    for t in range(steps):
        for i in range(n):
            for a in agents:
                np.testing.assert_allclose(obs[a][i], s_obs[i][a], rtol=1e-6, atol=1e-6)
        acts = {a: rng.uniform(-1.5, 1.5, (n,) + venv.single_action_space(a).shape) for a in agents}
        with jax.log_compiles():
            obs, rew, term, trunc, info = venv.step(acts)
        for i, e in enumerate(singles):
            o, r, te, tr, inf = e.step({a: acts[a][i] for a in agents})
            for a in agents:
                # batched kernels may round differently from single ones (last bits only)
                np.testing.assert_allclose(rew[a][i], r[a], rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(info[a]["cost"][i], inf[a]["cost"], rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(info[a]["final_obs"][i], o[a], rtol=1e-6, atol=1e-6)
                assert trunc[a][i] == tr[a] and term[a][i] == te[a]
                assert info[a]["clipped_actions"][i] == inf[a]["clipped_actions"]
            if tr[agents[0]]:  # same-step auto-reset: the vector env already holds the next episode
                assert info[agents[0]]["_final_obs"][i]
                o, _ = e.reset()
                ended += 1
            s_obs[i] = o
    assert ended == n
    frame = venv.render(1)
    assert frame.dtype == np.uint8 and frame.shape[2] == 3
    traces = [r for r in caplog.records if "tracing vstep_one" in r.getMessage()]
    assert len(traces) <= 1  # one trace for this batch size (none if an earlier test traced it)


def test_sb3_parameter_sharing_trains_a_few_hundred_steps():
    """`scripts/train_sb3.py` (supersuit padding + vec-env conversion, shared PPO policy) runs."""
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("supersuit")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "train_sb3.py"
    spec = importlib.util.spec_from_file_location("train_sb3", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, _seconds, ret = mod.train(VC, timesteps=256, n_steps=64, verbose=0)
    assert model.num_timesteps >= 256 and np.isfinite(ret)

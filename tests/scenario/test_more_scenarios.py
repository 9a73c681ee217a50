"""The ieee123_der and cigre_mv_der scenarios: they make by name, have the intended learned
agents, and run a full 24-step episode under `jax.jit` with random actions, finite rewards
and a converged power flow on every step."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import pgjax

CASES = {
    "ieee123_der-v0": tuple(f"Z{i}" for i in range(1, 11)),
    "cigre_mv_der-v0": ("F1_head", "F1_tail", "F2"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scenario_runs_a_jitted_episode(name):
    env = pgjax.make(name)
    assert env.agents == CASES[name]
    if name.startswith("ieee123"):
        assert env.num_agents >= 10
    assert env.episode_steps == 24
    params = env.default_params
    step = jax.jit(env.step)
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
    keys = jax.random.split(jax.random.PRNGKey(1), 24)
    for t in range(24):
        actions = jax.random.uniform(keys[t], (env.num_agents, env.act_dim), minval=-1.0, maxval=1.0)
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, actions, params)
        assert reward.shape == (env.num_agents,)
        assert np.all(np.isfinite(np.asarray(reward))), f"step {t}: non-finite reward"
        assert np.all(np.isfinite(np.asarray(obs))), f"step {t}: non-finite observation"
        assert float(info["nonconverged"]) == 0.0, f"step {t}: power flow did not converge"
    assert bool(np.all(np.asarray(truncated)))  # the 24th step ends the episode

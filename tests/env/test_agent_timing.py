"""Per-agent observation / action delay and ticks, through the whole environment.

The reference is the same scenario without delay, driven by hand: an agent with
`act_delay: d` acts as if its action of step t were sent at step t + d (the devices' safe
default actions before that), an agent with `obs_delay: d` sees at step t what the
undelayed env showed at step t - d (its reset observation before that), an agent with
`tick_interval: k` holds its action of the last tick. Delays change nothing else: the other
agents' observations, rewards and the physics match step for step (float64).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import pgjax

SCENARIO, STEPS = "multi_microgrid", 7
KEY = jax.random.PRNGKey(11)


def rollout(env, actions):
    """Observations `[STEPS + 1]` (reset first) and rewards `[STEPS]` of `step_env` (no auto-reset)."""
    step = jax.jit(env.step_env)
    obs, state = env.reset(KEY)
    observations, rewards = [np.asarray(obs)], []
    for t, a in enumerate(actions):
        obs, state, reward, _, _, _ = step(jax.random.fold_in(KEY, t), state, a, env.default_params)
        observations.append(np.asarray(obs))
        rewards.append(np.asarray(reward))
    return observations, rewards


@pytest.fixture(scope="module")
def reference():
    env = pgjax.make(SCENARIO, dtype="float64")
    rng = np.random.default_rng(5)
    actions = [rng.uniform(-1, 1, (env.num_agents, env.act_dim)) * env.action_mask for _ in range(STEPS)]
    return env, actions, rollout(env, actions)


@pytest.mark.parametrize("delay", [1, 2])
def test_observation_delay_shifts_that_agents_observations_only(reference, delay):
    env, actions, (obs_ref, rew_ref) = reference
    delayed = pgjax.make(SCENARIO, dtype="float64", communication={"obs_delay": {"MG2": delay}})
    obs, rew = rollout(delayed, actions)
    a = env.agents.index("MG2")
    for t in range(STEPS + 1):
        np.testing.assert_allclose(obs[t][a], obs_ref[max(t - delay, 0)][a], rtol=1e-12, atol=1e-12,
                                   err_msg=f"step {t}")
        others = [i for i in range(env.num_agents) if i != a]
        np.testing.assert_allclose(obs[t][others], obs_ref[t][others], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.stack(rew), np.stack(rew_ref), rtol=1e-12, atol=1e-12)
    # the delay is real: the delayed agent's observations differ from the undelayed ones
    assert any(not np.allclose(obs[t][a], obs_ref[t][a]) for t in range(1, STEPS + 1))


@pytest.mark.parametrize("delay", [1, 3])
def test_action_delay_acts_like_the_action_sent_delay_steps_later(reference, delay):
    env, actions, (obs_ref, rew_ref) = reference
    delayed = pgjax.make(SCENARIO, dtype="float64", communication={"act_delay": {"MG1": delay}})
    a = env.agents.index("MG1")
    obs, rew = rollout(delayed, actions)
    shifted = []
    for t in range(STEPS):
        x = np.array(actions[t])
        x[a] = actions[t - delay][a] if t >= delay else np.asarray(env.default_actions)[a]
        shifted.append(x)
    obs_want, rew_want = rollout(env, shifted)
    np.testing.assert_allclose(np.stack(obs), np.stack(obs_want), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.stack(rew), np.stack(rew_want), rtol=1e-10, atol=1e-10)
    assert not np.allclose(np.stack(rew), np.stack(rew_ref))  # the delay changes the outcome


def test_ticks_then_action_delay(reference):
    """`tick_interval: 2` and `act_delay: 1` together: the held action of the last tick, one step late."""
    env, actions, _ = reference
    timed = pgjax.make(SCENARIO, dtype="float64", communication={"tick_interval": {"MG3": 2}, "act_delay": {"MG3": 1}})
    a = env.agents.index("MG3")
    held = [actions[2 * (t // 2)][a] for t in range(STEPS)]
    want = []
    for t in range(STEPS):
        x = np.array(actions[t])
        x[a] = held[t - 1] if t >= 1 else np.asarray(env.default_actions)[a]
        want.append(x)
    obs, rew = rollout(timed, actions)
    obs_want, rew_want = rollout(env, want)
    np.testing.assert_allclose(np.stack(obs), np.stack(obs_want), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.stack(rew), np.stack(rew_want), rtol=1e-10, atol=1e-10)

"""Domain randomization of communication (`communication.randomize`): each episode draws its
message delay, loss and jitter from the given ranges; an episode that drew a delay d runs
exactly like the scenario with the fixed `msg_delay: d`; degenerate ranges equal the fixed
values; bad ranges are named by their key path."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import pgjax
from pgjax.protocols.channels import ChannelState
from pgjax.scenario import ScenarioError

SCENARIO = "multi_microgrid_p2p"  # P2P bids between the microgrids over the horizontal channel


def channel_states(state):
    return [x for x in jax.tree.leaves(state.coord, is_leaf=lambda x: isinstance(x, ChannelState))
            if isinstance(x, ChannelState)]


def rollout(env, key, steps=12):
    """Observations and rewards of one episode under random actions drawn from `key`."""
    k_reset, k_acts, k_steps = jax.random.split(key, 3)
    obs, state = env.reset(k_reset)
    acts = jax.random.uniform(k_acts, (steps, env.num_agents, env.act_dim), minval=-1, maxval=1)

    def body(state, x):
        a, k = x
        obs, state, reward, _, _, info = env.step(k, state, a)
        return state, (obs, reward, info["p2p_mw"])

    _, out = jax.lax.scan(body, state, (acts, jax.random.split(k_steps, steps)))
    return jax.device_get((obs,) + out)


def test_each_episode_draws_its_conditions_and_runs_like_the_fixed_scenario():
    env = pgjax.make(SCENARIO, communication={"randomize": {"msg_delay": [0, 3], "loss_prob": [0.0, 0.5]}})
    reset = jax.jit(jax.vmap(env.reset))
    _, states = reset(jax.random.split(jax.random.PRNGKey(0), 64))
    chans = channel_states(states)
    assert chans, "the P2P scenario has a message channel"
    delays = np.asarray(chans[0].delay)[:, 0, 1]
    losses = np.asarray(chans[0].loss_prob)[:, 0, 1]
    assert set(delays.tolist()) == {0, 1, 2, 3}  # uniform over the integers of the range
    assert 0.0 <= losses.min() and losses.max() < 0.5 and losses.std() > 0.05
    for c in chans:  # one draw per episode for every link of every channel
        np.testing.assert_array_equal(np.asarray(c.delay), np.broadcast_to(delays[:, None, None], c.delay.shape))

    key = jax.random.PRNGKey(5)
    _, state = env.reset(jax.random.split(key, 3)[0])
    d = int(channel_states(state)[0].delay[0, 1])
    loss = float(channel_states(state)[0].loss_prob[0, 1])
    fixed = pgjax.make(SCENARIO, communication={"msg_delay": d, "loss_prob": loss})
    got, want = rollout(env, key), rollout(fixed, key)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_degenerate_ranges_equal_the_fixed_values():
    ranged = pgjax.make(SCENARIO, communication={"randomize": {"msg_delay": [2, 2], "loss_prob": [0.3, 0.3]}})
    fixed = pgjax.make(SCENARIO, communication={"msg_delay": 2, "loss_prob": 0.3})
    key = jax.random.PRNGKey(11)
    got, want = rollout(ranged, key), rollout(fixed, key)
    assert np.abs(want[3]).sum() > 0  # trades happen
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("rnd, path", [
    ({"msg_delay": [3, 1]}, "communication.randomize.msg_delay"),
    ({"msg_delay": [0, 1.5]}, "communication.randomize.msg_delay"),
    ({"loss_prob": [0.1, 1.2]}, "communication.randomize.loss_prob"),
    ({"jitter": [0.1]}, "communication.randomize.jitter"),
    ({"delay": [0, 1]}, "communication.randomize.delay"),
])
def test_bad_ranges_are_named(rnd, path):
    with pytest.raises(ScenarioError, match=path.replace(".", r"\.")):
        pgjax.make(SCENARIO, communication={"randomize": rnd})

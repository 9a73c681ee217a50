"""Reference controllers that need no training, generic over any environment.

    policy = random_policy(env)          # uniform in [-1, 1] on every used action column
    policy = do_nothing_policy(env)      # the env's `default_actions` (zeros if it has none)
    metrics = evaluate(env, policy, key, num_episodes=8)

A policy is `policy(key, obs [n_agents, obs_dim]) -> actions [n_agents, act_dim]`.
Scenario-specific rule-based controllers (storage arbitrage on price, merit-order dispatch,
volt-var droop) belong here too and are registered in `CONTROLLERS` by name.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from baselines.common import MARLEnv, Policy, evaluate

__all__ = ["CONTROLLERS", "do_nothing_policy", "evaluate", "random_policy"]


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


# name -> factory(env, params=None) -> Policy
CONTROLLERS = {"random": random_policy, "do_nothing": do_nothing_policy}

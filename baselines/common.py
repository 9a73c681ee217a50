"""What every baseline needs from an environment, in one place.

`MARLEnv` wraps any environment with the pgjax / JaxMARL functional API

    obs, state = env.reset(key, params)                                   # obs [n_agents, obs_dim]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, params)

and gives the baselines one fixed contract: float32 observations and rewards, one `done`
scalar per environment (`any` over agents when the env reports `[n_agents]` flags), `info`
reduced to float32 scalars (scalars kept, `[n_agents]` arrays summed over agents, anything
else such as `final_observation` dropped), `world_state` with or without `params`
(falling back to the concatenated observations), and the sizes as plain ints.

`evaluate(env, policy, key, ...)` rolls any policy out for whole episodes under `jit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32


def reduce_info(info: dict, num_agents: int) -> dict[str, jax.Array]:
    """`info` as float32 scalars: scalars kept, `[num_agents]` arrays summed, others dropped."""
    out = {}
    for k, v in info.items():
        v = jnp.asarray(v)
        if v.ndim == 0:
            out[k] = v.astype(F32)
        elif v.shape == (num_agents,):
            out[k] = jnp.sum(v).astype(F32)
    return out


@dataclasses.dataclass(frozen=True)
class MARLEnv:
    """A thin adapter around a functional multi-agent environment (see the module docstring)."""

    env: Any
    params: Any
    num_agents: int
    obs_dim: int
    act_dim: int
    world_state_dim: int
    action_mask: np.ndarray  # [n_agents, act_dim] bool, False on padded action columns
    default_actions: np.ndarray  # [n_agents, act_dim] the env's "do nothing" action (zeros if none)

    @classmethod
    def wrap(cls, env, params=None) -> MARLEnv:
        """Read the sizes from `env` (by tracing `reset`, not by trusting attributes)."""
        if isinstance(env, MARLEnv):
            return env
        params = env.default_params if params is None else params
        obs_shape, _ = jax.eval_shape(lambda k: env.reset(k, params), jax.random.PRNGKey(0))
        n_agents, obs_dim = obs_shape.shape
        act_dim = int(env.act_dim)
        self_ = cls(env, params, int(n_agents), int(obs_dim), act_dim, 0,
                    np.ones((n_agents, act_dim), bool), np.zeros((n_agents, act_dim), np.float32))

        def world_state(key):
            obs, state = env.reset(key, params)
            return self_.world_state(state, obs)

        ws_dim = jax.eval_shape(world_state, jax.random.PRNGKey(0)).shape[0]
        mask = np.broadcast_to(np.asarray(getattr(env, "action_mask", True), bool), (n_agents, act_dim)).copy()
        default = np.broadcast_to(np.asarray(getattr(env, "default_actions", 0.0), np.float32),
                                  (n_agents, act_dim)).copy()
        return dataclasses.replace(self_, world_state_dim=int(ws_dim), action_mask=mask, default_actions=default)

    @property
    def cost_signals(self) -> dict:
        """The env's safety signals a constrained learner may budget (name -> `CostSignal`; none if it has none)."""
        return dict(getattr(self.env, "cost_signals", {}))

    @property
    def agents(self) -> tuple:
        return tuple(getattr(self.env, "agents", range(self.num_agents)))

    def reset(self, key) -> tuple[jax.Array, Any]:
        """`obs [n_agents, obs_dim]` float32 and the env state."""
        obs, state = self.env.reset(key, self.params)
        return jnp.asarray(obs, F32), state

    def step(self, key, state, actions) -> tuple[jax.Array, Any, jax.Array, jax.Array, dict]:
        """`obs [n_agents, obs_dim]`, state, `reward [n_agents]`, `done []` bool, scalar `info`."""
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, actions, self.params)
        done = jnp.any(jnp.asarray(terminated)) | jnp.any(jnp.asarray(truncated))
        reward = jnp.broadcast_to(jnp.asarray(reward, F32), (self.num_agents,))
        return jnp.asarray(obs, F32), state, reward, done, reduce_info(info, self.num_agents)

    def world_state(self, state, obs) -> jax.Array:
        """`[world_state_dim]` float32: `env.world_state(state[, params])`, else `obs` flattened."""
        fn = getattr(self.env, "world_state", None)
        if fn is None:
            return jnp.asarray(obs, F32).reshape(-1)
        try:
            ws = fn(state, self.params)
        except TypeError:
            ws = fn(state)
        return jnp.asarray(ws, F32).reshape(-1)


def make_env(name: str, **kwargs):
    """A baselines test env by name (`pgjax.baselines.toy_env.TOY_ENVS`), else `pgjax.make(name, **kwargs)`."""
    from pgjax.baselines.toy_env import TOY_ENVS

    if name in TOY_ENVS:
        return TOY_ENVS[name](**kwargs)
    import pgjax

    return pgjax.make(name, **kwargs)


# A policy maps (key, obs [n_agents, obs_dim]) to actions [n_agents, act_dim] in [-1, 1]; a
# stateful one, passed with `policy_state`, maps (policy_state, key, obs) to actions.
Policy = Callable[..., jax.Array]

_ROLLOUTS: dict = {}  # (id(env), id(params), policy, steps, episodes, stateful) -> (env, params, rollout)


def _rollout(menv: MARLEnv, policy, steps: int, num_episodes: int, stateful: bool):
    """A jitted `run(key, policy_state) -> per-episode totals`, cached so repeated calls do not recompile."""
    cache_key = (id(menv.env), id(menv.params), policy, steps, num_episodes, stateful)
    hit = _ROLLOUTS.get(cache_key)
    if hit is not None and hit[0] is menv.env and hit[1] is menv.params:
        return hit[2]

    def act(policy_state, key, obs):
        return policy(policy_state, key, obs) if stateful else policy(key, obs)

    def episode(key, policy_state):
        k_reset, k_run = jax.random.split(key)
        obs, state = menv.reset(k_reset)

        def body(carry, key):
            obs, state = carry
            k_act, k_step = jax.random.split(key)
            obs, state, reward, done, info = menv.step(k_step, state, act(policy_state, k_act, obs))
            return (obs, state), (jnp.mean(reward), done, info)

        _, (ret, done, info) = jax.lax.scan(body, (obs, state), jax.random.split(k_run, steps))
        return {"return": jnp.sum(ret), "episode_done": done[-1], **{k: jnp.sum(v) for k, v in info.items()}}

    run = jax.jit(lambda key, policy_state: jax.vmap(episode, in_axes=(0, None))(
        jax.random.split(key, num_episodes), policy_state))
    if len(_ROLLOUTS) > 64:
        _ROLLOUTS.clear()
    _ROLLOUTS[cache_key] = (menv.env, menv.params, run)
    return run


def evaluate(env, policy: Policy, key, num_episodes: int = 8, episode_steps: int | None = None,
             params=None, policy_state=None) -> dict[str, float]:
    """Roll `policy` out for `num_episodes` episodes (one per parallel env) under `jit`.

    Runs `episode_steps` steps per env (default `env.episode_steps`) from a reset and returns
    means over episodes of the per-episode totals: `return` (summed over steps, mean over
    agents) and every scalar `info` metric summed over the episode (e.g. total `cost`).
    Episodes must end exactly after `episode_steps` steps (pgjax scenarios do).
    With `policy_state` (e.g. a MAPPO `TrainState`), `policy(policy_state, key, obs)` is
    called instead, and evaluating other states of the same shapes reuses the compiled rollout.
    """
    menv = MARLEnv.wrap(env, params)
    steps = int(episode_steps or menv.env.episode_steps)
    run = _rollout(menv, policy, steps, num_episodes, policy_state is not None)
    out = jax.device_get(run(key, policy_state))
    if not bool(np.all(out.pop("episode_done"))):
        raise ValueError(f"episodes did not end after episode_steps={steps} steps")
    return {k: float(np.mean(v)) for k, v in out.items()}

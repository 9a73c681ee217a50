"""`SetpointEnv`: a tiny multi-agent "reach your setpoint" task with a closed-form optimum.

Same functional API as `pgjax.make(...)` environments, so baselines can be tested in
seconds without power flows.

Each agent `a` moves a point `x_a` in `[-x_max, x_max]^dim_a` towards its target `g_a`
(both uniform in [-1, 1]^dim_a at reset): `x' = clip(x + step_size * action)`, reward
`-sum((x' - g)^2)` per agent. Safety signal `overshoot` (`info`, the env's `cost_signals`):
`sum(max(|x'| - x_safe, 0))` over agents and coordinates, so reaching targets beyond
`x_safe` costs; with targets uniform in [-1, 1] and `x_safe = 0.5` a policy that sits on its
targets pays 0.125 per coordinate and step in expectation, one that stops at `x_safe` pays 0.
Observation `[x_a, g_a, t / episode_steps]`, world state all
agents' `x` and `g` plus time. Optimum: `action* = clip((g - x) / step_size, -1, 1)`
(`optimal_policy`). Episodes last `episode_steps` steps; `truncated` comes as one flag per
agent (the real env gives a scalar; baselines must handle both).

`dim` is one int for every agent or one per agent (heterogeneous agents, as in pgjax
scenarios): points are padded to `D = max(dim)` coordinates, which stay 0, and
`act_sizes`, `obs_sizes` and `action_mask` describe the padding as `pgjax.Env` does.

    env = SetpointEnv(num_agents=2)
    obs, state = env.reset(key, env.default_params)                    # [2, 3]
    env = SetpointEnv(num_agents=3, dim=(1, 2, 2))                      # obs [3, 5], actions [3, 2]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, env.default_params)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.env.types import CostSignal

F32 = jnp.float32


@struct.dataclass
class SetpointParams:
    step_size: float = 1.0  # distance per unit action
    x_max: float = 2.0
    x_safe: float = 0.5  # |x| beyond it counts as `overshoot`


@struct.dataclass
class SetpointState:
    x: jax.Array  # [n_agents, D], 0 on padded coordinates
    target: jax.Array  # [n_agents, D], 0 on padded coordinates
    t: jax.Array  # [] int32


class SetpointEnv:
    """Agents steer points to targets (see the module docstring)."""

    cost_signals = {"overshoot": CostSignal("overshoot", "distance beyond x_safe, summed over agents and coordinates")}

    def __init__(self, num_agents: int = 2, dim: int | Sequence[int] = 1, episode_steps: int = 8):
        dims = (dim,) * num_agents if isinstance(dim, int) else tuple(int(d) for d in dim)
        if len(dims) != num_agents or min(dims) < 1:
            raise ValueError(f"dim: expected an int >= 1 or {num_agents} of them (one per agent), got {dim!r}")
        self.num_agents, self.episode_steps = num_agents, episode_steps
        self.dim = max(dims)  # D, the padded point size
        self.agents = tuple(f"agent_{i}" for i in range(num_agents))
        self.obs_dim = 2 * self.dim + 1
        self.act_dim = self.dim
        self.act_sizes = dims
        self.obs_sizes = (self.obs_dim,) * num_agents  # padded coordinates are observed (as zeros)
        self.action_mask = np.arange(self.dim)[None, :] < np.asarray(dims)[:, None]  # [n_agents, D]
        self.default_params = SetpointParams()

    def reset(self, key, params: SetpointParams | None = None):
        k_x, k_g = jax.random.split(key)
        shape, mask = (self.num_agents, self.dim), jnp.asarray(self.action_mask, F32)
        state = SetpointState(jax.random.uniform(k_x, shape, F32, -1.0, 1.0) * mask,
                              jax.random.uniform(k_g, shape, F32, -1.0, 1.0) * mask, jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def get_obs(self, state: SetpointState) -> jax.Array:
        """`[n_agents, 2 D + 1]`: own position, own target, episode progress."""
        time = jnp.full((self.num_agents, 1), state.t / self.episode_steps, F32)
        return jnp.concatenate([state.x, state.target, time], -1)

    def world_state(self, state: SetpointState, params: SetpointParams | None = None) -> jax.Array:
        """`[2 n_agents D + 1]`."""
        return jnp.concatenate([state.x.reshape(-1), state.target.reshape(-1),
                                jnp.asarray([state.t / self.episode_steps], F32)])

    def step_env(self, key, state: SetpointState, actions, params: SetpointParams):
        actions = jnp.clip(jnp.asarray(actions, F32), -1.0, 1.0) * jnp.asarray(self.action_mask, F32)
        x = jnp.clip(state.x + params.step_size * actions, -params.x_max, params.x_max)
        err = jnp.sum((x - state.target) ** 2, -1)  # [n_agents]
        state = state.replace(x=x, t=state.t + 1)
        truncated = jnp.full((self.num_agents,), state.t >= self.episode_steps)
        mask = jnp.asarray(self.action_mask, F32)
        info = {"cost": err, "distance": jnp.mean(jnp.abs(x - state.target)),
                "overshoot": jnp.sum(jnp.maximum(jnp.abs(x) - params.x_safe, 0.0) * mask)}
        return self.get_obs(state), state, -err, jnp.zeros((), bool), truncated, info

    def step(self, key, state: SetpointState, actions, params: SetpointParams | None = None):
        """`step_env`, then auto-reset where the episode ended."""
        params = self.default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        obs, new_state, reward, terminated, truncated, info = self.step_env(k_step, state, actions, params)
        obs_re, state_re = self.reset(k_reset, params)
        done = jnp.any(terminated) | jnp.any(truncated)
        new_state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), state_re, new_state)
        info["final_observation"] = obs
        return jax.lax.select(done, obs_re, obs), new_state, reward, terminated, truncated, info

    def optimal_policy(self, key, obs) -> jax.Array:
        """The closed-form optimum for default params: `clip(g - x, -1, 1)` from the observation."""
        x, g = obs[..., :self.dim], obs[..., self.dim:2 * self.dim]
        return jnp.clip((g - x) / self.default_params.step_size, -1.0, 1.0)


TOY_ENVS = {"setpoint": SetpointEnv}  # name -> class, for `MAPPOConfig.env`

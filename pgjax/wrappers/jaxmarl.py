"""JaxMARL adapter: a pgjax scenario as a `jaxmarl` `MultiAgentEnv` (pure, jit- and vmap-able).

    from pgjax.wrappers.jaxmarl import PgjaxMultiAgentEnv
    from jaxmarl.wrappers.baselines import LogWrapper

    env = LogWrapper(PgjaxMultiAgentEnv("multi_microgrid"))     # + pgjax.make overrides
    obs, state = env.reset(key)                                 # obs[agent]: [obs_dim]
    obs, state, rewards, dones, infos = env.step(key, state, {a: act[i] for i, a in enumerate(env.agents)})

JaxMARL's baselines (IPPO, MAPPO) stack every agent's observation and action into one
batch, so all agents share one observation and one action space here: the functional env's
padded `[obs_dim]` observations and `[act_dim]` actions (`jaxmarl.environments.spaces.Box`,
observations unbounded, actions in `[-1, 1]`, the env's dtype). The padded action columns of
an agent with fewer real ones are ignored by the step (`get_avail_actions` gives the real
columns, the functional `env.action_mask`); its padded observation entries are zero.

Semantics are the functional env's (`pgjax.env.Env`): `step_env` is `env.step_env` with the
stacked actions (clipping, NaN defaults and their counts in `info` included), episodes have
a fixed length and end for every agent at once (`dones[agent]` and `dones["__all__"]` are
the functional env's `terminated | truncated`), and `MultiAgentEnv.step` resets on `__all__` with its
second key (JaxMARL's own auto-reset). Rewards are `{agent: [] }` of the env's reward.

Infos follow JaxMARL's convention of one value per agent, so the baselines can reshape them
to `[num_envs * num_agents]`: the per-agent entries of the functional info
(`pgjax.env.reward.AGENT_INFO`: cost, safety) as they are, every scalar entry (cost_total,
nonconverged, voltage and loading safety, losses, ...) repeated for each agent. Entries per
grid agent (P2P trades, PCC imports) are left out: `state` holds them for the functional API.

`params` (default `env.default_params`) are fixed at construction: JaxMARL's `reset(key)` and
`step(key, state, actions)` take none.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxmarl.environments.multi_agent_env import MultiAgentEnv
from jaxmarl.environments.spaces import Box

import pgjax
from pgjax.env import Env
from pgjax.env.reward import AGENT_INFO
from pgjax.errors import InputError

__all__ = ["PgjaxMultiAgentEnv"]


class PgjaxMultiAgentEnv(MultiAgentEnv):
    """`MultiAgentEnv` view of `pgjax.make(scenario, **overrides)` (or of a built `Env`)."""

    def __init__(self, scenario: str | Env = "multi_microgrid", params=None, **overrides):
        if isinstance(scenario, Env):
            if overrides:
                raise InputError(f"PgjaxMultiAgentEnv: overrides {sorted(overrides)} given with a built Env; "
                                 f"pass a scenario name to apply them")
            env = scenario
        else:
            env = pgjax.make(scenario, **overrides)
        super().__init__(env.num_agents)
        self.env = env
        self.agents = list(env.agents)
        self.params = env.default_params if params is None else params
        self.observation_spaces = {a: Box(-jnp.inf, jnp.inf, (env.obs_dim,), env.dtype) for a in self.agents}
        self.action_spaces = {a: Box(-1.0, 1.0, (env.act_dim,), env.dtype) for a in self.agents}
        self._avail = np.asarray(env.action_mask, bool)

    @property
    def name(self) -> str:
        return f"pgjax:{self.env.name}"

    @property
    def agent_classes(self) -> dict:
        """One class: every learned agent of a pgjax scenario sits at the same level (`env.layout.learned_level`)."""
        return {self.env.layout.learned_level: list(self.agents)}

    def _split(self, x) -> dict:
        return {a: x[i] for i, a in enumerate(self.agents)}

    def _stack_actions(self, actions) -> jax.Array:
        if not isinstance(actions, dict) or set(actions) != set(self.agents):
            got = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
            raise InputError(f"actions: expected a dict with one action per agent {self.agents}, got {got}")
        return jnp.stack([jnp.asarray(actions[a]) for a in self.agents])

    @partial(jax.jit, static_argnums=(0,))
    def reset(self, key):
        obs, state = self.env.reset_env(key, self.params)
        return self._split(obs), state

    def get_obs(self, state) -> dict:
        return self._split(self.env.get_obs(state, self.params))

    def step_env(self, key, state, actions):
        obs, state, reward, terminated, truncated, info = self.env.step_env(
            key, state, self._stack_actions(actions), self.params)
        n = self.num_agents
        done = terminated | truncated  # [] : the episode ends for every agent at once
        dones = {**self._split(jnp.broadcast_to(done, (n,))), "__all__": done}
        infos = {k: jnp.broadcast_to(v, (n,)) for k, v in info.items() if jnp.ndim(v) == 0}
        infos.update({k: info[k] for k in AGENT_INFO})
        return self._split(obs), state, self._split(reward), dones, infos

    @partial(jax.jit, static_argnums=(0,))
    def get_avail_actions(self, state) -> dict:
        """The real (unpadded) action columns of each agent `[act_dim]` bool; the same at every state."""
        return self._split(jnp.asarray(self._avail))

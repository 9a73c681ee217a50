"""The interface every environment family implements (gymnax / JaxMARL conventions).

    class MyEnv(MultiAgentEnv):
        def make_params(self): ...                              # EnvParams-like pytree
        def reset_env(self, key, params): ...                   # -> obs, state
        def step_env(self, key, state, actions, params): ...    # -> obs, state, reward, terminated, truncated, info

A family sets, in its constructor, `name`, `dtype`, `agents` (tuple of names),
`episode_steps`, `observation_schema` / `action_schema` (`pgjax.env.types`: what each
agent observes and controls, by name), `action_mask [n_agents, act_dim]` (real columns)
and `default_actions [n_agents, act_dim]` (safe defaults). The base derives the sizes and
spaces from the schemas and gives `default_params` (built once, on first use), `reset`
and the auto-resetting `step`. `check_step` is the family's trace-time input check.

Parameters built or replaced by hand are checked by `check_params` (the family calls it
from `reset_env` / `check_step`; free under `jit`, where params are traced): the structure,
shapes and dtypes of `default_params` (`params_free_leading` names the leaves whose
leading dimension may differ), finite values (inf only where the defaults hold inf), the
family's `param_ranges` (`(field, test, expected)` on the params' fields) and its
`check_param_values` hook for relations between fields. Each failure raises
`pgjax.errors.InputError` naming the field, the expected range and the value.

Agents sit on a leading axis: `obs [n_agents, obs_dim]`, `actions [n_agents, act_dim]` in
[-1, 1], `reward [n_agents]`; `terminated` / `truncated` are scalars.
"""

from __future__ import annotations

import functools
import types

import jax
import numpy as np

from pgjax import checks
from pgjax.env.types import ActionSchema, Box, CostSignal, ObservationSchema
from pgjax.errors import InputError


class MultiAgentEnv:
    """Base of `pgjax.env.core.Env` and `pgjax.frequency.env.FrequencyEnv` (see the module docstring)."""

    name: str
    dtype: object  # jnp.float32 or jnp.float64
    agents: tuple
    episode_steps: int
    observation_schema: ObservationSchema
    action_schema: ActionSchema
    action_mask: np.ndarray  # [n_agents, act_dim] bool
    default_actions: np.ndarray  # [n_agents, act_dim]
    cost_signals: types.MappingProxyType[str, CostSignal] = types.MappingProxyType({})  # the safety signals a constrained learner may budget
    params_free_leading: tuple = ()  # key paths (".profiles") whose leading dimension is free
    param_ranges: tuple = ()  # (field, test(np.ndarray) -> bool array, expected) on concrete params

    # ------------------------------------------------------------------ what a family writes

    def make_params(self):
        """The family's parameters (a pytree of arrays of the env's dtype)."""
        raise NotImplementedError

    def reset_env(self, key, params):
        """A new episode: `(obs [n_agents, obs_dim], state)`."""
        raise NotImplementedError

    def step_env(self, key, state, actions, params):
        """One step without auto-reset: `(obs, state, reward, terminated, truncated, info)`."""
        raise NotImplementedError

    def check_step(self, key, state, actions, params) -> None:
        """Raise `pgjax.errors.InputError` on bad arguments of `step` (trace time; default: none)."""

    def check_param_values(self, params) -> None:
        """Relations between concrete params' fields (`InputError` naming them; default: none)."""

    def check_params(self, params) -> None:
        """`params` against `default_params` (module docstring); the last params that passed are remembered."""
        if params is self.__dict__.get("_checked_params"):
            return
        checks.check_like("params", params, self.default_params, free_leading=self.params_free_leading)
        if any(checks.is_traced(x) for x in jax.tree.leaves(params)):
            return
        refs = jax.tree.leaves(self.default_params)
        for (path, x), ref in zip(jax.tree_util.tree_flatten_with_path(params)[0], refs):
            checks.check_finite("params" + jax.tree_util.keystr(path), x,
                                allow_inf=not bool(np.all(np.isfinite(np.asarray(ref)))))
        for field, test, expected in self.param_ranges:
            value = np.asarray(getattr(params, field))
            if not np.all(test(value)):
                raise InputError(f"params.{field}: expected {expected}, got {value.tolist()}")
        self.check_param_values(params)
        self._checked_params = params

    # ------------------------------------------------------------------ what the base gives

    @functools.cached_property
    def default_params(self):
        """`make_params()`, built once."""
        return self.make_params()

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def obs_sizes(self) -> tuple:
        """`[n_agents]` each agent's real observation length (rows are padded to `obs_dim`)."""
        return tuple(int(n) for n in self.observation_schema.sizes)

    @property
    def obs_dim(self) -> int:
        return int(self.observation_schema.index.shape[1])

    @property
    def act_sizes(self) -> tuple:
        """`[n_agents]` each agent's number of real action columns (rows are padded to `act_dim`)."""
        return tuple(int(n) for n in np.asarray(self.action_mask).sum(axis=1))

    @property
    def act_dim(self) -> int:
        return int(np.asarray(self.action_mask).shape[1])

    def _agent_index(self, agent: str | int) -> int:
        return self.agents.index(agent) if isinstance(agent, str) else int(agent)

    def observation_space(self, agent: str | int = 0) -> Box:
        """`agent`'s observation space (by name or index), unpadded."""
        return Box(-np.inf, np.inf, (self.obs_sizes[self._agent_index(agent)],), self.dtype)

    def action_space(self, agent: str | int = 0) -> Box:
        """`agent`'s action space (by name or index), unpadded, in [-1, 1]."""
        return Box(-1.0, 1.0, (self.act_sizes[self._agent_index(agent)],), self.dtype)

    def reset(self, key, params=None):
        """`reset_env` with `default_params` unless `params` is given."""
        return self.reset_env(key, self.default_params if params is None else params)

    def step(self, key, state, actions, params=None):
        """`step_env(split(key)[0], ...)`, then `reset_env(split(key)[1], params)` where the episode
        ended (JaxMARL-style auto-reset); the episode's last observation is in `info["final_observation"]`."""
        params = self.default_params if params is None else params
        self.check_step(key, state, actions, params)
        k_step, k_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, truncated, info = self.step_env(k_step, state, actions, params)
        obs_re, state_re = self.reset_env(k_reset, params)
        done = terminated | truncated
        state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        info["final_observation"] = obs_st
        return obs, state, reward, terminated, truncated, info

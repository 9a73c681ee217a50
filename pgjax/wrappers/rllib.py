"""RLlib at scale: many grids of a scenario as one RLlib `MultiAgentEnv`, stepped by one jitted call.

    from pgjax.wrappers.rllib import BatchedGridsEnv, agent_type_of

    env = BatchedGridsEnv({"scenario": "multi_microgrid", "num_grids": 64})
    obs, infos = env.reset(seed=0)            # obs["MG1/0"] ... obs["MG3/63"]: [obs_size] float32

RLlib's new API stack steps the sub-environments of an env runner one after the other in
Python (`num_envs_per_env_runner`: `SyncVectorMultiAgentEnv`, the only multi-agent mode it
has), so a pgjax shim per sub-environment pays one jitted call and one host transfer per grid
and step. Here one env runner holds `num_grids` grids behind one `PgjaxVectorEnv` (one jitted
`vmap`ped step for all of them): agent `a` of grid `i` is the RLlib agent `"a/i"`, and
`agent_type_of` maps it back to `a` so a `policy_mapping_fn` gives every grid's copy of an
agent the same RLModule. Sampling then scales with env runners x grids.

Semantics: each grid is the PettingZoo vector env's grid `i` (`pgjax.wrappers.pettingzoo`:
same keys, clipping, observations cut to each agent's size, float32), seeded `seed + i`.
Episodes have the scenario's fixed length and start together, so every grid ends at the
same step: that step reports every agent truncated and `__all__`, with the episode's final
observations, and RLlib's next `reset()` starts the next episode of all grids. RLlib then
counts one env step per call: `num_grids` grid steps (its `num_env_steps_sampled` times
`num_grids` is the grid steps sampled), and an episode's return sums over the grids.
"""

from __future__ import annotations

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from pgjax.wrappers.pettingzoo import vector_env

SEPARATOR = "/"


def agent_type_of(agent_id: str) -> str:
    """The scenario agent of a batched agent id (`"MG1/3"` -> `"MG1"`)."""
    return agent_id.rsplit(SEPARATOR, 1)[0]


class BatchedGridsEnv(MultiAgentEnv):
    """`env_config`: `scenario` (default multi_microgrid), `num_grids` (default 32), `overrides` (`pgjax.make`)."""

    def __init__(self, env_config: dict | None = None):
        super().__init__()
        cfg = dict(env_config or {})
        self.num_grids = int(cfg.get("num_grids", 32))
        self.venv = vector_env(cfg.get("scenario", "multi_microgrid"), num_envs=self.num_grids,
                               **cfg.get("overrides", {}))
        self.scenario_agents = list(self.venv.possible_agents)
        self.possible_agents = [f"{a}{SEPARATOR}{i}" for i in range(self.num_grids) for a in self.scenario_agents]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {b: self.venv.single_observation_space(agent_type_of(b)) for b in self.possible_agents}
        self.action_spaces = {b: self.venv.single_action_space(agent_type_of(b)) for b in self.possible_agents}
        self._seeded = False

    def _split(self, per_agent: dict, cast=lambda x: x) -> dict:
        """`{a: [num_grids, ...]}` -> `{"a/i": cast(...)}`."""
        return {f"{a}{SEPARATOR}{i}": cast(per_agent[a][i]) for i in range(self.num_grids) for a in self.scenario_agents}

    def reset(self, *, seed=None, options=None):
        if seed is None and not self._seeded:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        obs, _ = self.venv.reset(seed=seed)
        self._seeded = True
        self.agents = list(self.possible_agents)
        return self._split(obs), {b: {} for b in self.possible_agents}

    def step(self, action_dict: dict):
        actions = {a: np.stack([action_dict[f"{a}{SEPARATOR}{i}"] for i in range(self.num_grids)])
                   for a in self.scenario_agents}
        _, rewards, terms, truncs, infos = self.venv.step(actions)
        done = terms[self.scenario_agents[0]] | truncs[self.scenario_agents[0]]  # [num_grids]
        if done.any() != done.all():
            raise RuntimeError("grids of a BatchedGridsEnv ended at different steps (their episodes must start together)")
        # the vector env has already started the next episodes; the final observations are in the infos
        final_obs = {a: infos[a]["final_obs"] for a in self.scenario_agents}
        per_grid = {a: {k: v for k, v in infos[a].items() if k not in ("final_obs", "_final_obs")}
                    for a in self.scenario_agents}
        out_infos = {f"{a}{SEPARATOR}{i}": {k: float(v[i]) for k, v in per_grid[a].items()}
                     for i in range(self.num_grids) for a in self.scenario_agents}
        return (self._split(final_obs), self._split(rewards, float),
                {**self._split(terms, bool), "__all__": False},
                {**self._split(truncs, bool), "__all__": bool(done.all())}, out_infos)

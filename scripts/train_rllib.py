"""Train RLlib PPO on a pgjax scenario, one policy (RLModule) per agent type.

    pip install -e '.[rllib]'          # CPU torch==2.13.0 and ray[rllib]
    python scripts/train_rllib.py --scenario multi_microgrid --iterations 10

The PettingZoo shim (`pgjax.wrappers.pettingzoo.parallel_env`) is wrapped in RLlib's
`ParallelPettingZooEnv` and registered with `register_env` (new API stack: RLModules,
EnvRunners, Learners). Agent types: one RLModule needs one observation space and one
action space, so agents are grouped by equal (observation, action) spaces, and the group
is named after the scenario's learned hierarchy level (`hierarchy.learned`, e.g. 'grid'):
every agent of multi_microgrid (MG1..MG3, same spaces) maps to the one policy 'grid'.
When the agents of a scenario fall into several groups (voltage_control_33bw,
ieee123_der, cigre_mv_der have agents of different observation sizes), each group is
named '<level>_o<obs size>_a<action size>' (e.g. 'grid_o19_a2').
`policy_mapping_fn` maps an agent id to its type through that table. Equal spaces are all
RLlib needs for sharing; agents of equal sizes share a policy even when their features
mean different things (ieee123_der: Z2, Z4 and Z8), so edit `agent_types` if that is not
wanted.

Ray is started locally (`num_cpus=max(2, num_env_runners)`, no dashboard) unless already
running, and shut down at the end if this script started it. `--num-env-runners 0`
(default) samples in this process; N > 0 starts N remote EnvRunner actors (one CPU each;
each compiles the scenario once). Learning runs in this process, on the CPU.
"""

from __future__ import annotations

import argparse
import math
import os

import jax
import numpy as np
from pettingzoo.utils import BaseParallelWrapper

# A program: the scenarios' float64 environments need JAX's 64-bit mode (pgjax.precision).
jax.config.update("jax_enable_x64", True)

ENV_NAME = "pgjax_pettingzoo"


class FiniteCheck(BaseParallelWrapper):
    """Raises `FloatingPointError` at a step with non-finite observations or rewards.

    Without it a NaN / inf reaches the policy and torch fails later and obscurely
    ("normal expects all elements of std >= 0.0"); the error names the agents, the step
    and the power flow's `nonconverged` flag.
    """

    def __init__(self, env):
        super().__init__(env)
        self._t = 0  # steps into the episode

    def reset(self, seed=None, options=None):
        self._t = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        self._t += 1
        bad = [a for a in obs if not (np.isfinite(obs[a]).all() and np.isfinite(rewards[a]))]
        if bad:
            raise FloatingPointError(
                f"{self.env.scenario}: non-finite observation or reward of agents {bad} at step {self._t} of the "
                f"episode (power flow nonconverged={infos[bad[0]].get('nonconverged')}, "
                f"rewards {[rewards[a] for a in bad]})")
        return obs, rewards, terms, truncs, infos


def agent_types(env) -> dict[str, str]:
    """Agent id -> type (policy / RLModule id) of a pgjax `ParallelEnv`: agents with equal spaces share a type."""
    level = env.fenv.scenario.learned
    groups: list[tuple] = []  # (observation space, action space, [agent ids])
    for a in env.possible_agents:
        obs, act = env.observation_space(a), env.action_space(a)
        group = next((g for g in groups if g[0] == obs and g[1] == act), None)
        if group is None:
            groups.append((obs, act, [a]))
        else:
            group[2].append(a)
    if len(groups) == 1:
        return dict.fromkeys(env.possible_agents, level)
    names = [f"{level}_o{math.prod(o.shape)}_a{math.prod(x.shape)}" for o, x, _ in groups]
    if len(set(names)) < len(names):  # equal sizes, different bounds or dtypes
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return {a: name for name, (_, _, ids) in zip(names, groups) for a in ids}


def _make_env(env_config: dict):
    """RLlib env creator: with `env_config['num_grids'] > 1` a `pgjax.wrappers.rllib.BatchedGridsEnv`
    (that many grids behind one jitted step), else the shim of `env_config['scenario']`
    (+ `['overrides']`), finite-checked, for RLlib."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from pgjax.wrappers.pettingzoo import parallel_env

    jax.config.update("jax_enable_x64", True)  # also in remote EnvRunners (other processes)
    if env_config.get("num_grids", 1) > 1:
        from pgjax.wrappers.rllib import BatchedGridsEnv

        return BatchedGridsEnv(env_config)
    return ParallelPettingZooEnv(FiniteCheck(parallel_env(env_config["scenario"], **env_config.get("overrides", {}))))


def build_config(scenario="multi_microgrid", num_env_runners=0, seed=0, train_batch_size=2048, minibatch_size=256,
                 num_epochs=4, lr=3e-4, overrides=None, num_grids=1):
    """The `PPOConfig` (and the agent -> type table) for a scenario; `train_batch_size` counts
    RLlib env steps (each of `num_grids` grids; `num_grids > 1`: `BatchedGridsEnv` per env runner).

    `minibatch_size` is capped at `train_batch_size`.
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from pgjax.wrappers.pettingzoo import parallel_env

    overrides = dict(overrides or {})
    types = agent_types(parallel_env(scenario, **overrides))
    register_env(ENV_NAME, _make_env)

    def policy_mapping_fn(agent_id, episode=None, **kwargs):
        from pgjax.wrappers.rllib import agent_type_of

        return types[agent_type_of(agent_id) if num_grids > 1 else agent_id]

    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config={"scenario": scenario, "overrides": overrides, "num_grids": num_grids})
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=1, num_cpus_per_env_runner=1,
                     rollout_fragment_length="auto")
        .learners(num_learners=0, num_gpus_per_learner=0)
        .training(train_batch_size_per_learner=train_batch_size, minibatch_size=min(minibatch_size, train_batch_size),
                  num_epochs=num_epochs, lr=lr, gamma=0.99)
        .multi_agent(policies=set(types.values()), policy_mapping_fn=policy_mapping_fn)
        .rl_module(rl_module_spec=MultiRLModuleSpec(
            rl_module_specs={p: RLModuleSpec() for p in sorted(set(types.values()))}))
        # an env error (e.g. `FiniteCheck`) ends training instead of a restarted runner and NaN results
        .fault_tolerance(restart_failed_env_runners=False, ignore_env_runner_failures=False)
        .debugging(seed=seed)
    )
    return config, types


def train(scenario="multi_microgrid", iterations=10, num_env_runners=0, seed=0, out=None, train_batch_size=2048,
          minibatch_size=256, num_epochs=4, verbose=True, num_grids=1, **overrides) -> list[dict]:
    """Run `iterations` PPO iterations; returns RLlib's result dict of each (checkpoint to `out` if given)."""
    import ray
    import torch

    torch.set_num_threads(1)  # the learner is small; leave the cores to the environment
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(2, num_env_runners), include_dashboard=False, log_to_driver=verbose)
    try:
        config, types = build_config(scenario, num_env_runners, seed, train_batch_size, minibatch_size, num_epochs,
                                     overrides=overrides, num_grids=num_grids)
        if verbose:
            print(f"{scenario}: policies {sorted(set(types.values()))}, mapping {types}", flush=True)
        algo = config.build_algo()
        results = []
        try:
            for _ in range(iterations):
                result = algo.train()
                results.append(result)
                if verbose:
                    print(summary(result, num_grids), flush=True)
            if out:
                path = algo.save_to_path(os.path.abspath(out))
                if verbose:
                    print(f"checkpoint: {path}")
        finally:
            algo.stop()
    finally:
        if started:
            ray.shutdown()
    return results


def sampled_grid_steps(result: dict, num_grids: int = 1) -> int:
    """Grid steps sampled in an iteration: RLlib's env steps times the grids behind each of them."""
    return int(result["env_runners"]["num_env_steps_sampled"]) * num_grids


def summary(result: dict, num_grids: int = 1) -> str:
    """One line of an iteration's result: mean episode return (sum over agents, per grid), grid steps, steps/s.

    Steps/s are the iteration's grid steps over its wall time (sampling and learning); RLlib's
    own timers (`result['timers']`) are exponential moving averages over iterations.
    """
    runners = result["env_runners"]
    steps = sampled_grid_steps(result, num_grids)
    per_module = ", ".join(f"{m} {v / num_grids:.2f}"
                           for m, v in sorted(runners.get("module_episode_returns_mean", {}).items()))
    ret = runners.get("episode_return_mean", float("nan")) / num_grids
    return (f"iter {result['training_iteration']:3d}  return/grid {ret:9.3f} ({per_module})  grid steps {steps}  "
            f"{steps / result['time_this_iter_s']:.0f} steps/s  sampling {sampling_rate(result, num_grids):.0f} steps/s")


def sampling_rate(result: dict, num_grids: int = 1) -> float:
    """Grid steps per second of the iteration's sampling alone (RLlib's `env_runner_sampling_timer`)."""
    seconds = result.get("timers", {}).get("env_runner_sampling_timer", float("nan"))
    return sampled_grid_steps(result, num_grids) / seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--num-env-runners", type=int, default=0, help="remote EnvRunner actors (0: sample locally)")
    ap.add_argument("--train-batch-size", type=int, default=2048, help="env steps per iteration")
    ap.add_argument("--grids-per-runner", type=int, default=1,
                    help="grids per env runner behind one jitted step (pgjax.wrappers.rllib.BatchedGridsEnv); "
                         "--train-batch-size then counts batched steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory to save the final checkpoint to")
    args = ap.parse_args(argv)
    train(args.scenario, args.iterations, args.num_env_runners, args.seed, args.out,
          train_batch_size=args.train_batch_size, num_grids=args.grids_per_runner)


if __name__ == "__main__":
    main()

"""Record short trajectories of every registered scenario (the env's regression reference).

    python scripts/record_trajectories.py OUT.npz [--steps 6]

For each scenario (`pgjax.scenario.names()`, float64 and its own dtype otherwise as
registered): reset with key 0, then `--steps` steps with uniform random actions in [-1, 1]
from fixed keys; stores observations, rewards and the power-flow voltages per step.
`tests/env/test_regression.py` replays the same keys and compares.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np


def rollout(env, n_steps: int) -> dict[str, np.ndarray]:
    """Observations `[n_steps + 1, n_agents, obs_dim]`, rewards and `vm_pu` `[n_steps, ...]`."""
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(env.step)
    out = {"obs": [np.asarray(obs)], "reward": [], "vm_pu": [], "cost": []}
    for t in range(n_steps):
        k_act, k_step = jax.random.split(jax.random.PRNGKey(100 + t))
        actions = jax.random.uniform(k_act, obs.shape[:1] + (env.act_dim,), minval=-1.0, maxval=1.0)
        obs, state, reward, _, _, info = step(k_step, state, actions.astype(env.dtype), params)
        out["obs"].append(np.asarray(obs))
        out["reward"].append(np.asarray(reward))
        out["vm_pu"].append(np.asarray(state.vm_pu))
        out["cost"].append(np.asarray(info["cost"]))
    return {k: np.stack(v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import pgjax
    from pgjax import scenario

    arrays = {}
    for name in scenario.names():
        env = pgjax.make(name, dtype="float64")
        for k, v in rollout(env, args.steps).items():
            arrays[f"{name}/{k}"] = v
        print(name, "recorded", flush=True)
    np.savez_compressed(args.out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())

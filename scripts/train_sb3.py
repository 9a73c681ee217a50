"""Train one shared PPO policy (parameter sharing) on a pgjax scenario with Stable-Baselines3.

    pip install torch==2.13.0 stable-baselines3 supersuit
    python scripts/train_sb3.py --scenario multi_microgrid --timesteps 20000

The PettingZoo shim goes through supersuit: agents with different observation / action
sizes are zero-padded to a common size (`pad_observations_v0`, `pad_action_space_v0`), then
`pettingzoo_env_to_vec_env_v1` turns the agents into the environments of an SB3 vector env
(every agent is one row, all sharing the policy), and `concat_vec_envs_v1` stacks copies.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

# A program: the scenarios' float64 environments need JAX's 64-bit mode (pgjax.precision).
jax.config.update("jax_enable_x64", True)


def make_vec_env(scenario: str = "multi_microgrid", num_copies: int = 1, **overrides):
    """An SB3 `VecEnv` over the shim's agents (parameter sharing through supersuit)."""
    import supersuit as ss

    from pgjax.wrappers.pettingzoo import parallel_env

    env = parallel_env(scenario, **overrides)
    sizes = {env.observation_space(a).shape for a in env.possible_agents}
    acts = {env.action_space(a).shape for a in env.possible_agents}
    if len(sizes) > 1:
        env = ss.pad_observations_v0(env)
    if len(acts) > 1:
        env = ss.pad_action_space_v0(env)
    venv = ss.pettingzoo_env_to_vec_env_v1(env)
    return ss.concat_vec_envs_v1(venv, num_copies, num_cpus=0, base_class="stable_baselines3")


def train(scenario="multi_microgrid", timesteps=20_000, n_steps=256, seed=0, verbose=1, **overrides):
    """Train PPO with a shared MLP policy; returns (model, seconds, mean episode reward of a test roll-out)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    torch.set_num_threads(1)
    venv = make_vec_env(scenario, **overrides)
    # supersuit's ConcatVecEnv has no seed() (which PPO(seed=...) calls): seed torch / numpy here
    # and the shim through a seeded reset; SB3's own unseeded reset() continues its key chain.
    set_random_seed(seed)
    venv.venv.reset(seed=seed)
    model = PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=min(256, n_steps * venv.num_envs), n_epochs=4,
                learning_rate=3e-4, gamma=0.99, verbose=verbose, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - t0
    # one evaluation episode of the deterministic policy
    obs = venv.reset()
    total, steps = np.zeros(venv.num_envs), 0
    while True:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = venv.step(action)
        total += reward
        steps += 1
        if done.all():
            break
    venv.close()
    return model, seconds, float(total.mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--timesteps", type=int, default=20_000, help="agent-steps (each env step counts every agent)")
    ap.add_argument("--n-steps", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="path to save the trained model")
    args = ap.parse_args(argv)
    model, seconds, ret = train(args.scenario, args.timesteps, args.n_steps, args.seed)
    print(f"trained {args.timesteps} agent-steps in {seconds:.1f} s; evaluation episode reward per agent {ret:.2f}")
    if args.save:
        model.save(args.save)


if __name__ == "__main__":
    main()

"""Steps per second of the PettingZoo shim against the JAX-native vmapped step.

    python scripts/bench_env.py [--scenario multi_microgrid] [--seconds 5]

Measures, in one run: the shim (`parallel_env`, one environment, Python dicts in and out),
the vector env (`vector_env`, 64 environments behind one jitted vmapped call) and
`jax.jit(jax.vmap(env.step))` at batch 64 and 1024 (actions already on the device, no host
transfer). Environment steps per second (a batch of B counts B), compile time excluded;
ratios are against the single shim.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import pgjax
from pgjax.wrappers.pettingzoo import parallel_env, vector_env


def timed(fn, seconds: float, min_iters: int = 3) -> float:
    """Seconds per call of `fn` (after one warm-up call), over at least `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per configuration")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024], help="JAX-native batch sizes")
    ap.add_argument("--vector", type=int, default=64, help="vector_env batch size")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    results = {}

    # the shim, one environment
    env = parallel_env(args.scenario)
    env.reset(seed=0)
    acts = {a: rng.uniform(-1, 1, env.action_space(a).shape).astype(np.float32) for a in env.possible_agents}

    def shim_step():
        if not env.agents:
            env.reset()
        env.step(acts)

    t0 = time.perf_counter()
    shim_step()
    print(f"shim: first step (compile) {time.perf_counter() - t0:.1f} s", flush=True)
    results["shim (1 env)"] = 1.0 / timed(shim_step, args.seconds)

    # the vector env
    venv = vector_env(args.scenario, num_envs=args.vector)
    venv.reset(seed=0)
    vacts = {a: rng.uniform(-1, 1, venv.action_space(a).shape).astype(np.float32) for a in venv.possible_agents}
    t0 = time.perf_counter()
    venv.step(vacts)
    print(f"vector_env({args.vector}): first step (compile) {time.perf_counter() - t0:.1f} s", flush=True)
    results[f"vector_env ({args.vector})"] = args.vector / timed(lambda: venv.step(vacts), args.seconds)

    # JAX native
    fenv = pgjax.make(args.scenario)
    params = fenv.default_params
    vstep = jax.jit(jax.vmap(fenv.step, in_axes=(0, 0, 0, None)))
    vreset = jax.jit(jax.vmap(fenv.reset, in_axes=(0, None)))
    for b in args.batches:
        keys = jax.random.split(jax.random.PRNGKey(1), b)
        _, state = vreset(keys, params)
        actions = jax.random.uniform(jax.random.PRNGKey(2), (b, fenv.num_agents, fenv.act_dim), minval=-1, maxval=1)
        holder = {"state": state}

        def native_step(keys=keys, holder=holder, actions=actions):
            out = vstep(keys, holder["state"], actions, params)
            holder["state"] = out[1]
            jax.block_until_ready(out)

        t0 = time.perf_counter()
        native_step()
        print(f"jax.jit(jax.vmap(env.step)) batch {b}: first step (compile) {time.perf_counter() - t0:.1f} s",
              flush=True)
        results[f"jax native ({b})"] = b / timed(native_step, args.seconds)

    base = results["shim (1 env)"]
    print(f"\n{args.scenario} on {jax.devices()[0].platform} ({jax.device_count()} device), env steps/s:")
    print(f"{'configuration':<26}{'steps/s':>12}{'x shim':>10}")
    for name, sps in results.items():
        print(f"{name:<26}{sps:>12.1f}{sps / base:>10.1f}")
    return results


if __name__ == "__main__":
    main()

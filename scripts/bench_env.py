"""Environment steps per second: JAX-native batched steps, the PettingZoo shim and pandapower.

    python scripts/bench_env.py [--scenario multi_microgrid] [--seconds 5] [--batches 1 1024 8192]
                                [--scan 10] [--reference-steps 5] [--skip-shim]

Measures, in one run:
- `jax.jit(jax.vmap(env.step))` at each batch size, one call per step (actions and keys
  already on the device, no host transfer);
- the same step `--scan` times inside one jitted `jax.lax.scan` (no Python dispatch
  between steps);
- the reference mode (`method="pandapower"`: pandapower's `runpp` per step through a host
  callback), batch 1, `--reference-steps` jitted steps;
- unless `--skip-shim`: the PettingZoo shim (`parallel_env`, one environment, Python dicts
  in and out) and the vector env (`vector_env`, `--vector` environments per call).
Environment steps per second (a batch of B counts B), compile time excluded and printed
separately; ratios are against the reference mode (and the shim when measured). Times are
wall-clock: on a shared machine run it when the cores are idle.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import pgjax


def timed(fn, seconds: float, min_iters: int = 3) -> float:
    """Seconds per call of `fn` (after one warm-up call), over at least `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def compiled(label: str, fn):
    """Call `fn` once (compiling it) and print how long that took."""
    t0 = time.perf_counter()
    fn()
    print(f"{label}: first call (compile) {time.perf_counter() - t0:.1f} s", flush=True)


def native(env, batch: int, scan: int, seconds: float) -> tuple[float, float]:
    """Env steps/s of `jit(vmap(step))` per call and of `scan` steps per jitted call."""
    params = env.default_params
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.PRNGKey(1), batch), params)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (batch, env.num_agents, env.act_dim), minval=-1, maxval=1)
    keys = jax.random.split(jax.random.PRNGKey(3), batch)
    step = jax.jit(vstep)

    @jax.jit
    def steps(key, state, actions):
        def body(state, k):
            return vstep(jax.random.split(k, batch), state, actions, params)[1], None

        return jax.lax.scan(body, state, jax.random.split(key, scan))[0]

    holder = {"state": state}

    def one():
        out = step(keys, holder["state"], actions, params)
        holder["state"] = out[1]
        jax.block_until_ready(out)

    def many():
        holder["state"] = jax.block_until_ready(steps(keys[0], holder["state"], actions))

    compiled(f"jit(vmap(step)) batch {batch}", one)
    per_call = batch / timed(one, seconds)
    compiled(f"scan of {scan} steps, batch {batch}", many)
    return per_call, scan * batch / timed(many, seconds)


def reference(scenario: str, steps: int) -> float:
    """Env steps/s of the reference mode (pandapower per step), batch 1, `steps` timed steps."""
    env = pgjax.make(scenario, method="pandapower")
    params = env.default_params
    step = jax.jit(env.step)
    _, state = env.reset(jax.random.PRNGKey(1), params)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (env.num_agents, env.act_dim), minval=-1, maxval=1)
    holder = {"state": state}

    def one():
        out = step(jax.random.PRNGKey(3), holder["state"], actions, params)
        holder["state"] = out[1]
        jax.block_until_ready(out)

    compiled("reference (pandapower) batch 1", one)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return steps / (time.perf_counter() - t0)


def shim(scenario: str, vector: int, seconds: float, results: dict) -> None:
    """The PettingZoo shim (one env) and the vector env (`vector` envs) into `results`."""
    from pgjax.wrappers.pettingzoo import parallel_env, vector_env

    rng = np.random.default_rng(0)
    env = parallel_env(scenario)
    env.reset(seed=0)
    acts = {a: rng.uniform(-1, 1, env.action_space(a).shape).astype(np.float32) for a in env.possible_agents}

    def shim_step():
        if not env.agents:
            env.reset()
        env.step(acts)

    compiled("shim", shim_step)
    results["shim (1 env)"] = 1.0 / timed(shim_step, seconds)
    venv = vector_env(scenario, num_envs=vector)
    venv.reset(seed=0)
    vacts = {a: rng.uniform(-1, 1, venv.action_space(a).shape).astype(np.float32) for a in venv.possible_agents}
    compiled(f"vector_env({vector})", lambda: venv.step(vacts))
    results[f"vector_env ({vector})"] = vector / timed(lambda: venv.step(vacts), seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per configuration")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 1024, 8192], help="JAX-native batch sizes")
    ap.add_argument("--scan", type=int, default=10, help="steps per jitted call in the scan rows")
    ap.add_argument("--reference-steps", type=int, default=5, help="timed steps of the pandapower reference mode")
    ap.add_argument("--vector", type=int, default=64, help="vector_env batch size")
    ap.add_argument("--skip-shim", action="store_true", help="skip the PettingZoo shim and vector env rows")
    args = ap.parse_args(argv)

    results = {"reference: pandapower (1)": reference(args.scenario, args.reference_steps)}
    if not args.skip_shim:
        shim(args.scenario, args.vector, args.seconds, results)
    env = pgjax.make(args.scenario)
    for b in args.batches:
        per_call, scanned = native(env, b, args.scan, args.seconds)
        results[f"jit(vmap(step)) ({b})"] = per_call
        results[f"scan {args.scan} x vmap ({b})"] = scanned

    ref = results["reference: pandapower (1)"]
    base = results.get("shim (1 env)")
    device = jax.devices()[0]
    print(f"\n{args.scenario} ({env.method}, {np.dtype(env.dtype).name}) on {device.platform} "
          f"({jax.device_count()} device), env steps/s:")
    print(f"{'configuration':<30}{'steps/s':>14}{'x pandapower':>14}" + (f"{'x shim':>10}" if base else ""))
    for name, sps in results.items():
        print(f"{name:<30}{sps:>14.1f}{sps / ref:>14.1f}" + (f"{sps / base:>10.1f}" if base else ""))
    return results


if __name__ == "__main__":
    main()

"""Environment steps per second: JAX-native batched steps, the PettingZoo shim and pandapower.

    pgjax bench env [--scenario multi_microgrid] [--dtype float32|float64] [--seconds 5]
                    [--batches 1 1024 8192] [--scan 10] [--reference-steps 5] [--skip-shim]
                    [--flops all|none] [--peak-n 2048] [--clock wall|cpu] [--quick]

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
wall-clock (`--clock wall`, the default: what a user waits); `--clock cpu` counts this
process's CPU seconds instead (`time.process_time`, all threads), which other processes on
a shared machine disturb far less: the figure to compare two versions of pgjax measured
side by side on a busy machine (steps per CPU-second, not per second).

`--dtype` makes the environment with `pgjax.make(scenario, dtype=...)` (default: the
scenario's own dtype). Fraction of peak, for the JAX-native rows: flops per env step
(`pgjax.perf.flops.flop_count`: XLA's cost analysis of the jitted call with every loop,
the power flow's iterations and the scan included, counted for the trips it executes on
the measured state), achieved GFLOP/s, and the fraction of the machine's peak in the env's
dtype, measured in the same run as the best rate of a `jnp.dot` GEMM of `--peak-n` square
matrices (`pgjax.perf.peaks.gemm_peak`; its assumptions are printed).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import pgjax
from pgjax import env as env_module
from pgjax.env.core import ENV_FAMILIES
from pgjax.perf.flops import flop_count
from pgjax.perf.peaks import peak_report, print_peaks
from pgjax.perf.timing import machine_info


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, seconds: float, min_iters: int = 3, clock=time.perf_counter) -> float:
    """Seconds of `clock` per call of `fn` (after one warm-up call), over at least `seconds` of it."""
    fn()
    n, t0 = 0, clock()
    while n < min_iters or clock() - t0 < seconds:
        fn()
        n += 1
    return (clock() - t0) / n


def compiled(label: str, fn):
    """Call `fn` once (compiling it) and print how long that took."""
    t0 = time.perf_counter()
    fn()
    print(f"{label}: first call (compile) {time.perf_counter() - t0:.1f} s", flush=True)


def native(env, batch: int, scan: int, seconds: float, flops: bool = False, clock=time.perf_counter):
    """Env steps/s (per second of `clock`) of `jit(vmap(step))` per call and of `scan` steps per jitted call.

    Returns `(per_call, scanned, flop_per_call, flop_per_scan)`: the two rates and, with
    `flops`, `pgjax.perf.flops.flop_count` results of one call of each (else None).
    """
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
    per_call = batch / timed(one, seconds, clock=clock)
    fc_one = fc_many = None
    if flops:
        t0 = time.perf_counter()
        args = (keys, holder["state"], actions, params)
        fc_one = flop_count(vstep, *args, compiled=step.lower(*args).compile())
        print(f"  flop count of one call: {fc_one.flops:.3g} ({time.perf_counter() - t0:.1f} s)", flush=True)
    compiled(f"scan of {scan} steps, batch {batch}", many)
    scanned = scan * batch / timed(many, seconds, clock=clock)
    if flops:
        t0 = time.perf_counter()
        args = (keys[0], holder["state"], actions)
        fc_many = flop_count(steps, *args, compiled=steps.lower(*args).compile())
        print(f"  flop count of one scan call: {fc_many.flops:.3g} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return per_call, scanned, fc_one, fc_many


def sweeps(env, batch: int, steps: int = 24) -> dict:
    """Power-flow iterations per step (`info["pf_iterations"]`) over `steps` steps with fresh
    random actions each step, with the env's warm start and cold: `{label: (mean, batch max
    mean)}`. The warm-start methods are read when the step is traced."""
    out = {}
    for label, methods in (("warm", env_module.WARM_START_METHODS), ("cold", ())):
        saved, env_module.WARM_START_METHODS = env_module.WARM_START_METHODS, methods
        try:
            params = env.default_params
            vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
            _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(1), batch), params)

            @jax.jit
            def run(state):
                def body(state, k):
                    k_act, k_step = jax.random.split(k)
                    acts = jax.random.uniform(k_act, (batch, env.num_agents, env.act_dim), env.dtype, -1, 1)
                    _, state, _, _, _, info = vstep(jax.random.split(k_step, batch), state, acts, params)
                    return state, info["pf_iterations"]
                return jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(4), steps))[1]

            it = np.asarray(run(state))  # [steps, batch]
        finally:
            env_module.WARM_START_METHODS = saved
        out[label] = (float(it.mean()), float(it.max(axis=1).mean()))
    return out


def reference(scenario: str, steps: int, overrides: dict, clock=time.perf_counter) -> float:
    """Env steps/s (per second of `clock`) of the reference mode (pandapower per step), batch 1, `steps` timed steps."""
    env = pgjax.make(scenario, method="pandapower", **overrides)
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
    t0 = clock()
    for _ in range(steps):
        one()
    return steps / (clock() - t0)


def shim(scenario: str, vector: int, seconds: float, results: dict, clock=time.perf_counter) -> None:
    """The PettingZoo shim (one env) and the vector env (`vector` envs) into `results` (per second of `clock`)."""
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
    results["shim (1 env)"] = 1.0 / timed(shim_step, seconds, clock=clock)
    venv = vector_env(scenario, num_envs=vector)
    venv.reset(seed=0)
    vacts = {a: rng.uniform(-1, 1, venv.action_space(a).shape).astype(np.float32) for a in venv.possible_agents}
    compiled(f"vector_env({vector})", lambda: venv.step(vacts))
    results[f"vector_env ({vector})"] = vector / timed(lambda: venv.step(vacts), seconds, clock=clock)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax bench env` parser (no side effects)."""
    ap = argparse.ArgumentParser(prog="pgjax bench env", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per configuration")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 1024, 8192], help="JAX-native batch sizes")
    ap.add_argument("--scan", type=int, default=10, help="steps per jitted call in the scan rows")
    ap.add_argument("--reference-steps", type=int, default=5, help="timed steps of the pandapower reference mode")
    ap.add_argument("--vector", type=int, default=64, help="vector_env batch size")
    ap.add_argument("--skip-shim", action="store_true", help="skip the PettingZoo shim and vector env rows")
    ap.add_argument("--dtype", choices=("float32", "float64"), default=None,
                    help="environment dtype (pgjax.make(scenario, dtype=...)); default: the scenario's")
    ap.add_argument("--flops", choices=("all", "none"), default="all",
                    help="flop count / fraction of peak for the JAX-native rows (costs compiles)")
    ap.add_argument("--peak-n", type=int, default=2048, help="GEMM size of the peak measurement")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: batches 1 64, scan 2, 0.2 s, 1 reference step, no shim, 1024 GEMM")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: seconds waited; cpu: this process's CPU seconds (steadier on a shared machine)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="scenario override passed to pgjax.make (value parsed as YAML), e.g. n_microgrids=120")
    return ap


def check_args(args, ap) -> dict:
    """`--quick` applied to `args`; the `--set` overrides. Usage errors through `ap`."""
    from pgjax.commands.common import parse_overrides

    try:
        overrides = parse_overrides(args.set, "--set expects KEY=VALUE, got {item!r}")
    except ValueError as e:
        ap.error(str(e))
    if args.quick:
        args.batches, args.scan, args.seconds, args.reference_steps = [1, 64], 2, 0.2, 1
        args.skip_shim, args.peak_n = True, min(args.peak_n, 1024)
    for flag, values in (("--batches", args.batches), ("--scan", [args.scan]), ("--vector", [args.vector]),
                         ("--reference-steps", [args.reference_steps]), ("--peak-n", [args.peak_n])):
        if min(values) < 1:
            ap.error(f"{flag}: expected counts >= 1, got {values if flag == '--batches' else values[0]}")
    if not args.seconds > 0:
        ap.error(f"--seconds: expected a positive time, got {args.seconds}")
    return overrides


def measure(args) -> dict:
    """Every row as `args` say (parsed by `build_parser`), printed as a table:
    `{configuration: {steps_per_s, flops_per_step, gflops, peak_fraction}}`."""
    overrides = check_args(args, build_parser())
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} logical cores, load average {info['loadavg']}; "
          f"jax {info['jax']} ({info['jax_backend']})")
    clock = CLOCKS[args.clock]
    family = args.scenario in ENV_FAMILIES  # no power flow to run in pandapower, no PettingZoo shim
    results = {} if family else {"reference: pandapower (1)": reference(args.scenario, args.reference_steps,
                                                                         overrides, clock)}
    if family:
        print(f"{args.scenario}: an env family (pgjax.env.core.ENV_FAMILIES): reference and shim rows skipped")
    elif overrides and not args.skip_shim:
        print("--set given: the PettingZoo shim rows are skipped (the shim takes a scenario name only)")
    elif not args.skip_shim:
        shim(args.scenario, args.vector, args.seconds, results, clock)
    env = pgjax.make(args.scenario, **overrides, **({"dtype": args.dtype} if args.dtype else {}))
    dtype = np.dtype(env.dtype).name
    # measured after the env exists: a float64 env has x64 on by then (float64 peak skipped otherwise)
    peaks = peak_report(("float32", "float64"), n=args.peak_n, seconds=0.3 if args.quick else 2.0)
    print_peaks(peaks)
    peak = peaks.get(dtype, {}).get("gflops")
    flop_rows = native_rows(env, args, clock, results)
    if getattr(env, "method", None) in ("newton", "distflow"):
        b_it = min(max(args.batches), 1024)
        for label, (mean, batch_max) in sweeps(env, b_it).items():
            print(f"power-flow iterations per step, {label} start (24 random-action steps, batch {b_it}): "
                  f"mean {mean:.2f}, batch max {batch_max:.2f}")
    return print_table(args, env, dtype, results, flop_rows, peak)


def native_rows(env, args, clock, results: dict) -> dict:
    """The JAX-native rows into `results`; their flops per env step (`{configuration: flops}`, empty
    without `--flops all`)."""
    flop_rows = {}
    for b in args.batches:
        per_call, scanned, fc_one, fc_many = native(env, b, args.scan, args.seconds, args.flops == "all", clock)
        results[f"jit(vmap(step)) ({b})"] = per_call
        results[f"scan {args.scan} x vmap ({b})"] = scanned
        if fc_one is not None:
            flop_rows[f"jit(vmap(step)) ({b})"] = fc_one.flops / b
            flop_rows[f"scan {args.scan} x vmap ({b})"] = fc_many.flops / (b * args.scan)
    return flop_rows


def print_table(args, env, dtype, results, flop_rows, peak) -> dict:
    """The table of rates (ratios to pandapower and the shim, flops, fraction of peak); returns its rows."""
    ref = results.get("reference: pandapower (1)")
    base = results.get("shim (1 env)")
    device = jax.devices()[0]
    print(f"\n{args.scenario} ({getattr(env, 'method', 'dynamics')}, {dtype}) on {device.platform} "
          f"({jax.device_count()} device), env steps per {'CPU-' if args.clock == 'cpu' else ''}second:")
    print(f"{'configuration':<30}{'steps/s':>14}" + (f"{'x pandapower':>14}" if ref else "")
          + (f"{'x shim':>10}" if base else "")
          + f"{'flop/step':>12}{'GFLOP/s':>10}{'% peak':>9}")
    table = {}
    for name, sps in results.items():
        row = {"steps_per_s": sps}
        extra = ""
        if name in flop_rows:
            gf = flop_rows[name] * sps / 1e9
            row.update(flops_per_step=flop_rows[name], gflops=gf)
            extra = f"{flop_rows[name]:>12.3g}{gf:>10.2f}"
            if peak:
                row["peak_fraction"] = gf / peak
                extra += f"{100 * gf / peak:>9.2f}"
        table[name] = row
        print(f"{name:<30}{sps:>14.1f}" + (f"{sps / ref:>14.1f}" if ref else "") + (f"{sps / base:>10.1f}" if base else "")
              + extra)
    substeps = getattr(env, "n_sub", None)  # physics sub-steps per env step (pgjax.frequency)
    if substeps:
        best = max(v for k, v in results.items() if k.startswith(("jit", "scan")))
        print(f"physics sub-steps per env step: {substeps}; best: {best * substeps:,.0f} sub-steps/s")
    if flop_rows and peak:
        print(f"% peak: against the measured {dtype} GEMM peak {peak:.1f} GFLOP/s (see above)")
    return table


def run(args) -> int:
    """`measure(args)`; the exit status."""
    measure(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax bench env` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

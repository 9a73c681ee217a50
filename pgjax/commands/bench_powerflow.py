"""Power flows per second: pgjax (float64, batched) vs lightsim2grid and power-grid-model on the same threads.

For each network, one seeded set of operating points (every load and static generator P and
Q scaled by one factor per point, uniform in [0.7, 1.3]) is solved by every engine, each
to ~1e-10 pu:

- pgjax: `jax.jit(jax.vmap(solve(grid, p, q, method=..., jacobian=...)))` with the grid
  shared, at each `--batches` size: on radial feeders (case33bw, the 72-bus composite, the
  generated `radial300` / `radial1000`) `method="distflow"` and Newton with the chord
  Jacobian, elsewhere the chord Newton with the dense inverse Jacobian (`jacobian="chord"`)
  and with its sparse factors (`jacobian="sparse"`, `pgjax.powerflow.sparse`);
  `jacobian="exact"` Newton at batch 1 everywhere. XLA uses every core (or one with
  `--xla-single-thread`). Compile time is reported separately; rates are steady state
  (`block_until_ready`, repeated for `--seconds`).
- lightsim2grid: its C++ batch computers, Newton-Raphson with KLU: `TimeSeriesCPP` (one
  thread, each point warm-started from the previous one) and `InjectionSweepCPP` (every
  point from the same DC start, independent like pgjax's) on one thread and on `--threads`
  threads. Total rate and solver-only rate (lightsim2grid's own `solver_time()`).
- power-grid-model: its batch power flow (`pgjax.perf.pgm`), Newton-Raphson and iterative
  current, on one thread and on `--threads` threads; left out on grids with PV buses (it
  has no voltage-controlled generators).
- pandapower: `runpp` (numba) plain and with `recycle`, over `--pp-points` points: the
  accuracy reference.

`--threads` defaults to the cores XLA uses (all, or 1 with `--xla-single-thread`), so the
peers run on the same cores as pgjax. Per row: power flows per second, CPU seconds per
flow (process CPU time of every thread, spinning workers included), iterations per flow,
and for pgjax rows flops per flow (XLA's cost analysis with every loop counted for the
trips it executes, `pgjax.perf.flops.flop_count`), achieved GFLOP/s and its fraction of the
machine's peak (the best rate of a float64 `jnp.dot` GEMM of `--peak-n` x `--peak-n`
matrices, measured in the same run, `pgjax.perf.peaks.gemm_peak`). Each network ends with
pgjax's ratio to the best exact peer configuration (lightsim2grid or power-grid-model, at
most `--threads` threads) against the target of issue 23.

`radial300` / `radial1000`: seeded random radial 20 kV feeders of 300 and 1,000 buses
(`pgjax.perf.feeders.random_radial_feeder`, seed `--feeder-seed`).

Voltages are compared point by point (max |vm| difference, must be <= 1e-8 pu). Where scaling
loads alone has no solution at the range ends (pandapower diverges; case300's single slack
cannot take +-30 % of 23 GW), generator P is scaled by the same factor too, and the table says so.

Run on an idle machine for numbers worth quoting. `pgjax bench powerflow --help`.
"""

from __future__ import annotations

import os

# One thread for every native library before it is (first) imported; XLA may be limited
# with --xla-single-thread (read when the JAX backend starts, i.e. at the first computation).
from pgjax.perf.timing import SINGLE_THREAD_ENV  # noqa: E402

for _k, _v in SINGLE_THREAD_ENV.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

NETWORKS = ("case33bw", "ieee34_3x_ieee13", "radial300", "radial1000", "case118", "case300")
LABELS = {"ieee34_3x_ieee13": "72-bus composite (ieee34_3x_ieee13)",
          "radial300": "random radial feeder, 300 buses (radial300)",
          "radial1000": "random radial feeder, 1,000 buses (radial1000)"}
# feeders solved with method="distflow" as well as the chord Newton
RADIAL = ("case33bw", "ieee34_3x_ieee13", "radial300", "radial1000")
# targets (issue 23): pgjax best batch / best exact peer configuration on the same threads
PEER_TARGETS = {"case33bw": 1.5, "ieee34_3x_ieee13": 1.5, "radial300": 1.5, "radial1000": 1.5,
                "case118": 1.0, "case300": 1.0}
VM_TOL = 1e-8
# float32 DistFlow on the radial feeders (issue 23 item 5): >= 2x the float64 one, within 1e-4 pu
FLOAT32_TARGET, FLOAT32_VM_TOL = 2.0, 1e-4


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax bench powerflow` parser (no side effects)."""
    ap = argparse.ArgumentParser(prog="pgjax bench powerflow", description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated network names")
    ap.add_argument("--batches", default="1,64,1024,8192", help="pgjax batch sizes (chord Jacobian)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--points", type=int, default=None,
                    help="operating points for pgjax/lightsim2grid (default: largest batch)")
    ap.add_argument("--pp-points", type=int, default=20, help="points solved by pandapower")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-gen", choices=("auto", "yes", "no"), default="auto",
                    help="also scale generator P by the point's factor (auto: only if pandapower "
                         "diverges at the range ends with loads alone)")
    ap.add_argument("--xla-single-thread", action="store_true",
                    help="restrict XLA's CPU backend to one thread (the peers then run on one thread too)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads of the multi-threaded peer rows (default: the cores XLA uses)")
    ap.add_argument("--feeder-seed", type=int, default=0, help="seed of the generated radial feeders")
    ap.add_argument("--flops", choices=("all", "largest", "none"), default="all",
                    help="count flops (fraction of peak) for every pgjax row, only the largest batch "
                         "of each method, or none (each count costs a few compiles)")
    ap.add_argument("--peak-n", type=int, default=2048, help="GEMM size of the peak measurement")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (batches 1,64; 0.1 s; 1024 GEMM for the peak)")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    return ap


def check_args(args, ap):
    """`args` with `--quick` applied and `--batches`, `--networks` as lists; usage errors through `ap`."""
    if args.quick:
        args.batches, args.seconds, args.pp_points, args.peak_n = "1,64", 0.1, 3, min(args.peak_n, 1024)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        ap.error(f"--batches: expected comma-separated counts such as 1,64,1024, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1:
        ap.error(f"--batches: expected counts >= 1, got {args.batches}")
    if not args.seconds > 0 or args.pp_points < 1 or (args.points is not None and args.points < 1):
        ap.error("--seconds must be positive, --pp-points and --points >= 1")
    args.networks = [n for n in args.networks.split(",") if n]
    args.points = args.points or max(args.batches)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads: expected a count >= 1, got {args.threads}")
    args.threads = args.threads or (1 if args.xla_single_thread else os.cpu_count() or 1)
    return args


def _pp_converges(net, factor, base, scale_gen):
    import pandapower as pp

    from pgjax.perf.points import scaled_net

    n = scaled_net(copy.deepcopy(net), factor, base, scale_gen)
    try:
        pp.runpp(n, numba=True)
    except Exception:  # noqa: BLE001 - any pandapower failure means "no solution found"
        return False
    return bool(n.converged)


def bench_network(name, args, peaks):
    """Every engine on network `name`: `{network, n_bus, scale_gen, rows, vm diffs, best rates, ratios}`."""
    from pgjax.converters.pandapower import from_pandapower
    from pgjax.perf import feeders, points
    from pgjax.powerflow import solve

    out = {"network": name}
    net = feeders.load_network(name, seed=args.feeder_seed)
    grid, netmap = from_pandapower(net)
    bnet = points.base_net(net, grid, netmap)
    base = points.base_values(bnet)
    if args.scale_gen == "auto":
        scale_gen = len(bnet.gen) > 0 and not all(
            _pp_converges(bnet, f, base, False) for f in (0.7, 1.3))
    else:
        scale_gen = args.scale_gen == "yes"
    out["scale_gen"] = bool(scale_gen)
    out["n_bus"] = int(grid.n_bus)
    factors = points.load_factors(args.points, args.seed)
    p_all, q_all = points.operating_points(grid, factors, scale_gen)
    energized = np.asarray(solve(grid).energized)
    rows, vm_pgjax = pgjax_rows(name, grid, p_all, q_all, args, peaks.get("float64", {}).get("gflops"), out)
    if name in RADIAL:
        rows += float32_rows(grid, p_all, q_all, vm_pgjax, rows, args, out)
    rows += lightsim_rows(net, bnet, netmap, energized, vm_pgjax, factors, scale_gen, args, out)
    rows += pgm_rows(grid, vm_pgjax, p_all, q_all, args, out)
    rows += pandapower_rows(net, bnet, netmap, energized, vm_pgjax, factors, base, scale_gen, args, out)
    out["rows"] = rows
    out.update(best_rates(rows))
    return out


def pgjax_configs(name, batches):
    """`(method, jacobian, batch sizes)` of the pgjax rows of network `name`."""
    radial = name in RADIAL
    return ([("distflow", "exact", batches)] if radial else []) + [("newton", "chord", batches)] + (
        [] if radial else [("newton", "sparse_lu", batches), ("newton", "sparse", batches)]) + [("newton", "exact", [1])]


def batched_solve(grid, method, jacobian):
    """`vmap` over `(p, q)` points of `solve(grid, p, q, ...)`: `(vm_pu, va_deg, converged, iterations)`."""
    import jax

    from pgjax.powerflow import solve
    from pgjax.powerflow.tree import tree_of

    # distflow: the feeder tree's index arrays, computed once on the host for the shared grid
    kw = {"tree": tree_of(grid)} if method == "distflow" else {}

    def one(p, q):
        r = solve(grid, p, q, method=method, jacobian=jacobian, **kw)
        return r.vm_pu, r.va_deg, r.converged, r.iterations
    return jax.vmap(one, in_axes=(0, 0))


def pgjax_rows(name, grid, p_all, q_all, args, peak, out):
    """pgjax's rows (every method and batch) and `vm_pu` of every point by the first method that
    solves them all; failures go to `out["pgjax_errors"]`, the reference method to `out`."""
    import jax

    rows, vm_pgjax = [], None
    out["pgjax_errors"] = {}
    for method, jac, batches in pgjax_configs(name, args.batches):
        label = "distflow" if method == "distflow" else f"newton {jac}"
        vfn = batched_solve(grid, method, jac)
        fn = jax.jit(vfn)
        sizes = [b for b in batches if b <= args.points]
        for b in sizes:
            p, q = jax.device_put(p_all[:b]), jax.device_put(q_all[:b])
            row, res, compiled = time_pgjax(fn, p, q, label, method, jac, args, out)
            if row is None:
                break
            if args.flops == "all" or (args.flops == "largest" and b == max(sizes)):
                row.update(flop_columns(vfn, p, q, compiled, row, peak))
            rows.append(row)
            if vm_pgjax is None and b == max(sizes) and b == args.points:
                vm_pgjax = np.asarray(res[0])
        if vm_pgjax is None and sizes and not any(k.startswith(label + " ") for k in out["pgjax_errors"]):
            try:
                vm_pgjax = np.asarray(fn(p_all, q_all)[0])
            except Exception:  # noqa: BLE001 - try the next method
                pass
    if vm_pgjax is None:
        raise RuntimeError(f"{name}: no pgjax method solved the points: {out['pgjax_errors']}")
    first = [r for r in rows if r["method"] == rows[0]["method"] and r["jacobian"] == rows[0]["jacobian"]]
    out["pgjax_converged"] = first[-1]["converged"] if first else None
    out["pgjax_reference_method"] = rows[0]["variant"].split(" b=")[0]
    return rows, vm_pgjax


def float32_rows(grid, p_all, q_all, vm_pgjax, rows64, args, out):
    """DistFlow on the float32 copy of `grid` (engine "pgjax float32", not an exact-peer row):
    its rows, and in `out["float32"]` its best rate over float64 DistFlow's and its largest
    voltage difference to the float64 solution `vm_pgjax` on all points."""
    import jax
    import jax.numpy as jnp

    from pgjax.grid import astype

    g32 = astype(grid, jnp.float32)
    fn = jax.jit(batched_solve(g32, "distflow", "exact"))
    rows = []
    for b in [b for b in args.batches if b <= args.points]:
        p, q = (jax.device_put(np.asarray(x[:b], np.float32)) for x in (p_all, q_all))
        row, _, _ = time_pgjax(fn, p, q, "distflow float32", "distflow", "exact", args, out)
        if row is not None:
            rows.append({**row, "engine": "pgjax float32"})
    best64 = max((r["pf_per_s"] for r in rows64 if r["method"] == "distflow"), default=None)
    if rows and best64:
        vm32 = np.asarray(fn(*(np.asarray(x, np.float32) for x in (p_all, q_all)))[0], float)
        out["float32"] = {"ratio_to_float64": max(r["pf_per_s"] for r in rows) / best64,
                          "max_dvm_vs_float64": float(np.max(np.abs(vm32 - vm_pgjax)))}
    return rows


def time_pgjax(fn, p, q, label, method, jac, args, out):
    """Compile `fn` for the batch `(p, q)` and time it: `(row, result, compiled)`, or Nones with the
    failure recorded in `out["pgjax_errors"]` (a solver that fails is reported, not fatal)."""
    import jax

    from pgjax.perf.timing import rate

    b = p.shape[0]
    try:
        t0 = time.perf_counter()
        compiled = fn.lower(p, q).compile()
        compile_s = time.perf_counter() - t0
        res = jax.block_until_ready(compiled(p, q))
    except Exception as e:  # noqa: BLE001
        out["pgjax_errors"][f"{label} b={b}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        print(f"  pgjax {label} b={b} failed: {out['pgjax_errors'][f'{label} b={b}']}", flush=True)
        return None, None, None
    timing = rate(lambda: jax.block_until_ready(compiled(p, q)), args.seconds)
    it = np.asarray(res[3])
    row = {"engine": "pgjax", "variant": f"{label} b={b}", "method": method, "jacobian": jac, "threads": args.threads,
           "batch": b, "pf_per_s": timing.calls_per_s * b, "cpu_s_per_pf": timing.cpu_s_per_call / b,
           "compile_s": compile_s, "calls": timing.calls,
           "iter_mean": float(it.mean()), "iter_max": int(it.max()),
           "converged": float(np.asarray(res[2]).mean())}
    return row, res, compiled


def flop_columns(vfn, p, q, compiled, row, peak) -> dict:
    """Flops per power flow, achieved GFLOP/s and fraction of `peak` (GFLOP/s, if known) of a pgjax row."""
    from pgjax.perf.flops import flop_count

    b = row["batch"]
    fc = flop_count(vfn, p, q, compiled=compiled)
    cps = row["pf_per_s"] / b
    cols = {"flops_per_pf": fc.flops / b, "xla_flops_per_pf": fc.xla_flops / b,
            "loop_trips": [d["trips"] for d in fc.loops], "gflops": fc.flops * cps / 1e9}
    if peak:
        cols["peak_fraction"] = cols["gflops"] / peak
    return cols


def lightsim_rows(net, bnet, netmap, energized, vm_pgjax, factors, scale_gen, args, out):
    """lightsim2grid's rows (`TimeSeriesCPP`, `InjectionSweepCPP`); voltage differences to pgjax in `out`."""
    from pgjax.perf.lightsim import LightSimBatch, lightsim_net
    from pgjax.perf.timing import rate

    lookup = np.asarray(netmap.bus_lookup)
    ls_net = lightsim_net(bnet)
    row_of = {idx: i for i, idx in enumerate(net.bus.index)}
    ls_grid_bus = lookup[[row_of[o] for o in ls_net.bus.orig_index.to_numpy()]]
    ls_on = energized[ls_grid_bus]
    vm_ref = vm_pgjax[:, ls_grid_bus][:, ls_on]
    out["vm_diff_lightsim"] = {}
    rows = []
    configs = [("timeseries", 1), ("sweep", 1)] + ([("sweep", args.threads)] if args.threads > 1 else [])
    for kind, threads in configs:
        lb = LightSimBatch(ls_net, kind, tol=1e-10, scale_gen=scale_gen, threads=threads)
        lb.set_points(factors)
        V = lb.compute()  # first call builds the base case; steady state below
        variant = f"{kind} KLU {threads} thread" + ("s" if threads > 1 else "")
        out["vm_diff_lightsim"][variant] = float(np.max(np.abs(np.abs(V[:, :len(ls_grid_bus)])[:, ls_on] - vm_ref)))
        solver_s = []

        def run_once():
            lb.compute()
            solver_s.append(lb.times()["solver_s"])

        timing = rate(run_once, args.seconds)
        it = lb.iterations()
        rows.append({"engine": "lightsim2grid", "variant": variant, "threads": threads, "batch": args.points,
                     "pf_per_s": timing.calls_per_s * args.points, "cpu_s_per_pf": timing.cpu_s_per_call / args.points,
                     "solver_pf_per_s": args.points / float(np.median(solver_s)),
                     "calls": timing.calls, "iter_mean": float(it.mean()), "iter_max": int(it.max()),
                     "converged": float(lb.converged().mean())})
    return rows


def pgm_rows(grid, vm_pgjax, p_all, q_all, args, out):
    """power-grid-model's rows (Newton-Raphson, iterative current; 1 and `--threads` threads);
    voltage differences to pgjax in `out`, a method that fails is reported, not fatal."""
    from pgjax.perf import pgm
    from pgjax.perf.timing import rate

    out["vm_diff_pgm"], out["pgm_errors"] = {}, {}
    if not pgm.applies(grid):
        out["pgm_errors"]["all"] = "not run: the grid has PV buses (power-grid-model has no voltage control)"
        return []
    batch = pgm.PGMBatch(grid)
    batch.set_points(p_all, q_all)
    on = np.asarray(vm_pgjax[0] > 0)
    rows = []
    for method in pgm.METHODS:
        for threads in sorted({1, args.threads}):
            variant = f"{method} {threads} thread" + ("s" if threads > 1 else "")
            try:
                vm = batch.compute(method, threads)
            except Exception as e:  # noqa: BLE001 - e.g. iterative current not converging
                out["pgm_errors"][variant] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            out["vm_diff_pgm"][variant] = float(np.max(np.abs(vm[:, on] - vm_pgjax[:, on])))
            timing = rate(lambda m=method, t=threads: batch.compute(m, t), args.seconds)
            rows.append({"engine": "power-grid-model", "variant": variant, "threads": threads, "batch": args.points,
                         "pf_per_s": timing.calls_per_s * args.points,
                         "cpu_s_per_pf": timing.cpu_s_per_call / args.points, "calls": timing.calls, "converged": 1.0})
    return rows


def pandapower_rows(net, bnet, netmap, energized, vm_pgjax, factors, base, scale_gen, args, out):
    """pandapower's rows (`runpp` with numba, plain and with `recycle`) over the first `--pp-points`."""
    n_pp = min(args.pp_points, args.points)
    lookup = np.asarray(netmap.bus_lookup)
    pp_on = energized[lookup]
    rows = []
    for variant, kwargs in (("runpp numba", {}),
                            ("runpp numba recycle", {"recycle": dict(trafo=False, gen=False, bus_pq=True)})):
        pp_vm, failed, cps, n_calls = time_pandapower(bnet, kwargs, factors[:n_pp], base, scale_gen, args.seconds)
        ok_rows = [k for k in range(n_pp) if k not in failed]
        diff = (float(np.max(np.abs(pp_vm[ok_rows][:, pp_on] - vm_pgjax[ok_rows][:, lookup][:, pp_on])))
                if ok_rows else float("nan"))
        out.setdefault("vm_diff_pandapower", {})[variant] = diff
        rows.append({"engine": "pandapower", "variant": variant, "threads": 1, "batch": n_pp,
                     "pf_per_s": cps * n_pp, "calls": n_calls, "converged": 1 - len(failed) / n_pp})
    return rows


def time_pandapower(bnet, kwargs, factors, base, scale_gen, seconds):
    """`runpp(**kwargs)` over the points `factors`, timed: `(vm_pu [n, n_bus], failed points, calls/s, calls)`."""
    import pandapower as pp

    from pgjax.perf.points import scaled_net
    from pgjax.perf.timing import rate

    n_pp = len(factors)
    pp_vm = np.zeros((n_pp, len(bnet.bus)))
    work = copy.deepcopy(bnet)
    failed = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {**kwargs, "numba": True, "tolerance_mva": 1e-10, "max_iteration": 30}
        pp.runpp(work, **kwargs)  # warm-up (numba JIT, recycle set-up)

        def run_all():
            for k in range(n_pp):
                scaled_net(work, factors[k], base, scale_gen)
                try:
                    pp.runpp(work, **kwargs)
                    pp_vm[k] = work.res_bus.vm_pu.to_numpy()
                except pp.LoadflowNotConverged:
                    failed.add(k)
                    pp_vm[k] = np.nan

        timing = rate(run_all, seconds, min_calls=1)
    return pp_vm, failed, timing.calls_per_s, timing.calls


PEERS = ("lightsim2grid", "power-grid-model")


def best_rates(rows) -> dict:
    """The best rate of each engine and pgjax's ratios to the best exact peer, lightsim2grid
    and pandapower (a variant that did not converge on every point does not count, unless
    none of the engine's did)."""
    def best(engine_rows):
        ok = [r for r in engine_rows if r.get("converged", 1.0) == 1.0] or engine_rows
        return max(ok, key=lambda r: r["pf_per_s"])

    best_row = best([r for r in rows if r["engine"] == "pgjax"])
    peer = best([r for r in rows if r["engine"] in PEERS])
    ls_rows = [r for r in rows if r["engine"] == "lightsim2grid"]
    pp = best([r for r in rows if r["engine"] == "pandapower"])
    return {"best_pgjax_variant": best_row["variant"], "best_pgjax": best_row["pf_per_s"],
            "best_peer": peer["pf_per_s"], "best_peer_variant": f"{peer['engine']} {peer['variant']}",
            "best_lightsim": best(ls_rows)["pf_per_s"],
            "best_lightsim_solver": max(r["solver_pf_per_s"] for r in ls_rows), "best_pandapower": pp["pf_per_s"],
            "ratio_peer": best_row["pf_per_s"] / peer["pf_per_s"],
            "ratio_lightsim": best_row["pf_per_s"] / best(ls_rows)["pf_per_s"],
            "ratio_pandapower": best_row["pf_per_s"] / pp["pf_per_s"]}


def _fmt_rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _row_line(r) -> str:
    """One table line of a row (blank where the engine has no such figure)."""
    cell = {"solver": _fmt_rate(r["solver_pf_per_s"]) if "solver_pf_per_s" in r else "",
            "cpu": f"{1e6 * r['cpu_s_per_pf']:.1f}" if "cpu_s_per_pf" in r else "",
            "comp": f"{r['compile_s']:.2f}" if "compile_s" in r else "",
            "it": f"{r['iter_mean']:.1f}/{r['iter_max']}" if "iter_mean" in r else "",
            "conv": f"{r['converged']:.3f}" if "converged" in r else "",
            "fl": f"{r['flops_per_pf']:.3g}" if "flops_per_pf" in r else "",
            "gf": f"{r['gflops']:.2f}" if "gflops" in r else "",
            "pk": f"{100 * r['peak_fraction']:.2f}" if "peak_fraction" in r else ""}
    return (f"{r['engine']:<17}{r['variant']:<32}{r.get('threads', ''):>4}{r['batch']:>6}"
            f"{_fmt_rate(r['pf_per_s']):>12}{cell['solver']:>12}{cell['cpu']:>11}{cell['comp']:>9}{cell['it']:>12}"
            f"{cell['conv']:>7}{cell['fl']:>10}{cell['gf']:>9}{cell['pk']:>8}")


def print_network(o):
    title = LABELS.get(o["network"], o["network"])
    pts = "loads+sgens x f" + (" and gen P x f" if o["scale_gen"] else "")
    print(f"\n=== {title}: {o['n_bus']} buses; points: {pts}, f ~ U[0.7, 1.3] ===")
    print(f"{'engine':<17}{'variant':<32}{'thr':>4}{'batch':>6}{'pf/s':>12}{'solver pf/s':>12}{'CPU us/pf':>11}"
          f"{'compile':>9}{'iter':>12}{'conv':>7}{'flop/pf':>10}{'GFLOP/s':>9}{'% peak':>8}")
    for r in o["rows"]:
        print(_row_line(r))
    for engine in ("pgjax", "pgm"):
        for k, v in o.get(f"{engine}_errors", {}).items():
            print(f"{engine} {k}: FAILED {v}")
    target = PEER_TARGETS.get(o["network"])
    print(f"pgjax best ({o['best_pgjax_variant']}) / best peer ({o['best_peer_variant']}): {o['ratio_peer']:.2f}x"
          + (f" [target >= {target:g}x]" if target else "")
          + f"; / lightsim2grid best {o['ratio_lightsim']:.2f}x; / pandapower best {o['ratio_pandapower']:,.0f}x")
    diffs = {**{f"lightsim2grid {k}": v for k, v in o["vm_diff_lightsim"].items()},
             **{f"power-grid-model {k}": v for k, v in o["vm_diff_pgm"].items()},
             **{f"pandapower {k}": v for k, v in o["vm_diff_pandapower"].items()}}
    finite = [v for v in diffs.values() if np.isfinite(v)]
    worst = max(finite) if finite else float("nan")
    print("max |vm pgjax - ref| pu: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
          + f"  [{'OK' if worst <= VM_TOL else 'FAIL'} <= {VM_TOL:g}]")
    print(f"pgjax converged fraction ({o['pgjax_reference_method']}, all points; its voltages are "
          f"the ones compared): {o['pgjax_converged']:.4f}")
    if "float32" in o:
        f = o["float32"]
        print(f"float32 distflow best / float64 distflow best: {f['ratio_to_float64']:.2f}x [target >= "
              f"{FLOAT32_TARGET:g}x]; max |vm float32 - vm float64| {f['max_dvm_vs_float64']:.1e} pu "
              f"[{'OK' if f['max_dvm_vs_float64'] <= FLOAT32_VM_TOL else 'FAIL'} <= {FLOAT32_VM_TOL:g}]")


def print_summary(results):
    print("\n=== summary against targets (issue 23: pgjax / best exact peer on the same threads) ===")
    ok_all = True
    for o in results:
        name = o["network"]
        target = PEER_TARGETS.get(name)
        if target is not None:
            ok = o["ratio_peer"] >= target
            ok_all &= ok
            print(f"{name:<18} pgjax/best peer {o['ratio_peer']:7.2f}x  target >= {target:g}x  "
                  f"{'MET' if ok else 'MISSED'}  ({o['best_peer_variant']})")
        diffs = [*o["vm_diff_lightsim"].values(), *o["vm_diff_pgm"].values(), *o["vm_diff_pandapower"].values()]
        acc = all(v <= VM_TOL for v in diffs if np.isfinite(v))
        ok_all &= acc
        if not acc:
            print(f"{name:<18} accuracy above {VM_TOL:g} pu: FAIL")
    print("all targets met" if ok_all else "some targets missed")
    return ok_all


def print_machine(args, info) -> None:
    """The machine, library versions and the run's sizes."""
    print(f"machine: {info['cpu']}, {info['cores']} logical cores, load average {info['loadavg']}")
    print(f"jax {info['jax']} ({info['jax_backend']}, dtype float64, XLA threads: "
          f"{'1' if args.xla_single_thread else 'default (all cores)'}; peers: 1 and {args.threads}), "
          f"numpy {info['numpy']}, pandapower {info['pandapower']} (numba {info['numba']}), "
          f"lightsim2grid {info['lightsim2grid']}, power-grid-model {info['power_grid_model']}")
    print(f"points: {args.points} (seed {args.seed}); pgjax batches {args.batches}; "
          f"pandapower on the first {args.pp_points}; {args.seconds:g} s per measurement")


def run(args) -> int:
    """Benchmark as `args` say (parsed by `build_parser`); the exit status."""
    args = check_args(args, build_parser())
    if args.xla_single_thread:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    import jax

    jax.config.update("jax_enable_x64", True)
    from pgjax.perf.peaks import peak_report, print_peaks
    from pgjax.perf.timing import machine_info

    info = machine_info()
    info.update(dtype="float64", xla_single_thread=args.xla_single_thread,
                xla_flags=os.environ.get("XLA_FLAGS", ""))
    print_machine(args, info)
    peaks = peak_report(("float64", "float32"), n=args.peak_n, seconds=0.3 if args.quick else 2.0)
    print_peaks(peaks)
    info["peaks"] = peaks
    results = []
    for name in args.networks:
        o = bench_network(name, args, peaks)
        print_network(o)
        results.append(o)
    ok = print_summary(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": {k: v for k, v in vars(args).items()},
                       "results": results, "all_targets_met": ok}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax bench powerflow` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

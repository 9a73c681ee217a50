"""Three-phase power flows per second: pgjax (float64, vmap over operating points) against OpenDSS and power-grid-model.

    pgjax bench threephase [--feeders ieee13,ieee123,european_lv] [--batch 1,64,512] [--points 64]

Both solve the same operating points: every load element scaled by its own random factor in
[0.8, 1.2] (seeded), on the feeder as `pgjax verify --three-phase` freezes it (taps pinned,
controls off). OpenDSS (DSS C-API, one thread) edits each load's kW / kvar and solves, point
by point, at its default tolerance (1e-4) and at 1e-10; pgjax solves batches of `--batch`
points with the grid prepared once per feeder (`threephase.prepare`: the Z inverse; compile time
reported apart, not counted).
The largest |V| difference between the two on the first point is printed as a check.
power-grid-model (PGM) runs its asymmetric batch power flow (Newton-Raphson, error tolerance
1e-10, threads = the cores this process may use, as XLA's CPU client) on the same points of
every feeder it can represent exactly (`pgjax.converters.power_grid_model`: the European LV
feeder); for the others the elements it cannot represent are printed instead. Its voltages
are compared with pgjax's on every point of the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax bench threephase` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax bench threephase", description=__doc__.splitlines()[0])
    parser.add_argument("--feeders", default="ieee13,ieee123,european_lv", help="comma-separated feeder names")
    parser.add_argument("--batch", default="1,64,512", help="comma-separated pgjax batch sizes")
    parser.add_argument("--points", type=int, default=64, help="operating points OpenDSS solves (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per pgjax batch (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _opendss_rate(dss, names, base, factors, tolerance) -> tuple[float, np.ndarray]:
    """Power flows per second of OpenDSS over the rows of `factors` `[n, n_load_elements]`;
    also the per-unit node voltage magnitudes of the first point."""
    dss.Text.Command(f"set tolerance={tolerance}")
    first = None
    t0 = time.perf_counter()
    for k, row in enumerate(factors):
        for name, (kw, kvar), f in zip(names, base, row):
            dss.Loads.Name(name)
            dss.Loads.kW(kw * f)
            dss.Loads.kvar(kvar * f)
        dss.Solution.Solve()
        if k == 0:
            t_first = time.perf_counter()
            first = np.asarray(dss.Circuit.AllBusMagPu())
            t0 += time.perf_counter() - t_first
    return len(factors) / (time.perf_counter() - t0), first


def _pgjax_rate(grid, p, q, repeats, voltages_only: bool = False) -> tuple[float, float, object]:
    """Power flows per second of a vmapped solve of the rows of `p`, `q` `[batch, n_load]`,
    the compile time, and the result (the whole `PowerFlowResult3ph`, or with `voltages_only`
    `(vm_pu, va_deg, converged)`: what OpenDSS's solve computes, branch values left to XLA's
    dead-code elimination)."""
    import jax

    from pgjax.powerflow import threephase

    def one(p, q, pr):
        r = threephase.solve(g, p, q, max_iter=100, prepared=pr)
        return (r.vm_pu, r.va_deg, r.converged) if voltages_only else r

    g = jax.tree.map(jax.numpy.asarray, grid)
    prep = jax.block_until_ready(jax.jit(threephase.prepare)(g))
    solve = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))
    t0 = time.perf_counter()
    result = jax.block_until_ready(solve(p, q, prep))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        result = jax.block_until_ready(solve(p, q, prep))
    return p.shape[0] * repeats / (time.perf_counter() - t0), compile_s, result


def _pgm_rate(feeder, p_kw, q_kvar, threads: int) -> tuple[float, dict]:
    """Power flows per second of PGM's asymmetric batch power flow over the rows of `p_kw`,
    `q_kvar` `[batch, n_load_elements]` (kW, kvar), and its output."""
    from power_grid_model import PowerGridModel

    from pgjax.converters import power_grid_model as pgm

    model = PowerGridModel(feeder.input_data)
    update = pgm.load_update(feeder, p_kw, q_kvar)
    t0 = time.perf_counter()
    out = model.calculate_power_flow(symmetric=False, update_data=update, threading=threads,
                                     error_tolerance=1e-10, max_iterations=50)
    return p_kw.shape[0] / (time.perf_counter() - t0), out


def _pgm_feeder(dss):
    """`(feeder, None)` for PGM, or `(None, why not)`."""
    from pgjax.converters import power_grid_model as pgm
    from pgjax.errors import InputError

    try:
        return pgm.from_engine(dss), None
    except InputError as err:
        return None, str(err)


def bench_feeder(name: str, batches, points: int, repeats: int, seed: int) -> None:
    """Measure and print one feeder's rows."""
    from pgjax import verification3ph as V3

    grid, netmap, _ = V3.reference(name)
    import opendssdirect as dss

    names = list(dss.Loads.AllNames())
    base = []
    for n in names:
        dss.Loads.Name(n)
        base.append((dss.Loads.kW(), dss.Loads.kvar()))
    factors = np.random.default_rng(seed).uniform(0.8, 1.2, (max(points, *batches), len(names)))
    col = np.array([names.index(n.split(".", 1)[1]) for n in netmap.load_names])
    p_all = np.asarray(grid.load.p_kw) * factors[:, col]
    q_all = np.asarray(grid.load.q_kvar) * factors[:, col]
    pgm_feeder, pgm_why = _pgm_feeder(dss)
    rate_default, _ = _opendss_rate(dss, names, base, factors[:points], 1e-4)
    rate_tight, vm_first = _opendss_rate(dss, names, base, factors[:points], 1e-10)
    print(f"{name}: {grid.n_node} nodes, {grid.n_load} load branches; OpenDSS {rate_default:,.0f} pf/s "
          f"(tolerance 1e-4), {rate_tight:,.0f} pf/s (1e-10)")
    if pgm_feeder is None:
        print(f"  power-grid-model: not compared; {pgm_why}")
    threads = len(os.sched_getaffinity(0))
    vb = np.asarray(grid.node.vbase_kv) * 1e3
    for b in batches:
        rate, compile_s, result = _pgjax_rate(grid, p_all[:b], q_all[:b], repeats)
        rate_v, _, _ = _pgjax_rate(grid, p_all[:b], q_all[:b], repeats, voltages_only=True)
        dv = np.max(np.abs(np.asarray(result.vm_pu[0]) - vm_first))
        print(f"  pgjax batch {b:>5}: {rate:>10,.0f} pf/s  ({rate / rate_tight:.2f}x OpenDSS at 1e-10), "
              f"compile {compile_s:.1f} s, converged {bool(result.converged.all())}, "
              f"max iterations {int(result.iterations.max())}, |dV| vs OpenDSS (point 0) {dv:.1e} pu", flush=True)
        print(f"  pgjax batch {b:>5}, voltages only (as OpenDSS's solve): {rate_v:>10,.0f} pf/s  "
              f"({rate_v / rate_tight:.2f}x OpenDSS at 1e-10)", flush=True)
        if pgm_feeder is not None:
            from pgjax.converters import power_grid_model as pgm

            cols = [names.index(n) for n in pgm_feeder.load_names]
            kw, kvar = (np.array([base[c][k] for c in cols]) * factors[:b, cols] for k in (0, 1))
            rate_pgm, out = _pgm_rate(pgm_feeder, kw, kvar, threads)
            v_pgm = pgm.node_voltages(pgm_feeder, out, netmap.node_names)
            v_pgjax = (np.asarray(result.v_re_pu) + 1j * np.asarray(result.v_im_pu)) * vb
            dv_pgm = np.max(np.abs(v_pgm - v_pgjax) / vb)
            print(f"  power-grid-model batch {b:>5}: {rate_pgm:>10,.0f} pf/s ({threads} threads; pgjax "
                  f"{rate / rate_pgm:.2f}x), |dV| vs pgjax (all points) {dv_pgm:.1e} pu", flush=True)


def run(args) -> int:
    """Benchmark as `args` say (parsed by `build_parser`)."""
    import jax

    jax.config.update("jax_enable_x64", True)  # a program measuring float64
    from pgjax import verification3ph as V3

    feeders = [f.strip() for f in args.feeders.split(",") if f.strip()]
    unknown = [f for f in feeders if f not in V3.FEEDERS]
    if unknown:
        build_parser().error(f"unknown feeders {unknown}; choose from {list(V3.FEEDERS)}")
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    print(f"pgjax three-phase power flow vs OpenDSS, float64, {jax.devices()[0].platform}, "
          f"{args.points} OpenDSS points, seed {args.seed}")
    for name in feeders:
        bench_feeder(name, batches, args.points, args.repeats, args.seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax bench threephase` with `argv`; the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

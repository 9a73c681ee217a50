"""Compare pgjax's power flow with pandapower's `runpp` on one pandapower net.

`compare(net, method)` converts the net, solves it with pgjax (float64) and returns the
largest differences to a pandapower reference run: bus voltage magnitudes (p.u.) and
angles (degrees, both relative to the ext_grid angle reference), active power at both
ends of every branch (MW) and active power of every external grid (MW), each with the
element where it occurs. `passes(errors, method)` checks them against `TARGETS`.
`pgjax/commands/verify.py` runs this over a zoo of networks; tests import it directly.
"""

from __future__ import annotations

import copy
import functools
import time
import warnings

import numpy as np

# Largest acceptable difference to pandapower for the exact methods in float64.
TARGETS = {
    "dvm_pu": 1e-8,  # bus voltage magnitude, p.u.
    "dva_deg": 1e-6,  # bus voltage angle, degrees
    "dp_branch_mw": 1e-6,  # active power at either end of any branch, MW
    "dp_slack_mw": 1e-6,  # active power of any external grid, MW
}
# Methods solving the full AC equations (checked against TARGETS) and approximations (reported only).
EXACT_METHODS = ("newton", "fixed_point")
APPROX_METHODS = ("distflow", "lindistflow")
# Iteration limit per method (fixed_point converges linearly).
MAX_ITER = {"newton": 30, "fixed_point": 500, "distflow": 200, "lindistflow": 200}
# pandapower reference tolerances, MVA: the first that converges is used.
REFERENCE_TOLERANCES_MVA = (1e-10, 1e-9)
REFERENCE_MAX_ITERATION = 50

# (net table, result table, [(result column, branch end, grid rows column of a trafo3w)]).
_BRANCH_RESULTS = (
    ("line", "res_line", (("p_from_mw", "from", None), ("p_to_mw", "to", None))),
    ("trafo", "res_trafo", (("p_hv_mw", "from", None), ("p_lv_mw", "to", None))),
    # pandapower's star equivalent: hv winding hv bus -> star point, mv/lv windings star point -> bus.
    ("trafo3w", "res_trafo3w", (("p_hv_mw", "from", 0), ("p_mv_mw", "to", 1), ("p_lv_mw", "to", 2))),
    ("impedance", "res_impedance", (("p_from_mw", "from", None), ("p_to_mw", "to", None))),
    ("switch", "res_switch", (("p_from_mw", "from", None), ("p_to_mw", "to", None))),
)


class ReferenceNotConverged(RuntimeError):
    """pandapower's `runpp` did not converge at any of `REFERENCE_TOLERANCES_MVA`."""


def suppress_warnings() -> None:
    """Silence pandapower's numba / deprecation chatter (call once per process)."""
    warnings.filterwarnings("ignore", message=".*numba.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="pandapower")


def run_reference(net):
    """Solve a copy of `net` with pandapower's Newton-Raphson; return `(solved copy, tolerance_mva)`.

    Uses the options the converter builds the model with (voltage angles and transformer
    phase shifts included, T transformer model), `tolerance_mva=1e-10` and
    `max_iteration=50`, retrying at 1e-9 MVA; raises `ReferenceNotConverged` otherwise.
    """
    import pandapower as pp

    last = None
    for tol_mva in REFERENCE_TOLERANCES_MVA:
        ref = copy.deepcopy(net)
        try:
            with warnings.catch_warnings():
                suppress_warnings()
                pp.runpp(ref, algorithm="nr", calculate_voltage_angles=True, init="auto", trafo_model="t",
                         tolerance_mva=tol_mva, max_iteration=REFERENCE_MAX_ITERATION)
            return ref, tol_mva
        except pp.LoadflowNotConverged as exc:
            last = exc
    raise ReferenceNotConverged(
        f"pandapower runpp did not converge (tolerance_mva {REFERENCE_TOLERANCES_MVA[-1]:g}, "
        f"max_iteration {REFERENCE_MAX_ITERATION})") from last


# Padded table sizes: few distinct shapes means few jit compilations (compiling costs seconds,
# solving a padded grid of up to 512 buses milliseconds); larger tables round up to 512 rows.
BUCKETS = (32, 128, 512)


def bucket(n: int) -> int:
    """Table size `n` rounded up to the next of `BUCKETS`, beyond them to a multiple of 512."""
    for size in BUCKETS:
        if n <= size:
            return size
    return -(-int(n) // 512) * 512


def pad_to_bucket(grid):
    """`grid` padded so that grids of similar size share one jit compilation.

    The bus table is padded to `bucket(n_bus)`, every other table to `bucket` of the
    largest table; padded rows change no result.
    """
    from pgjax.grid import pad, shape_of

    shape = shape_of(grid)
    other = bucket(max(shape.values()))
    sizes = {f"n_{t}": other for t in shape}
    sizes["n_bus"] = bucket(shape["bus"])
    return pad(grid, **sizes)


@functools.cache
def _jitted_solve(method: str, max_iter: int):
    import jax

    from pgjax.powerflow import solve

    return jax.jit(functools.partial(solve, method=method, max_iter=max_iter))


def _max_abs_diff(ours, theirs, labels):
    """Largest |ours - theirs| over entries where `theirs` is finite; `(value, label)`.

    A non-finite value of ours where pandapower has a number counts as infinite.
    """
    ours = np.asarray(ours, dtype=float)
    theirs = np.asarray(theirs, dtype=float)
    ok = np.isfinite(theirs)
    if not ok.any():
        return 0.0, ""
    d = np.where(ok, np.abs(ours - theirs), 0.0)
    d = np.where(ok & ~np.isfinite(ours), np.inf, d)
    i = int(np.argmax(d))
    return float(d[i]), labels[i]


def branch_flow_errors(result, netmap, ref) -> tuple[float, str]:
    """Largest |dP| in MW over both ends of all branches of all kinds, and where it is.

    `result` is a pgjax `PowerFlowResult`, `ref` the solved pandapower net.
    """
    p_from = np.asarray(result.p_from_mw)
    p_to = np.asarray(result.p_to_mw)
    worst, where = 0.0, ""
    for kind, res_table, columns in _BRANCH_RESULTS:
        rows = netmap.branch_rows.get(kind)
        if rows is None or len(rows) == 0:
            continue
        index = ref[kind].index
        if kind == "switch":  # only closed bus-bus switches with z_ohm > 0 are branches
            mask = np.asarray(getattr(ref, "_impedance_bb_switches", np.zeros(len(index))), dtype=bool)
            index = index[mask]
        if len(index) != len(rows):
            raise RuntimeError(f"{kind}: {len(rows)} grid branch rows but {len(index)} pandapower result rows")
        res = ref[res_table].reindex(index)
        for col, end, winding in columns:
            if col not in res:
                continue
            r = rows if winding is None else rows[:, winding]
            ours = (p_from if end == "from" else p_to)[r]
            d, label = _max_abs_diff(ours, res[col].values, [f"{kind} {i} {col}" for i in index])
            if d > worst or not where:
                worst, where = d, label
    return worst, where


def compare(net, method: str = "newton", *, reference=None, converted=None, pad: bool = True,
            max_iter: int | None = None) -> dict:
    """Solve `net` with pgjax `method` (float64) and compare with pandapower's `runpp`.

    Args:
      net: a pandapower net (not modified).
      method: a `pgjax.powerflow.METHODS` entry; raises `ValueError` if it does not apply.
      reference: `(solved net, tolerance_mva)` from `run_reference(net)`, computed if None.
      converted: `(grid, netmap)` from `from_pandapower(net)`, computed if None (raises
        `UnsupportedElementError` for nets pgjax cannot model).
      pad: pad the grid to `bucket` sizes so that similar networks share a jit compilation.
      max_iter: pgjax iteration limit (default `MAX_ITER[method]`).

    Returns a dict: `n_bus` (rows of net.bus), `n_branch` (grid branch rows), `converged`
    (pgjax), `iterations`, `reference_tol_mva`, the largest absolute differences
    `dvm_pu` (p.u.), `dva_deg` (degrees), `dp_branch_mw` and `dp_slack_mw` (MW) with the
    element where each occurs in `where_vm`, `where_va`, `where_branch`, `where_slack`,
    and `solve_s`, the wall time of the pgjax solve in seconds including jit compilation.
    Isolated buses (NaN in pandapower) are skipped.
    """
    import jax

    from converters.pandapower import bus_results, from_pandapower
    from pgjax.grid import astype
    from pgjax.powerflow import check_method

    if reference is None:
        reference = run_reference(net)
    ref, tol_mva = reference
    grid, netmap = from_pandapower(net) if converted is None else converted
    check_method(grid, method)
    n_branch = grid.n_branch
    grid64 = astype(pad_to_bucket(grid) if pad else grid, np.float64)

    t0 = time.perf_counter()
    result = _jitted_solve(method, MAX_ITER.get(method, 30) if max_iter is None else max_iter)(grid64)
    result = jax.device_get(result)
    solve_s = time.perf_counter() - t0

    bus = bus_results(result, netmap)
    bus_labels = [f"bus {i}" for i in net.bus.index]
    dvm, where_vm = _max_abs_diff(bus["vm_pu"], ref.res_bus.vm_pu.reindex(net.bus.index).values, bus_labels)
    dva, where_va = _max_abs_diff(bus["va_deg"], ref.res_bus.va_degree.reindex(net.bus.index).values, bus_labels)
    dp_branch, where_branch = branch_flow_errors(result, netmap, ref)
    n_eg = len(netmap.ext_grid_index)
    dp_slack, where_slack = _max_abs_diff(
        np.asarray(result.slack_p_mw)[:n_eg], ref.res_ext_grid.p_mw.reindex(netmap.ext_grid_index).values,
        [f"ext_grid {i}" for i in netmap.ext_grid_index])
    return {
        "n_bus": len(net.bus),
        "n_branch": n_branch,
        "converged": bool(result.converged),
        "iterations": int(result.iterations),
        "reference_tol_mva": tol_mva,
        "dvm_pu": dvm,
        "dva_deg": dva,
        "dp_branch_mw": dp_branch,
        "dp_slack_mw": dp_slack,
        "where_vm": where_vm,
        "where_va": where_va,
        "where_branch": where_branch,
        "where_slack": where_slack,
        "solve_s": solve_s,
    }


def failures(errors: dict, method: str) -> list[str] | None:
    """Which targets `errors` (from `compare`) misses; None for approximate methods.

    An empty list means the row passes: pgjax converged and every difference is within
    `TARGETS`.
    """
    if method not in EXACT_METHODS:
        return None
    failed = [] if errors["converged"] else ["not converged"]
    where = {"dvm_pu": "where_vm", "dva_deg": "where_va", "dp_branch_mw": "where_branch",
             "dp_slack_mw": "where_slack"}
    for key, target in TARGETS.items():
        if not errors[key] <= target:
            failed.append(f"{key} at {errors[where[key]]}")
    return failed


def passes(errors: dict, method: str) -> bool | None:
    """True if `errors` meets `TARGETS` (exact methods), None for approximate methods."""
    failed = failures(errors, method)
    return None if failed is None else not failed


class _TimedOut(Exception):
    pass


def _alarm(timeout_s):
    """Context manager raising `_TimedOut` after `timeout_s` seconds (POSIX main thread; else no limit)."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def limit():
        usable = (timeout_s and hasattr(signal, "SIGALRM")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return

        def handler(signum, frame):
            raise _TimedOut()

        previous = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return limit()


def prepare_case(build, *, max_buses: int | None = None, timeout_s: float | None = 60.0) -> dict:
    """Build a net, solve the pandapower reference and convert it: the slow, pgjax-free part.

    `build` is a picklable zero-argument callable returning a pandapower net, so that this
    runs in a worker process while the caller solves the previous case. Returns a dict
    with `status`:
    - "ok": `net`, `reference` (`run_reference`), `converted` (`from_pandapower`);
    - "unsupported": `net`, `reason` (the converter's `UnsupportedElementError`);
    - "error": `net`, `reason` (the converter raised anything else);
    - "skipped": `reason` (build failed or timed out, more than `max_buses` buses,
      pandapower did not converge).
    Also `n_bus` (rows of net.bus, when built) and `prepare_s` (seconds spent).
    """
    t0 = time.perf_counter()
    out = {"n_bus": None}

    def done(**kw):
        out.update(kw, prepare_s=time.perf_counter() - t0)
        return out

    with warnings.catch_warnings():
        suppress_warnings()
        try:
            with _alarm(timeout_s):
                net = build()
        except _TimedOut:
            return done(status="skipped", reason=f"build timed out after {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - any builder failure is reported, not raised
            return done(status="skipped", reason=f"build failed: {type(exc).__name__}: {_short(exc)}")
        out["n_bus"] = len(net.bus)
        if max_buses is not None and len(net.bus) > max_buses:
            return done(status="skipped", reason=f"{len(net.bus)} buses > {max_buses}")
        try:
            with _alarm(timeout_s):
                reference = run_reference(net)
        except _TimedOut:
            return done(status="skipped", reason=f"pandapower runpp timed out after {timeout_s:g} s")
        except ReferenceNotConverged as exc:
            return done(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001
            return done(status="skipped", reason=f"pandapower runpp failed: {type(exc).__name__}: {_short(exc)}")
        from converters.pandapower import UnsupportedElementError, from_pandapower

        try:
            converted = from_pandapower(net)
        except UnsupportedElementError as exc:
            return done(status="unsupported", net=net, reference=reference, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a converter crash is a finding, reported as a row
            return done(status="error", net=net, reference=reference,
                        reason=f"from_pandapower raised {type(exc).__name__}: {_short(exc)}")
        return done(status="ok", net=net, reference=reference, converted=converted)


def _short(exc, n: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[:n - 3] + "..."

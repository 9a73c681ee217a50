"""The one comparison of pgjax's power flow with pandapower's `runpp`.

`pgjax verify` and the tests use it alike:
- `run_reference(net)`: pandapower's Newton-Raphson on a copy of the net, with the options
  the converter models (`REFERENCE_TOLERANCES_MVA`, `REFERENCE_MAX_ITERATION`);
- `differences(result, netmap, ref)`: the largest absolute differences of a pgjax
  `PowerFlowResult` to the solved net, each with the element where it occurs: bus voltage
  magnitudes (p.u.) and angles (degrees, both against the ext_grid angle reference; a bus
  isolated on one side only counts as an infinite difference), active and reactive power
  at both ends of every branch (MW, Mvar; pandapower's NaN flows of isolated branches
  count as zero), of every external grid, and the reactive power of generators alone at a
  non-slack bus (pandapower's split of Q among several generators at one bus is a
  convention, not physics);
- `failures(errors)`: which of `TARGETS` a difference dict misses (and non-convergence);
- `compare(net, method)`: convert, solve with pgjax in float64 and take the differences.
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
    "dq_branch_mvar": 1e-6,  # reactive power at either end of any branch, Mvar
    "dp_slack_mw": 1e-6,  # active power of any external grid, MW
    "dq_slack_mvar": 1e-6,  # reactive power of any external grid, Mvar
    "dq_gen_mvar": 1e-6,  # reactive power of a generator alone at a non-slack bus, Mvar
}
# Methods solving the full AC equations (checked against TARGETS) and approximations (reported only).
EXACT_METHODS = ("newton", "fixed_point")
APPROX_METHODS = ("distflow", "lindistflow")
# Iteration limit per method (fixed_point converges linearly).
MAX_ITER = {"newton": 30, "fixed_point": 500, "distflow": 200, "lindistflow": 200}
# pandapower reference tolerances, MVA: the first that converges is used.
REFERENCE_TOLERANCES_MVA = (1e-10, 1e-9)
REFERENCE_MAX_ITERATION = 50

# (net table, result table, [(P column, Q column, branch end, grid rows column of a trafo3w)]).
_BRANCH_RESULTS = (
    ("line", "res_line", (("p_from_mw", "q_from_mvar", "from", None), ("p_to_mw", "q_to_mvar", "to", None))),
    ("trafo", "res_trafo", (("p_hv_mw", "q_hv_mvar", "from", None), ("p_lv_mw", "q_lv_mvar", "to", None))),
    # pandapower's star equivalent: hv winding hv bus -> star point, mv/lv windings star point -> bus.
    ("trafo3w", "res_trafo3w", (("p_hv_mw", "q_hv_mvar", "from", 0), ("p_mv_mw", "q_mv_mvar", "to", 1),
                                ("p_lv_mw", "q_lv_mvar", "to", 2))),
    ("impedance", "res_impedance", (("p_from_mw", "q_from_mvar", "from", None),
                                    ("p_to_mw", "q_to_mvar", "to", None))),
    ("switch", "res_switch", (("p_from_mw", "q_from_mvar", "from", None), ("p_to_mw", "q_to_mvar", "to", None))),
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


def _worst(ours, theirs, labels, nan_is_zero: bool = False) -> tuple[float, str]:
    """Largest |ours - theirs| and the label where it occurs (`(0.0, "")` when empty).

    NaN on both sides agrees; a non-finite value on one side only is an infinite
    difference. With `nan_is_zero`, pandapower's NaN (`theirs`) means zero.
    """
    ours = np.asarray(ours, dtype=float)
    theirs = np.asarray(theirs, dtype=float)
    if nan_is_zero:
        theirs = np.nan_to_num(theirs, nan=0.0, posinf=np.inf, neginf=-np.inf)
    if ours.size == 0:
        return 0.0, ""
    d = np.abs(ours - theirs)
    d = np.where(np.isnan(ours) & np.isnan(theirs), 0.0, np.where(np.isfinite(d), d, np.inf))
    i = int(np.argmax(d))
    return float(d[i]), labels[i]


def _branch_differences(result, netmap, ref) -> dict:
    """`dp_branch_mw`, `dq_branch_mvar` over both ends of all branches of all kinds, with where."""
    ends = {"from": (np.asarray(result.p_from_mw), np.asarray(result.q_from_mvar)),
            "to": (np.asarray(result.p_to_mw), np.asarray(result.q_to_mvar))}
    worst = {"dp_branch_mw": (0.0, ""), "dq_branch_mvar": (0.0, "")}
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
        for p_col, q_col, end, winding in columns:
            r = rows if winding is None else rows[:, winding]
            for key, col, ours in (("dp_branch_mw", p_col, ends[end][0]), ("dq_branch_mvar", q_col, ends[end][1])):
                if col not in res:
                    continue
                d = _worst(ours[r], res[col].values, [f"{kind} {i} {col}" for i in index], nan_is_zero=True)
                if d[0] > worst[key][0] or not worst[key][1]:
                    worst[key] = d
    return worst


def _lone_generators(netmap, ref) -> np.ndarray:
    """`[n_gen]` bool: in-service generators alone at their (grid) bus, which is no slack bus."""
    gen = ref.gen.reindex(netmap.gen_index)
    if not len(gen):
        return np.zeros(0, bool)
    grid_bus = netmap.bus_lookup[ref.bus.index.get_indexer(gen.bus)]
    on = gen.in_service.values.astype(bool)
    count = np.bincount(grid_bus[on], minlength=int(grid_bus.max()) + 1)[grid_bus]
    eg = ref.ext_grid[ref.ext_grid.in_service.astype(bool)]
    slack_buses = netmap.bus_lookup[ref.bus.index.get_indexer(eg.bus)]
    slack = np.isin(grid_bus, slack_buses)
    if "slack" in gen:
        slack |= gen.slack.fillna(False).values.astype(bool)
    return on & (count == 1) & ~slack


def differences(result, netmap, ref) -> dict:
    """Largest absolute differences of a pgjax result to the pandapower-solved net `ref`.

    Args:
      result: an unbatched pgjax `PowerFlowResult` of the converted grid (padding allowed).
      netmap: the converter's `NetMap` of that grid.
      ref: the net solved by pandapower (e.g. `run_reference(net)[0]`).

    Returns a dict: `converged`, `iterations` (pgjax), every key of `TARGETS` (p.u.,
    degrees, MW, Mvar) and, for each, `where_<key>`, the element where it occurs.
    """
    from pgjax.converters.pandapower import bus_results

    out = {"converged": bool(np.asarray(result.converged)), "iterations": int(np.asarray(result.iterations))}
    bus = bus_results(result, netmap)
    labels = [f"bus {i}" for i in ref.bus.index]
    index = netmap.bus_index
    diffs = {
        "dvm_pu": _worst(bus["vm_pu"], ref.res_bus.vm_pu.reindex(index).values, labels),
        "dva_deg": _worst(bus["va_deg"], ref.res_bus.va_degree.reindex(index).values, labels),
        **_branch_differences(result, netmap, ref),
    }
    n_eg = len(netmap.ext_grid_index)
    res_eg = ref.res_ext_grid.reindex(netmap.ext_grid_index)
    eg_labels = [f"ext_grid {i}" for i in netmap.ext_grid_index]
    diffs["dp_slack_mw"] = _worst(np.asarray(result.slack_p_mw)[:n_eg], res_eg.p_mw.values, eg_labels, True)
    diffs["dq_slack_mvar"] = _worst(np.asarray(result.slack_q_mvar)[:n_eg], res_eg.q_mvar.values, eg_labels, True)
    lone = _lone_generators(netmap, ref)
    gen_labels = [f"gen {i}" for i in np.asarray(netmap.gen_index)[lone]]
    diffs["dq_gen_mvar"] = _worst(np.asarray(result.gen_q_mvar)[:len(lone)][lone],
                                  ref.res_gen.q_mvar.reindex(netmap.gen_index).values[lone], gen_labels, True)
    for key, (value, where) in diffs.items():
        out[key], out[f"where_{key}"] = value, where
    return out


def failures(errors: dict) -> list[str]:
    """What `errors` (from `differences` or `compare`) misses: "not converged" and each
    key of `TARGETS` it exceeds, with the element ("dvm_pu 3.2e-07 at bus 5"); empty: passes."""
    failed = [] if errors["converged"] else ["not converged"]
    for key, target in TARGETS.items():
        if not errors[key] <= target:
            failed.append(f"{key} {errors[key]:.1e} at {errors[f'where_{key}']}")
    return failed


def compare(net, method: str = "newton", *, reference=None, converted=None, pad: bool = True,
            max_iter: int | None = None) -> dict:
    """Solve `net` with pgjax `method` (float64) and take its `differences` to pandapower.

    Args:
      net: a pandapower net (not modified).
      method: a `pgjax.powerflow.METHODS` entry; raises `ValueError` if it does not apply.
      reference: `(solved net, tolerance_mva)` from `run_reference(net)`, computed if None.
      converted: `(grid, netmap)` from `from_pandapower(net)`, computed if None (raises
        `UnsupportedElementError` for nets pgjax cannot model).
      pad: pad the grid to `bucket` sizes so that similar networks share a jit compilation.
      max_iter: pgjax iteration limit (default `MAX_ITER[method]`).

    Needs JAX's 64-bit mode (`pgjax.precision.require_x64` raises otherwise). Returns
    `differences` plus `n_bus` (rows of net.bus), `n_branch` (grid branch rows),
    `reference_tol_mva` and `solve_s`, the wall time of the pgjax solve in seconds
    including jit compilation.
    """
    import jax

    from pgjax.converters.pandapower import from_pandapower
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
    return {"n_bus": len(net.bus), "n_branch": n_branch, "reference_tol_mva": tol_mva,
            **differences(result, netmap, ref), "solve_s": solve_s}


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
        from pgjax.converters.pandapower import UnsupportedElementError, from_pandapower

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

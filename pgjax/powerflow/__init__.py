"""Batched, differentiable AC power flow.

`solve(grid, p_mw, q_mvar, method=...)` is pure and jit/vmap-able. Vmap over operating
points with the grid shared (`in_axes=(None, 0, 0)`) so that everything depending only on
the grid (admittances, the chord Jacobian, the Z-bus inverse) is computed once per batch;
vmap over a stacked grid (`pgjax.grid.stack`) to solve different networks at once.

Methods:
- `newton`: Newton-Raphson for any grid (PV buses, several slacks, meshed, taps, shifts).
  `jacobian="sparse_lu"` (the default on a concrete grid) refactors every iteration on the
  Jacobian's static sparse pattern (`pgjax.powerflow.sparse_newton`), `jacobian="exact"`
  with a dense LU (the default on a traced grid); `jacobian="chord"` reuses the inverse
  Jacobian of the grid's base case (fast for large batches, same tolerance).
- `fixed_point`: Z-bus fixed point for grids without PV buses (radial feeders).
- `distflow`, `lindistflow`: branch-flow approximations for radial feeders, see
  `pgjax.powerflow.radial` for their documented error.
- `pandapower`: reference mode, pandapower's `runpp` on the host through
  `jax.pure_callback` (jit- and vmap-able, sequential, not differentiable; see
  `pgjax.powerflow.reference`). pandapower is imported only when such a solve runs.

Gradients of every result with respect to injections and grid parameters are exact for
`newton`, `fixed_point` and `distflow` (implicit function theorem through `jax.lax.custom_root`).
"""

from __future__ import annotations

import collections
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from pgjax import checks
from pgjax.errors import InputError
from pgjax.grid import TABLES, Grid
from pgjax.grid3ph import Grid3ph
from pgjax.powerflow import network, newton, radial, reference, sparse, sparse_newton, threephase
from pgjax.powerflow.network import bus_injections, make_ybus
from pgjax.powerflow.result import PowerFlowResult, finish
from pgjax.precision import is_64bit, require_x64

METHODS = ("newton", "fixed_point", "distflow", "lindistflow", "pandapower")
JACOBIANS = ("exact", "chord", "sparse", "sparse_lu")

__all__ = ["METHODS", "PowerFlowResult", "bus_injections", "check_grid", "check_method", "default_jacobian",
           "default_method", "make_ybus", "solve"]


def default_tol(grid: Grid, method: str = "newton"):
    """Mismatch tolerance in p.u.: 1e-10 in float64; in float32 1e-5, or for the methods that
    evaluate `V conj(Y V)` more where the largest branch admittance makes float32 rounding
    of it larger than that (`2 eps max|y|`: 6e-5 p.u. on case118, 4e-2 p.u. on the 72-bus
    composite whose bus-tie impedances reach 1.7e5 p.u.). `distflow` evaluates its mismatch
    in branch-flow form (no voltage differences across near-zero impedances): 1e-5."""
    dtype = grid.bus.gs_mw.dtype
    if jnp.dtype(dtype) == jnp.float64:
        return 1e-10
    if method == "distflow":
        return 1e-5
    y_max = jnp.max(jnp.abs(network.branch_admittances(grid)[0]), initial=0.0)
    return jnp.maximum(1e-5, 2 * jnp.finfo(dtype).eps * y_max)


def check_method(grid: Grid, method: str) -> None:
    """Raise `ValueError` if `method` does not apply to `grid` (concrete, unbatched arrays).

    `solve` calls this itself when its grid is concrete; call it at set-up time for grids
    that will only be seen traced.
    """
    if method not in METHODS:
        raise InputError(f"method: powerflow method '{method}' unknown; choose one of {METHODS}")
    if method == "pandapower":
        reference.check_applies(grid)
    elif method != "newton":
        radial.check_applies(grid, method)


def _is_concrete(tree) -> bool:
    """No leaf of the pytree `tree` (a grid, or anything) is traced."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def default_method(grid: Grid, tree=None, jacobian: str | None = None) -> str:
    """The method `solve` uses when none is named: the fastest exact one for the grid.

    The rule: `distflow` for a radial feeder (one reference bus, no PV bus, the active
    branches a tree: `radial.check_applies`), decided on the host for a concrete grid, or
    whenever a feeder `tree` is given; `newton` otherwise (meshed grids, PV buses, a traced
    grid without a tree, or a `jacobian` other than "exact" / None asked for). Measured with
    `pgjax bench powerflow` (docs/benchmarks.md): on every radial network of the benchmark
    DistFlow's column sweeps are faster than Newton at every batch size, and exact to 1e-10 pu.
    """
    if jacobian not in (None, "exact"):
        return "newton"
    if tree is not None:
        return "distflow"
    if not _is_concrete(grid):
        return "newton"
    try:
        radial.check_applies(grid, "distflow")
    except ValueError:
        return "newton"
    return "distflow"


def default_jacobian(grid: Grid) -> str:
    """The Newton linear step `solve` uses when none is named: "sparse_lu" (exact Newton on the
    batched sparse LU, planned on the host) for a concrete grid, "exact" (dense LU) for a
    traced one. Measured with `pgjax bench powerflow` (docs/benchmarks.md): on case118 the
    sparse LU Newton is 4x the dense chord and 2x the sparse chord at batch 1,024, in
    3.6 iterations instead of 7.1."""
    return "sparse_lu" if _is_concrete(grid) else "exact"


# Grid fields where inf is a value (unrated branches); NaN is refused everywhere.
_INF_ALLOWED = ("i_max_from_ka", "i_max_to_ka")


def check_grid(grid, name: str = "grid") -> None:
    """Raise `InputError` unless `grid` is one unbatched `Grid` of real arrays, each table's
    arrays of one length; a concrete grid must also hold no NaN (and no inf but ratings)."""
    if not isinstance(grid, Grid):
        raise InputError(f"{name}: expected a pgjax.grid.Grid, got {type(grid).__name__}")
    sn_shape, _ = checks.shape_dtype(f"{name}.sn_mva", grid.sn_mva)
    if sn_shape != ():
        raise InputError(f"{name}: expected an unbatched Grid (sn_mva shape ()), got a batched grid with leading "
                         f"axes {sn_shape}; use jax.vmap(solve) over a stacked grid")
    for table in TABLES:
        t = getattr(grid, table)
        lengths = {}
        for field in t.__dataclass_fields__:
            where = f"{name}.{table}.{field}"
            shape, dtype = checks.shape_dtype(where, getattr(t, field))
            if len(shape) != 1:
                raise InputError(f"{where}: expected an unbatched [n_{table}] array, got shape {shape}"
                                 + ("; use jax.vmap(solve) over a stacked grid" if len(shape) > 1 else ""))
            if np.dtype(dtype).kind not in "biuf":
                raise InputError(f"{where}: expected a real array, got dtype {dtype}")
            lengths[field] = shape[0]
        if len(set(lengths.values())) > 1:
            raise InputError(f"{name}.{table}: its arrays differ in length: {lengths}")
        for field in t.__dataclass_fields__:
            checks.check_finite(f"{name}.{table}.{field}", getattr(t, field), allow_inf=field in _INF_ALLOWED)
    checks.check_finite(f"{name}.sn_mva", grid.sn_mva)


def _check_injection(name: str, x, n_bus: int) -> None:
    checks.check_real_array(name, x, (n_bus,), "[n_bus] net injection per bus")
    checks.check_finite(name, x)


def _finite_grid(grid: Grid) -> jax.Array:
    """[] bool: no NaN in the grid and no inf outside the ratings (traced: part of the flag)."""
    ok = jnp.isfinite(grid.sn_mva)
    for table in TABLES:
        t = getattr(grid, table)
        for field in t.__dataclass_fields__:
            x = getattr(t, field)
            if jnp.issubdtype(x.dtype, jnp.inexact):
                ok &= jnp.all(~jnp.isnan(x) if field in _INF_ALLOWED else jnp.isfinite(x))
    return ok


def _flag_non_finite(result: PowerFlowResult, inputs_ok) -> PowerFlowResult:
    """Non-finite inputs or results: `converged = False` and every float zero (never NaN / inf out)."""
    floats = [x for x in jax.tree.leaves(result) if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = inputs_ok & jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats]))
    result = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x))
                          if jnp.issubdtype(x.dtype, jnp.inexact) else x, result)
    return result.replace(converged=result.converged & ok)


def _warm_start(grid: Grid, init, x_default) -> jax.Array:
    """Polar start `[2 n_bus]` from `init = (vm_pu, va_deg)`: free buses take `init` where it
    is a usable voltage, fixed magnitudes (reference, PV) and angles (reference) their setpoints."""
    dtype = grid.bus.gs_mw.dtype
    vm, va_deg = (jnp.asarray(a, dtype) for a in init)
    n = grid.n_bus  # shapes checked by `solve`
    is_ref, is_pv, is_pq = network.bus_types(grid)
    usable = (vm > 0) & jnp.isfinite(vm) & jnp.isfinite(va_deg)
    va = jnp.where(usable & (is_pv | is_pq), jnp.deg2rad(va_deg), x_default[:n])
    vm = jnp.where(usable & is_pq, vm, x_default[n:])
    return jnp.concatenate([va, vm])


def solve(grid: Grid, p_mw=None, q_mvar=None, *, method: str | None = None, max_iter: int = 30,
          tol: float | None = None, jacobian: str | None = None, init=None, tree=None) -> PowerFlowResult:
    """Solve the AC power flow of one grid (vmap for batches).

    Args:
      grid: an unbatched `Grid` (float32, or float64 with JAX's 64-bit mode on: a float64
        grid raises `ValueError` without it, see `pgjax.precision`).
      p_mw, q_mvar: optional net bus injections `[n_bus]`, generation positive, that replace
        `bus_injections(grid)`; PV-generator active power is part of `p_mw`.
      method: one of `METHODS`, or None (default) for `default_method(grid, tree, jacobian)`:
        `distflow` on radial feeders, `newton` elsewhere.
      max_iter: iteration limit (per stage for `newton` with `jacobian="chord"`; pandapower's
        `max_iteration` for `pandapower`).
      tol: largest acceptable |power mismatch| in p.u. (default `default_tol(grid)`).
      jacobian: the Newton linear step, one of `JACOBIANS` (newton only), or None (default)
        for `default_jacobian(grid)`: "sparse_lu" on a concrete grid, "exact" on a traced one.
      init: optional warm start `(vm_pu, va_deg)`, each `[n_bus]` (e.g. the previous
        solution's `vm_pu`, `va_deg`); reference and PV magnitudes keep their setpoints and
        buses with a non-positive or non-finite `vm_pu` start from the default point.
        Used by `newton` and `distflow`.
      tree: optional `pgjax.powerflow.tree.FeederTree` of the grid (`distflow`), computed
        once with `tree.tree_of(grid)`; without it a concrete grid's tree is computed on the
        host at each call and a traced grid derives it in the program.

    A `pgjax.grid3ph.Grid3ph` is solved by the three-phase fixed point
    (`pgjax.powerflow.threephase.solve_entry`: `p_mw`, `q_mvar` are then the `[n_load]` load
    branch powers in MW / Mvar, `method` "newton" or "fixed_point" both select it) and
    returns a `PowerFlowResult3ph`.

    Called eagerly (grid, injections and options all concrete), the solve runs as one compiled
    program with the grid closed over, made at the first call and reused by later calls with
    an equal grid and the same options (op by op, each call recompiled the solver's loops).

    Returns a `PowerFlowResult`; values are always finite and `converged` is False when the
    tolerance was not reached within `max_iter`. Inputs of the wrong type, shape or dtype
    raise `pgjax.errors.InputError` at trace time (no broadcasting of injections), and so
    do concrete NaN / inf injections or grid parameters (inf is allowed in the current
    ratings); traced non-finite ones give `converged = False` with every value zero.
    """
    if isinstance(grid, Grid3ph):  # three-phase: see pgjax.powerflow.threephase
        return threephase.solve_entry(grid, p_mw, q_mvar, method=method or "newton", max_iter=max_iter, tol=tol,
                                      jacobian=jacobian or "exact", init=init, tree=tree)
    if method is None:  # a grid of the wrong type is named by `check_grid` below
        method = default_method(grid, tree, jacobian) if isinstance(grid, Grid) else "newton"
    if jacobian is None:
        jacobian = default_jacobian(grid) if method == "newton" and isinstance(grid, Grid) else "exact"
    if method not in METHODS:
        raise InputError(f"method: powerflow method '{method}' unknown; choose one of {METHODS}")
    if jacobian not in JACOBIANS:
        raise InputError(f"jacobian: '{jacobian}' unknown; choose one of {JACOBIANS}")
    check_grid(grid)
    for name, x in (("p_mw", p_mw), ("q_mvar", q_mvar)):
        if x is not None:
            _check_injection(name, x, grid.n_bus)
    if init is not None:
        if not isinstance(init, (tuple, list)) or len(init) != 2:
            raise InputError(f"init: expected a pair (vm_pu, va_deg) of [n_bus] arrays, got {type(init).__name__}")
        for name, x in zip(("init[0] (vm_pu)", "init[1] (va_deg)"), init):
            checks.check_real_array(name, x, (grid.n_bus,), "[n_bus]")
    if _is_concrete(grid):
        check_method(grid, method)
    if any(is_64bit(x.dtype) for x in jax.tree.leaves(grid) if hasattr(x, "dtype")):
        require_x64("pgjax.powerflow.solve on a float64 grid (pgjax.grid.astype casts it)")
    options = dict(method=method, max_iter=max_iter, tol=tol, jacobian=jacobian, tree=tree)
    if _is_concrete((grid, p_mw, q_mvar, init, options)):  # called eagerly: run one compiled program
        return _compiled(grid, options)(p_mw, q_mvar, init)
    return _solve_checked(grid, p_mw, q_mvar, init, **options)


# Compiled programs of eager `solve` calls: (grid and options fingerprint) -> jitted solve of that grid.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 32


def _fingerprint(tree) -> tuple:
    """A hashable digest of a pytree of concrete arrays (structure, dtypes, shapes and values)."""
    leaves, treedef = jax.tree.flatten(tree)
    digest = hashlib.blake2b(digest_size=16)
    for x in leaves:
        a = np.asarray(x)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return str(treedef), digest.hexdigest()


def _compiled(grid: Grid, options: dict):
    """`jax.jit` of `_solve_checked` with this concrete grid closed over (so its host plans, the sparse
    LU's and the feeder tree's, still apply), made once per grid and options: run op by op, a solve
    retraces and recompiles its loops at every call (seconds each)."""
    key = (_fingerprint(grid), _fingerprint(options))
    fn = _COMPILED.get(key)
    if fn is None:
        fn = jax.jit(lambda p_mw, q_mvar, init: _solve_checked(grid, p_mw, q_mvar, init, **options))
        _COMPILED[key] = fn
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return fn


def _solve_checked(grid: Grid, p_mw, q_mvar, init, *, method: str, max_iter: int, tol, jacobian: str,
                   tree) -> PowerFlowResult:
    """`solve` once its arguments are checked and `method`, `jacobian` resolved."""
    with jax.ensure_compile_time_eval():  # concrete leaves stay concrete (jacobian="sparse")
        grid = jax.tree.map(jnp.asarray, grid)  # numpy leaves (a converted grid) index like traced ones
    dtype = grid.bus.gs_mw.dtype
    tol = default_tol(grid, method) if tol is None else tol
    p_default, q_default = bus_injections(grid)
    p_mw = p_default if p_mw is None else jnp.asarray(p_mw, dtype)
    q_mvar = q_default if q_mvar is None else jnp.asarray(q_mvar, dtype)
    inputs_ok = _finite_grid(grid) & jnp.all(jnp.isfinite(p_mw)) & jnp.all(jnp.isfinite(q_mvar))
    if method == "pandapower":  # the host gets finite injections; a non-finite input is flagged
        p_ref, q_ref = (jnp.where(jnp.isfinite(x), x, 0) for x in (p_mw, q_mvar))
        return _flag_non_finite(reference.solve(grid, p_ref, q_ref, tol, max_iter), inputs_ok)
    s_spec = (p_mw + 1j * q_mvar).astype(network.complex_dtype(grid)) / grid.sn_mva
    vm_set, va_set = network.setpoints(grid)
    x_set = jnp.concatenate([va_set, vm_set])
    if method in radial.FEEDER_METHODS or jacobian in ("sparse", "sparse_lu"):
        x_init = x_set  # they start from their own point (LinDistFlow-like; the host base case)
    else:
        x_init = jnp.concatenate([network.dc_angles(grid, s_spec.real, va_set), vm_set])
    if init is not None:
        x_init = _warm_start(grid, init, x_init)

    if method == "newton" and jacobian == "sparse":  # the chord on sparse factors
        x, (res, iterations) = sparse.solve(grid, s_spec, x_set, x_init, tol, max_iter, warm=init is not None)
    elif method == "newton" and jacobian == "sparse_lu":  # exact Newton, batched sparse LU
        x, (res, iterations) = sparse_newton.solve(grid, s_spec, x_set, x_init, tol, max_iter, warm=init is not None)
    elif method == "newton":
        x, (res, iterations) = newton.solve(grid, s_spec, x_set, x_init, tol, max_iter, jacobian,
                                            warm=init is not None)
    else:
        x, (res, iterations) = radial.solve_state(method, grid, s_spec, x_set, x_init, tol, max_iter,
                                                  tree=tree, warm=init is not None)
    max_mismatch = jnp.max(jnp.abs(res))
    n = grid.n_bus
    return _flag_non_finite(finish(grid, x[n:], x[:n], p_mw, q_mvar, max_mismatch <= tol, iterations, max_mismatch),
                            inputs_ok)

"""Newton-Raphson with the exact Jacobian factored on its static sparse pattern
(`jacobian="sparse_lu"`): quadratic convergence at O(nonzeros + fill) per iteration.

Each iteration builds the polar Jacobian (pandapower's `dSbus_dV`) as one 2x2 block per
bus-admittance nonzero, `[[dP/dva, dP/dvm], [dQ/dva, dQ/dvm]]`, factors it with the batched
block LU of `pgjax.powerflow.block_lu` (ordering, fill and levels planned once per
topology on the host) and solves for the step. Rows without a power equation (reference,
isolated and padded buses; Q at PV buses) are identity rows, as in `newton.polar_jacobian`.

Start: the grid's base-case solution (`sparse.host_base_case`, computed once per grid on
the host: the same point for every operating point of a batch, as lightsim2grid's batch
computers start every point from one DC solution), or `x_init` with `warm`.

Under `vmap` with the grid shared the iteration runs on the batch laid out as columns
(`pgjax.powerflow.columns.per_point`, in cache-sized blocks); each point stops updating
once converged and counts its own iterations. Gradients come from the implicit function
theorem on the rectangular residual, as for the other Newton variants. The host plan
needs a concrete grid (close over it); a traced grid falls back to the dense exact Newton.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.grid import Grid
from pgjax.powerflow import block_lu, columns, network, newton, sparse

_CACHE: dict = {}
_CACHE_SIZE = 16
# float64 grids factor the Jacobian in float32 (mixed-precision Newton) when the 1-norm
# condition number estimate of the Jacobian at the base case (identity rows included) is at
# most this. The float32 step then errs by a small fraction (a linear contraction added to
# Newton's quadratic one); the mismatch and the voltages stay float64, so the solution's
# accuracy is unchanged, and the factorization moves half the bytes. Measured: case118
# (9e4) 3.62 iterations against 3.61 in float64, case300 (1.7e6) 4.23 against 3.94, both
# faster per flow; mv_oberrhein (1.9e7) and ieee34_3x_ieee13 (5e7) stay float64.
FLOAT32_FACTOR_MAX_COND = 1e7


@dataclass(frozen=True)
class Plan:
    """Host plan of one grid: the block-LU `pattern` (its given blocks are the bus-admittance
    nonzeros `rows`, `cols` `[n_y]`, `is_diag` where row == col), the entries the branch
    admittances and bus shunts add into (`slots`, see `sparse.scatter_admittances`), and the
    base-case polar solution `x_base` `[2 n_bus]` and the condition number estimate `cond` of
    the Jacobian there (`condition_estimate`)."""

    pattern: block_lu.Pattern
    rows: np.ndarray
    cols: np.ndarray
    is_diag: np.ndarray
    slots: tuple
    x_base: np.ndarray
    cond: float


def plan(grid: Grid) -> Plan:
    """The host plan for a concrete grid (cached by the grid's contents)."""
    key = sparse.grid_key(grid)
    if key in _CACHE:
        return _CACHE[key]
    n = grid.n_bus
    f, t = np.asarray(grid.branch.from_bus, np.int64), np.asarray(grid.branch.to_bus, np.int64)
    diag = np.arange(n)
    pair = np.unique(np.concatenate([diag * n + diag, f * n + t, t * n + f, f * n + f, t * n + t]))
    rows, cols = (pair // n).astype(np.int32), (pair % n).astype(np.int32)
    pattern = block_lu.symbolic(rows, cols, n)

    def slot(r, c):
        return np.searchsorted(pair, r * n + c).astype(np.int32)

    x_base, jac_base, _ = sparse.host_base_case(grid)
    out = Plan(pattern, rows, cols, rows == cols, (slot(f, f), slot(f, t), slot(t, f), slot(t, t), slot(diag, diag)),
               np.asarray(x_base, float), condition_estimate(jac_base))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = out
    return out


def condition_estimate(jac) -> float:
    """1-norm condition number estimate of a sparse square matrix (scipy's `onenormest` of
    its inverse through one sparse LU); inf when it is singular."""
    import scipy.sparse.linalg as spl

    try:
        lu = spl.splu(jac.tocsc())
    except RuntimeError:  # exactly singular
        return float("inf")
    inv = spl.LinearOperator(jac.shape, matvec=lu.solve, rmatvec=lambda x: lu.solve(x, trans="T"), dtype=float)
    return float(spl.norm(jac, 1) * spl.onenormest(inv))


def factor_dtype(grid_dtype, pl: Plan):
    """The dtype the Newton loop factors in: float32 for float32 grids, and for float64 grids
    whose base-case Jacobian is conditioned well enough (`FLOAT32_FACTOR_MAX_COND`)."""
    well = pl.cond <= FLOAT32_FACTOR_MAX_COND  # False for a singular base case (inf)
    return jnp.float32 if jnp.dtype(grid_dtype) == jnp.float32 or well else jnp.float64


def ybus_entries(grid: Grid, pl: Plan) -> jax.Array:
    """Bus-admittance values `[n_y]` complex p.u. at `pl.rows`, `pl.cols` (traceable in the grid)."""
    return sparse.scatter_admittances(grid, pl.slots, len(pl.rows))


def _trail(a, like):
    """`a` with singleton axes appended to broadcast against `like`'s trailing batch axes."""
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def bus_current(v, yv, pl: Plan):
    """`Y v` `[n, *batch]`: bus currents of complex voltages `v` `[n, *batch]`, p.u.
    (`yv` `[n_y]` or `[n_y, *batch]`)."""
    terms = _trail(yv, v[pl.cols]) * v[pl.cols]
    return jnp.zeros_like(v).at[pl.rows].add(terms)


def rect_residual(y, yv, s_spec, eqs: newton.Equations, pl: Plan) -> jax.Array:
    """`sparse.rect_residual` (one point, `[2 n]` p.u. at `y = [e, f]`) with the currents
    from the admittance entries `yv` `[n_y]`."""
    def current(e, f, *_):
        i = bus_current(e + 1j * f, yv, pl)
        return i.real, i.imag

    return sparse.rect_residual(y, None, None, None, s_spec, eqs, current)


def rotation(t):
    """`(cos t, sin t)` of step angles `t` (rad) without transcendental calls: Taylor terms to
    t^10 at t/4, then two angle doublings. Error below 5e-11 for |t| <= 2 rad and at the
    rounding level for |t| <= 0.3 rad (a Newton step's angle changes); only the step uses
    it, the residual is always evaluated at the voltages reached. XLA's float64 cos and sin
    cost about 10 ns an element on CPU, this about 3 ns."""
    t = t / 4
    t2 = t * t
    s = t * (1 - t2 / 6 * (1 - t2 / 20 * (1 - t2 / 42 * (1 - t2 / 72))))
    c = 1 - t2 / 2 * (1 - t2 / 12 * (1 - t2 / 30 * (1 - t2 / 56 * (1 - t2 / 90))))
    for _ in range(2):
        s, c = 2 * s * c, c * c - s * s
    return c, s


def _newton_columns(pl: Plan, shared_start: bool, lu_dtype):
    """The Newton loop on columns: `(e0, f0 [n, B], g, b, s_re, s_im, p_row, q_row, tol, max_iter)` ->
    `(e, f [n, B], residual [2n, B], iterations [B])`.

    `shared_start`: every column of `e0`, `f0` is the same start (the base case). The Jacobian
    depends only on the voltages, so the first iteration of every point factors it once, for
    all points; the iterates are those of plain Newton. The Jacobian is factored in
    `lu_dtype` (see `factor_dtype`), the rest in the dtype of the voltages.

    The state is the rectangular voltage: the mismatch and the Jacobian are polynomials in
    it (per admittance entry `c + jd = Y_ij V_j`, `A + jB = V_i conj(c + jd)`: the block is
    `[[B, A/vm_j], [-A, B/vm_j]]`, plus `[[-Q_i, P_i/vm_i], [P_i, Q_i/vm_i]]` on the
    diagonal), and the polar step `(dva, dvm)` is applied as a scaling and a rotation.
    Rows without a power equation keep their voltage (identity rows, zero residual).
    """
    pat = pl.pattern
    n = pat.n
    rows, cols = pl.rows, pl.cols
    diag = np.flatnonzero(pl.is_diag)
    diag_of_row = np.empty(n, np.int64)
    diag_of_row[rows[diag]] = diag

    def run(e0, f0, g, b, s_re, s_im, p_row, q_row, tol, max_iter):
        batch = e0.shape[1:]
        g, b = _trail(g, e0[:1]), _trail(b, e0[:1])
        p_eq, q_eq = _trail(p_row, e0), _trail(q_row, e0)
        s_re, s_im = _trail(s_re, e0), _trail(s_im, e0)

        def flows(e, f):
            ej, fj = e[cols], f[cols]
            c, d = g * ej - b * fj, b * ej + g * fj
            i_re = jnp.zeros_like(e).at[rows].add(c)
            i_im = jnp.zeros_like(e).at[rows].add(d)
            p, q = e * i_re + f * i_im, f * i_re - e * i_im
            res = jnp.concatenate([jnp.where(p_eq, p - s_re, 0), jnp.where(q_eq, q - s_im, 0)])
            return res, c, d, p, q

        def jacobian(e, f, c, d, p, q):
            vm = jnp.hypot(e, f)
            ei, fi = e[rows], f[rows]
            a_, b_ = ei * c + fi * d, fi * c - ei * d
            inv_vm = 1 / vm[cols]
            blocks = [b_, a_ * inv_vm, -a_, b_ * inv_vm]  # [n_y, *batch] each: (0,0), (0,1), (1,0), (1,1)
            extra = [-q, p / vm, p, q / vm]  # on the diagonal blocks, [n, *batch]
            blocks = [x.at[diag_of_row].add(y) for x, y in zip(blocks, extra)]
            p_ok, q_ok = p_eq[rows], q_eq[rows]
            one = _trail(jnp.asarray(pl.is_diag, e.dtype), blocks[0])
            m00, m01 = jnp.where(p_ok, blocks[0], one), jnp.where(p_ok, blocks[1], 0)
            m10, m11 = jnp.where(q_ok, blocks[2], 0), jnp.where(q_ok, blocks[3], one)
            given = jnp.stack([jnp.stack([m00, m01], 1), jnp.stack([m10, m11], 1)], 1)  # [n_y, 2, 2, *batch]
            return jnp.concatenate([given, jnp.zeros((pat.n_fill,) + given.shape[1:], given.dtype)])

        def factored(e, f):
            _, c, d, p, q = flows(e, f)  # recomputed: cheaper than carrying them through the loop
            return block_lu.factor(jacobian(e, f, c, d, p, q).astype(lu_dtype), pat)

        def step(e, f, res, lu):
            dx = block_lu.solve(lu, jnp.stack([res[:n], res[n:]], 1).astype(lu.dtype), pat).astype(e.dtype)
            cos, sin = rotation(dx[:, 0])
            scale = 1 - dx[:, 1] / jnp.hypot(e, f)
            return scale * (e * cos + f * sin), scale * (f * cos - e * sin)

        def unconverged(res):
            return jnp.max(jnp.abs(res), axis=0) > tol

        def cond(carry):
            return (carry[-2] < max_iter) & jnp.any(carry[-1])

        def update(carry, lu):
            e, f, res, it, k, alive = carry
            e_new, f_new = step(e, f, res, lu)
            res_new = flows(e_new, f_new)[0]
            finite = jnp.all(jnp.isfinite(res_new), axis=0) & jnp.all(jnp.isfinite(e_new) & jnp.isfinite(f_new), axis=0)
            take = alive & finite
            e, f, res = (jnp.where(take, new, old) for new, old in ((e_new, e), (f_new, f), (res_new, res)))
            return e, f, res, it + alive.astype(jnp.int32), k + 1, take & unconverged(res)

        def body(carry):
            return update(carry, factored(carry[0], carry[1]))

        res0 = flows(e0, f0)[0]
        carry = (e0, f0, res0, jnp.zeros(batch, jnp.int32), jnp.asarray(0, jnp.int32), unconverged(res0))
        if shared_start:  # every point's first step with the one factorization at their common start
            carry = jax.lax.cond(cond(carry), update, lambda c, _: c, carry, factored(e0[:, :1], f0[:, :1]))
        e, f, res, it, _, _ = jax.lax.while_loop(cond, body, carry)
        return e, f, res, it

    return run


def solve(grid: Grid, s_spec, x_set, x_init, tol, max_iter, warm: bool = False):
    """Exact sparse Newton of one grid; returns polar `(x, (residual, iterations))` like
    `newton.solve`: from the base-case solution, or from `x_init` `[2 n_bus]` with `warm`.
    With a traced grid, falls back to `newton.solve(..., "exact")`."""
    if not sparse.is_concrete(grid):
        return newton.solve(grid, s_spec, x_set, x_init, tol, max_iter, "exact", warm=warm)
    pl = plan(grid)
    yv = ybus_entries(grid, pl)
    eqs = newton.equations(grid, x_set)
    eq_mask = newton.equation_mask(grid)
    sg = jax.lax.stop_gradient
    E, P = columns.EITHER, columns.POINT
    n = grid.n_bus
    kinds = (P, P, E, E, E, E, E, E, columns.SHARED, columns.SHARED)
    loop = columns.per_point(_newton_columns(pl, not warm, factor_dtype(x_set.dtype, pl)), kinds, rows=pl.pattern.n_blocks)

    def run(y0):
        e, f, res, it = loop(y0[:n], y0[n:], sg(yv.real), sg(yv.imag), sg(s_spec.real), sg(s_spec.imag), eqs.p_row,
                             eqs.q_row, sg(jnp.asarray(tol, x_set.dtype)), jnp.asarray(max_iter, jnp.int32))
        return jnp.concatenate([e, f]), res, it  # res: the power mismatches at (e, f), as the loop tested them

    x_start = x_init if warm else jnp.where(eq_mask, jnp.asarray(pl.x_base, x_set.dtype), x_set)
    return newton.implicit_root(lambda y: rect_residual(y, yv, s_spec, eqs, pl), newton.to_rect(x_start), run)

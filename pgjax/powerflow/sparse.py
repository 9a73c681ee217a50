"""Sparse chord Newton for meshed grids: cost per iteration scales with nonzeros, not n^2.

`jacobian="sparse"` (`pgjax.powerflow.solve`) runs the same Anderson-accelerated polar chord
iteration as `jacobian="chord"` (see `pgjax.powerflow.newton`), with the same tolerance and
starting point (the grid's base-case solution), but:

- the residual uses the bus admittance matrix in ELL form (`[n_bus, k]` neighbour indices and
  admittances, `k` = largest number of buses a bus connects to, itself included): gathers
  and row sums, O(n_branch) per evaluation instead of a dense `[2n, 2n]` product;
- the chord step applies the inverse of the base-case polar Jacobian through its sparse LU
  factors (SuperLU, fill-reducing minimum-degree ordering on `J + J^T`, no pivoting, all
  computed once per grid on the host). Each triangular solve runs as a few *stages*: the
  rows of a factor are grouped by level of its dependency graph (`LEVELS_PER_STAGE` levels
  a stage), each stage's block inverted on the host, so that one stage is one static-shape
  gather-multiply-sum (`x_S = M_S [b_S; x_before]`). Zero fill within one level, little
  within a few; see `build_stages`.

Under `vmap` the linear solves and residual gathers run batch-minor (`batch_minor`), and
batches above `BATCH_CHUNK` points are solved chunk after chunk (`chunked`).

Measured (2-core CPU shared with other jobs, float64, grid closed over, same run for both):
pps sparse / dense chord at batch 1 / 64 / 1024 (1024 with chunking, a separate run):
case118 1,160/21, 2,828/95, 3,387/476; case300 198/0.8, 333/97, 194/187; case1354pegase
194/0.07, 61/4.8, 70/22. `pgjax bench powerflow --networks case118` at a lower load: sparse
1,047 / 3,419 / 3,479, dense chord 89 / 2,568 / 3,470 (lightsim2grid 11,000). The dense
chord pays a dense base-case Newton and a `[2n, 2n]` inverse per call, which dominates at
small batches; at large batches the sparse solve is bound by XLA's gathers, not flops (7x
fewer flops than the dense chord on case118, the same rate).

Host precomputation needs a concrete grid (its topology fixes every shape): use
`jacobian="sparse"` with the grid closed over (`jax.jit(jax.vmap(lambda p, q: solve(grid,
p, q, jacobian="sparse")))`), not passed as a traced argument. With a traced grid `solve`
falls back to the dense chord (`jacobian="chord"`, same results within the tolerance) and
warns once per trace. Precomputations are cached per grid (hash of its arrays).

Gradients are exact as for the dense solvers (implicit function theorem on the sparse
rectangular residual, which is traceable in every grid parameter).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from pgjax.grid import Grid
from pgjax.powerflow import network, newton

# Levels of a triangular factor's dependency graph solved by one stage (one gather). One
# level per stage has no fill; more levels per stage mean fewer sequential operations and
# more nonzeros (case1354pegase: 146 stages / 28k nonzeros at 1, 74 / 32k at 2, 38 / 41k at 4).
LEVELS_PER_STAGE = 2

# A stage's rows are split into two gathers of different widths where that cuts the padded
# entries below this fraction of a single one.
SPLIT_GAIN = 0.7

# Under vmap the chord solve runs over chunks of this many points, one after another
# (`chunked`): the working vectors of a chunk stay in cache, and each chunk stops when its
# own points have converged.
BATCH_CHUNK = 64

# Host base-case Newton: tolerance (p.u.) and iteration limit.
HOST_TOL = 1e-10
HOST_MAX_ITER = 30

_CACHE: dict = {}
_CACHE_SIZE = 16


# ------------------------------------------------------------------ static pattern (host)

@dataclass(frozen=True)
class Stage:
    """One stage of a staged triangular solve: `w[offset : offset + m] = sum(vals * w[cols], -1)`.

    `cols` `[m, k]` int32 indices into the working vector, `vals` `[m, k]` (float64), padded
    with zeros (index 0, value 0).
    """

    offset: int
    cols: np.ndarray
    vals: np.ndarray


@dataclass(frozen=True)
class Precomputed:
    """Everything `solve` needs from the host, for one concrete grid (numpy arrays).

    - `ybus_cols` `[n_bus, k]` int32: neighbour bus of each ELL slot (the bus itself where unused);
    - `slot_ff`, `slot_ft`, `slot_tf`, `slot_tt` `[n_branch]`, `slot_diag` `[n_bus]` int32:
      flat index (`row * k + slot`) that each two-port admittance / shunt adds into;
    - `x_base` `[2 n_bus]`: base-case polar solution `[va_rad, vm_pu]`;
    - `stages`: the staged solves of `L` then `U`; working vector `[r, z, u]`, `3 * 2 n_bus`;
    - `out_index` `[2 n_bus]` int32: position of each unknown of `J0^-1 r` in the working vector;
    - `base_converged`: the host base case reached `HOST_TOL`.
    """

    ybus_cols: np.ndarray
    slot_ff: np.ndarray
    slot_ft: np.ndarray
    slot_tf: np.ndarray
    slot_tt: np.ndarray
    slot_diag: np.ndarray
    x_base: np.ndarray
    stages: tuple
    out_index: np.ndarray
    base_converged: bool


def ybus_pattern(from_bus, to_bus, n_bus: int):
    """ELL pattern of the bus admittance matrix (every branch, in service or not).

    Returns `(cols [n_bus, k], slot_ff, slot_ft, slot_tf, slot_tt [n_branch], slot_diag
    [n_bus])`, all int32; slots are flat indices into a `[n_bus * k]` value array.
    """
    f, t = np.asarray(from_bus, np.int64), np.asarray(to_bus, np.int64)
    diag = np.arange(n_bus)
    rows = np.concatenate([diag, f, f, t, t])
    cols = np.concatenate([diag, f, t, f, t])
    key = np.unique(rows * n_bus + cols)
    r_u, c_u = key // n_bus, key % n_bus
    count = np.bincount(r_u, minlength=n_bus)
    k = int(count.max())
    start = np.cumsum(count) - count
    slot_of_key = np.arange(len(key)) - start[r_u]  # keys are sorted by row, then column
    ell = np.repeat(diag[:, None], k, axis=1)
    ell[r_u, slot_of_key] = c_u

    def flat(r, c):
        return (r * k + slot_of_key[np.searchsorted(key, r * n_bus + c)]).astype(np.int32)

    return ell.astype(np.int32), flat(f, f), flat(f, t), flat(t, f), flat(t, t), flat(diag, diag)


def _levels(t, lower: bool) -> np.ndarray:
    """`[n]` level of each row of a triangular csr matrix in its solve's dependency graph."""
    n = t.shape[0]
    lev = np.zeros(n, np.int64)
    for i in (range(n) if lower else range(n - 1, -1, -1)):
        c = t.indices[t.indptr[i]:t.indptr[i + 1]]
        c = c[c < i] if lower else c[c > i]
        if len(c):
            lev[i] = lev[c].max() + 1
    return lev


def _ell(ent_r, ent_c, ent_v, m: int):
    """Rows `[m]` of (row, col, value) entries as ELL pieces `[(first_row, cols, vals)]`.

    Rows come back ordered by decreasing length (the returned `order` `[m]` maps piece rows to
    input rows), split in two pieces where that saves padding (`SPLIT_GAIN`).
    """
    count = np.bincount(ent_r, minlength=m)
    order = np.argsort(-count, kind="stable")
    rank = np.empty(m, np.int64)
    rank[order] = np.arange(m)
    lengths = count[order]
    single = m * max(int(lengths[0]), 1)
    split_at = m
    if m > 1:
        cost = np.arange(1, m) * lengths[0] + (m - np.arange(1, m)) * np.maximum(lengths[1:], 1)
        s = int(np.argmin(cost)) + 1
        if cost[s - 1] < SPLIT_GAIN * single:
            split_at = s
    k_all = max(int(lengths[0]), 1)
    cols = np.zeros((m, k_all), np.int64)
    vals = np.zeros((m, k_all))
    o = np.argsort(rank[ent_r], kind="stable")
    rr = rank[ent_r][o]
    slot = np.arange(len(o)) - (np.cumsum(lengths) - lengths)[rr]
    cols[rr, slot] = ent_c[o]
    vals[rr, slot] = ent_v[o]
    pieces = [(0, cols[:split_at], vals[:split_at])]
    if split_at < m:
        k2 = max(int(lengths[split_at]), 1)
        pieces.append((split_at, cols[split_at:, :k2], vals[split_at:, :k2]))
    return pieces, order


def build_stages(t, lower: bool, in_pos, out_base: int, levels_per_stage: int = LEVELS_PER_STAGE):
    """Staged solve of the triangular system `t x = b` (`t` scipy sparse `[n, n]`).

    `in_pos` `[n]`: where `b_j` sits in the working vector; the unknowns are written from
    `out_base` on, stage by stage. Returns `(stages, pos)`, `pos` `[n]` the position of each
    unknown. A stage solves the rows `S` of `levels_per_stage` consecutive levels at once:
    `x_S = T_SS^-1 b_S - T_SS^-1 T_S,rest x_rest` (only earlier stages' unknowns appear).
    """
    t = sp.csr_matrix(t)
    n = t.shape[0]
    lev = _levels(t, lower)
    pos = np.full(n, -1, np.int64)
    stages = []
    off = out_base
    for first in range(0, int(lev.max()) + 1, levels_per_stage):
        rows = np.flatnonzero((lev >= first) & (lev < first + levels_per_stage))
        m = len(rows)
        block = t[rows]
        t_ss = block[:, rows].toarray()
        inside = np.zeros(n, bool)
        inside[rows] = True
        coupling = block.tocsc()[:, np.flatnonzero(~inside)]
        other = np.flatnonzero(~inside)
        inv = sla.solve_triangular(t_ss, np.eye(m), lower=lower)
        coup = sp.coo_matrix(-(sp.csr_matrix(inv) @ coupling))
        coup.eliminate_zeros()
        ri, ci = np.nonzero(inv)
        ent_r = np.concatenate([ri, coup.row])
        ent_v = np.concatenate([inv[ri, ci], coup.data])
        src_c = np.concatenate([np.asarray(in_pos)[rows[ci]], pos[other[coup.col]]])
        if np.any(src_c < 0):
            raise AssertionError("stage reads an unknown not yet solved")
        pieces, order = _ell(ent_r, src_c, ent_v, m)
        pos[rows[order]] = off + np.arange(m)
        stages.extend(Stage(off + first_row, c.astype(np.int32), v) for first_row, c, v in pieces)
        off += m
    return stages, pos


def factor_stages(jac, levels_per_stage: int = LEVELS_PER_STAGE):
    """Staged solve of `jac x = r` (`jac` scipy sparse `[N, N]`) from its sparse LU factors.

    SuperLU with minimum-degree ordering on `jac + jac^T` and no pivoting (`Pr J Pc = L U`).
    Returns `(stages, out_index)`; the working vector is `[r, z, u]` `[3 N]`, see `apply_stages`.
    """
    n = jac.shape[0]
    lu = spl.splu(sp.csc_matrix(jac), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options=dict(SymmetricMode=True))
    b_src = np.empty(n, np.int64)
    b_src[lu.perm_r] = np.arange(n)  # (Pr r)[perm_r[j]] = r[j]
    st_l, pos_z = build_stages(lu.L, True, b_src, n, levels_per_stage)
    st_u, pos_u = build_stages(lu.U, False, pos_z, 2 * n, levels_per_stage)
    return tuple(st_l + st_u), pos_u[lu.perm_c].astype(np.int32)  # x = Pc u: x[i] = u[perm_c[i]]


# ------------------------------------------------------------------ base case (host)

def _host(fn, *args):
    """`fn(*args)` evaluated now (also inside a trace), as numpy arrays."""
    with jax.ensure_compile_time_eval():
        out = jax.jit(fn)(*args)
    return jax.tree.map(np.asarray, out)


def host_ybus(grid: Grid):
    """Bus admittance matrix as scipy csr `[n_bus, n_bus]`, complex p.u. (concrete grid)."""
    y_ff, y_ft, y_tf, y_tt = _host(network.branch_admittances, grid)
    shunt = _host(network.bus_shunt, grid)
    f, t = np.asarray(grid.branch.from_bus), np.asarray(grid.branch.to_bus)
    n = grid.n_bus
    d = np.arange(n)
    return sp.csr_matrix((np.concatenate([y_ff, y_ft, y_tf, y_tt, shunt]).astype(np.complex128),
                          (np.concatenate([f, f, t, t, d]), np.concatenate([f, t, f, t, d]))), shape=(n, n))


def host_polar_residual(x, ybus, s_spec, x_set, eq_mask):
    """numpy twin of `newton.residual`: `[2 n]` mismatch at polar `x`, p.u."""
    n = len(x) // 2
    v = x[n:] * np.exp(1j * x[:n])
    s = v * np.conj(ybus @ v)
    return np.where(eq_mask, np.concatenate([s.real - s_spec.real, s.imag - s_spec.imag]), x - x_set)


def host_polar_jacobian(x, ybus, eq_mask):
    """scipy csc `[2n, 2n]` twin of `newton.polar_jacobian` (identity rows off `eq_mask`)."""
    n = len(x) // 2
    v = x[n:] * np.exp(1j * x[:n])
    v_norm = np.exp(1j * x[:n])
    i_bus = ybus @ v
    dv, dvn = sp.diags(v), sp.diags(v_norm)
    ds_dvm = dv @ np.conj(ybus @ dvn) + sp.diags(np.conj(i_bus) * v_norm)
    ds_dva = 1j * dv @ np.conj(sp.diags(i_bus) - ybus @ dv)
    power = sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]])
    keep = eq_mask.astype(float)
    return sp.csc_matrix(sp.diags(keep) @ power + sp.diags(1.0 - keep))


def host_dc_angles(grid: Grid, p_spec_pu, va_set):
    """Sparse twin of `network.dc_angles`: DC power-flow angles `[n_bus]` rad."""
    br = grid.branch
    active = _host(network.branch_active, grid)
    x_pu, tap = np.asarray(br.x_pu, float), np.asarray(br.tap, float)
    b = np.where(active, 1.0 / (np.where(active, x_pu, 1.0) * tap), 0.0)
    n, m = grid.n_bus, grid.n_branch
    inc = sp.csr_matrix((np.concatenate([np.ones(m), -np.ones(m)]),
                         (np.concatenate([np.arange(m)] * 2),
                          np.concatenate([np.asarray(br.from_bus), np.asarray(br.to_bus)]))), shape=(m, n))
    b_bus = inc.T @ sp.diags(b) @ inc
    p_shift = inc.T @ (-b * np.deg2rad(np.asarray(br.shift_deg, float)))
    _, is_pv, is_pq = _host(network.bus_types, grid)
    free = (is_pv | is_pq).astype(float)
    b_mod = sp.diags(free) @ b_bus + sp.diags(1.0 - free)
    rhs = np.where(free > 0, p_spec_pu - p_shift - np.asarray(grid.bus.gs_mw, float) / float(grid.sn_mva), va_set)
    return spl.spsolve(sp.csc_matrix(b_mod), rhs)


def host_base_case(grid: Grid):
    """Base-case polar solution `x_base` `[2 n]`, its chord Jacobian (scipy csc) and whether
    exact sparse Newton reached `HOST_TOL` (the best iterate is kept); from `network.bus_injections` and a DC start.
    Where Newton fails the DC start and its Jacobian are returned."""
    n = grid.n_bus
    ybus = host_ybus(grid)
    p_base, q_base = _host(network.bus_injections, grid)
    s_base = (p_base + 1j * q_base) / float(grid.sn_mva)
    vm_set, va_set = _host(network.setpoints, grid)
    x_set = np.concatenate([va_set, vm_set]).astype(float)
    eq_mask = _host(newton.equation_mask, grid)
    x0 = np.concatenate([host_dc_angles(grid, s_base.real, va_set), vm_set]).astype(float)
    x, best, best_res = x0, x0, np.inf
    polish = 0
    for _ in range(HOST_MAX_ITER):
        res = np.max(np.abs(host_polar_residual(x, ybus, s_base, x_set, eq_mask)))
        if not np.isfinite(res):
            break
        if res < best_res:
            best, best_res = x, res
        if best_res <= HOST_TOL:  # then one polishing step (the float64 floor is near 1e-12)
            polish += 1
            if polish > 1:
                break
        x = x - spl.spsolve(host_polar_jacobian(x, ybus, eq_mask),
                            host_polar_residual(x, ybus, s_base, x_set, eq_mask))
    return best, host_polar_jacobian(best, ybus, eq_mask), bool(best_res <= HOST_TOL)


def grid_key(grid: Grid) -> str:
    """A hash of every array of `grid` (dtype, shape, bytes): the key of the host caches."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(grid):
        a = np.asarray(leaf)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def is_concrete(grid: Grid) -> bool:
    """True when no array of `grid` is traced (host precomputation possible)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(grid))


def precompute(grid: Grid) -> Precomputed:
    """Host precomputation for a concrete, unbatched grid (cached by the grid's contents)."""
    key = grid_key(grid)
    if key in _CACHE:
        return _CACHE[key]
    cols, s_ff, s_ft, s_tf, s_tt, s_diag = ybus_pattern(grid.branch.from_bus, grid.branch.to_bus, grid.n_bus)
    x_base, jac, converged = host_base_case(grid)
    stages, out_index = factor_stages(jac)
    pre = Precomputed(cols, s_ff, s_ft, s_tf, s_tt, s_diag, x_base, stages, out_index, converged)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = pre
    return pre


# ------------------------------------------------------------------ traced kernels

def scatter_admittances(grid: Grid, slots, size: int) -> jax.Array:
    """`[size]` complex p.u.: each branch's two-port admittances `y_ff, y_ft, y_tf, y_tt`
    `[n_branch]` and each bus shunt `[n_bus]` added into the value slots `slots = (slot_ff,
    slot_ft, slot_tf, slot_tt, slot_diag)` of a sparse bus-admittance layout (traceable)."""
    y_ff, y_ft, y_tf, y_tt = network.branch_admittances(grid)
    vals = jnp.zeros(size, y_ff.dtype)
    for slot, y in zip(slots, (y_ff, y_ft, y_tf, y_tt, network.bus_shunt(grid)), strict=True):
        vals = vals.at[jnp.asarray(slot)].add(y)
    return vals


def ybus_values(grid: Grid, pre: Precomputed) -> jax.Array:
    """ELL admittances `[n_bus, k]` complex p.u. for `pre.ybus_cols` (traceable in the grid)."""
    n, k = pre.ybus_cols.shape
    slots = (pre.slot_ff, pre.slot_ft, pre.slot_tf, pre.slot_tt, pre.slot_diag)
    return scatter_admittances(grid, slots, n * k).reshape(n, k)


def _trail(a, like):
    """`a` `[n, k]` reshaped to broadcast against `like` `[n, k, *batch]`."""
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def ell_current(e, f, cols, g, b):
    """Bus currents `(i_re, i_im)` `[n, *batch]` p.u. of rectangular voltages `e, f`
    `[n, *batch]` through the ELL admittances `g + j b` `[n, k]` at neighbours `cols` `[n, k]`.
    Trailing batch axes make every gather read contiguous rows (see `batch_minor`)."""
    e_n, f_n = e[cols], f[cols]
    g, b = _trail(g, e_n), _trail(b, e_n)
    return jnp.sum(g * e_n - b * f_n, 1), jnp.sum(b * e_n + g * f_n, 1)


def batch_minor(fn, n_vec: int):
    """`fn` whose first `n_vec` arguments are vectors `[n]` (gathered along axis 0), with a
    vmap rule that moves a batch axis of those vectors last (`[n, batch]`) instead of first.

    XLA's CPU gather then copies contiguous rows of `batch` values per index instead of
    strided scalars: 3-4x faster for the staged solve of case1354pegase at batch 64. Other
    arguments must be unbatched for that path (else plain `jax.vmap` of `fn`). Outputs are
    arrays (or tuples of arrays) with the vectors' leading axis. Not differentiable: use it
    only under `stop_gradient`.
    """
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        vec_b, rest_b = in_batched[:n_vec], in_batched[n_vec:]
        if any(jax.tree.leaves(rest_b)) or not any(vec_b):
            axes = [0 if bt else None for bt in in_batched]
            out = jax.vmap(fn, in_axes=axes)(*args)
            return out, jax.tree.map(lambda _: True, out)
        vecs = [jnp.moveaxis(a, 0, -1) if bt else a[..., None] for a, bt in zip(args[:n_vec], vec_b)]
        if not all(vec_b):
            vecs = [jnp.broadcast_to(v, v.shape[:-1] + (axis_size,)) for v in vecs]
        out = fn(*vecs, *args[n_vec:])
        out = jax.tree.map(lambda o: jnp.moveaxis(o, -1, 0), out)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def polar_residual(x, cols, g, b, s_spec, x_set, eq_mask, current=ell_current) -> jax.Array:
    """Sparse twin of `newton.residual`: `[2 n]` polar mismatch p.u. (`x = [va_rad, vm_pu]`)."""
    n = x.shape[-1] // 2
    e, f = x[n:] * jnp.cos(x[:n]), x[n:] * jnp.sin(x[:n])
    i_re, i_im = current(e, f, cols, g, b)
    p, q = e * i_re + f * i_im, f * i_re - e * i_im
    return jnp.where(eq_mask, jnp.concatenate([p - s_spec.real, q - s_spec.imag]), x - x_set)


def rect_residual(y, cols, g, b, s_spec, eqs: newton.Equations, current=ell_current) -> jax.Array:
    """Sparse twin of `newton.rect_residual`: `[2 n]` rectangular residual p.u. (`y = [e, f]`).
    `current`: `ell_current`, or its `batch_minor` form inside the (non-differentiated) loop."""
    n = y.shape[-1] // 2
    e, f = y[:n], y[n:]
    i_re, i_im = current(e, f, cols, g, b)
    p = e * i_re + f * i_im - s_spec.real
    q = f * i_re - e * i_im - s_spec.imag
    top = jnp.where(eqs.p_row, p, e - eqs.y_set[:n])
    bottom = jnp.where(eqs.q_row, q, jnp.where(eqs.v_row, e * e + f * f - eqs.vm_set ** 2, f - eqs.y_set[n:]))
    return jnp.concatenate([top, bottom])


def apply_stages(stages, out_index, r) -> jax.Array:
    """`J0^-1 r` `[N, *batch]` through the staged LU solves (`factor_stages`); `r` `[N, *batch]`."""
    n = r.shape[0]
    w = jnp.concatenate([r, jnp.zeros((2 * n,) + r.shape[1:], r.dtype)])
    for st in stages:
        gathered = w[jnp.asarray(st.cols)]
        part = jnp.sum(_trail(jnp.asarray(st.vals, r.dtype), gathered) * gathered, 1)
        w = jax.lax.dynamic_update_slice_in_dim(w, part, st.offset, 0)
    return w[jnp.asarray(out_index)]


def chunked(fn, chunk: int = BATCH_CHUNK):
    """`fn(*args)` (arrays in, pytree out) with a vmap rule that solves batches larger than
    `chunk` as `lax.map` over chunks of `chunk` points, each chunk vmapped (the last one
    padded by repeating its final point). Batched outputs; not differentiable."""
    def call(*tree_args):
        leaves, treedef = jax.tree.flatten(tree_args)
        return _chunked_leaves(lambda *lv: fn(*jax.tree.unflatten(treedef, lv)), chunk)(*leaves)

    return call


def _chunked_leaves(fn, chunk: int):
    """`chunked` for a function of arrays only."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        axes = [0 if bt else None for bt in in_batched]
        if axis_size <= chunk:
            out = jax.vmap(fn, in_axes=axes)(*args)
            return out, jax.tree.map(lambda _: True, out)
        n_chunks = -(-axis_size // chunk)
        extra = n_chunks * chunk - axis_size

        def split(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]) if extra else a
            return a.reshape((n_chunks, chunk) + a.shape[1:])

        batched = [split(a) for a, bt in zip(args, in_batched) if bt]

        def one_chunk(parts):
            it = iter(parts)
            full = [next(it) if bt else a for a, bt in zip(args, in_batched)]
            return jax.vmap(fn, in_axes=axes)(*full)

        out = jax.lax.map(one_chunk, batched)
        out = jax.tree.map(lambda o: o.reshape((n_chunks * chunk,) + o.shape[2:])[:axis_size], out)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


# ------------------------------------------------------------------ solver

def solve(grid: Grid, s_spec, x_set, x_init, tol, max_iter, warm: bool = False):
    """Sparse chord Newton of one grid; returns polar `(x, (residual, iterations))` like
    `newton.solve`: from the base-case solution, or from `x_init` `[2 n_bus]` with `warm`.
    With a traced grid, falls back to `newton.solve(..., "chord")` (warns)."""
    if not is_concrete(grid):
        warnings.warn("jacobian='sparse' needs a concrete grid (close over it instead of passing it "
                      "traced); falling back to the dense chord", stacklevel=3)
        return newton.solve(grid, s_spec, x_set, x_init, tol, max_iter, "chord", warm=warm)
    pre = precompute(grid)
    cols = jnp.asarray(pre.ybus_cols)
    yv = ybus_values(grid, pre)
    g, b = yv.real, yv.imag
    eq_mask = newton.equation_mask(grid)
    eqs = newton.equations(grid, x_set)
    dtype = x_set.dtype
    sg = jax.lax.stop_gradient

    current = batch_minor(ell_current, 2)
    lin_solve = batch_minor(lambda r: apply_stages(pre.stages, pre.out_index, r), 1)

    def chord(y0, g0, b0, s0, xs0, eq_mask, eqs, tol):
        polar_fn = lambda x: polar_residual(x, cols, g0, b0, s0, xs0, eq_mask, current)  # noqa: E731
        step = newton.chord_step(polar_fn, lin_solve)
        x0 = newton.to_polar(y0)
        state, _, it = newton.iterate(step, newton.anderson_start(x0), polar_fn(x0), tol, max_iter)
        y = newton.to_rect(state.y)
        return y, rect_residual(y, cols, g0, b0, s0, eqs, current), it

    def run(y0):
        # every traced input an explicit argument: custom_vmap rules see what is batched
        return chunked(chord)(y0, sg(g), sg(b), sg(s_spec), sg(x_set), eq_mask, sg(eqs), sg(jnp.asarray(tol)))

    # The base solution's fixed entries are the grid's setpoints; take them from x_set so
    # that they follow it exactly.
    x_start = x_init if warm else jnp.where(eq_mask, jnp.asarray(pre.x_base, dtype), x_set)
    return newton.implicit_root(lambda y: rect_residual(y, cols, g, b, s_spec, eqs),
                                newton.to_rect(x_start), run)

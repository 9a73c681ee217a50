"""Three-phase unbalanced power flow on a `pgjax.grid3ph.Grid3ph` (node admittance form).

The method is OpenDSS's own "normal" iteration, a Z-bus fixed point on the node admittance
matrix: the system matrix `Y = Y_net + Y_load` holds every element's primitive admittance,
the sources' Thevenin admittances and each load's admittance at its nominal voltage, so
constant-impedance loads are exact in the matrix and the loop only carries each load's
*compensation current* (what it draws beyond its nominal admittance):

    V_{k+1} = Y^{-1} (I_source + I_comp(V_k))

run as a chord iteration on the load branch voltages (`_fixed_point`). `Y` is factored
once per grid (shared by a `vmap` over operating points). Nodes with `fixed = True` (ideal
sources) keep their set voltage: their rows of `Y` are identity rows.
The iteration stops when the largest voltage change is at most `tol` p.u. Gradients of
every result are implicit (`jax.lax.custom_root` on the current residual
`Y_net V - I_source - I_load(V)`), exact at the solution and free of the loop.

Units: voltages in p.u. of each node's base, currents in p.u. of `s_base_kva / vbase_kv`
inside; results in p.u., degrees, amperes, kW and kvar.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import checks
from pgjax.errors import InputError
from pgjax import grid3ph
from pgjax.grid3ph import CAPACITOR, Grid3ph
from pgjax.powerflow import columns


@struct.dataclass
class PowerFlowResult3ph:
    """Solution of one three-phase power flow (leading batch axes when vmapped).

    Node arrays `[n_node]` in the grid's node order (`netmap.node_names`); element arrays
    `[n_elem, n_cond]` per conductor in OpenDSS's terminal order, flows positive *into* the
    element at that conductor; padded entries read zero.
    """

    v_re_pu: jax.Array  # [n_node]
    v_im_pu: jax.Array  # [n_node]
    vm_pu: jax.Array  # [n_node]
    va_deg: jax.Array  # [n_node]
    i_re_a: jax.Array  # [n_elem, n_cond] conductor current into the element, A
    i_im_a: jax.Array
    p_kw: jax.Array  # [n_elem, n_cond] power into the element at each conductor
    q_kvar: jax.Array
    loss_kw: jax.Array  # [n_elem] losses of each element (sum over its conductors)
    loss_kvar: jax.Array
    p_loss_kw: jax.Array  # [] total of elements but capacitors (OpenDSS's `Circuit.Losses`)
    q_loss_kvar: jax.Array
    load_p_kw: jax.Array  # [n_load] power drawn by each load branch
    load_q_kvar: jax.Array
    source_p_kw: jax.Array  # [n_src] power delivered into the network by each source
    source_q_kvar: jax.Array
    converged: jax.Array  # [] bool
    iterations: jax.Array  # [] int
    max_mismatch: jax.Array  # [] largest |node power mismatch|, p.u. of s_base_kva
    max_step_pu: jax.Array  # [] largest voltage change of the last iteration, p.u.


def default_tol(grid: Grid3ph) -> float:
    """Voltage-change tolerance, p.u.: 1e-10 in float64, 2e-6 in float32."""
    return 1e-10 if grid.node.vbase_kv.dtype == jnp.float64 else 2e-6


def _cdtype(grid: Grid3ph):
    return jnp.complex128 if grid.node.vbase_kv.dtype == jnp.float64 else jnp.complex64


def _ext(x, fill=0):
    """Append the ground row (index n_node) to `x` `[n, ...]`."""
    return jnp.concatenate([x, jnp.full((1,) + x.shape[1:], fill, x.dtype)])


def network_admittance(grid: Grid3ph) -> jax.Array:
    """`[n_node, n_node]` complex: elements and source admittances, p.u. (no loads)."""
    n = grid.n_node
    e, s = grid.elem, grid.source
    y_elem = (e.y_re_pu + 1j * e.y_im_pu).astype(_cdtype(grid))
    y_src = (s.y_re_pu + 1j * s.y_im_pu).astype(_cdtype(grid))
    y = jnp.zeros((n + 1, n + 1), _cdtype(grid))
    y = y.at[e.node[:, :, None], e.node[:, None, :]].add(jnp.where(e.mask[:, None, None], y_elem, 0))
    y = y.at[s.node[:, :, None], s.node[:, None, :]].add(jnp.where(s.mask[:, None, None], y_src, 0))
    return y[:n, :n]


def source_current(grid: Grid3ph) -> jax.Array:
    """`[n_node]` complex: Norton current of the sources, p.u."""
    s = grid.source
    y = (s.y_re_pu + 1j * s.y_im_pu).astype(_cdtype(grid))
    e = (s.e_re_pu + 1j * s.e_im_pu).astype(_cdtype(grid))
    i = jnp.where(s.mask[:, None], jnp.einsum("sij,sj->si", y, e), 0)
    return jnp.zeros(grid.n_node + 1, i.dtype).at[s.node].add(i)[:-1]


def _load_terms(grid: Grid3ph, p_kw, q_kvar):
    """Per load branch: nominal admittance (A/kV, i.e. mS... p.u.-free) and both node bases."""
    ld = grid.load
    vb = _ext(grid.node.vbase_kv)
    s_nom = jnp.where(ld.mask, p_kw + 1j * q_kvar, 0).astype(_cdtype(grid))  # kVA
    y_nom = jnp.conj(s_nom) / ld.vnom_kv ** 2  # kVA / kV^2 = A / kV
    return y_nom, vb[ld.node_a], vb[ld.node_b]


def load_admittance(grid: Grid3ph, p_kw, q_kvar) -> jax.Array:
    """`[n_node, n_node]` complex: every load branch's admittance at its nominal voltage, p.u."""
    ld, n = grid.load, grid.n_node
    y_nom, vb_a, vb_b = _load_terms(grid, p_kw, q_kvar)
    scale = 1 / grid.s_base_kva
    y = jnp.zeros((n + 1, n + 1), y_nom.dtype)
    y = y.at[ld.node_a, ld.node_a].add(y_nom * vb_a * vb_a * scale).at[ld.node_b, ld.node_b].add(y_nom * vb_b * vb_b * scale)
    y = y.at[ld.node_a, ld.node_b].add(-y_nom * vb_a * vb_b * scale).at[ld.node_b, ld.node_a].add(-y_nom * vb_a * vb_b * scale)
    return y[:n, :n]


# The kernels below take a batch of operating points as columns (`pgjax.powerflow.columns`):
# node arrays `[n_node, B]`, load arrays `[n_load, B]`; grid arrays get a trailing axis.


def load_currents(grid: Grid3ph, v, p_kw, q_kvar):
    """Current drawn by each load branch `[n_load, B]` (A, from node_a to node_b) at node
    voltages `v` `[n_node, B]` (p.u.), and the branch voltages `u` `[n_load, B]` (kV)."""
    ld = grid.load
    ve = _ext(v) * _ext(grid.node.vbase_kv)[:, None]
    u = ve[ld.node_a] - ve[ld.node_b]
    return _draw(grid, u, p_kw, q_kvar), u


def _draw(grid: Grid3ph, u, p_kw, q_kvar):
    """Current drawn by each load branch `[n_load, B]` (A) at branch voltages `u` (kV), powers
    `p_kw`, `q_kvar` `[n_load, B]`."""
    ld = grid.load
    ratio = jnp.abs(u) / ld.vnom_kv[:, None]
    safe = jnp.where(ratio > 0, ratio, 1.0)
    s = p_kw * safe ** ld.exp_p[:, None] + 1j * q_kvar * safe ** ld.exp_q[:, None]
    u_safe = jnp.where(jnp.abs(u) > 0, u, 1.0)
    return jnp.where(ld.mask[:, None] & (ratio > 0), jnp.conj(s / u_safe), 0)


def load_injection(grid: Grid3ph, i_a) -> jax.Array:
    """`[n_node, B]` p.u. current injected into the nodes by load branch currents `i_a` (A)."""
    ld = grid.load
    vb = _ext(grid.node.vbase_kv)[:, None] / grid.s_base_kva
    inj = jnp.zeros((grid.n_node + 1,) + i_a.shape[1:], i_a.dtype)
    return inj.at[ld.node_a].add(-i_a * vb[ld.node_a]).at[ld.node_b].add(i_a * vb[ld.node_b])[:-1]


def element_currents(grid: Grid3ph, ve) -> tuple[jax.Array, jax.Array]:
    """Real and imaginary parts `[n_elem, n_cond, B]` of the p.u. current into each element
    conductor at node voltages `ve` `[n_node + 1, B]` (ground row last), 0 for padded
    elements. In real arithmetic and as a sum over the conductors `j` of elementwise
    products, which XLA's CPU fuses into one loop: 2x faster than four batched `einsum`s of
    the small `[n_cond, n_cond]` blocks, 3-4x faster than one of complex numbers."""
    e = grid.elem
    vr, vi = ve.real[e.node], ve.imag[e.node]
    yr, yi = (jnp.where(e.mask[:, None, None], y, 0).astype(vr.dtype) for y in (e.y_re_pu, e.y_im_pu))
    terms = range(e.node.shape[1])
    i_re = sum(yr[:, :, j, None] * vr[:, None, j] - yi[:, :, j, None] * vi[:, None, j] for j in terms)
    i_im = sum(yr[:, :, j, None] * vi[:, None, j] + yi[:, :, j, None] * vr[:, None, j] for j in terms)
    return i_re, i_im


def network_current(grid: Grid3ph, ve, i_elem) -> jax.Array:
    """`Y_net V` `[n_node, B]` p.u. from element currents `i_elem` (`element_currents`' pair)
    and the sources' at node voltages `ve` `[n_node + 1, B]`."""
    s = grid.source
    y_src = jnp.where(s.mask[:, None, None], s.y_re_pu + 1j * s.y_im_pu, 0).astype(ve.dtype)
    i_s = jnp.einsum("sij,sjb->sib", y_src, ve[s.node])
    out = jnp.zeros((grid.n_node + 1,) + ve.shape[1:], ve.dtype)
    return out.at[grid.elem.node].add(jax.lax.complex(*i_elem)).at[s.node].add(i_s)[:-1]


def residual(grid: Grid3ph, i_src, v, p_kw, q_kvar) -> jax.Array:
    """Current mismatch `[n_node, B]` p.u.: `Y_net V - I_source - I_load(V)`; `V - V_set` at
    fixed nodes, 0 at padded ones (`i_src` `[n_node]`, `v` `[n_node, B]`)."""
    ve = _ext(v)
    return _residual(grid, i_src, v, network_current(grid, ve, element_currents(grid, ve)), p_kw, q_kvar)


def _residual(grid: Grid3ph, i_src, v, i_net, p_kw, q_kvar):
    """`residual` given the network current `i_net` `[n_node, B]`."""
    i_load, _ = load_currents(grid, v, p_kw, q_kvar)
    r = i_net - i_src[:, None] - load_injection(grid, i_load)
    nd = grid.node
    v_set = (nd.v_set_re_pu + 1j * nd.v_set_im_pu).astype(v.dtype)[:, None]
    return jnp.where(nd.fixed[:, None], v - v_set, jnp.where(nd.mask[:, None], r, 0))


def z_matrix(grid: Grid3ph, y_net) -> jax.Array:
    """`[n_node, n_node]` inverse of the fixed-point matrix: free rows `Y_net + Y_load` with
    the loads at the grid's own `p_kw`, `q_kvar` (not the operating point's, so a vmap over
    operating points inverts once), identity rows for fixed and padded nodes."""
    nd = grid.node
    y = y_net + load_admittance(grid, grid.load.p_kw, grid.load.q_kvar)
    keep = nd.mask & ~nd.fixed
    y = jnp.where(keep[:, None], y, jnp.eye(grid.n_node, dtype=y.dtype))
    return jnp.linalg.inv(y)


def _transfer(grid: Grid3ph, z, keep):
    """`(zi, m)`: `zi` `[n_node, n_load]` p.u. node voltage per ampere drawn by each load
    branch, `m` `[n_load, n_load]` kV across each branch per ampere drawn by each (through `z`)."""
    ld = grid.load
    vb = _ext(grid.node.vbase_kv)
    on = _ext(keep, False)
    ca = jnp.where(on[ld.node_a] & ld.mask, -vb[ld.node_a], 0) / grid.s_base_kva
    cb = jnp.where(on[ld.node_b] & ld.mask, vb[ld.node_b], 0) / grid.s_base_kva
    last = grid.n_node - 1  # ground columns are clipped onto a real one, with a zero coefficient
    zi = z[:, jnp.minimum(ld.node_a, last)] * ca + z[:, jnp.minimum(ld.node_b, last)] * cb
    zi_ext = jnp.concatenate([zi, jnp.zeros((1, grid.n_load), zi.dtype)], 0)
    m = vb[ld.node_a][:, None] * zi_ext[ld.node_a] - vb[ld.node_b][:, None] * zi_ext[ld.node_b]
    return zi, m


@struct.dataclass
class Prepared3ph:
    """What the fixed point needs of a grid, independent of the operating point (`prepare`)."""

    v0: jax.Array  # [n_node] complex p.u.: voltages with every load at its nominal admittance
    zi: jax.Array  # [n_node, n_load] p.u. voltage per ampere drawn by each load branch
    u0: jax.Array  # [n_load] complex kV: the chord iteration's start (`_fixed_point`)
    w: jax.Array  # [n_load, 2 n_load] complex kV per ampere of the remainders' real, then imaginary parts
    alpha: jax.Array  # [n_load] complex A/kV: each load's draw linearized at the grid's own solution,
    beta: jax.Array  # [n_load] complex A/kV: di = alpha du + beta conj(du)


def prepare(grid: Grid3ph) -> Prepared3ph:
    """Invert the system matrix once (`O(n_node^3)`) for repeated solves of one grid: pass the
    result as `solve(..., prepared=...)`. Not differentiated (it only steers the iteration;
    gradients come from the residual).

    A float32 grid is prepared in float64 from the float64 network it was rounded
    from (`grid3ph.exact_float64`: its admittances plus the remainders `astype` kept; under
    `jax.enable_x64`), then cast back: the float32 solve then only rounds `v0 + zi @ d`.
    The system matrix's condition number is 1e8 .. 1e15 on the IEEE feeders (near-zero
    impedance switches and regulators, delta windings held to ground by OpenDSS's ppm
    anti-float shunts); rounding the transformers' near-cancelling `YPrim` entries to
    float32 alone changes the network by more than those shunts (IEEE 123: 2.8 p.u. on a
    floating delta secondary even with a float64 inverse). This runs on the host through
    `jax.pure_callback`, so traced grids (under `jit`, `vmap`, `grad`) get it too: one call
    per grid (a vmap over stacked grids calls it per grid, one over operating points once).
    float64 grids are prepared in place."""
    if jnp.result_type(grid.node.vbase_kv) != jnp.float32:
        return _prepare(grid)
    shapes = jax.eval_shape(_prepare, grid)
    return jax.pure_callback(_prepare_float64, shapes, jax.lax.stop_gradient(grid), vmap_method="sequential")


def _prepare_float64(grid: Grid3ph) -> Prepared3ph:
    """`_prepare` of a concrete float32 grid's float64 network, cast to complex64 (numpy);
    on the CPU whatever the default device (it may run inside a host callback)."""
    g64 = grid3ph.exact_float64(grid)
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        prep = jax.tree.map(np.asarray, jax.jit(_prepare)(g64))
    return jax.tree.map(lambda x: x.astype(np.complex64), prep)


def _prepare(grid: Grid3ph) -> Prepared3ph:
    grid = jax.lax.stop_gradient(jax.tree.map(jnp.asarray, grid))
    nd, ld = grid.node, grid.load
    z = z_matrix(grid, network_admittance(grid))
    v_set = (nd.v_set_re_pu + 1j * nd.v_set_im_pu).astype(z.dtype)
    keep = nd.mask & ~nd.fixed
    v0 = z @ jnp.where(keep, source_current(grid), jnp.where(nd.fixed, v_set, 0))
    zi, m = _transfer(grid, z, keep)
    v0e = _ext(v0) * _ext(nd.vbase_kv)
    u_z = v0e[ld.node_a] - v0e[ld.node_b]  # branch voltages with the loads at their admittances
    y_nom = _load_terms(grid, ld.p_kw, ld.q_kvar)[0]
    zero = jnp.zeros_like(y_nom)
    plain = jnp.concatenate([m, 1j * m], 1)  # the plain fixed point: alpha = y_nom, beta = 0
    u_ref = _iterate(grid, u_z[:, None], plain, y_nom[:, None], zero[:, None], ld.p_kw[:, None],
                     ld.q_kvar[:, None], 1e-12, 100)[0][:, 0]
    alpha, beta = _linearize(grid, u_ref)
    # u = u_z + M (draw(u) - y_nom u) with draw(u) = alpha u + beta conj(u) + r(u) is
    # (1 - M D) u = u_z + M r(u), D: du -> (alpha - y_nom) du + beta conj(du); in real form:
    real = lambda x: jnp.concatenate([x.real, x.imag], 0)
    a, b = alpha - y_nom, beta
    d = jnp.block([[jnp.diag(a.real + b.real), jnp.diag(b.imag - a.imag)],
                   [jnp.diag(a.imag + b.imag), jnp.diag(a.real - b.real)]])
    m_r = jnp.block([[m.real, -m.imag], [m.imag, m.real]])
    k = jnp.eye(2 * grid.n_load, dtype=m_r.dtype) - m_r @ d
    sol = jnp.linalg.solve(k, jnp.concatenate([real(u_z)[:, None], m_r], 1))
    n = grid.n_load
    cplx = lambda x: x[:n] + 1j * x[n:]
    return Prepared3ph(v0=v0, zi=zi, u0=cplx(sol[:, 0]), w=cplx(sol[:, 1:]), alpha=alpha, beta=beta)


def _linearize(grid: Grid3ph, u):
    """`(alpha, beta)` `[n_load]`: the load branches' draw at the grid's own powers near branch
    voltages `u` `[n_load]` (kV), `draw(u + du) ~ draw(u) + alpha du + beta conj(du)`."""
    ld = grid.load
    draw = lambda x: _draw(grid, x[:, None], ld.p_kw[:, None], ld.q_kvar[:, None])[:, 0]
    d1 = jax.jvp(draw, (u,), (jnp.ones_like(u),))[1]
    d2 = jax.jvp(draw, (u,), (jnp.full_like(u, 1j),))[1]
    return (d1 - 1j * d2) / 2, (d1 + 1j * d2) / 2


def _iterate(grid: Grid3ph, u_start, w, alpha, beta, p_kw, q_kvar, tol, max_iter):
    """`u <- u_start + w [Re r(u); Im r(u)]` on load branch voltages `u` `[n_load, B]` (kV),
    `r(u) = draw(u) - alpha u - beta conj(u)` (`w` `[n_load, 2 n_load]`, `alpha`, `beta`
    `[n_load, 1]`), until the largest change is at most `tol` p.u. of `vnom` at every point;
    returns `(u, iterations [B], last change [B])` (points keep iterating with the batch)."""
    ld = grid.load
    vnom = ld.vnom_kv[:, None]

    def remainder(u):
        r = jnp.where(ld.mask[:, None], _draw(grid, u, p_kw, q_kvar) - alpha * u - beta * jnp.conj(u), 0)
        x = jnp.concatenate([r.real, r.imag])
        return jax.lax.complex(w.real @ x, w.imag @ x)

    def body(carry):
        u, it, change = carry
        u_new = u_start + remainder(u)
        return u_new, it + (change > tol), jnp.max(jnp.abs(u_new - u) / vnom, axis=0, initial=0.0)

    def cond(carry):
        _, it, change = carry
        return jnp.any((it < max_iter) & (change > tol))

    batch = p_kw.shape[1:]
    inf = jnp.full(batch, jnp.inf, vnom.dtype)
    return jax.lax.while_loop(cond, body, (jnp.broadcast_to(u_start, ld.p_kw.shape + batch),
                                           jnp.zeros(batch, int), inf))


def _fixed_point(grid: Grid3ph, prep: Prepared3ph, p_kw, q_kvar, tol, max_iter):
    """Solve a batch of operating points as columns (`p_kw`, `q_kvar` `[n_load, B]`); returns
    `(v_re, v_im, iterations [B], last change [B])`, the voltages as real and imaginary parts
    `[n_node, B]` (XLA's CPU transposes complex arrays several times slower).

    The loads' currents depend only on the voltages across the load branches `u`, so the
    loop runs on those (`[n_load, B]`) and the node voltages follow once at the end,
    `V = v0 + zi (draw(u) - y_nom u)` (`Z` holds each load's admittance `y_nom` at the
    grid's own powers). The loop is a chord iteration (`_iterate`): each load's draw,
    linearized at the grid's own solution (`alpha du + beta conj(du)`: real-linear, as a
    constant-power load's is), sits in the matrix (`prepare`) and only the remainder
    iterates. At the same cost per iteration it takes half the iterations of OpenDSS's
    plain fixed point (`alpha = y_nom`, `beta = 0`): IEEE 123 6 instead of 11, European LV 5
    instead of 8, the 4-bus cases 12-52 instead of 25-107 (loads within +-20 % of the grid's).
    (Anderson mixing, `pgjax.powerflow.anderson`, on the plain fixed point was measured:
    memory 3 takes the 4-bus cases from 36 to 14 iterations but IEEE 123 from 13 to 30.)"""
    ld = grid.load
    u, it, change = _iterate(grid, prep.u0[:, None], prep.w, prep.alpha[:, None], prep.beta[:, None],
                             p_kw, q_kvar, tol, max_iter)
    y_nom = _load_terms(grid, ld.p_kw, ld.q_kvar)[0][:, None]
    comp = jnp.where(ld.mask[:, None], _draw(grid, u, p_kw, q_kvar) - y_nom * u, 0)
    v = prep.v0[:, None] + prep.zi @ comp
    return v.real, v.imag, it, change


def solve_state(grid: Grid3ph, p_kw, q_kvar, tol, max_iter, prepared=None):
    """Node voltages `[n_node]` complex p.u. with implicit gradients, iterations, last step."""
    sg = jax.lax.stop_gradient
    i_src = source_current(grid)
    n = grid.n_node
    prep = prepare(grid) if prepared is None else sg(prepared)
    fixed_point = columns.per_point(functools.partial(_fixed_point, tol=tol, max_iter=max_iter),
                                    (columns.SHARED, columns.SHARED, columns.POINT, columns.POINT))
    v_re, v_im, it, change = fixed_point(*jax.tree.map(sg, (grid, prep, p_kw, q_kvar)))
    v = jax.lax.complex(v_re, v_im)
    to_c = lambda x: x[:n] + 1j * x[n:]
    to_r = lambda z: jnp.concatenate([z.real, z.imag])

    def f(x):
        return to_r(residual(grid, i_src, to_c(x)[:, None], p_kw[:, None], q_kvar[:, None])[:, 0])

    def tangent_solve(g, y):
        return jnp.linalg.solve(jax.jacfwd(g)(y), y)

    x = jax.lax.custom_root(f, to_r(sg(v)), lambda _, x0: x0, tangent_solve)
    return to_c(x), it, change


# Cephes' rational approximation of atan on [-0.42, 0.66] (`atan.c`): within 2 ulp in float64.
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
           -1.228866684490136173410e2, -6.485021904942025371773e1)
_ATAN_Q = (1.0, 2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)


def _atan2(y, x):
    """`arctan2(y, x)` in radians, elementwise, within 2 ulp of numpy's in float64 (signed
    zeros included); 10x faster on XLA's CPU, which calls the scalar libm function."""
    ay, ax = jnp.abs(y), jnp.abs(x)
    hi = jnp.maximum(ay, ax)
    t = jnp.minimum(ay, ax) / jnp.where(hi > 0, hi, 1.0)  # [0, 1]
    big = t > 0.66
    t = jnp.where(big, (t - 1) / (t + 1), t)
    z = t * t
    poly = lambda c: functools.reduce(lambda acc, k: acc * z + k, c[1:], jnp.full_like(z, c[0]))  # noqa: E731
    a = t + t * (z * poly(_ATAN_P) / poly(_ATAN_Q))
    a = jnp.where(big, a + (np.pi / 4 + 3.061616997868382943065e-17), a)  # pi/4 to twice double precision
    a = jnp.where(ay > ax, np.pi / 2 - a, a)
    a = jnp.where(jnp.signbit(x), np.pi - a, a)
    return jnp.where(jnp.signbit(y), -a, a)


def _flows(grid: Grid3ph, v_re, v_im, p_kw, q_kvar, i_src) -> dict:
    """`finish`'s arrays for a batch of node voltages as columns `v_re`, `v_im` `[n_node, B]`
    (p.u.), powers `[n_load, B]`: each `[..., B]`."""
    e, s, sb = grid.elem, grid.source, grid.s_base_kva
    v = jax.lax.complex(v_re, v_im)
    ve = _ext(v)
    i_re, i_im = element_currents(grid, ve)  # [n_elem, n_cond, B]
    vr, vi = ve.real[e.node], ve.imag[e.node]
    p_c, q_c = (vr * i_re + vi * i_im) * sb, (vi * i_re - vr * i_im) * sb  # kW, kvar into each conductor
    to_a = sb / e.vbase_kv[:, :, None]
    i_load, u = load_currents(grid, v, p_kw, q_kvar)
    s_load = u * jnp.conj(i_load)
    ys = (s.y_re_pu + 1j * s.y_im_pu).astype(v.dtype)
    es = (s.e_re_pu + 1j * s.e_im_pu).astype(v.dtype)[:, :, None]
    vs = ve[s.node]
    s_src = jnp.where(s.mask[:, None, None], vs * jnp.conj(jnp.einsum("sij,sjb->sib", ys, es - vs)), 0).sum(1) * sb
    res = _residual(grid, i_src, v, network_current(grid, ve, (i_re, i_im)), p_kw, q_kvar)
    mismatch = jnp.max(jnp.abs(jnp.where(grid.node.fixed[:, None], 0, v * jnp.conj(res))), axis=0)
    loss_kw, loss_kvar = p_c.sum(1), q_c.sum(1)
    is_loss = (e.mask & (e.kind != CAPACITOR))[:, None]  # OpenDSS's circuit losses leave capacitors out
    return dict(
        v_re_pu=v.real, v_im_pu=v.imag, vm_pu=jnp.abs(v), va_deg=jnp.rad2deg(_atan2(v.imag, v.real)),
        i_re_a=i_re * to_a, i_im_a=i_im * to_a, p_kw=p_c, q_kvar=q_c,
        loss_kw=loss_kw, loss_kvar=loss_kvar, p_loss_kw=jnp.where(is_loss, loss_kw, 0).sum(0),
        q_loss_kvar=jnp.where(is_loss, loss_kvar, 0).sum(0),
        load_p_kw=s_load.real, load_q_kvar=s_load.imag, source_p_kw=s_src.real, source_q_kvar=s_src.imag,
        max_mismatch=mismatch)


def finish(grid: Grid3ph, v, p_kw, q_kvar, i_src, tol, iterations, change) -> PowerFlowResult3ph:
    """Flows, losses, load and source powers at the node voltages `v` `[n_node]` (p.u.);
    under `vmap` computed as columns in cache-sized blocks (`pgjax.powerflow.columns`; real
    and imaginary parts apart: XLA's CPU transposes complex arrays several times slower)."""
    point, shared = columns.POINT, columns.SHARED
    flows = columns.per_point(_flows, (shared, point, point, point, point, shared), differentiable=True,
                              rows=grid.elem.node.size)
    return PowerFlowResult3ph(**flows(grid, v.real, v.imag, p_kw, q_kvar, i_src), iterations=iterations,
                              max_step_pu=change, converged=(change <= tol) & jnp.all(jnp.isfinite(v)))



def check_grid(grid: Grid3ph, name: str = "grid") -> None:
    """Raise `InputError` unless `grid` is one unbatched `Grid3ph` of consistent shapes."""
    if not isinstance(grid, Grid3ph):
        raise InputError(f"{name}: expected a pgjax.grid3ph.Grid3ph, got {type(grid).__name__}")
    if jnp.ndim(grid.s_base_kva) != 0:
        raise InputError(f"{name}: expected an unbatched Grid3ph (s_base_kva shape ()), got leading axes "
                         f"{jnp.shape(grid.s_base_kva)}; use jax.vmap(solve) over a stacked grid")
    n_elem, n_cond = grid.elem.node.shape
    if grid.elem.y_re_pu.shape != (n_elem, n_cond, n_cond):
        raise InputError(f"{name}.elem.y_re_pu: expected shape {(n_elem, n_cond, n_cond)}, got {grid.elem.y_re_pu.shape}")


def solve(grid: Grid3ph, p_kw=None, q_kvar=None, *, max_iter: int = 100, tol: float | None = None,
          prepared: Prepared3ph | None = None) -> PowerFlowResult3ph:
    """Solve the three-phase power flow of one `Grid3ph` (vmap for batches).

    Args:
      grid: an unbatched `Grid3ph` (float32, or float64 with JAX's 64-bit mode on).
      p_kw, q_kvar: optional load branch powers at nominal voltage `[n_load]` (kW, kvar,
        consumption positive) that replace `grid.load.p_kw`, `grid.load.q_kvar`.
      max_iter: iteration limit of the fixed point.
      tol: largest voltage change of the last iteration, p.u. (default `default_tol`).
      prepared: optional `prepare(grid)`, computed once for repeated solves of one grid
        (the inverse costs `O(n_node^3)` per call otherwise; a vmap over operating points
        with the grid shared computes it once per call either way).

    Returns a `PowerFlowResult3ph`; `converged` is False when `tol` was not reached.
    """
    check_grid(grid)
    grid = jax.tree.map(jnp.asarray, grid)
    dtype = grid.node.vbase_kv.dtype
    for nm, x in (("p_kw", p_kw), ("q_kvar", q_kvar)):
        if x is not None:
            checks.check_real_array(nm, x, (grid.n_load,), "[n_load] load branch power")
    p = grid.load.p_kw if p_kw is None else jnp.asarray(p_kw, dtype)
    q = grid.load.q_kvar if q_kvar is None else jnp.asarray(q_kvar, dtype)
    tol = default_tol(grid) if tol is None else tol
    if prepared is not None and (not isinstance(prepared, Prepared3ph)
                                 or jnp.shape(prepared.w) != (grid.n_load, 2 * grid.n_load)
                                 or jnp.shape(prepared.v0) != (grid.n_node,)):
        raise InputError(f"prepared: expected pgjax.powerflow.threephase.prepare(grid) of this grid "
                         f"(v0 [{grid.n_node}], w [{grid.n_load}, {2 * grid.n_load}]), got {type(prepared).__name__}")
    v, it, change = solve_state(grid, p, q, tol, max_iter, prepared)
    return finish(grid, v, p, q, source_current(grid), tol, it, change)


def solve_entry(grid: Grid3ph, p_mw=None, q_mvar=None, *, method: str = "newton", max_iter: int = 30,
                tol=None, jacobian: str = "exact", init=None, tree=None) -> PowerFlowResult3ph:
    """`pgjax.powerflow.solve` for a `Grid3ph`: `p_mw`, `q_mvar` `[n_load]` load branch
    powers in MW / Mvar (converted to kW / kvar); `method` "newton" (the entry's default) or
    "fixed_point" both run the fixed point; `jacobian`, `init` and `tree` must be left unset."""
    if method not in ("newton", "fixed_point"):
        raise InputError(f"method: '{method}' does not apply to a three-phase grid; use 'fixed_point'")
    for name, value, default in (("jacobian", jacobian, "exact"), ("init", init, None), ("tree", tree, None)):
        if value is not default and value != default:
            raise InputError(f"{name}: not used by the three-phase power flow; leave it unset")
    scale = lambda x: None if x is None else jnp.asarray(x) * 1e3  # noqa: E731
    for nm, x in (("p_mw", p_mw), ("q_mvar", q_mvar)):
        if x is not None:
            checks.check_real_array(nm, x, (grid.n_load,), "[n_load] load branch power, MW / Mvar")
    return solve(grid, scale(p_mw), scale(q_mvar), max_iter=max_iter, tol=tol)


def from_balanced(grid) -> Grid3ph:
    """The three-phase image of a balanced `pgjax.grid.Grid` (numpy leaves, concrete grid).

    Each bus becomes nodes a, b, c (base `vn_kv / sqrt(3)`), each branch a phase-decoupled
    two-port (its positive-sequence pi model on every phase), each external grid fixed
    nodes at `vm_pu` and `va_deg`, -120, +120 degrees, net bus injections constant-power
    wye loads (a third per phase, `s_base_kva = sn_mva * 1e3 / 3`). A positive-sequence
    solution of the balanced solver is then the phase-a solution of this grid. Grids with
    voltage-controlled generators raise `InputError` (no PV nodes here).
    """
    import numpy as np

    from pgjax.grid3ph import LINE, OTHER, Elements3ph, Loads3ph, Nodes3ph, Sources3ph
    from pgjax.powerflow import network

    is_ref, is_pv, _ = (np.asarray(x) for x in network.bus_types(grid))
    if np.any(is_pv & ~is_ref):
        raise InputError(f"grid: PV buses {np.flatnonzero(is_pv & ~is_ref).tolist()}; the three-phase power flow "
                         "has no voltage-controlled nodes")
    nb, f = grid.n_bus, np.asarray(grid.bus.vn_kv).dtype
    on = np.asarray(network.energized(grid))
    y_ff, y_ft, y_tf, y_tt = (np.asarray(y) for y in network.branch_admittances(grid))
    ysh = np.asarray(network.bus_shunt(grid))
    two_port = np.stack([np.stack([y_ff, y_ft], -1), np.stack([y_tf, y_tt], -1)], -2)  # [n_br, 2, 2]
    y_br = np.einsum("bij,kl->bikjl", two_port, np.eye(3)).reshape(-1, 6, 6)
    y_sh = np.zeros((nb, 6, 6), y_br.dtype)
    y_sh[:, :3, :3] = ysh[:, None, None] * np.eye(3)
    ph = np.arange(3)
    fb, tb = np.asarray(grid.branch.from_bus), np.asarray(grid.branch.to_bus)
    node_br = np.concatenate([3 * fb[:, None] + ph, 3 * tb[:, None] + ph], 1)
    node_sh = np.concatenate([3 * np.arange(nb)[:, None] + ph, np.full((nb, 3), 3 * nb)], 1)
    y = np.concatenate([y_br, y_sh])
    vb = np.repeat(np.asarray(grid.bus.vn_kv) / np.sqrt(3), 3)
    elem = Elements3ph(y.real.astype(f), y.imag.astype(f), np.zeros(y.shape, f), np.zeros(y.shape, f),
                       np.concatenate([node_br, node_sh]),
                       np.ones((len(y), 6), f), np.tile(np.repeat([0, 1], 3), (len(y), 1)),
                       np.array([LINE] * len(y_br) + [OTHER] * nb), np.ones(len(y), bool))
    vm_set, va_set = (np.asarray(x) for x in network.setpoints(grid))
    v_set = np.repeat(vm_set, 3) * np.exp(1j * (np.repeat(va_set, 3) - np.tile(np.deg2rad([0, 120, 240]), nb)))
    nodes = Nodes3ph(vb.astype(f), np.repeat(on, 3), np.repeat(is_ref, 3), v_set.real.astype(f), v_set.imag.astype(f))
    p, q = (np.asarray(x) for x in network.bus_injections(grid))
    load = Loads3ph(np.arange(3 * nb), np.full(3 * nb, 3 * nb), np.repeat(-p * 1e3 / 3, 3).astype(f),
                    np.repeat(-q * 1e3 / 3, 3).astype(f), vb.astype(f), np.zeros(3 * nb, f), np.zeros(3 * nb, f),
                    np.repeat(on & ~is_ref, 3))
    z = np.zeros((0, 3, 3), f)
    source = Sources3ph(z, z, np.zeros((0, 3), int), z[:, 0], z[:, 0], np.zeros(0, bool))
    return Grid3ph(nodes, elem, source, load, np.asarray(np.asarray(grid.sn_mva) * 1e3 / 3, f))

"""Solvers for distribution feeders: Z-bus fixed point, DistFlow and LinDistFlow.

- `fixed_point` (exact AC): `V = Z (conj(S / V)) + V_slack part` with `Z` the inverse of
  the admittance matrix whose fixed-voltage rows are replaced by identity rows. One
  complex matrix-vector product per iteration; vmapped over operating points with a shared
  grid it is one GEMM. Converges linearly (fast on distribution feeders); needs grids
  without PV buses.
- `distflow` (Baran & Wu branch-flow model, exact AC on a tree): branch flows are the loads
  downstream of the branch plus the downstream series losses, squared voltages drop along
  root paths. Solved by fixed-point iteration; see below.
- `lindistflow`: DistFlow without the loss terms. One linear solve (`iterations = 1`).

Both feeder-flow methods need a radial feeder: one reference bus, no PV buses, and the
active branches forming a tree over the energized buses (`check_applies` rejects anything
else and names the offending bus or branch).

Formulation (all static shapes, no host code in the step, no Python loop over buses):
- The tree (`pgjax.powerflow.tree`): each non-root bus `k` carries the branch that feeds it
  from its parent, so flows, losses and drops are per-bus vectors `[n]`. Subtree sums
  (backward sweep) and root-path sums (forward sweep) are O(n) sequential loops over a
  topological order of the buses; `tree.tree_of(grid)` builds the tree once per topology
  (pass it as `solve(..., tree=...)`), and a traced grid without a tree derives it in the
  program (`tree.traced_tree`).
- Batches: under `vmap` with the grid shared, the whole iteration runs on the batch laid
  out as columns `[n, B]` (`pgjax.powerflow.columns`), so each sweep step moves one
  contiguous row of the batch.
- Flows at the sending end of the branch feeding `k`: `P = subtree(p_load + Re(w) v + r l)`,
  `Q = subtree(q_load + Im(w) v + x l)`, `l = (P^2 + Q^2) / v_parent`; squared voltages
  `v_k = v_parent - 2 (r P + x Q) + (r^2 + x^2) l` accumulated along root paths.
- Bus shunts and branch charging (`g + jb` of the pi model, half at each end, plus the
  `*_asym` part at the to end) are constant-impedance loads `w v` evaluated at the current `v`.
- Off-nominal taps: the ideal transformer sits at the branch's from end, so the from-side
  squared voltage seen by the series impedance (and by the from-end charging) is
  `v_from / tap^2`; cumulative tap ratios along root paths are products (`exp(path_sum(log))`).
  Phase shifts only shift angles (`-shift` from from to to end).
- Iteration: a backward/forward sweep is a fixed-point map of `(P, Q, v)` that contracts
  by about 0.3 per sweep on the 72-bus composite (the loss feedback). Anderson mixing of
  memory 1, per point, takes the composite from 22 plain sweeps (some points over 30) to 13,
  but in the column layout a mixed step costs about twice a plain one (two reductions and
  three passes over the state); most feeders converge in 7-9 plain sweeps. So the first
  `PLAIN_SWEEPS` sweeps are plain and mixing starts after them (`lax.cond` on the shared
  sweep count: only one branch runs). The loop stops when the flows
  change by at most `tol` between sweeps (the change is the subtree sum of the previous
  state's KCL mismatch): no AC residual and no trigonometric function inside the loop.
  `solve(..., init=(vm_pu, va_deg))` starts from given voltages (the environment passes the
  previous step's): initial flows from those voltages through each branch.
- Angles (once, after the loop): DistFlow uses the exact relation
  `theta_child = theta_parent' - atan2(x P - r Q, v_parent' - r P - x Q)`
  (primes: after the ideal transformer), LinDistFlow the usual linearisation
  `theta_child = theta_parent' - (x P - r Q) / v_parent'`.
- Not modelled: the asymmetric series impedance (`r_asym`, `x_asym`) is ignored (the from
  end value is used); an affected grid does not satisfy the AC equations, which the
  reported residual then shows.

Residual, `converged` and `max_mismatch`: `distflow` evaluates the AC equations once at the
end, in branch-flow form: KCL at every bus with the branch flows of the final sweep (power
arriving through the feeding branch less its series loss, minus the bus's consumption and
the flows into its children); KVL holds by construction of the voltage sweep. On a tree
these are the AC power-flow equations, and unlike `V conj(Y V)` they involve no voltage
difference across a near-zero impedance: the composite feeder's bus ties (1.7e5 p.u.
admittance) put a float32 rounding floor of 4e-2 p.u. on the bus-injection mismatch, none
on this one, so float32 converges to 1e-5 p.u. like any feeder. `lindistflow` is an
approximation: its residual is the bus-injection AC mismatch of its voltages
(`_ac_residual`), it normally reports `converged = False` and `max_mismatch` measures the
approximation error; use its voltages knowingly.

Measured against pandapower `runpp` (float64, default operating point, max over buses):

  network                      method       max |dvm| pu   max |dva| deg   max_mismatch pu
  case33bw                     distflow     6e-12          3e-11           3e-11
  case33bw                     lindistflow  2.8e-3         1.9e-2          3.3e-3
  ieee13                       distflow     4e-13          4e-12           2e-11
  ieee13                       lindistflow  9.1e-3         0.36            0.26
  cigre_lv_der                 distflow     5e-11          8e-10           4e-11
  cigre_lv_der                 lindistflow  1.2e-2         0.25            5.3e-3
  create_cigre_network_mv      distflow     3e-13          3e-12           3e-11
  create_cigre_network_mv      lindistflow  1.35e-2        0.47            1.44

(pandapower at `tolerance_mva=1e-10`; distflow converged in 7-11 sweeps at the default
tolerance 1e-10, i.e. it is as exact as `newton`. lindistflow neglects losses and its
error grows with loading. Transformer phase shifts (30 degrees in the cigre networks) enter
both methods' angles exactly.)

Gradients: `distflow` iterates on stopped-gradient inputs and attaches the implicit
gradient of the AC residual with `jax.lax.custom_root` (exact gradients of the AC solution);
`lindistflow` is differentiated directly (closed form, no loop).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.grid import NONE, PV, REF, Grid
from pgjax.powerflow import columns, network, newton
from pgjax.powerflow import tree as tree_lib

FEEDER_METHODS = ("distflow", "lindistflow")
# DistFlow sweeps before Anderson mixing starts (see the module docstring).
PLAIN_SWEEPS = 8


def check_applies(grid: Grid, method: str) -> None:
    """Raise `ValueError` naming the first bus or branch that rules `method` out."""
    bus_type = np.asarray(grid.bus.bus_type)
    if bus_type.ndim != 1:
        raise ValueError(f"method '{method}': check an unbatched grid")
    pv = np.flatnonzero((bus_type == PV) & np.asarray(grid.bus.mask))
    if len(pv):
        raise ValueError(f"method '{method}' needs a grid without PV buses; grid bus {pv[0]} is a PV bus "
                         f"(voltage-controlled gen); use method='newton'")
    if method in FEEDER_METHODS:
        _check_radial(grid, method)


def _check_radial(grid: Grid, method: str) -> None:
    """One reference bus and a tree of active branches over the energized buses (host code)."""
    mask = np.asarray(grid.bus.mask)
    bus_type = np.asarray(grid.bus.bus_type)
    on = mask & (bus_type != NONE)
    ref = np.flatnonzero(on & (bus_type == REF))
    if len(ref) == 0:
        raise ValueError(f"method '{method}' needs one reference (slack) bus; the grid has none")
    if len(ref) > 1:
        raise ValueError(f"method '{method}' needs a radial feeder with one reference (slack) bus; grid buses "
                         f"{ref[0]} and {ref[1]} are both reference buses ({len(ref)} in all); use "
                         "method='newton' or 'fixed_point'")
    br = grid.branch
    f, t = np.asarray(br.from_bus), np.asarray(br.to_bus)
    active = np.asarray(br.in_service) & on[f] & on[t]
    n_on, n_active = int(on.sum()), int(active.sum())
    parent = np.arange(len(on))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in np.flatnonzero(active):  # host-side set-up check, not traced
        a, b = root(f[e]), root(t[e])
        if a == b:
            raise ValueError(
                f"method '{method}' needs a radial feeder (a tree); the grid is meshed: branch {e} "
                f"(bus {f[e]} - bus {t[e]}) closes a loop ({n_active} active branches for {n_on} "
                f"energized buses, a tree has {n_on - 1}); use method='newton' or 'fixed_point'")
        parent[a] = b
    r0 = root(ref[0])
    cut = [k for k in np.flatnonzero(on) if root(k) != r0]
    if cut:
        raise ValueError(f"method '{method}': energized grid bus {cut[0]} is not connected to the reference "
                         f"bus {ref[0]} by active branches")


def _fixed_point(grid: Grid, s_spec, x_set, x_init, tol, max_iter):
    ybus = network.make_ybus(grid)
    ybus_re = newton.real_ybus(ybus)
    eqs = newton.equations(grid, x_set)
    n = grid.n_bus
    free = eqs.q_row  # PQ buses: voltage unknown
    z_mod = jnp.linalg.inv(jnp.where(free[:, None], ybus, jnp.eye(n, dtype=ybus.dtype)))
    v_set = eqs.y_set[:n] + 1j * eqs.y_set[n:]

    def run(y0):
        sg = jax.lax.stop_gradient
        z, s, fixed = sg(z_mod), sg(s_spec), sg(v_set)

        def step(y, _):
            rhs = jnp.where(free, jnp.conj(s / (y[:n] + 1j * y[n:])), fixed)
            v_new = z @ rhs
            y_new = jnp.concatenate([v_new.real, v_new.imag])
            return y_new, newton.rect_residual(y_new, sg(ybus_re), s, sg(eqs))

        return newton.iterate(step, y0, newton.rect_residual(y0, sg(ybus_re), s, sg(eqs)), tol, max_iter)

    return newton.implicit_root(
        lambda y: newton.rect_residual(y, ybus_re, s_spec, eqs), newton.to_rect(x_init), run)


class Feeder(NamedTuple):
    """Per-bus data of a radial feeder, all `[n]`: each bus carries the branch that feeds it.

    Grid-only (computed once per vmap when the grid is shared); zero where a bus has no
    feeding branch (the root, non-energized buses, padding).
    """

    tree: tree_lib.FeederTree
    free: jax.Array  # energized non-reference bus
    v0: jax.Array  # [] squared reference voltage magnitude
    va0: jax.Array  # [] reference angle, rad
    r: jax.Array  # series resistance of the feeding branch, p.u.
    x: jax.Array  # series reactance, p.u.
    a_p: jax.Array  # parent-side voltage factor (1/tap^2 when the parent is the from end)
    a_c: jax.Array  # bus-side voltage factor (1/tap^2 when the bus is the from end)
    gain: jax.Array  # cumulative squared-voltage ratio along the root path
    drop_scale: jax.Array  # 1 / (a_child * gain)
    shift: jax.Array  # angle added from parent to bus, rad
    w: jax.Array  # complex constant-impedance consumption per unit squared voltage


def feeder_tree(grid: Grid, tree: tree_lib.FeederTree | None = None) -> tree_lib.FeederTree:
    """The tree the sweeps run on: `tree`, else `tree_of(grid)` for a concrete grid, else
    the tree derived in the program (`tree_lib.traced_tree`) when the grid is traced."""
    if tree is not None:
        return tree
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(grid)):
        return tree_lib.traced_tree(grid)
    return tree_lib.tree_of(grid)


def _feeder(grid: Grid, tree: tree_lib.FeederTree) -> Feeder:
    """Per-bus branch data along `tree`; depends on the grid only."""
    br = grid.branch
    is_ref, _, _ = network.bus_types(grid)
    free = network.energized(grid) & ~is_ref
    b, fed, from_side = tree.branch, tree.has_branch, tree.parent_is_from
    tap = jnp.where(fed, br.tap[b], 1.0)
    a_p = jnp.where(from_side, 1 / tap ** 2, 1.0)
    a_c = jnp.where(from_side, 1.0, 1 / tap ** 2)
    gain = jnp.exp(tree_lib.path_sum(tree, jnp.where(fed, jnp.log(a_p / a_c), 0)))
    shift_raw = jnp.where(fed, jnp.deg2rad(br.shift_deg[b]), 0)

    # charging, half of the pi model's at each end, as [g, b] rows summed onto buses (one scatter)
    active = network.branch_active(grid)
    tap2_br = jnp.where(active, br.tap, 1.0) ** 2
    charge_from = jnp.stack([br.g_pu, br.b_pu], axis=-1) / (2 * tap2_br[:, None])
    charge_to = jnp.stack([br.g_pu + br.g_asym_pu, br.b_pu + br.b_asym_pu], axis=-1) / 2
    charge = jnp.where(jnp.concatenate([active, active])[:, None], jnp.concatenate([charge_from, charge_to]), 0)
    charge = jax.ops.segment_sum(charge, jnp.concatenate([br.from_bus, br.to_bus]), grid.n_bus)
    y_sh = network.bus_shunt(grid) + (charge[:, 0] + 1j * charge[:, 1]).astype(network.complex_dtype(grid))

    vm_set, va_set = network.setpoints(grid)
    return Feeder(
        tree=tree, free=free,
        v0=jnp.sum(jnp.where(is_ref, vm_set ** 2, 0)),
        va0=jnp.sum(jnp.where(is_ref, va_set, 0)),
        r=jnp.where(fed, br.r_pu[b], 0), x=jnp.where(fed, br.x_pu[b], 0),
        a_p=a_p, a_c=a_c, gain=gain, drop_scale=jnp.where(fed, 1 / (a_c * gain), 0),
        shift=jnp.where(from_side, -shift_raw, shift_raw),
        w=jnp.where(free, jnp.conj(y_sh), 0))


def _ac_residual(grid: Grid, s_spec, x_set, eq_mask):
    """`x -> [2 n_bus]`: `newton.residual` with the grid's admittance matrix, branch by branch.

    Used only for gradients (the implicit function theorem): bus currents are the shunt
    current plus the branch-end currents `[2 n_branch]` summed onto their buses.
    """
    y_ff, y_ft, y_tf, y_tt = network.branch_admittances(grid)
    f, t = grid.branch.from_bus, grid.branch.to_bus
    n = grid.n_bus
    y_sh = network.bus_shunt(grid)

    def residual(x):
        v = newton.voltage(x)
        i_bus = (y_sh * v + jnp.zeros(n, v.dtype).at[f].add(y_ff * v[f] + y_ft * v[t])
                 .at[t].add(y_tf * v[f] + y_tt * v[t]))
        s = v * jnp.conj(i_bus)
        return jnp.where(eq_mask, jnp.concatenate([s.real - s_spec.real, s.imag - s_spec.imag]), x - x_set)

    return residual


def _as_columns(fd: Feeder) -> Feeder:
    """`fd` with every per-bus array `[n]` as a column `[n, 1]`, to broadcast against a
    batch laid out as columns `[n, B]`; values that differ per point already are `[n, B]`
    (and the scalars `[B]`); the tree's index arrays stay `[n]`."""
    scalar_or_tree = ("tree", "v0", "va0")
    return fd._replace(**{k: _column(getattr(fd, k)) for k in Feeder._fields if k not in scalar_or_tree})


def _column(a):
    """A per-bus array `[n]` as a column `[n, 1]`; a batch of them `[n, B]` as it is."""
    return a[:, None] if a.ndim == 1 else a


def _state(fd: Feeder, v, delta, x_set):
    """State `[va, vm]` `[2n, B]` from squared voltages and per-bus angle drops `[n, B]`
    (`fd` as columns); the set values `x_set [2n]` elsewhere."""
    va = fd.va0 + tree_lib.path_sum(fd.tree, fd.shift - delta)
    vm = jnp.sqrt(jnp.maximum(v, 0))
    return jnp.where(jnp.concatenate([fd.free, fd.free]), jnp.concatenate([va, vm]), _column(x_set))


def _flows_from_voltages(fd: Feeder, x):
    """Sending-end flows `(p, q)` `[n, B]` into each bus's feeding series impedance at the
    polar states `x [2n, B]` (a warm start; `fd` as columns), p.u.:
    `S = (|Vs|^2 - Vs conj(Vr)) / conj(z)` in real arithmetic with `Vs`, `Vr` the voltages
    at the impedance's ends (after the ideal transformer)."""
    n = fd.tree.parent.shape[0]
    va, vm = x[:n], x[n:]
    parent = fd.tree.parent
    m_send = vm[parent] * jnp.sqrt(fd.a_p)
    m_recv = vm * jnp.sqrt(fd.a_c)
    angle = va[parent] + fd.shift - va  # angle drop across the impedance
    a = m_send ** 2 - m_send * m_recv * jnp.cos(angle)
    b = -m_send * m_recv * jnp.sin(angle)
    fed = fd.tree.has_branch[:, None]
    z2 = jnp.where(fed, fd.r ** 2 + fd.x ** 2, 1.0)
    return (jnp.where(fed, (a * fd.r - b * fd.x) / z2, 0),
            jnp.where(fed, (a * fd.x + b * fd.r) / z2, 0))


def _branch_flow_mismatch(fd: Feeder, load, p, q, v):
    """`[2n, B]` AC power mismatch (p.u.) of branch-flow states `[n, B]` (`fd` as columns),
    KCL at every free bus: power arriving through the feeding branch (sending-end flow minus
    its series loss) minus the bus's own consumption (constant power and impedance) minus
    the flows into its child branches. KVL holds by construction of the voltage sweep."""
    n = fd.tree.parent.shape[0]
    v_send = fd.a_p * v[fd.tree.parent]
    l = (p ** 2 + q ** 2) / jnp.where(v_send > 0, v_send, 1.0)
    s_local = load + fd.w * v
    fed = fd.tree.has_branch[:, None]
    children_p = jax.ops.segment_sum(jnp.where(fed, p, 0), fd.tree.parent, n)  # into child branches
    children_q = jax.ops.segment_sum(jnp.where(fed, q, 0), fd.tree.parent, n)
    mis_p = jnp.where(fd.free, p - fd.r * l - s_local.real - children_p, 0)
    mis_q = jnp.where(fd.free, q - fd.x * l - s_local.imag - children_q, 0)
    return jnp.concatenate([mis_p, mis_q])


def _sweep(fd: Feeder, load, y):
    """One backward/forward sweep `[3, n, B] -> [3, n, B]` of the states `(p, q, v)` (`fd`
    as columns, `load [n, B]` constant-power consumption)."""
    p, q, v = y
    v_send = fd.a_p * v[fd.tree.parent]
    v_send_safe = jnp.where(v_send > 0, v_send, 1.0)
    l = (p ** 2 + q ** 2) / v_send_safe
    s_local = load + fd.w * v
    flows = tree_lib.subtree_sum(fd.tree, jnp.stack([s_local.real + fd.r * l, s_local.imag + fd.x * l], axis=1))
    p_new, q_new = jnp.where(fd.free[:, None], flows, 0).transpose(1, 0, 2)
    # voltage drop with the losses of the flows just computed (Gauss-Seidel-like)
    l_new = (p_new ** 2 + q_new ** 2) / v_send_safe
    drop = 2 * (fd.r * p_new + fd.x * q_new) - (fd.r ** 2 + fd.x ** 2) * l_new
    v_new = fd.gain * (fd.v0 - tree_lib.path_sum(fd.tree, drop * fd.drop_scale))
    return jnp.stack([p_new, q_new, v_new])


def _distflow_columns(tree, fd: Feeder, s_spec, x_set, x_init, tol, max_iter: int, warm: bool):
    """DistFlow on a batch laid out as columns: `s_spec [n, B]`, `x_init [2n, B]`; the
    `tree` and `tol` shared; the feeder's values `fd` (its `tree` field None) and `x_set`
    shared (`[n]`, `[2n]`) or per point (`[n, B]`, `[2n, B]`). Returns
    `(x [2n, B], residual [2n, B], iterations [B])`.

    Every point iterates until its own flows change by at most `tol` between sweeps (or
    `max_iter`); a point that is done keeps its state while the others go on, as under `vmap`.
    """
    n = tree.parent.shape[0]
    fd = fd._replace(tree=tree)
    fc = _as_columns(fd)
    load = jnp.where(fc.free, -s_spec, 0)  # constant-power consumption, p.u.
    if warm:
        p0, q0 = _flows_from_voltages(fc, x_init)
        v_init = jnp.where(fc.free, x_init[n:] ** 2, fc.gain * fd.v0)
    else:  # from zero flows: the first sweep is LinDistFlow-like
        p0 = q0 = jnp.zeros(s_spec.shape, fd.v0.dtype)
        v_init = jnp.broadcast_to(fc.gain * fd.v0, s_spec.shape)
    y0 = jnp.stack([p0, q0, v_init])

    def keep_going(carry):
        return (carry[-1] < max_iter) & jnp.any(carry[-2])

    def mixed(y, g, f, f_prev, g_prev):
        """Anderson mixing of memory 1, per column: two reductions and three fused passes."""
        d_f, d_g = f - f_prev, g - g_prev
        gram = jnp.sum(d_f * d_f, axis=(0, 1))
        return g - jnp.sum(d_f * f, axis=(0, 1)) / (gram * (1 + 1e-10) + jnp.finfo(gram.dtype).tiny) * d_g

    def body(carry):
        y, f_prev, g_prev, iterations, active, it = carry
        g = _sweep(fc, load, y)
        f = g - y
        # cheap convergence test: the change of the flows is the subtree sum of the KCL
        # mismatch of `y` (NaN: done, reported by the finite check below)
        change = jnp.max(jnp.abs(f[:2]), axis=(0, 1))
        # (mixing needs one step of history: never on the first sweep)
        y_next = jax.lax.cond(it >= max(PLAIN_SWEEPS, 1), mixed, lambda y, g, *_: g, y, g, f, f_prev, g_prev)
        # a point that is done keeps `y`, so each further sweep returns the same `g`, its result
        still = active & (change > tol)
        return jnp.where(still, y_next, y), f, g, iterations + active, still, it + 1

    batch = s_spec.shape[1]
    start = (y0, jnp.zeros_like(y0), jnp.zeros_like(y0), jnp.zeros(batch, jnp.int32), jnp.ones(batch, bool),
             jnp.asarray(0, jnp.int32))
    _, _, y, iterations, _, _ = jax.lax.while_loop(keep_going, body, start)
    y = jnp.where(jnp.all(jnp.isfinite(y), axis=(0, 1)), y, y0)  # a diverged point reports its start
    p, q, v = y
    v_send = fc.a_p * v[fd.tree.parent]
    delta = jnp.arctan2(fc.x * p - fc.r * q, v_send - fc.r * p - fc.x * q)
    return _state(fc, v, delta, x_set), _branch_flow_mismatch(fc, load, p, q, v), iterations


def _distflow(grid: Grid, s_spec, x_set, x_init, tol, max_iter, tree, warm: bool):
    eq_mask = newton.equation_mask(grid)
    f = _ac_residual(grid, s_spec, x_set, eq_mask)

    # The iteration runs on stopped-gradient inputs (no derivative through the loop);
    # `custom_root` then attaches the implicit-function gradient of the AC residual.
    sg = jax.lax.stop_gradient
    fd = jax.tree.map(sg, _feeder(grid, tree))
    dtype = fd.v0.dtype
    # a vmapped batch of points on one feeder tree runs as columns (`columns.per_point`)
    c = columns
    run = c.per_point(functools.partial(_distflow_columns, max_iter=max_iter, warm=warm),
                      (c.SHARED, c.EITHER, c.POINT, c.EITHER, c.POINT, c.SHARED), rows=grid.n_bus)
    x_solved, res, it = run(fd.tree, fd._replace(tree=None), sg(s_spec), sg(x_set), sg(x_init),
                            jnp.asarray(sg(tol), dtype))

    def tangent_solve(g, y):
        return jnp.linalg.solve(jax.jacfwd(g)(y), y)

    x = jax.lax.custom_root(f, x_init, lambda _, __: x_solved, tangent_solve)
    return x, (res, it)


def _lindistflow(grid: Grid, s_spec, x_set):
    fd = _feeder(grid, feeder_tree(grid))
    eq_mask = newton.equation_mask(grid)
    n = grid.n_bus
    down = tree_lib.descendants(fd.tree, grid.branch.r_pu.dtype)  # [n, n]: bus k lies in the subtree of bus j
    # v = gain v0 - B (r * down (p + wr v) + x * down (q + wi v)); grid-only matrices first
    b_mat = fd.gain[:, None] * down.T * (2 * fd.drop_scale)[None, :]  # [n, n]
    kr = b_mat @ (fd.r[:, None] * down)  # [n, n] drop per unit active consumption
    kx = b_mat @ (fd.x[:, None] * down)
    k_inv = jnp.linalg.inv(jnp.eye(n, dtype=kr.dtype) + kr * fd.w.real[None, :] + kx * fd.w.imag[None, :])
    v_base = k_inv @ (fd.gain * fd.v0)
    kr, kx = k_inv @ kr, k_inv @ kx
    load = jnp.where(fd.free, -s_spec, 0)
    v = v_base - kr @ load.real - kx @ load.imag
    s_load = load + fd.w * v
    p = down @ s_load.real
    q = down @ s_load.imag
    v_send = fd.a_p * v[fd.tree.parent]
    delta = (fd.x * p - fd.r * q) / jnp.where(v_send > 0, v_send, 1.0)
    x = _state(_as_columns(fd), v[:, None], delta[:, None], x_set)[:, 0]
    return x, (_ac_residual(grid, s_spec, x_set, eq_mask)(x), jnp.asarray(1, jnp.int32))


def solve_state(method: str, grid: Grid, s_spec, x_set, x_init, tol, max_iter, *, tree=None, warm=False):
    """Solve with a feeder method; returns `(x, (residual, iterations))` like `newton`.

    The residual is the AC power mismatch at the returned state (for `distflow` evaluated
    in branch-flow form, see the module docstring). `tree`: a precomputed
    `tree.FeederTree` (`distflow`); `warm`: start `distflow` from the voltages `x_init`.
    """
    if method == "fixed_point":
        return _fixed_point(grid, s_spec, x_set, x_init, tol, max_iter)
    if method == "distflow":
        return _distflow(grid, s_spec, x_set, x_init, tol, max_iter, feeder_tree(grid, tree), warm)
    if method == "lindistflow":
        return _lindistflow(grid, s_spec, x_set)
    raise ValueError(f"feeder method '{method}' not available")

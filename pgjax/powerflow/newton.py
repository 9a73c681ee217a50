"""Newton-Raphson over a static-shape state, in rectangular coordinates.

The solver state is `y = [e, f]` `[2 n_bus]`, the real and imaginary bus voltages. Every
bus has one row in each half: P and Q mismatch at PQ buses, P mismatch and `|V|^2 - vm^2`
at PV buses, `e - e_set` and `f - f_set` at reference, isolated and padded buses. One
static shape serves every grid, and every residual is a polynomial: an iteration costs a
real matrix product and a few elementwise products, no trigonometric functions.

Two linear-step kinds share one loop:
- `exact`: a fresh Jacobian and LU solve each iteration (quadratic convergence);
- `chord`: the inverse Jacobian at the grid's base-case solution, reused for every
  iteration and every operating point of a batch, starting from the base-case solution
  (so the first step is the linear sensitivity prediction). With the grid shared across a
  vmapped batch the inverse is computed once and each iteration is two matrix products.
  Anderson acceleration keeps the chord converging far from the base case; a point still
  unconverged after `max_iter` chord steps is reported (`converged` False; re-solve it
  with `exact`). Iterations stop at the same tolerance either way.

The polar helpers (`voltage`, `residual`, `equation_mask`, state `x = [va_rad, vm_pu]`)
are the interface the other solvers and `solve` share.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.grid import Grid
from pgjax.powerflow import anderson, network


# Steps of history for Anderson acceleration of the chord iteration.
ANDERSON_MEMORY = 3


def voltage(x) -> jax.Array:
    """Complex bus voltages `[n_bus]` from the state `[2 n_bus]`."""
    n = x.shape[-1] // 2
    return x[n:] * jnp.exp(1j * x[:n])


def equation_mask(grid: Grid) -> jax.Array:
    """`[2 n_bus]` bool: True where the power equation holds (P at PV/PQ, Q at PQ buses)."""
    is_ref, is_pv, is_pq = network.bus_types(grid)
    return jnp.concatenate([is_pv | is_pq, is_pq])


def bus_power(x, ybus):
    """Injected power `(p, q)` `[n_bus]` p.u. at the state `x`: `V conj(Y V)`.

    Evaluated in real arithmetic (`[e, f] @ [[G, B], [-B, G]]` gives `[Re I, Im I]`): one
    real matrix product, which batches into a GEMM about twice as fast as a complex one.
    """
    n = x.shape[-1] // 2
    y = to_rect(x)
    e, f = y[:n], y[n:]
    current = y @ real_ybus(ybus)
    i_re, i_im = current[:n], current[n:]
    return e * i_re + f * i_im, f * i_re - e * i_im


def residual(x, ybus, s_spec, x_set, eq_mask) -> jax.Array:
    """`[2 n_bus]`: power mismatch `[dP, dQ]` where `eq_mask`, else `x - x_set`. p.u."""
    p, q = bus_power(x, ybus)
    return jnp.where(eq_mask, jnp.concatenate([p - s_spec.real, q - s_spec.imag]), x - x_set)


def polar_jacobian(x, ybus, eq_mask) -> jax.Array:
    """`[2 n_bus, 2 n_bus]` Jacobian of the polar `residual` (pandapower's `dSbus_dV`, dense)."""
    n = x.shape[-1] // 2
    v = voltage(x)
    v_norm = jnp.exp(1j * x[:n])
    i_bus = ybus @ v
    ds_dvm = v[:, None] * jnp.conj(ybus * v_norm[None, :]) + jnp.diag(jnp.conj(i_bus) * v_norm)
    ds_dva = 1j * v[:, None] * jnp.conj(jnp.diag(i_bus) - ybus * v[None, :])
    power = jnp.block([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]])
    return jnp.where(eq_mask[:, None], power, jnp.eye(2 * n, dtype=power.dtype))


def iterate(step, x0, res0, tol, max_iter):
    """Run `x <- step(x, res)` until `max |res| <= tol` or `max_iter`; stop on non-finite state.

    `x` may be any pytree (a solver state with history). `step(x, res) -> (x_new, res_new)`.
    Returns `(x, res, iterations)`; `x` is always the last finite iterate.
    """

    def keep_going(carry):
        x, res, it, finite = carry
        return (it < max_iter) & (jnp.max(jnp.abs(res)) > tol) & finite

    def body(carry):
        x, res, it, _ = carry
        x_new, res_new = step(x, res)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves((x_new, res_new))]))
        x_kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), x_new, x)
        return x_kept, jnp.where(finite, res_new, res), it + 1, finite

    x, res, it, _ = jax.lax.while_loop(
        keep_going, body, (x0, res0, jnp.asarray(0, jnp.int32), jnp.all(jnp.isfinite(res0))))
    return x, res, it


@struct.dataclass
class Equations:
    """Which equation each row of the rectangular residual holds; all `[n_bus]`."""

    p_row: jax.Array  # bool: P mismatch in the first half (PV and PQ buses)
    q_row: jax.Array  # bool: Q mismatch in the second half (PQ buses)
    v_row: jax.Array  # bool: |V|^2 - vm_set^2 in the second half (PV buses)
    vm_set: jax.Array  # PV magnitude setpoints, pu
    y_set: jax.Array  # [2 n_bus] fixed [e, f] where a bus has no power equation


def equations(grid: Grid, x_set) -> Equations:
    """Row kinds for `grid`, fixed values from the polar setpoints `x_set` `[2 n_bus]`."""
    is_ref, is_pv, is_pq = network.bus_types(grid)
    n = grid.n_bus
    return Equations(p_row=is_pv | is_pq, q_row=is_pq, v_row=is_pv, vm_set=x_set[n:], y_set=to_rect(x_set))


def to_rect(x) -> jax.Array:
    """Polar state `[va_rad, vm_pu]` to rectangular `[e, f]`."""
    n = x.shape[-1] // 2
    return jnp.concatenate([x[n:] * jnp.cos(x[:n]), x[n:] * jnp.sin(x[:n])])


def to_polar(y) -> jax.Array:
    """Rectangular `[e, f]` to polar `[va_rad, vm_pu]`."""
    n = y.shape[-1] // 2
    return jnp.concatenate([jnp.arctan2(y[n:], y[:n]), jnp.hypot(y[:n], y[n:])])


def real_ybus(ybus) -> jax.Array:
    """`[2 n_bus, 2 n_bus]` real matrix `M` with `[e, f] @ M = [Re I, Im I]`."""
    g, b = ybus.real, ybus.imag
    return jnp.block([[g.T, b.T], [-b.T, g.T]])


def rect_residual(y, ybus_re, s_spec, eqs: Equations) -> jax.Array:
    """`[2 n_bus]` residual of the rectangular equations (p.u.), see the module docstring."""
    n = y.shape[-1] // 2
    e, f = y[:n], y[n:]
    current = y @ ybus_re
    i_re, i_im = current[:n], current[n:]
    p = e * i_re + f * i_im - s_spec.real
    q = f * i_re - e * i_im - s_spec.imag
    top = jnp.where(eqs.p_row, p, e - eqs.y_set[:n])
    bottom = jnp.where(eqs.q_row, q, jnp.where(eqs.v_row, e * e + f * f - eqs.vm_set ** 2, f - eqs.y_set[n:]))
    return jnp.concatenate([top, bottom])


def rect_jacobian(y, ybus, eqs: Equations) -> jax.Array:
    """`[2 n_bus, 2 n_bus]` Jacobian of `rect_residual`, dense."""
    n = y.shape[-1] // 2
    e, f = y[:n], y[n:]
    g, b = ybus.real, ybus.imag
    i_re = g @ e - b @ f
    i_im = b @ e + g @ f
    eye = jnp.eye(n, dtype=g.dtype)
    zero = jnp.zeros_like(g)
    dp = jnp.concatenate([jnp.diag(i_re) + e[:, None] * g + f[:, None] * b,
                          jnp.diag(i_im) - e[:, None] * b + f[:, None] * g], axis=1)
    dq = jnp.concatenate([-jnp.diag(i_im) + f[:, None] * g - e[:, None] * b,
                          jnp.diag(i_re) - f[:, None] * b - e[:, None] * g], axis=1)
    dv = jnp.concatenate([jnp.diag(2 * e), jnp.diag(2 * f)], axis=1)
    top = jnp.where(eqs.p_row[:, None], dp, jnp.concatenate([eye, zero], axis=1))
    bottom = jnp.where(eqs.q_row[:, None], dq,
                       jnp.where(eqs.v_row[:, None], dv, jnp.concatenate([zero, eye], axis=1)))
    return jnp.concatenate([top, bottom])


def exact_step(ybus, ybus_re, s_spec, eqs):
    """Newton step with a fresh Jacobian."""

    def step(y, res):
        y_new = y - jnp.linalg.solve(rect_jacobian(y, ybus, eqs), res)
        return y_new, rect_residual(y_new, ybus_re, s_spec, eqs)

    return step


@struct.dataclass
class Anderson:
    """Chord state: the iterate and its Anderson-acceleration history."""

    y: jax.Array  # [2 n_bus] current iterate
    history: anderson.History


def anderson_start(y, memory: int = ANDERSON_MEMORY) -> Anderson:
    return Anderson(y=y, history=anderson.start(y, memory))


def chord_step(residual_fn, jac_inv):
    """Anderson-accelerated chord step with a fixed inverse Jacobian `[2 n_bus, 2 n_bus]`
    (or a function applying it to a residual `[2 n_bus]`, as `pgjax.powerflow.sparse` does).

    The chord map `g(y) = y - J0^-1 F(y)` converges linearly; Anderson mixing over the last
    `m` steps (least squares on the preconditioned residuals `f = g(y) - y`) recovers most
    of Newton's speed on heavily loaded feeders (measured on the 72-bus composite at 1.3x
    load: 10 iterations instead of no convergence within 40) at the cost of a few vector
    products per step. The state is an `Anderson` pytree.
    """

    def step(state: Anderson, res):
        g = state.y - (jac_inv(res) if callable(jac_inv) else res @ jac_inv.T)
        y_new, history = anderson.mix(state.history, state.y, g)
        return Anderson(y=y_new, history=history), residual_fn(y_new)

    return step


def solve_rect(y0, ybus, s_spec, eqs, tol, max_iter, chord=None):
    """Newton iterations from `y0`: chord steps when `chord` is given, else exact ones.

    `chord = (jac_inv, x_set, eq_mask)`: the polar inverse Jacobian `[2 n_bus, 2 n_bus]` and
    the polar setpoints and row mask. The chord runs in polar coordinates, whose Jacobian
    changes far less than the rectangular one when angles move (case118 with loads scaled
    by 0.7-1.3: 9-10 Anderson-chord steps in polar, 28-33 in rectangular). There is no exact
    fallback inside the chord solve: under vmap it would make the whole batch take LU steps
    and allocate `[batch, 2 n_bus, 2 n_bus]` Jacobians (47 GB for case300 at batch 8192);
    a point the chord does not converge within `max_iter` is reported in `converged`.
    Returns `(y, res, iterations)`.
    """
    ybus_re = real_ybus(ybus)
    if chord is not None:
        jac_inv, x_set, eq_mask = chord
        polar_fn = lambda x: residual(x, ybus, s_spec, x_set, eq_mask)  # noqa: E731
        x0 = to_polar(y0)
        # No stall test: Anderson steps need not decrease the residual monotonically.
        state, _, it = iterate(chord_step(polar_fn, jac_inv), anderson_start(x0), polar_fn(x0), tol, max_iter)
        y = to_rect(state.y)
        return y, rect_residual(y, ybus_re, s_spec, eqs), it
    return iterate(exact_step(ybus, ybus_re, s_spec, eqs), y0, rect_residual(y0, ybus_re, s_spec, eqs), tol, max_iter)


def solve(grid: Grid, s_spec, x_set, x_init, tol, max_iter, jacobian: str, warm: bool = False):
    """Newton power flow of one grid; returns polar `(x, (residual, iterations))`.

    `s_spec` `[n_bus]` complex specified injections (p.u.), `x_set`/`x_init` polar setpoints
    and initial guess `[2 n_bus]` (`warm`: `x_init` is a previous solution, which the chord
    iterations then start from instead of the base case). Differentiable in every input
    through `jax.lax.custom_root` (implicit function theorem). `jacobian`: "exact" or
    "chord" (`"sparse"` is `pgjax.powerflow.sparse.solve`, built on this module).
    """
    ybus = network.make_ybus(grid)
    eqs = equations(grid, x_set)
    y_init = to_rect(x_init)
    chord = None
    if jacobian == "chord":
        p_base, q_base = network.bus_injections(grid)
        s_base = (p_base + 1j * q_base) / grid.sn_mva
        va_base = network.dc_angles(grid, s_base.real, x_set[:grid.n_bus])
        y_base_init = to_rect(x_set.at[:grid.n_bus].set(va_base))
        y_base, _, _ = solve_rect(y_base_init, ybus, s_base, eqs, tol, max_iter)
        eq_mask = equation_mask(grid)
        chord = (jnp.linalg.inv(polar_jacobian(to_polar(y_base), ybus, eq_mask)), x_set, eq_mask)
        y_init = y_init if warm else y_base
    ybus_re = real_ybus(ybus)
    sg = jax.lax.stop_gradient
    return implicit_root(
        lambda y: rect_residual(y, ybus_re, s_spec, eqs), y_init,
        lambda y0: solve_rect(y0, sg(ybus), sg(s_spec), sg(eqs), tol, max_iter, jax.tree.map(sg, chord)))


def implicit_root(residual_fn, y_init, run):
    """Solve `residual_fn(y) = 0` with `run(y_init) -> (y, res, iterations)`.

    Gradients with respect to everything `residual_fn` closes over come from the implicit
    function theorem (`jax.lax.custom_root`), never from differentiating the iterations;
    `run` should close over stop-gradient copies. Returns polar `(x, (res, iterations))`.
    """

    def run_aux(_, y0):
        y, res, it = run(y0)
        return y, (res, it.astype(res.dtype))  # aux outputs get tangents: count as float

    def tangent_solve(g, rhs):
        return jnp.linalg.solve(jax.jacfwd(g)(rhs), rhs)

    y, (res, it) = jax.lax.custom_root(residual_fn, y_init, run_aux, tangent_solve, has_aux=True)
    return to_polar(y), (jax.lax.stop_gradient(res), jax.lax.stop_gradient(it).astype(jnp.int32))

"""Newton-Raphson in polar coordinates over a static-shape state.

The state is `x = [va_rad, vm_pu]` `[2 n_bus]`. Every bus has both variables; a fixed
variable (slack angle and magnitude, PV magnitude, isolated or padded bus) gets the
residual `x - x_set` in place of its power equation, so the Jacobian is the power-flow
Jacobian with identity rows and one static shape serves every grid.

Two linear-step kinds share one loop:
- `exact`: a fresh Jacobian and LU solve each iteration (quadratic convergence);
- `chord`: the inverse Jacobian at the grid's base-case solution, reused for every
  iteration and every operating point of a batch. With the grid shared across a vmapped
  batch this inverse is computed once and each iteration is two matrix products, which is
  what makes large batches fast. Iterations stop at the same tolerance as `exact`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgjax.grid import Grid
from pgjax.powerflow import network


# A chord step must shrink the residual at least this much, else exact Newton takes over.
CHORD_STALL_RATIO = 0.5


def voltage(x) -> jax.Array:
    """Complex bus voltages `[n_bus]` from the state `[2 n_bus]`."""
    n = x.shape[-1] // 2
    return x[n:] * jnp.exp(1j * x[:n])


def equation_mask(grid: Grid) -> jax.Array:
    """`[2 n_bus]` bool: True where the power equation holds (P at PV/PQ, Q at PQ buses)."""
    is_ref, is_pv, is_pq = network.bus_types(grid)
    return jnp.concatenate([is_pv | is_pq, is_pq])


def residual(x, ybus, s_spec, x_set, eq_mask) -> jax.Array:
    """`[2 n_bus]`: power mismatch `[dP, dQ]` where `eq_mask`, else `x - x_set`. p.u.

    Evaluated in real arithmetic (`[e, f] @ [[G, B], [-B, G]]` gives `[Re I, Im I]`): one
    real matrix product, which batches into a GEMM about twice as fast as a complex one.
    """
    n = x.shape[-1] // 2
    e = x[n:] * jnp.cos(x[:n])
    f = x[n:] * jnp.sin(x[:n])
    g, b = ybus.real, ybus.imag
    current = jnp.concatenate([e, f]) @ jnp.block([[g.T, b.T], [-b.T, g.T]])
    i_re, i_im = current[:n], current[n:]
    p = e * i_re + f * i_im - s_spec.real
    q = f * i_re - e * i_im - s_spec.imag
    return jnp.where(eq_mask, jnp.concatenate([p, q]), x - x_set)


def jacobian(x, ybus, eq_mask) -> jax.Array:
    """`[2 n_bus, 2 n_bus]` Jacobian of `residual` (pandapower's `dSbus_dV`, dense)."""
    n = x.shape[-1] // 2
    v = voltage(x)
    v_norm = jnp.exp(1j * x[:n])
    i_bus = ybus @ v
    ds_dvm = v[:, None] * jnp.conj(ybus * v_norm[None, :]) + jnp.diag(jnp.conj(i_bus) * v_norm)
    ds_dva = 1j * v[:, None] * jnp.conj(jnp.diag(i_bus) - ybus * v[None, :])
    power = jnp.block([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]])
    return jnp.where(eq_mask[:, None], power, jnp.eye(2 * n, dtype=power.dtype))


def iterate(step, x0, res0, tol, max_iter, stall_ratio=None):
    """Run `x <- step(x, res)` until `max |res| <= tol` or `max_iter`; stop on non-finite state.

    `step(x, res) -> (x_new, res_new)`. With `stall_ratio`, also stop once an iteration
    shrinks `max |res|` by less than that factor (a chord that no longer contracts).
    Returns `(x, res, iterations)`; `x` is always the last finite iterate.
    """
    ratio = jnp.inf if stall_ratio is None else stall_ratio

    def keep_going(carry):
        x, res, it, contracting = carry
        return (it < max_iter) & (jnp.max(jnp.abs(res)) > tol) & jnp.all(jnp.isfinite(res)) & contracting

    def body(carry):
        x, res, it, _ = carry
        x_new, res_new = step(x, res)
        finite = jnp.all(jnp.isfinite(x_new)) & jnp.all(jnp.isfinite(res_new))
        contracting = jnp.max(jnp.abs(res_new)) < ratio * jnp.max(jnp.abs(res))
        keep = finite & (contracting | (stall_ratio is None))
        return (jnp.where(keep, x_new, x), jnp.where(keep, res_new, res), it + 1,
                contracting & finite)

    x, res, it, _ = jax.lax.while_loop(
        keep_going, body, (x0, res0, jnp.asarray(0, jnp.int32), jnp.asarray(True)))
    return x, res, it


def exact_step(ybus, s_spec, x_set, eq_mask):
    """Newton step with a fresh Jacobian."""

    def step(x, res):
        x_new = x - jnp.linalg.solve(jacobian(x, ybus, eq_mask), res)
        return x_new, residual(x_new, ybus, s_spec, x_set, eq_mask)

    return step


def chord_step(ybus, s_spec, x_set, eq_mask, jac_inv):
    """Chord step with a fixed inverse Jacobian `[2 n_bus, 2 n_bus]`."""

    def step(x, res):
        x_new = x - jac_inv @ res
        return x_new, residual(x_new, ybus, s_spec, x_set, eq_mask)

    return step


def solve_state(x0, ybus, s_spec, x_set, eq_mask, tol, max_iter, jac_inv=None):
    """Newton iterations from `x0`; chord steps with `jac_inv` when given, then exact ones.

    The exact stage only iterates if the chord stage did not converge, so a well-chosen
    `jac_inv` costs matrix products only. Returns `(x, res, iterations)`.
    """
    res0 = residual(x0, ybus, s_spec, x_set, eq_mask)
    x, res, it = x0, res0, jnp.asarray(0, jnp.int32)
    if jac_inv is not None:
        x, res, it = iterate(chord_step(ybus, s_spec, x_set, eq_mask, jac_inv), x, res, tol, max_iter,
                             stall_ratio=CHORD_STALL_RATIO)
    x, res, it_exact = iterate(exact_step(ybus, s_spec, x_set, eq_mask), x, res, tol, max_iter)
    return x, res, it + it_exact

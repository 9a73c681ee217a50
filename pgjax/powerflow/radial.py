"""Solvers for distribution feeders: Z-bus fixed point, DistFlow and LinDistFlow.

- `fixed_point` (exact AC): `V = Z (conj(S / V)) + V_slack part` with `Z` the inverse of
  the admittance matrix whose fixed-voltage rows are replaced by identity rows. One
  complex matrix-vector product per iteration; vmapped over operating points with a shared
  grid it is one GEMM. Converges linearly (fast on distribution feeders); needs grids
  without PV buses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.grid import PV, Grid
from pgjax.powerflow import network, newton


def check_applies(grid: Grid, method: str) -> None:
    """Raise `ValueError` naming the first bus or branch that rules `method` out."""
    bus_type = np.asarray(grid.bus.bus_type)
    if bus_type.ndim != 1:
        raise ValueError(f"method '{method}': check an unbatched grid")
    pv = np.flatnonzero((bus_type == PV) & np.asarray(grid.bus.mask))
    if len(pv):
        raise ValueError(f"method '{method}' needs a grid without PV buses; grid bus {pv[0]} is a PV bus "
                         f"(voltage-controlled gen); use method='newton'")


def _fixed_point(grid: Grid, s_spec, x_set, x_init, tol, max_iter):
    ybus = network.make_ybus(grid)
    eq_mask = newton.equation_mask(grid)
    n = grid.n_bus
    free = eq_mask[n:]  # PQ buses: voltage unknown
    y_mod = jnp.where(free[:, None], ybus, jnp.eye(n, dtype=ybus.dtype))
    z_mod = jnp.linalg.inv(y_mod)
    v_set = newton.voltage(x_set)

    def step(x, _):
        v = newton.voltage(x)
        rhs = jnp.where(free, jnp.conj(s_spec / v), v_set)
        v_new = z_mod @ rhs
        x_new = jnp.concatenate([jnp.angle(v_new), jnp.abs(v_new)])
        return x_new, newton.residual(x_new, ybus, s_spec, x_set, eq_mask)

    def f(x):
        return newton.residual(x, ybus, s_spec, x_set, eq_mask)

    def run(_, x0):
        x, res, it = newton.iterate(step, x0, f(x0), tol, max_iter)
        return x, (res, it)

    def tangent_solve(g, y):
        return jnp.linalg.solve(jax.jacfwd(g)(y), y)

    return jax.lax.custom_root(f, x_init, run, tangent_solve, has_aux=True)


def solve_state(method: str, grid: Grid, s_spec, x_set, x_init, tol, max_iter):
    """Solve with a feeder method; returns `(x, (residual, iterations))` like `newton`."""
    if method == "fixed_point":
        return _fixed_point(grid, s_spec, x_set, x_init, tol, max_iter)
    raise ValueError(f"feeder method '{method}' not available")

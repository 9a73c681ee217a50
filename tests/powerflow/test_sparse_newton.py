"""`jacobian="sparse"` (sparse chord Newton, `pgjax.powerflow.sparse`) against dense Newton.

Float64 throughout (conftest imports pgjax). Grids are closed over by the jitted functions,
as `jacobian="sparse"` requires (host-side factors); a traced grid falls back to the dense
chord, tested below.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import pgjax.networks
from pgjax.converters.pandapower import from_pandapower
from pgjax.grid import pad
from pgjax.powerflow import bus_injections, solve, sparse

MESHED = ("case9", "case14", "case30", "case57", "case118", "case300", "case1354pegase")
TOL_V = 1e-10  # pu and rad: both solvers stop at a 1e-10 p.u. mismatch


@functools.lru_cache(maxsize=None)
def _grid(name):
    return from_pandapower(pgjax.networks.load(name))[0]


def _solver(grid, jacobian, **kw):
    """jit(vmap) over operating points `(p [b, n], q [b, n])` with `grid` closed over; a
    sparse solve that falls back to the dense chord (traced grid) fails the test."""
    fn = jax.jit(jax.vmap(lambda p, q: solve(grid, p, q, jacobian=jacobian, **kw)))

    def call(p, q):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*concrete grid")
            return fn(p, q)

    return call


def _points(grid, factors):
    p0, q0 = bus_injections(grid)
    f = jnp.asarray(factors)[:, None]
    return f * p0, f * q0


def _assert_same(a, b, tol=TOL_V):
    on = np.asarray(a.energized)
    np.testing.assert_array_equal(on, np.asarray(b.energized))
    np.testing.assert_allclose(np.asarray(a.vm_pu)[on], np.asarray(b.vm_pu)[on], rtol=0, atol=tol)
    np.testing.assert_allclose(np.deg2rad(np.asarray(a.va_deg))[on], np.deg2rad(np.asarray(b.va_deg))[on],
                               rtol=0, atol=tol)


@pytest.mark.parametrize("name", MESHED)
def test_sparse_equals_dense_newton_on_meshed_zoo(name):
    grid = _grid(name)
    p, q = _points(grid, [1.0, 0.8, 1.15])
    sparse_r = _solver(grid, "sparse")(p, q)
    exact_r = _solver(grid, "exact")(p, q)
    assert bool(jnp.all(sparse_r.converged)) and bool(jnp.all(exact_r.converged))
    assert float(jnp.max(sparse_r.max_mismatch)) <= 1e-10
    _assert_same(sparse_r, exact_r)
    np.testing.assert_allclose(sparse_r.p_from_mw, exact_r.p_from_mw, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sparse_r.slack_p_mw, exact_r.slack_p_mw, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["case30", "case118"])
def test_sparse_equals_dense_chord_under_vmap(name):
    grid = _grid(name)
    factors = np.random.default_rng(0).uniform(0.7, 1.3, 48)
    p, q = _points(grid, factors)
    s, c = _solver(grid, "sparse")(p, q), _solver(grid, "chord")(p, q)
    assert bool(jnp.all(s.converged)) and bool(jnp.all(c.converged))
    # same iteration, same starting point: same iterates up to rounding
    np.testing.assert_array_equal(np.asarray(s.iterations), np.asarray(c.iterations))
    _assert_same(s, c, tol=1e-11)
    assert float(jnp.max(jnp.abs(s.va_deg[0] - s.va_deg[1]))) > 1e-2  # the points differ


def test_sparse_padded_grid_gives_unpadded_results():
    grid = _grid("case30")
    padded = pad(grid, n_bus=40, n_branch=50, n_load=30, n_gen=8, n_sgen=4)
    p, q = _points(grid, [0.9, 1.2])
    pp_, qp = _points(padded, [0.9, 1.2])
    a, b = _solver(grid, "sparse")(p, q), _solver(padded, "sparse")(pp_, qp)
    assert bool(jnp.all(b.converged))
    np.testing.assert_allclose(b.vm_pu[:, :grid.n_bus], a.vm_pu, rtol=0, atol=TOL_V)
    np.testing.assert_allclose(b.va_deg[:, :grid.n_bus], a.va_deg, rtol=0, atol=1e-8)


def test_sparse_reports_non_convergence():
    grid = _grid("case118")
    p, q = _points(grid, [1.0, 20.0])
    r = _solver(grid, "sparse")(p, q)
    assert bool(r.converged[0]) and not bool(r.converged[1])
    assert float(r.max_mismatch[1]) > 1e-10
    for name, leaf in r.__dict__.items():
        assert np.all(np.isfinite(np.asarray(leaf, dtype=float))), name
    limited = _solver(grid, "sparse", max_iter=1)(*_points(grid, [1.2]))
    assert not bool(limited.converged[0]) and int(limited.iterations[0]) == 1


def test_sparse_gradient_equals_exact():
    grid = _grid("case30")
    p0, q0 = bus_injections(grid)

    def total_vm(p, jacobian):
        return jnp.sum(solve(grid, p, q0, jacobian=jacobian).vm_pu)

    g_sparse = jax.jit(jax.grad(lambda p: total_vm(p, "sparse")))(p0 * 1.1)
    g_exact = jax.jit(jax.grad(lambda p: total_vm(p, "exact")))(p0 * 1.1)
    np.testing.assert_allclose(g_sparse, g_exact, rtol=1e-7, atol=1e-12)


def test_traced_grid_falls_back_to_dense_chord():
    grid = _grid("case14")
    p, q = _points(grid, [1.1])
    traced = jax.jit(jax.vmap(lambda g, p, q: solve(g, p, q, jacobian="sparse"), in_axes=(None, 0, 0)))
    with pytest.warns(UserWarning, match="concrete grid"):
        r = traced(grid, p, q)
    c = _solver(grid, "chord")(p, q)
    assert bool(jnp.all(r.converged))
    _assert_same(r, c, tol=1e-12)


def test_staged_solve_equals_direct_solve():
    rng = np.random.default_rng(1)
    n = 60
    a = sp.random(n, n, density=0.06, random_state=2) + sp.diags(rng.uniform(2, 3, n))
    a = sp.csc_matrix(a + a.T.multiply(rng.uniform(0.5, 1.5)))  # structurally symmetric, not symmetric
    r = rng.normal(size=n)
    for levels in (1, 3, 1000):
        stages, out = sparse.factor_stages(a, levels)
        x = jax.jit(lambda v: sparse.apply_stages(stages, out, v))(jnp.asarray(r))
        np.testing.assert_allclose(a @ np.asarray(x), r, rtol=0, atol=1e-12)
        # batched (vmap through the batch-minor rule) equals one at a time
        batched = jax.jit(jax.vmap(sparse.batch_minor(lambda v: sparse.apply_stages(stages, out, v), 1)))
        xs = batched(jnp.stack([jnp.asarray(r), 2 * jnp.asarray(r)]))
        np.testing.assert_allclose(xs[1], 2 * x, rtol=0, atol=1e-12)


def test_ybus_pattern_matches_dense_ybus():
    from pgjax.powerflow import network

    grid = _grid("case57")
    pre = sparse.precompute(grid)
    vals = np.asarray(sparse.ybus_values(grid, pre))
    dense = np.zeros((grid.n_bus, grid.n_bus), complex)
    np.add.at(dense, (np.repeat(np.arange(grid.n_bus), pre.ybus_cols.shape[1]), pre.ybus_cols.ravel()), vals.ravel())
    np.testing.assert_allclose(dense, np.asarray(network.make_ybus(grid)), rtol=0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pre.base_converged

"""`jacobian="sparse_lu"`: exact Newton on the batched block LU (`pgjax.powerflow.block_lu`,
`pgjax.powerflow.sparse_newton`) against dense linear algebra, pandapower and the dense Newton.

Float64 throughout (conftest). Grids are closed over by the jitted functions (the LU plan is
made on the host); a traced grid falls back to the dense exact Newton, tested below.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax.networks
from conftest import NETWORKS, assert_parity, bucket
from pgjax.converters.pandapower import from_pandapower
from pgjax.grid import astype
from pgjax.powerflow import block_lu, bus_injections, solve, sparse_newton

MESHED = ("case9", "case30", "case118", "case300")


# ------------------------------------------------------------------ block LU

def _random_pattern(n, extra, rng):
    """A connected random graph on `n` nodes (a random tree plus `extra` chords) as block
    positions, diagonal included, both directions."""
    edges = {(i, int(rng.integers(0, i))) for i in range(1, n)}
    while len(edges) < n - 1 + extra:
        a, b = (int(x) for x in rng.integers(0, n, 2))
        if a != b:
            edges.add((max(a, b), min(a, b)))
    pairs = [(i, i) for i in range(n)] + [p for a, b in edges for p in ((a, b), (b, a))]
    return np.array([r for r, _ in pairs]), np.array([c for _, c in pairs]), len(edges) == n - 1


@pytest.mark.parametrize("extra", [0, 25])
def test_block_lu_solve_equals_dense_solve(extra):
    rng = np.random.default_rng(extra)
    n, batch = 70, 3
    rows, cols, _ = _random_pattern(n, extra, rng)
    pat = block_lu.symbolic(rows, cols, n)
    if extra == 0:  # a tree: leaves first, no fill
        assert pat.n_fill == 0
    else:
        assert pat.n_fill > 0
    vals = rng.normal(size=(len(rows), 2, 2, batch))
    vals[rows == cols] += 8 * np.eye(2)[:, :, None]
    a = np.concatenate([vals, np.zeros((pat.n_fill, 2, 2, batch))])
    rhs = rng.normal(size=(n, 2, batch))
    x = np.asarray(jax.jit(lambda a, r: block_lu.solve(block_lu.factor(a, pat), r, pat))(a, rhs))
    for k in range(batch):
        dense = np.zeros((2 * n, 2 * n))
        for e, (r, c) in enumerate(zip(rows, cols)):
            dense[2 * r:2 * r + 2, 2 * c:2 * c + 2] = vals[e, :, :, k]
        np.testing.assert_allclose(x[:, :, k].reshape(-1), np.linalg.solve(dense, rhs[:, :, k].reshape(-1)),
                                   rtol=0, atol=1e-12)


def test_block_lu_refuses_repeated_blocks():
    with pytest.raises(ValueError, match="repeated"):
        block_lu.symbolic([0, 1, 1], [0, 1, 1], 2)


def test_rotation_equals_cos_sin():
    t = np.linspace(-2, 2, 2001)
    c, s = sparse_newton.rotation(jnp.asarray(t))
    np.testing.assert_allclose(c, np.cos(t), rtol=0, atol=1e-10)
    np.testing.assert_allclose(s, np.sin(t), rtol=0, atol=1e-10)
    small = np.linspace(-0.3, 0.3, 601)
    c, s = sparse_newton.rotation(jnp.asarray(small))
    np.testing.assert_allclose(c, np.cos(small), rtol=0, atol=1e-15)
    np.testing.assert_allclose(s, np.sin(small), rtol=0, atol=1e-15)


# ------------------------------------------------------------------ power flow

@pytest.mark.parametrize("name", list(NETWORKS))
def test_sparse_lu_matches_pandapower(name, case):
    """Every zoo network, bucket-padded (padded buses are identity rows of the LU)."""
    net, grid, netmap, ref = case(name)
    result = solve(bucket(grid), method="newton", jacobian="sparse_lu")
    assert bool(result.converged)
    assert int(result.iterations) <= 6
    assert_parity(result, netmap, ref)


@functools.lru_cache(maxsize=None)
def _grid(name):
    return from_pandapower(pgjax.networks.load(name))[0]


def _batched(grid, jacobian, **kw):
    return jax.jit(jax.vmap(lambda p, q: solve(grid, p, q, method="newton", jacobian=jacobian, **kw)))


def _points(grid, factors):
    p0, q0 = bus_injections(grid)
    f = jnp.asarray(factors)[:, None]
    return f * p0, f * q0


@pytest.mark.parametrize("name", MESHED)
def test_sparse_lu_equals_dense_newton_in_a_few_iterations(name):
    grid = _grid(name)
    p, q = _points(grid, [1.0, 0.8, 1.15, 0.7, 1.3])
    lu, dense = _batched(grid, "sparse_lu")(p, q), _batched(grid, "exact")(p, q)
    assert bool(jnp.all(lu.converged)) and bool(jnp.all(dense.converged))
    assert float(jnp.max(lu.max_mismatch)) <= 1e-10
    assert int(jnp.max(lu.iterations)) <= 5  # quadratic convergence from the base case (a chord takes 7-10)
    np.testing.assert_allclose(lu.vm_pu, dense.vm_pu, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lu.va_deg, dense.va_deg, rtol=0, atol=1e-7)
    np.testing.assert_allclose(lu.p_from_mw, dense.p_from_mw, rtol=0, atol=1e-6)


def test_sparse_lu_batch_equals_point_by_point_and_blocks():
    """A batch larger than one column block (`columns.block_size`) equals single solves."""
    grid = _grid("case30")
    factors = np.random.default_rng(1).uniform(0.7, 1.3, 700)
    p, q = _points(grid, factors)
    batch = _batched(grid, "sparse_lu")(p, q)
    one = jax.jit(lambda p, q: solve(grid, p, q, method="newton", jacobian="sparse_lu"))
    for k in (0, 311, 699):
        r = one(p[k], q[k])
        np.testing.assert_allclose(batch.vm_pu[k], r.vm_pu, rtol=0, atol=1e-12)
        assert int(batch.iterations[k]) == int(r.iterations)


def test_sparse_lu_flags_the_point_that_does_not_converge():
    grid = _grid("case118")
    p, q = _points(grid, [1.0, 12.0, 0.9])
    r = _batched(grid, "sparse_lu")(p, q)
    assert r.converged.tolist() == [True, False, True]
    assert float(r.max_mismatch[1]) > 1e-10
    for name, leaf in r.__dict__.items():
        assert np.all(np.isfinite(np.asarray(leaf, dtype=float))), name


def test_sparse_lu_gradient_matches_finite_differences():
    grid = _grid("case30")
    p0, q0 = bus_injections(grid)
    load_bus = int(np.argmin(np.asarray(p0)))

    def vm_sum(dp):
        r = solve(grid, p0.at[load_bus].add(dp), q0, method="newton", jacobian="sparse_lu", tol=1e-13)
        return jnp.sum(r.vm_pu)

    g = float(jax.jit(jax.grad(vm_sum))(0.0))
    h, value = 1e-3, jax.jit(vm_sum)
    fd = (float(value(h)) - float(value(-h))) / (2 * h)
    assert fd > 0
    assert abs(g - fd) <= 1e-5 * abs(fd), (g, fd)


def test_traced_grid_falls_back_to_dense_newton():
    grid = _grid("case30")
    p, q = _points(grid, [1.1])
    traced = jax.jit(lambda g, p, q: solve(g, p, q, method="newton", jacobian="sparse_lu"))(grid, p[0], q[0])
    closed = solve(grid, p[0], q[0], method="newton", jacobian="sparse_lu")
    np.testing.assert_allclose(traced.vm_pu, closed.vm_pu, rtol=0, atol=1e-9)


def test_sparse_lu_float32_within_1e_4_of_float64():
    grid = _grid("case118")
    p, q = _points(grid, [0.8, 1.2])
    r64 = _batched(grid, "sparse_lu")(p, q)
    g32 = astype(grid, jnp.float32)
    r32 = _batched(g32, "sparse_lu")(p.astype(jnp.float32), q.astype(jnp.float32))
    assert bool(jnp.all(r32.converged))
    assert r32.vm_pu.dtype == jnp.float32
    np.testing.assert_allclose(r32.vm_pu, r64.vm_pu, rtol=0, atol=1e-4)


def test_new_operating_points_do_not_retrace():
    grid = _grid("case9")
    traces = []

    def one(p, q):
        traces.append(1)
        return solve(grid, p, q, method="newton", jacobian="sparse_lu").vm_pu

    fn = jax.jit(jax.vmap(one))
    for f in (0.9, 1.1, 1.2):
        fn(*_points(grid, [f, f]))
    assert len(traces) == 1


def test_newton_without_a_jacobian_uses_the_sparse_lu_on_a_concrete_grid_and_dense_when_traced():
    from pgjax.powerflow import default_jacobian

    grid = _grid("case118")
    p, q = _points(grid, [1.2])
    assert default_jacobian(grid) == "sparse_lu"
    plain = solve(grid, p[0], q[0], method="newton")
    lu = solve(grid, p[0], q[0], method="newton", jacobian="sparse_lu")
    dense = solve(grid, p[0], q[0], method="newton", jacobian="exact")
    assert int(lu.iterations) != int(dense.iterations)  # base-case start against the DC start: tells them apart
    assert int(plain.iterations) == int(lu.iterations)
    np.testing.assert_array_equal(plain.vm_pu, lu.vm_pu)
    seen = []

    def traced(g):
        seen.append(default_jacobian(g))
        return solve(g, p[0], q[0], method="newton").iterations

    assert int(jax.jit(traced)(grid)) == int(dense.iterations)
    assert seen == ["exact"]


# ------------------------------------------------------------------ mixed precision, shared first step

def test_condition_estimate_equals_numpy_cond():
    """The 1-norm estimate behind the float32-factor choice against numpy's exact 1-norm condition
    number (a small random sparse matrix: onenormest is exact there), and inf when singular."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    a = sp.random(40, 40, density=0.1, random_state=4, format="csc") + sp.diags(rng.uniform(0.01, 5.0, 40))
    assert sparse_newton.condition_estimate(a) == pytest.approx(np.linalg.cond(a.toarray(), 1), rel=1e-9)
    singular = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    assert sparse_newton.condition_estimate(singular) == float("inf")


@pytest.mark.parametrize("name, dtype", [("case118", jnp.float32), ("mv_oberrhein", jnp.float64)])
def test_float64_grids_factor_in_float32_only_when_well_conditioned(name, dtype):
    """case118's base-case Jacobian (cond ~1e5) is factored in float32, mv_oberrhein's (~2e7) in
    float64; a float32 grid always factors in float32."""
    pl = sparse_newton.plan(_grid(name))
    assert (pl.cond <= sparse_newton.FLOAT32_FACTOR_MAX_COND) == (dtype == jnp.float32)
    assert sparse_newton.factor_dtype(jnp.float64, pl) == dtype
    assert sparse_newton.factor_dtype(jnp.float32, pl) == jnp.float32


def test_float32_factors_give_the_float64_factors_solution(monkeypatch):
    """Mixed precision changes the steps, not the solution: case118 with float32 factors equals
    the same Newton with float64 factors to 1e-10 pu, both below the 1e-10 pu mismatch, and
    needs at most one more iteration."""
    grid = _grid("case118")
    p, q = _points(grid, np.random.default_rng(5).uniform(0.7, 1.3, 64))
    mixed = _batched(grid, "sparse_lu")(p, q)
    monkeypatch.setattr(sparse_newton, "FLOAT32_FACTOR_MAX_COND", 0.0)
    full = _batched(grid, "sparse_lu")(p, q)
    assert bool(jnp.all(mixed.converged)) and bool(jnp.all(full.converged))
    assert float(jnp.max(mixed.max_mismatch)) <= 1e-10
    np.testing.assert_allclose(mixed.vm_pu, full.vm_pu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mixed.va_deg, full.va_deg, rtol=0, atol=1e-8)
    assert int(jnp.max(mixed.iterations - full.iterations)) <= 1


def test_the_shared_first_step_equals_a_newton_step_from_each_point(monkeypatch):
    """Starting every point at the base case, the one shared factorization of the first step gives
    the iterates of per-point Newton: the same solution and iteration counts as the warm-start path
    (which factors per point) started at the same base-case voltages."""
    grid = _grid("case30")
    monkeypatch.setattr(sparse_newton, "FLOAT32_FACTOR_MAX_COND", 0.0)  # float64 factors: comparable steps
    p, q = _points(grid, [0.7, 1.0, 1.3])
    shared = _batched(grid, "sparse_lu")(p, q)
    x_base = sparse_newton.plan(grid).x_base
    n = grid.n_bus
    init = (jnp.asarray(x_base[n:]), jnp.rad2deg(jnp.asarray(x_base[:n])))
    warm = jax.jit(jax.vmap(lambda p, q: solve(grid, p, q, method="newton", jacobian="sparse_lu", init=init)))(p, q)
    np.testing.assert_allclose(shared.vm_pu, warm.vm_pu, rtol=0, atol=1e-12)
    assert shared.iterations.tolist() == warm.iterations.tolist()
    # after one iteration, far from convergence, the first steps themselves are equal
    one_shared = _batched(grid, "sparse_lu", max_iter=1)(p, q)
    one_warm = jax.jit(jax.vmap(lambda p, q: solve(grid, p, q, method="newton", jacobian="sparse_lu", init=init,
                                                   max_iter=1)))(p, q)
    assert float(jnp.max(one_shared.max_mismatch)) > 1e-6  # not yet converged: the step is what is compared
    np.testing.assert_allclose(one_shared.vm_pu, one_warm.vm_pu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one_shared.va_deg, one_warm.va_deg, rtol=0, atol=1e-10)

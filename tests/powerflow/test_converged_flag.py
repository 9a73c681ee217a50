"""`converged == (max_mismatch <= tol)` for every iterative and direct power-flow method.

The flag decides the env's non-convergence penalty, so it is tested where it can be wrong:
at a tolerance between two successive iterations' mismatches. For each method the
per-iteration mismatches `m_1, m_2, ...` are recorded by solving with `max_iter = k` and a
tolerance nothing reaches; then, at an iteration `k` where the mismatch falls by more than
half (`m_{k+1} < m_k / 2`), the tolerance `tol = m_k / 2` lies strictly between them and

- with `max_iter = k` the solve must stop unconverged: `max_mismatch = m_k > tol`, flag False
  (a flag "true up to 10x the tolerance" says True here, since `m_k = 2 tol`);
- with `max_iter = k + 1` it must converge after exactly `k + 1` iterations with
  `max_mismatch = m_{k+1} <= tol`, flag True.

The chord methods (`jacobian="chord"` / `"sparse"`) first solve the base case with the same
`tol` and `max_iter`, so their iterates depend on both: for them the flag must equal the
comparison at those tolerances, at least one unconverged solve must land within 10x of the
tolerance, and a generous `max_iter` must converge.

`lindistflow` is one linear solve: its AC mismatch `m` is tested at `tol = m / 2` (False)
and `tol = 2 m` (True). The `pandapower` reference mode reports pandapower's own flag and is
tested in `test_reference_mode.py`.

`tol` and `max_iter` are traced arguments of one jitted solver per method, so the whole
file compiles once per method (grids closed over, as `jacobian="sparse"` requires).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax.networks
from pgjax.converters.pandapower import from_pandapower
from pgjax.powerflow import bus_injections, solve

# (method, jacobian, network): newton on a meshed grid with PV buses, the feeder methods on
# a radial feeder. Injections are the grid's own scaled by LOAD_SCALE, away from the base case
# that the chord methods factor, so that every method needs several iterations.
CASES = (
    ("newton", "exact", "case30"),
    ("newton", "chord", "case30"),
    ("newton", "sparse", "case30"),
    ("newton", "sparse_lu", "case30"),
    ("fixed_point", "exact", "case33bw"),
    ("distflow", "exact", "case33bw"),
)
LOAD_SCALE = 1.5
NEVER = 1e-300  # a tolerance no iteration reaches


@functools.lru_cache(maxsize=None)
def _solver(method, jacobian, network):
    """`(tol, max_iter) -> (converged, max_mismatch, iterations)`, jitted once, grid closed over."""
    grid = from_pandapower(pgjax.networks.load(network))[0]
    grid = jax.tree.map(jnp.asarray, grid)
    p_mw, q_mvar = (LOAD_SCALE * x for x in bus_injections(grid))

    @jax.jit
    def run(tol, max_iter):
        r = solve(grid, p_mw, q_mvar, method=method, jacobian=jacobian, tol=tol, max_iter=max_iter)
        return r.converged, r.max_mismatch, r.iterations

    def call(tol, max_iter):
        converged, mismatch, iterations = run(jnp.asarray(tol, jnp.float64), jnp.asarray(max_iter, jnp.int32))
        return bool(converged), float(mismatch), int(iterations)

    return call


def _mismatches(call, n_max=12):
    """Mismatch after each of the first iterations `[m_1, m_2, ...]` (until it stalls)."""
    out = []
    for k in range(1, n_max + 1):
        converged, mismatch, iterations = call(NEVER, k)
        assert not converged and iterations == k
        out.append(mismatch)
        if mismatch < 1e-13:
            break
    return out


@pytest.mark.parametrize("method,jacobian,network", CASES, ids=[f"{m}-{j}" for m, j, _ in CASES])
def test_flag_at_a_tolerance_between_two_iterations(method, jacobian, network):
    call = _solver(method, jacobian, network)
    m = _mismatches(call)
    steps = [k for k in range(1, len(m)) if m[k] < m[k - 1] / 2 and m[k - 1] > 1e-12]
    assert steps, f"{method}/{jacobian}: no iteration halves the mismatch: {m}"
    in_bug_zone = 0  # unconverged solves with tol < max_mismatch <= 10 tol
    for k in steps[:3]:  # iteration k (1-based) has mismatch m[k - 1]
        tol = m[k - 1] / 2
        converged, mismatch, iterations = call(tol, k)
        assert converged == (mismatch <= tol), (method, k, mismatch, tol)
        in_bug_zone += (not converged) and tol < mismatch <= 10 * tol
        if jacobian == "exact":  # the same iterations as the recording run
            assert iterations == k and mismatch == pytest.approx(m[k - 1], rel=1e-9)
            assert converged is False
        converged, mismatch, iterations = call(tol, k + 1 if jacobian == "exact" else 30)
        assert mismatch <= tol and converged is True, (method, k, mismatch, tol)
        if jacobian == "exact":
            assert iterations == k + 1
    assert in_bug_zone, f"{method}/{jacobian}: no unconverged solve within 10x the tolerance: {m}"


@pytest.mark.parametrize("method,jacobian,network", CASES, ids=[f"{m}-{j}" for m, j, _ in CASES])
def test_flag_equals_comparison_at_every_recorded_tolerance(method, jacobian, network):
    """Over a sweep of tolerances around each recorded mismatch (0.2x-5x), with a generous
    iteration limit: the flag is exactly `max_mismatch <= tol`, and both values occur."""
    call = _solver(method, jacobian, network)
    flags = set()
    for mk in _mismatches(call)[:6]:
        for factor in (0.2, 0.5, 0.9, 1.1, 2.0, 5.0):
            converged, mismatch, _ = call(mk * factor, 3)
            assert converged == (mismatch <= mk * factor), (method, mk, factor, mismatch)
            flags.add(converged)
    assert flags == {True, False}


def test_lindistflow_flag():
    call = _solver("lindistflow", "exact", "case33bw")
    _, m, iterations = call(NEVER, 30)
    assert iterations == 1 and 1e-8 < m < 1.0
    converged, mismatch, _ = call(m / 2, 30)
    assert mismatch == pytest.approx(m) and converged is False
    converged, mismatch, _ = call(2 * m, 30)
    assert mismatch == pytest.approx(m) and converged is True
    assert np.isfinite(mismatch)

"""Anderson mixing (`pgjax.powerflow.anderson`) against what it is for: the fixed point of
an affine map, where type-II Anderson mixing with `memory >= dim` is GMRES in disguise.

For `g(y) = A y + b` with `A` contractive (`[n, n]`, eigenvalues spread over [-0.8, 0.9],
not symmetric) and `y* = (I - A)^-1 b` from `numpy.linalg.solve`:
- the first call is a plain step (empty history); the `n + 1` calls after it, each mixing
  the last `n` differences, reach `y*` to 1e-10 relative in float64 (measured 1e-15 to 3e-11)
  where plain iteration `y <- g(y)` is still more than 1e-3 off;
- already after `n` mixing steps the error is below 1e-4 (the mixing's 1e-10 relative
  Tikhonov term keeps it from exact there: measured 1e-7 to 1e-5);
- a wrong mixing coefficient (gamma scaled, its sign flipped, residual instead of image
  differences) leaves errors of order 1e-2 and more at both points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.powerflow import anderson

N = 5


def _affine(seed, n=N):
    """`(A [n, n], b [n], y* [n])`: a non-normal contraction with eigenvalues linspace(-0.8, 0.9)."""
    rng = np.random.default_rng(seed)
    v = np.eye(n) + 0.3 * rng.normal(size=(n, n))
    a = v @ np.diag(np.linspace(-0.8, 0.9, n)) @ np.linalg.inv(v)
    b = rng.normal(size=n)
    return a, b, np.linalg.solve(np.eye(n) - a, b)


def _anderson_errors(a, b, y_star, memory, calls):
    """Relative max error of the iterate after each of `calls` mixing calls from y = 0."""
    y = jnp.zeros(len(b), jnp.float64)
    history = anderson.start(y, memory)
    mix = jax.jit(anderson.mix)
    errors = []
    for _ in range(calls):
        y, history = mix(history, y, jnp.asarray(a) @ y + b)
        errors.append(float(np.max(np.abs(np.asarray(y) - y_star)) / np.max(np.abs(y_star))))
    return errors


@pytest.mark.parametrize("seed", range(6))
def test_exact_fixed_point_of_affine_map_within_dim_plus_one_steps(seed):
    a, b, y_star = _affine(seed)
    assert np.max(np.abs(np.linalg.eigvals(a))) < 1
    errors = _anderson_errors(a, b, y_star, memory=N, calls=N + 2)
    assert errors[N] < 1e-4, errors  # n mixing steps after the plain first one
    assert errors[N + 1] < 1e-10, errors  # n + 1 mixing steps
    y = np.zeros(N)
    for _ in range(N + 2):
        y = a @ y + b
    assert np.max(np.abs(y - y_star)) / np.max(np.abs(y_star)) > 1e-3


def test_first_call_is_a_plain_step():
    a, b, _ = _affine(0)
    y = jnp.asarray(np.arange(N, dtype=float))
    y_next, history = anderson.mix(anderson.start(y, 3), y, jnp.asarray(a) @ y + b)
    np.testing.assert_allclose(y_next, a @ np.arange(N) + b, rtol=0, atol=1e-15)
    assert int(history.count) == 1


def test_one_mixing_step_is_the_secant_least_squares_step():
    """memory 1 in dimension 1: one difference, so the second call is the secant step,
    which lands on the fixed point of a scalar affine map exactly."""
    a, b = 0.7, 0.3  # y* = 1
    y0 = jnp.asarray([0.0])
    y1, h = anderson.mix(anderson.start(y0, 1), y0, a * y0 + b)
    y2, _ = anderson.mix(h, y1, a * y1 + b)
    np.testing.assert_allclose(y2, [1.0], rtol=0, atol=1e-9)


def test_vmapped_batch_mixes_per_point():
    maps = [_affine(s) for s in range(3)]
    a = jnp.asarray(np.stack([m[0] for m in maps]))
    b = jnp.asarray(np.stack([m[1] for m in maps]))
    y = jnp.zeros((3, N))
    history = jax.vmap(lambda v: anderson.start(v, N))(y)
    step = jax.jit(jax.vmap(lambda h, v, aa, bb: anderson.mix(h, v, aa @ v + bb)))
    for _ in range(N + 2):
        y, history = step(history, y, a, b)
    for i, (_, _, y_star) in enumerate(maps):
        np.testing.assert_allclose(y[i], y_star, rtol=1e-10, atol=1e-10)


def test_solve_small_spd_equals_numpy():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(4, 4))
    spd = m @ m.T + 0.1 * np.eye(4)
    rhs = rng.normal(size=4)
    np.testing.assert_allclose(anderson.solve_small_spd(jnp.asarray(spd), jnp.asarray(rhs)),
                               np.linalg.solve(spd, rhs), rtol=1e-10)

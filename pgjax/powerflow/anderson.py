"""Anderson acceleration of a fixed-point iteration `y <- g(y)` with static shapes.

Type-II Anderson mixing over the last `memory` steps: with `f = g(y) - y` and the
differences `dF`, `dG` of the last steps' `f` and `g`, the next iterate is
`g - dG gamma` with `gamma = argmin |f - dF gamma|` (a `memory x memory` normal-equation
solve, unrolled: batched LAPACK calls cost more than the arithmetic at `memory = 3`).
On a nearly affine map it behaves like restarted GMRES and turns a slow linear
contraction into a few steps. Iterates are flat vectors `[d]`; every operation is
elementwise or a dot product, so a vmapped batch mixes per point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

# Steps of history kept by default.
MEMORY = 3


@struct.dataclass
class History:
    """Mixing history, oldest first. The newest difference is formed from `f_prev`,
    `g_prev` at each step, so `memory` steps keep `memory - 1` stored differences (the
    loop state of memory 1 is three vectors)."""

    d_f: tuple  # memory - 1 arrays [d]: older differences of residuals
    d_g: tuple  # memory - 1 arrays [d]: older differences of images
    f_prev: jax.Array  # [d]
    g_prev: jax.Array  # [d]
    count: jax.Array  # [] int, steps taken


def start(y, memory: int = MEMORY) -> History:
    """Empty history for iterates shaped like `y` `[d]`."""
    if memory < 1:
        raise ValueError(f"Anderson memory must be >= 1, got {memory}")
    zeros = tuple(jnp.zeros_like(y) for _ in range(memory - 1))
    return History(d_f=zeros, d_g=zeros, f_prev=jnp.zeros_like(y), g_prev=jnp.zeros_like(y),
                   count=jnp.asarray(0, jnp.int32))


def solve_small_spd(a, b):
    """Solve `a x = b` for a small symmetric positive-definite `a` `[m, m]` by an unrolled
    Cholesky factorisation."""
    m = a.shape[0]
    low = [[None] * m for _ in range(m)]
    for i in range(m):
        for j in range(i + 1):
            acc = a[i, j] - sum((low[i][k] * low[j][k] for k in range(j)), jnp.zeros_like(a[i, j]))
            low[i][j] = jnp.sqrt(acc) if i == j else acc / low[j][j]
    z = []
    for i in range(m):
        z.append((b[i] - sum((low[i][k] * z[k] for k in range(i)), jnp.zeros_like(b[i]))) / low[i][i])
    x = [None] * m
    for i in reversed(range(m)):
        x[i] = (z[i] - sum((low[k][i] * x[k] for k in range(i + 1, m)), jnp.zeros_like(b[i]))) / low[i][i]
    return jnp.stack(x)


def mix(history: History, y, g):
    """The accelerated next iterate from `y` `[d]` and its image `g = g(y)`; returns
    `(y_next, history)`. The first call (empty history) returns `g`."""
    f = g - y
    has_prev = history.count > 0
    d_f = (*history.d_f, jnp.where(has_prev, f - history.f_prev, 0))
    d_g = (*history.d_g, jnp.where(has_prev, g - history.g_prev, 0))
    m = len(d_f)
    gram = jnp.stack([jnp.stack([jnp.sum(d_f[i] * d_f[j]) for j in range(m)]) for i in range(m)])
    reg = 1e-10 * jnp.trace(gram) + jnp.finfo(gram.dtype).tiny
    rhs = jnp.stack([jnp.sum(d * f) for d in d_f])
    gamma = rhs / (gram[0] + reg) if m == 1 else solve_small_spd(gram + reg * jnp.eye(m, dtype=gram.dtype), rhs)
    y_next = g - sum(gamma[i] * d_g[i] for i in range(m))
    return y_next, History(d_f=d_f[1:], d_g=d_g[1:], f_prev=f, g_prev=g, count=history.count + 1)

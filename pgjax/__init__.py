"""pgjax: a JAX-vectorized, functional multi-agent RL environment for power-grid control.

Importing pgjax changes no JAX setting: float64 grids and environments need JAX's 64-bit
mode, enabled by the program (`jax.config.update("jax_enable_x64", True)` or
JAX_ENABLE_X64=1); see `pgjax.precision`.
"""

from pgjax.grid import Grid, pad, stack

__all__ = ["Grid", "pad", "stack", "make"]
__version__ = "0.1.0"
from pgjax.env import make  # noqa: E402

"""pgjax: a JAX-vectorized, functional multi-agent RL environment for power-grid control."""

import jax

jax.config.update("jax_enable_x64", True)

from pgjax.grid import Grid, pad, stack  # noqa: E402

__all__ = ["Grid", "pad", "stack", "make"]
__version__ = "0.1.0"
from pgjax.env import make  # noqa: E402

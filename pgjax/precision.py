"""float64 only on request.

JAX computes in float32 unless its process-wide 64-bit mode is on, and with it off it
silently turns float64 arrays into float32 ones. pgjax does not switch that mode on when
imported (a library should not change a setting of the whole process); a program that
wants float64 grids or environments enables it once, before creating arrays:

    import jax
    jax.config.update("jax_enable_x64", True)   # or JAX_ENABLE_X64=1 in the environment

Wherever pgjax is asked for float64 (`pgjax.grid.astype`, `from_pandapower(..., dtype=)`,
`pgjax.powerflow.solve` with a float64 grid, float64 environments), it calls
`require_x64`, which raises a `ValueError` saying what asked and how to enable the mode,
instead of computing in float32 without a word. The `pgjax` command enables the mode
itself (it is a program).
"""

from __future__ import annotations

import jax
import numpy as np


def is_64bit(dtype) -> bool:
    """True for float64 and complex128 (the dtypes JAX truncates without x64)."""
    dt = np.dtype(dtype)
    return (dt.kind == "f" and dt.itemsize == 8) or (dt.kind == "c" and dt.itemsize == 16)


def require_x64(what: str, dtype=np.float64) -> None:
    """Raise `ValueError` if `dtype` is float64 (or complex128) and JAX's 64-bit mode is off.

    Args:
      what: the request, for the message (e.g. "scenario multi_microgrid (dtype: float64)").
      dtype: the requested dtype; float32 and integer dtypes always pass.
    """
    if is_64bit(dtype) and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{what} asks for {np.dtype(dtype).name}, but JAX's 64-bit mode is off, so JAX would "
            "silently compute in float32. Enable it at program start with "
            "jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1), or ask for float32.")

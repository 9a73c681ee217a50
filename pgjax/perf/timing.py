"""Timing a benchmark: steady-state call rates, single-threaded native libraries, the machine.

- `SINGLE_THREAD_ENV`: environment variables that keep native libraries on one thread.
- `rate(fn, seconds)`: steady-state calls per second of a blocking callable, and the CPU
  seconds per call (every thread of the process).
- `machine_info()`: CPU model, core count, library versions, load average.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import NamedTuple

import numpy as np

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
}


class Rate(NamedTuple):
    calls_per_s: float
    calls: int
    elapsed_s: float
    cpu_s_per_call: float  # process CPU time (all threads, spinning workers included) per call


def rate(fn, seconds: float, min_calls: int = 2, max_calls: int | None = None) -> Rate:
    """Time `fn()` (which must block until its work is done) repeatedly for about `seconds`.

    At least `min_calls` calls are made, so a slow `fn` is still measured; `max_calls` caps
    very fast ones.
    """
    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    elapsed = 0.0
    while n < min_calls or elapsed < seconds:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if max_calls is not None and n >= max_calls:
            break
    return Rate(n / elapsed, n, elapsed, (time.process_time() - cpu0) / n)


def machine_info() -> dict:
    """CPU model, logical core count, python / jax / numpy versions."""
    import jax

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "numpy": np.__version__,
            "jax_backend": jax.default_backend()}
    for mod, dist in (("pandapower", "pandapower"), ("lightsim2grid", "lightsim2grid"), ("numba", "numba"),
                      ("power_grid_model", "power-grid-model")):
        try:  # the installed distribution's version (power_grid_model has no __version__)
            info[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # optional engines
            info[mod] = None
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        info["loadavg"] = None
    return info

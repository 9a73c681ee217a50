"""The machine's peak, against which the benchmarks' fraction-of-peak columns are measured.

- `gemm_peak`: measured now, the best rate of a large jitted GEMM;
- `nominal_peak`: the nominal FMA figure from /proc/cpuinfo (for context only);
- `peak_report`, `print_peaks`: both for several dtypes, and their printed assumptions.
"""

from __future__ import annotations

import os
import time

import numpy as np

from pgjax.perf.flops import xla_cost


def gemm_peak(dtype="float32", n: int = 2048, seconds: float = 1.0, min_calls: int = 3) -> dict:
    """The machine's peak as measured now: the rate of a jitted `jnp.dot` of two `n x n` matrices.

    Counts `2 n^3` flops per product (XLA's own count of it, see `xla_flops`) and returns
    the best rate of single timed calls over about `seconds` (a peak, not a mean: it is the
    ceiling the fraction-of-peak columns are measured against). The GEMM runs on XLA's CPU
    backend with all the threads XLA uses (Eigen / oneDNN contraction), in the same process
    and under the same load as the benchmark, so it is the attainable peak of this machine
    at this moment, not the vendor's nominal FMA peak (`nominal_peak`).

    Returns a dict: `dtype`, `n`, `flops` (per product), `best_s`, `gflops` (best rate,
    GFLOP/s), `median_gflops`, `calls`, `assumption` (a sentence to print).
    float64 needs `jax_enable_x64`.
    """
    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(dtype)
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("gemm_peak('float64') needs jax_enable_x64")
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), dt)
    b = jax.random.normal(kb, (n, n), dt)
    f = jax.jit(jnp.dot).lower(a, b).compile()
    flops = float(xla_cost(f).get("flops", 2.0 * n ** 3)) or 2.0 * n ** 3
    jax.block_until_ready(f(a, b))
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    best = min(times)
    med = float(np.median(times))
    return {"dtype": dt.name, "n": n, "flops": flops, "best_s": best, "gflops": flops / best / 1e9,
            "median_gflops": flops / med / 1e9, "calls": len(times),
            "assumption": (f"peak = best {dt.name} GEMM rate measured now: jit(jnp.dot) of {n}x{n} "
                           f"matrices, 2n^3 = {flops:.3g} flop per product, best of {len(times)} calls, "
                           f"XLA CPU threads as configured, same process and load as the benchmark")}


def nominal_peak(dtype="float32") -> dict:
    """The nominal FMA peak from /proc/cpuinfo (for context; fractions use `gemm_peak`).

    `cores x clock x lanes x 2 (FMA) x fma_units`, with lanes = vector bits / dtype bits
    (512 with avx512f, 256 with avx2/avx, else 128), fma_units = 2 assumed, clock = the
    current `cpu MHz` of the first core (turbo and throttling make this approximate), and
    cores = logical CPUs (on SMT machines two threads share one core's FMA units, so this
    overstates the peak by up to 2x).
    """
    bits = 128
    mhz = None
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        bits = 512 if " avx512f" in flags else 256 if (" avx2" in flags or " avx " in flags) else 128
        mhz_line = next((ln for ln in text.splitlines() if ln.startswith("cpu MHz")), None)
        mhz = float(mhz_line.split(":")[1]) if mhz_line else None
    except OSError:
        pass
    size = 64 if np.dtype(dtype) == np.float64 else 32
    lanes = bits // size
    cores = os.cpu_count() or 1
    ghz = (mhz or 0.0) / 1e3
    gflops = cores * ghz * lanes * 2 * 2
    return {"dtype": np.dtype(dtype).name, "gflops": gflops, "cores": cores, "ghz": ghz, "vector_bits": bits,
            "assumption": (f"nominal = {cores} logical cores x {ghz:.2f} GHz x {lanes} {np.dtype(dtype).name} "
                           f"lanes ({bits}-bit SIMD) x 2 (FMA) x 2 FMA units = {gflops:.0f} GFLOP/s")}


def peak_report(dtypes=("float32", "float64"), n: int = 2048, seconds: float = 1.0) -> dict:
    """`{dtype: gemm_peak(dtype)}` plus `nominal` entries, for the dtypes this process can run."""
    import jax

    out = {}
    for dt in dtypes:
        if np.dtype(dt) == np.float64 and not jax.config.jax_enable_x64:
            continue
        out[np.dtype(dt).name] = gemm_peak(dt, n=n, seconds=seconds)
        out[np.dtype(dt).name]["nominal"] = nominal_peak(dt)
    return out


def print_peaks(peaks: dict) -> None:
    """Print the measured GEMM peaks and their assumptions (one block per dtype)."""
    for dt, pk in peaks.items():
        print(f"peak {dt}: {pk['gflops']:.1f} GFLOP/s measured (median {pk['median_gflops']:.1f}); "
              f"{pk['assumption']}")
        if "nominal" in pk:
            print(f"     {dt} for context: {pk['nominal']['assumption']}")
    print("fraction of peak = (flops per call / seconds per call) / measured peak of the run's dtype; "
          "flops per call = XLA cost analysis with each loop counted for its executed trips "
          "(pgjax.perf.flops.flop_count)")


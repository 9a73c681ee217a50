"""Wall time of pgjax's first and later calls in one process: an eager `pgjax.powerflow.solve` per
network, `pgjax.make` per scenario (both compile-dominated; docs/changelog.md, 2026-12-07).

    python scripts/time_first_calls.py [--networks case118 case33bw] [--scenarios frequency_68bus multi_microgrid]

Each row: the first call (pandapower import, host plans, compilation), then the median of three
later calls with the same network or scenario (the solve with new injections). Run it at two
commits to compare; the machine's load moves the figures, so compare runs of one session.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=["case118", "case33bw"])
    parser.add_argument("--scenarios", nargs="*", default=["frequency_68bus", "multi_microgrid"])
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # this script is a program: the converter's grids are float64

    import pgjax
    from pgjax import networks
    from pgjax.converters.pandapower import from_pandapower
    from pgjax.powerflow import bus_injections, solve

    print("| call | first s | later s (median of 3) |")
    print("| --- | --- | --- |")
    for name in args.networks:
        grid = from_pandapower(networks.load(name))[0]
        p, q = bus_injections(grid)
        first = _seconds(lambda: solve(grid, p, q))
        later = [_seconds(lambda f=f: solve(grid, f * p, f * q)) for f in (0.9, 1.0, 1.1)]
        print(f"| solve({name}) | {first:.2f} | {statistics.median(later):.3f} |", flush=True)
    for name in args.scenarios:
        first = _seconds(lambda: pgjax.make(name).num_agents)
        later = [_seconds(lambda: pgjax.make(name).num_agents) for _ in range(3)]
        print(f"| make({name}) | {first:.2f} | {statistics.median(later):.3f} |", flush=True)


if __name__ == "__main__":
    main()

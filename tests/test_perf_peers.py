"""The peer engines of `pgjax bench powerflow` solve the same problem as pgjax.

power-grid-model is built from the converted pgjax grid (`pgjax.perf.pgm`); its voltages
must equal pgjax's Newton solution (float64, 1e-10 p.u. on both sides) on feeders with lines,
transformers with off-nominal taps and shunts, or the benchmark would compare different problems.
"""

import jax
import numpy as np
import pytest
from power_grid_model.errors import PowerGridBatchError

from pgjax import networks
from pgjax.converters.pandapower import from_pandapower
from pgjax.perf import pgm, points
from pgjax.powerflow import solve


@pytest.mark.parametrize("name", ["case33bw", "ieee34_3x_ieee13", "create_cigre_network_mv"])
def test_power_grid_model_equals_pgjax(name):
    grid, _ = from_pandapower(networks.load(name), dtype="float64")
    assert pgm.applies(grid)
    p, q = points.operating_points(grid, points.load_factors(5, seed=1))
    vm_ref = np.asarray(jax.vmap(lambda a, b: solve(grid, a, b).vm_pu)(p, q))
    batch = pgm.PGMBatch(grid)
    batch.set_points(p, q)
    for method in pgm.METHODS:
        for threads in (1, 2):
            try:
                vm = batch.compute(method, threads)
            except PowerGridBatchError:  # iterative current stalls on the composite's bus ties
                assert (name, method) == ("ieee34_3x_ieee13", "iterative_current")
                continue
            np.testing.assert_allclose(vm, vm_ref, atol=1e-8)


def test_power_grid_model_is_left_out_with_pv_buses():
    grid, _ = from_pandapower(networks.load("case9"))
    assert not pgm.applies(grid)


def test_float32_rows_time_distflow_in_float32_and_compare_with_float64():
    """`pgjax bench powerflow`'s float32 rows: DistFlow on the float32 grid, every point within
    1e-4 pu of the float64 solution it is compared with (here pgjax's own float64 Newton)."""
    import argparse

    from pgjax.commands.bench_powerflow import FLOAT32_VM_TOL, float32_rows

    grid, _ = from_pandapower(networks.load("case33bw"), dtype="float64")
    p, q = points.operating_points(grid, points.load_factors(16, seed=2))
    vm64 = np.asarray(jax.vmap(lambda a, b: solve(grid, a, b, method="newton").vm_pu)(p, q))
    args = argparse.Namespace(batches=[4, 16], points=16, seconds=0.05, threads=1)
    out = {"pgjax_errors": {}}
    rows = float32_rows(grid, p, q, vm64, [{"method": "distflow", "pf_per_s": 1.0}], args, out)
    assert [r["batch"] for r in rows] == [4, 16] and all(r["engine"] == "pgjax float32" for r in rows)
    assert all(r["converged"] == 1.0 and r["pf_per_s"] > 0 for r in rows)
    assert 1e-9 < out["float32"]["max_dvm_vs_float64"] <= FLOAT32_VM_TOL  # float32 rounding, not float64
    assert out["float32"]["ratio_to_float64"] == max(r["pf_per_s"] for r in rows)

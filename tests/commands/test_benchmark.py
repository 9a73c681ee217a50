"""Benchmark tooling (`pgjax.perf`): generated radial feeders and the flop counter.

No timings here: speeds live in `pgjax bench powerflow` / `pgjax bench env`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
from pandapower.topology import create_nxgraph

from pgjax.converters.pandapower import bus_results, from_pandapower
from pgjax.perf.feeders import random_radial_feeder
from pgjax.perf.flops import flop_count, xla_flops
from pgjax.powerflow import solve


@pytest.fixture(scope="module", params=[(300, 0, "mv"), (60, 3, "lv")], ids=lambda p: f"{p[2]}{p[0]}-seed{p[1]}")
def feeder(request):
    n, seed, voltage = request.param
    return n, random_radial_feeder(n, seed=seed, voltage=voltage)


def test_random_feeder_is_radial_and_solves_in_pandapower(feeder):
    n, net = feeder
    assert len(net.bus) == n and len(net.line) == n - 1 and len(net.ext_grid) == 1
    assert nx.is_tree(create_nxgraph(net, multi=False))
    assert net.converged  # the generator's last runpp
    assert len(net.load) > 0.7 * n
    assert 0.9 < net.res_bus.vm_pu.min() < net.res_bus.vm_pu.max() <= 1.03 + 1e-12
    assert net.res_line.loading_percent.max() <= 80.0 + 1e-6


def test_random_feeder_is_seeded():
    a, b = random_radial_feeder(40, seed=7), random_radial_feeder(40, seed=7)
    assert a.line.from_bus.tolist() == b.line.from_bus.tolist()
    np.testing.assert_array_equal(a.load.p_mw.to_numpy(), b.load.p_mw.to_numpy())
    c = random_radial_feeder(40, seed=8)
    assert a.line.from_bus.tolist() != c.line.from_bus.tolist()


def test_random_feeder_distflow_equals_pandapower(feeder):
    _, net = feeder
    grid, netmap = from_pandapower(net)
    assert grid.bus.gs_mw.dtype == jnp.float64, "the suite runs float64 (see conftest.py)"
    res = solve(grid, method="distflow")
    assert bool(res.converged)
    ours = bus_results(res, netmap)
    ref_vm = net.res_bus.vm_pu.loc[netmap.bus_index].to_numpy()
    ref_va = net.res_bus.va_degree.loc[netmap.bus_index].to_numpy()
    assert np.max(np.abs(ours["vm_pu"] - ref_vm)) <= 1e-8
    assert np.max(np.abs(ours["va_deg"] - ref_va)) <= 1e-6


@pytest.mark.parametrize("n", [16, 64])
def test_flop_count_of_matmul_is_2n3(n):
    a = jnp.ones((n, n), jnp.float32)
    assert xla_flops(lambda x, y: x @ y, a, a) == 2 * n ** 3
    fc = flop_count(lambda x, y: x @ y, a, a)
    assert fc.flops == fc.xla_flops == 2 * n ** 3
    assert fc.loops == ()


def test_flop_count_counts_loop_trips():
    n, trips = 32, 7
    a = jnp.ones((n, n), jnp.float32)

    def loop(x):
        return jax.lax.while_loop(lambda c: c[1] < trips, lambda c: (c[0] @ c[0] * 1e-3, c[1] + 1), (x, 0))[0]

    fc = flop_count(loop, a)
    assert fc.xla_flops < 2 * 2 * n ** 3  # XLA alone counts one trip
    assert [(d["kind"], d["trips"]) for d in fc.loops] == [("while", trips)]
    # per trip: the matmul (2 n^3) plus the elementwise scaling and the counter
    assert trips * 2 * n ** 3 <= fc.flops <= trips * 2 * n ** 3 * 1.05

    # vmapped: the loop runs as long as the slowest element (executed trips, not the mean)
    def batched(x):
        return jax.vmap(lambda x0, k: jax.lax.while_loop(
            lambda c: c[1] < k, lambda c: (c[0] @ c[0] * 1e-3, c[1] + 1), (x0, 0))[0])(x, jnp.arange(1, 5))

    fc = flop_count(batched, jnp.ones((4, n, n), jnp.float32))
    assert [d["trips"] for d in fc.loops] == [4]
    assert 4 * 4 * 2 * n ** 3 <= fc.flops <= 4 * 4 * 2 * n ** 3 * 1.05

    # nested in a scan: total trips of the inner loop over the whole call
    fc = flop_count(lambda x: jax.lax.scan(lambda c, _: (loop(c), None), x, None, length=3)[0], a)
    assert sorted((d["kind"], d["trips"]) for d in fc.loops) == [("scan", 3), ("while", 3 * trips)]
    assert 3 * trips * 2 * n ** 3 <= fc.flops <= 3 * trips * 2 * n ** 3 * 1.05

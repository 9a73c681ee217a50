"""Feeder trees (`pgjax.powerflow.tree`) and the DistFlow solver built on them.

References: brute-force recursion over the tree for the two sweeps, pandapower `runpp` for
the power flow, the host tree and the tree derived in a traced program against each other,
and batches laid out as columns (`pgjax.powerflow.columns`) against point-by-point solves."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandapower as pp
import pytest

from pgjax.converters.pandapower import from_pandapower
from pgjax import networks, powerflow
from pgjax.grid import astype
from pgjax.perf.feeders import random_radial_feeder
from pgjax.perf.points import scale_injections
from pgjax.powerflow import radial
from pgjax.powerflow import tree as tree_lib

RADIAL_ZOO = ("case33bw", "ieee13", "cigre_lv_der", "create_cigre_network_mv", "ieee34_3x_ieee13")


def _converted(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=1e-10)
    grid, netmap = from_pandapower(net)
    return grid, netmap, net.res_bus.vm_pu.values, net.res_bus.va_degree.values


@pytest.fixture(scope="module")
def feeders():
    out = {name: _converted(networks.load(name)) for name in RADIAL_ZOO}
    out["radial300"] = _converted(random_radial_feeder(300, seed=3))
    return out


def _brute_force(tree: tree_lib.FeederTree, x, d):
    """Subtree sums of `x` and root-path sums of `d` by walking parents (numpy)."""
    parent, has = np.asarray(tree.parent), np.asarray(tree.has_branch)
    n = len(parent)
    sub, path = np.array(x, dtype=float), np.zeros(n)
    for k in range(n):
        j = k
        path[k] = d[k]
        while has[j]:
            j = parent[j]
            sub[j] += x[k]
            path[k] += d[j]
    return sub, path


@pytest.mark.parametrize("name", ["case33bw", "radial300"])
def test_sweeps_equal_brute_force_for_points_and_columns(feeders, name):
    grid = feeders[name][0]
    rng = np.random.default_rng(0)
    x, d = rng.normal(size=grid.n_bus), rng.normal(size=grid.n_bus)
    for tree in (tree_lib.tree_of(grid), jax.jit(tree_lib.traced_tree)(grid)):
        d = np.where(np.asarray(tree.has_branch), d, 0.0)  # the root and off buses have no branch
        sub_ref, path_ref = _brute_force(tree, x, d)
        np.testing.assert_allclose(tree_lib.subtree_sum(tree, jnp.asarray(x)), sub_ref, atol=1e-10)
        np.testing.assert_allclose(tree_lib.path_sum(tree, jnp.asarray(d)), path_ref, atol=1e-10)
        cols = jnp.asarray(np.stack([x, 2 * x, -x], axis=1))  # [n, 3]: trailing axes ride along
        np.testing.assert_allclose(tree_lib.subtree_sum(tree, cols), np.stack([sub_ref, 2 * sub_ref, -sub_ref], 1),
                                   atol=1e-10)
    down = np.asarray(tree_lib.descendants(tree_lib.tree_of(grid), jnp.float64))
    np.testing.assert_allclose(down @ x, sub_ref, atol=1e-10)


def test_orders_put_every_bus_after_its_parent(feeders):
    grid = feeders["radial300"][0]
    for tree in (tree_lib.tree_of(grid), jax.jit(tree_lib.traced_tree)(grid)):
        order, parent, has = (np.asarray(a) for a in (tree.order, tree.parent, tree.has_branch))
        assert sorted(order) == list(range(grid.n_bus))
        rank = np.argsort(order)
        assert np.all(rank[parent[has]] < rank[np.flatnonzero(has)])


@pytest.mark.parametrize("name", RADIAL_ZOO + ("radial300",))
def test_host_and_traced_trees_give_the_same_flow_and_pandapower(feeders, name):
    grid, netmap, vm_ref, va_ref = feeders[name]
    tree = tree_lib.tree_of(grid)
    given = jax.jit(lambda g, t: powerflow.solve(g, method="distflow", max_iter=100, tree=t))(grid, tree)
    traced = jax.jit(lambda g: powerflow.solve(g, method="distflow", max_iter=100))(grid)
    assert int(given.iterations) == int(traced.iterations)
    for r in (given, traced):
        assert bool(r.converged) and float(r.max_mismatch) <= 1e-10
        np.testing.assert_allclose(r.vm_pu, given.vm_pu, atol=1e-10)
        np.testing.assert_allclose(r.va_deg, given.va_deg, atol=1e-8)
        np.testing.assert_allclose(np.asarray(r.vm_pu)[netmap.bus_lookup], vm_ref, atol=1e-8)
        np.testing.assert_allclose(np.asarray(r.va_deg)[netmap.bus_lookup], va_ref, atol=1e-7)


def test_batch_as_columns_equals_point_by_point_solves(feeders):
    """A vmapped batch with the grid shared runs as columns; every field and the iteration
    count of each point equal its own solve, and so do stacked grids and nested vmaps."""
    grid = feeders["ieee34_3x_ieee13"][0]
    tree = tree_lib.tree_of(grid)
    p0, q0 = powerflow.bus_injections(grid)
    scale = jnp.asarray(np.random.default_rng(4).uniform(0.6, 1.4, (6, grid.n_bus)))
    one = jax.jit(lambda p, q: powerflow.solve(grid, p, q, method="distflow", tree=tree))
    batched = jax.jit(jax.vmap(one))(p0 * scale, q0 * scale)
    nested = jax.jit(jax.vmap(jax.vmap(one)))((p0 * scale).reshape(2, 3, -1), (q0 * scale).reshape(2, 3, -1))
    grids = jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * 6), grid)
    trees = jax.tree.map(lambda a: jnp.stack([a] * 6), tree)
    stacked = jax.jit(jax.vmap(lambda g, t, p, q: powerflow.solve(g, p, q, method="distflow", tree=t)))(
        grids, trees, p0 * scale, q0 * scale)
    # branch values per point on one topology (an env's tap changers): columns with per-point feeder values
    taps = jnp.asarray(grid.branch.tap)[None, :] * jnp.linspace(0.97, 1.03, 6)[:, None]
    with_tap = lambda t: jax.tree.map(jnp.asarray, grid).replace(branch=grid.branch.replace(tap=t))  # noqa: E731
    tapped = jax.jit(jax.vmap(lambda t, p, q: powerflow.solve(with_tap(t), p, q, method="distflow", tree=tree)))(
        taps, p0 * scale, q0 * scale)
    assert int(jnp.min(batched.iterations)) < int(jnp.max(batched.iterations))  # points stop on their own
    for i in range(6):
        tapped_single = powerflow.solve(with_tap(taps[i]), p0 * scale[i], q0 * scale[i], method="distflow", tree=tree)
        np.testing.assert_allclose(tapped.vm_pu[i], tapped_single.vm_pu, atol=1e-12)
        assert int(tapped.iterations[i]) == int(tapped_single.iterations)
        single = one(p0 * scale[i], q0 * scale[i])
        for other in (batched, stacked, jax.tree.map(lambda a: a.reshape((6,) + a.shape[2:]), nested)):
            for field, a, b in zip(single.__dataclass_fields__, jax.tree.leaves(single), jax.tree.leaves(other)):
                # rounding only (the bus ties' 1.7e5 p.u. admittances amplify it in the flows)
                np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-9, atol=1e-9, err_msg=field)
            assert int(other.iterations[i]) == int(single.iterations)


def test_warm_and_cold_starts_agree(feeders):
    grid = feeders["ieee34_3x_ieee13"][0]
    tree = tree_lib.tree_of(grid)
    p0, q0 = powerflow.bus_injections(grid)
    rng = np.random.default_rng(2)
    scale = jnp.asarray(rng.uniform(0.6, 1.4, (16, grid.n_bus)))
    cold = jax.jit(jax.vmap(lambda p, q: powerflow.solve(grid, p, q, method="distflow", tree=tree, max_iter=100)))
    warm = jax.jit(jax.vmap(lambda p, q, vm, va: powerflow.solve(
        grid, p, q, method="distflow", tree=tree, max_iter=100, init=(vm, va))))
    before = cold(p0 * scale, q0 * scale)
    after_cold = cold(p0 * scale[::-1], q0 * scale[::-1])  # other points, started from their neighbours
    after_warm = warm(p0 * scale[::-1], q0 * scale[::-1], before.vm_pu, before.va_deg)
    assert bool(after_cold.converged.all()) and bool(after_warm.converged.all())
    np.testing.assert_allclose(after_warm.vm_pu, after_cold.vm_pu, atol=1e-10)
    np.testing.assert_allclose(after_warm.va_deg, after_cold.va_deg, atol=1e-8)
    # from its own solution a point needs one sweep
    again = warm(p0 * scale, q0 * scale, before.vm_pu, before.va_deg)
    assert int(again.iterations.max()) == 1
    np.testing.assert_allclose(again.vm_pu, before.vm_pu, atol=1e-10)


def test_float32_converges_at_its_own_tolerance_on_the_composite(feeders):
    """Bus ties of 1.7e5 p.u. admittance: the branch-flow mismatch stays well conditioned."""
    grid = feeders["ieee34_3x_ieee13"][0]
    r64 = powerflow.solve(grid, method="distflow")
    g32 = astype(grid, jnp.float32)
    assert powerflow.default_tol(g32, "distflow") == 1e-5
    r32 = jax.jit(lambda g, t: powerflow.solve(g, method="distflow", tree=t))(g32, tree_lib.tree_of(g32))
    assert bool(r32.converged) and float(r32.max_mismatch) <= 1e-5
    np.testing.assert_allclose(r32.vm_pu, r64.vm_pu, atol=2e-5)


def _max_square(jaxpr, n):
    """Largest count of dimensions >= n of any value in `jaxpr` and its sub-programs."""
    worst = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            worst = max(worst, sum(dim >= n for dim in getattr(v.aval, "shape", ())))
        params = list(eqn.params.values())
        while params:
            p = params.pop()
            if isinstance(p, (tuple, list)):
                params.extend(p)
            elif hasattr(p, "eqns"):
                worst = max(worst, _max_square(p, n))
            elif hasattr(p, "jaxpr") and hasattr(p.jaxpr, "eqns"):
                worst = max(worst, _max_square(p.jaxpr, n))
    return worst


def test_large_feeder_solves_without_any_square_array():
    net = random_radial_feeder(1000, seed=5)
    grid, netmap, vm_ref, _ = _converted(net)
    tree = tree_lib.tree_of(grid)
    p, q = powerflow.bus_injections(grid)
    fn = lambda p, q: powerflow.solve(grid, p, q, method="distflow", tree=tree)  # noqa: E731
    assert _max_square(jax.make_jaxpr(fn)(p, q).jaxpr, grid.n_bus) <= 1
    traced = lambda g: powerflow.solve(g, method="distflow")  # noqa: E731
    assert _max_square(jax.make_jaxpr(traced)(grid).jaxpr, grid.n_bus) == 2  # the check sees [n, n]
    result = jax.jit(fn)(p, q)
    assert bool(result.converged)
    np.testing.assert_allclose(np.asarray(result.vm_pu)[netmap.bus_lookup], vm_ref, atol=1e-8)


def test_meshed_grid_has_no_feeder_tree():
    grid, _ = from_pandapower(networks.load("case9"))
    with pytest.raises(ValueError, match="closes a loop"):
        tree_lib.tree_of(grid)
    with pytest.raises(ValueError, match="PV bus|meshed"):
        radial.check_applies(grid, "distflow")


def test_grid_with_traced_loads_and_numpy_topology_solves(feeders):
    """A converted grid (numpy leaves) whose loads are scaled inside `jit(vmap)`."""
    grid, netmap, vm_ref, _ = feeders["case33bw"]
    factors = jnp.asarray([0.9, 1.0, 1.1])
    result = jax.jit(jax.vmap(lambda f: powerflow.solve(scale_injections(grid, f), method="distflow")))(factors)
    assert bool(result.converged.all())
    np.testing.assert_allclose(np.asarray(result.vm_pu[1])[netmap.bus_lookup], vm_ref, atol=1e-8)


def test_solve_without_a_method_picks_distflow_on_feeders_and_newton_elsewhere(feeders):
    grid = feeders["case33bw"][0]
    meshed, _ = from_pandapower(networks.load("case9"))
    assert powerflow.default_method(grid) == "distflow"
    assert powerflow.default_method(meshed) == "newton"  # PV buses, a loop
    assert powerflow.default_method(grid, jacobian="chord") == "newton"
    assert powerflow.default_method(grid, tree=tree_lib.tree_of(grid)) == "distflow"
    seen = []
    jax.jit(lambda g: seen.append(powerflow.default_method(g)) or g.sn_mva)(grid)
    assert seen == ["newton"]  # a traced grid without a tree
    auto, dist = powerflow.solve(grid), powerflow.solve(grid, method="distflow")
    assert int(auto.iterations) == int(dist.iterations)  # the DistFlow sweeps, not Newton's steps
    np.testing.assert_allclose(auto.vm_pu, dist.vm_pu, atol=0)


def test_a_batch_larger_than_a_block_equals_one_block(feeders, monkeypatch):
    """Batches over `columns.block_size` points go block by block (the last one padded)."""
    from pgjax.powerflow import columns

    grid = feeders["case33bw"][0]
    tree = tree_lib.tree_of(grid)
    p0, q0 = powerflow.bus_injections(grid)
    scale = jnp.asarray(np.random.default_rng(5).uniform(0.6, 1.4, (11, 1)))
    solve = lambda p, q: powerflow.solve(grid, p, q, method="distflow", tree=tree)  # noqa: E731
    whole = jax.jit(jax.vmap(solve))(p0 * scale, q0 * scale)
    monkeypatch.setattr(columns, "block_size", lambda rows: 4)  # 3 blocks, the last one padded
    blocked = jax.jit(jax.vmap(solve))(p0 * scale, q0 * scale)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(blocked)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

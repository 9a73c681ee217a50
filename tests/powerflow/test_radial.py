"""DistFlow and LinDistFlow feeder methods (`pgjax.powerflow.radial`)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.converters.pandapower import bus_results, from_pandapower
from pgjax import networks
from pgjax.grid import PQ, REF, Branches, Buses, ExtGrids, Generators, Grid, Injections, astype
from pgjax.powerflow import bus_injections, check_method, solve

# Measured on case33bw (see the radial module docstring): distflow 6e-12 pu / 3e-11 deg,
# lindistflow 2.8e-3 pu / 1.9e-2 deg.
DISTFLOW_TOL_VM, DISTFLOW_TOL_VA = 1e-8, 1e-7
LINDIST_TOL_VM, LINDIST_TOL_VA = 4e-3, 3e-2

# One compilation per (method, shape, dtype), shared by the tests (eager solves are slow).
jit_solve = jax.jit(solve, static_argnames=("method",))


@pytest.fixture(scope="module")
def case33bw():
    import pandapower as pp

    net = networks.load("case33bw")
    grid, netmap = from_pandapower(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=1e-10)
    return jax.tree.map(jnp.asarray, grid), netmap, net.res_bus.vm_pu.values, net.res_bus.va_degree.values


def _two_bus(r=0.01, x=0.02, p_mw=1.0, q_mvar=0.5, tap=1.0, shift_deg=0.0, vm0=1.02, b=0.0):
    """Slack bus 0 feeding a load at bus 1 over one branch (sn_mva = 10)."""
    f64 = lambda *v: np.asarray(v, np.float64)  # noqa: E731
    no_inj = Injections(bus=np.zeros(0, np.int32), p_mw=f64(), q_mvar=f64(), in_service=np.zeros(0, bool))
    return Grid(
        sn_mva=np.asarray(10.0),
        bus=Buses(vn_kv=f64(10, 10), bus_type=np.array([REF, PQ], np.int32), gs_mw=f64(0, 0),
                  bs_mvar=f64(0, 0), mask=np.ones(2, bool)),
        branch=Branches(from_bus=np.array([0], np.int32), to_bus=np.array([1], np.int32), r_pu=f64(r),
                        x_pu=f64(x), g_pu=f64(0), b_pu=f64(b), r_asym_pu=f64(0), x_asym_pu=f64(0),
                        g_asym_pu=f64(0), b_asym_pu=f64(0), tap=f64(tap), shift_deg=f64(shift_deg),
                        i_max_from_ka=f64(np.inf), i_max_to_ka=f64(np.inf), in_service=np.ones(1, bool)),
        load=Injections(bus=np.array([1], np.int32), p_mw=f64(p_mw), q_mvar=f64(q_mvar),
                        in_service=np.ones(1, bool)),
        sgen=no_inj, storage=no_inj, ward=no_inj,
        gen=Generators(bus=np.zeros(0, np.int32), p_mw=f64(), vm_pu=f64(), in_service=np.zeros(0, bool)),
        ext_grid=ExtGrids(bus=np.array([0], np.int32), vm_pu=f64(vm0), va_deg=f64(0), slack_weight=f64(1),
                          in_service=np.ones(1, bool)),
    )


@pytest.mark.parametrize("method, tol_vm, tol_va", [
    ("distflow", DISTFLOW_TOL_VM, DISTFLOW_TOL_VA),
    ("lindistflow", LINDIST_TOL_VM, LINDIST_TOL_VA),
])
def test_case33bw_matches_pandapower(case33bw, method, tol_vm, tol_va):
    grid, netmap, vm_ref, va_ref = case33bw
    check_method(grid, method)
    result = jit_solve(grid, *bus_injections(grid), method=method)
    buses = bus_results(result, netmap)
    assert np.max(np.abs(buses["vm_pu"] - vm_ref)) < tol_vm
    assert np.max(np.abs(buses["va_deg"] - va_ref)) < tol_va
    if method == "distflow":  # exact AC on a tree: the AC mismatch reaches the tolerance
        assert bool(result.converged) and float(result.max_mismatch) <= 1e-10
    else:  # an approximation: converged refers to the AC equations, max_mismatch is its error
        assert not bool(result.converged) and int(result.iterations) == 1
        assert 1e-4 < float(result.max_mismatch) < 1e-2


def test_lindistflow_two_bus_closed_form():
    r, x, p_mw, q_mvar, vm0 = 0.01, 0.02, 1e-3, 5e-4, 1.02
    result = jit_solve(_two_bus(r, x, p_mw, q_mvar, vm0=vm0), method="lindistflow")
    p, q = p_mw / 10, q_mvar / 10
    v1 = vm0 ** 2 - 2 * (r * p + x * q)
    np.testing.assert_allclose(float(result.vm_pu[1]) ** 2, v1, rtol=0, atol=1e-14)
    # with a tiny load the linearisation is (nearly) exact AC
    assert float(result.max_mismatch) < 1e-9


@pytest.mark.parametrize("tap, shift_deg", [(1.0, 0.0), (1.05, 30.0)])
def test_distflow_two_bus_closed_form(tap, shift_deg):
    r, x, p_mw, q_mvar, vm0 = 0.02, 0.05, 20.0, 8.0, 1.0  # heavy load: 2 pu through z
    result = jit_solve(_two_bus(r, x, p_mw, q_mvar, tap=tap, shift_deg=shift_deg, vm0=vm0), method="distflow")
    p, q = p_mw / 10, q_mvar / 10
    # ideal transformer at the from end: the series impedance sees v0 / tap^2
    v0 = (vm0 / tap) ** 2
    # |V0'|^2 |V1|^2 = (|V1|^2 + rP + xQ)^2 + (xP - rQ)^2  with P, Q the received load
    b = v0 - 2 * (r * p + x * q)
    v1 = (b + np.sqrt(b ** 2 - 4 * (r ** 2 + x ** 2) * (p ** 2 + q ** 2))) / 2
    va1 = -shift_deg - np.rad2deg(np.arctan2(x * p - r * q, v1 + r * p + x * q))
    assert bool(result.converged)
    np.testing.assert_allclose(float(result.vm_pu[1]), np.sqrt(v1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(result.va_deg[1]), va1, rtol=0, atol=1e-10)


def test_check_applies_rejects_pv_buses():
    import pandapower.networks as pn

    grid, _ = from_pandapower(pn.case9())
    for method in ("distflow", "lindistflow"):
        with pytest.raises(ValueError, match="PV bus"):
            check_method(grid, method)


def test_check_applies_rejects_meshed_grid(case33bw):
    grid = case33bw[0]
    meshed = grid.replace(branch=grid.branch.replace(in_service=jnp.ones(grid.n_branch, bool)))
    with pytest.raises(ValueError, match=r"meshed: branch \d+ .*37 active branches for 33 energized"):
        check_method(meshed, "distflow")
    check_method(grid, "distflow")  # the radial original passes
    check_method(meshed, "fixed_point")  # fixed_point handles meshes


def test_check_applies_rejects_several_slacks():
    grid = _two_bus()
    two_ref = grid.replace(bus=grid.bus.replace(bus_type=np.array([REF, REF], np.int32)))
    with pytest.raises(ValueError, match="grid buses 0 and 1 are both reference"):
        check_method(two_ref, "lindistflow")


@pytest.mark.parametrize("method", ["distflow", "lindistflow"])
def test_vmap_equals_single_solves(case33bw, method):
    grid = case33bw[0]
    p0, q0 = bus_injections(grid)
    scale = jnp.linspace(0.3, 1.6, 8)[:, None]
    p, q = p0[None] * scale, q0[None] * scale
    batched = jax.jit(jax.vmap(lambda p, q: solve(grid, p, q, method=method)))(p, q)
    for i in range(8):
        one = jit_solve(grid, p[i], q[i], method=method)
        np.testing.assert_allclose(batched.vm_pu[i], one.vm_pu, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched.va_deg[i], one.va_deg, rtol=0, atol=1e-10)
        assert bool(batched.converged[i]) == bool(one.converged)


@pytest.mark.parametrize("method", ["distflow", "lindistflow"])
def test_float32_runs_and_is_finite(case33bw, method):
    grid = case33bw[0]
    grid32 = astype(grid, jnp.float32)
    result = jit_solve(grid32, *bus_injections(grid32), method=method)
    reference = jit_solve(grid, *bus_injections(grid), method=method)
    assert result.vm_pu.dtype == jnp.float32
    for leaf in jax.tree.leaves(result):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf)))
    # the float32 target of the power-flow issue: within 1e-4 pu of float64
    np.testing.assert_allclose(result.vm_pu, reference.vm_pu, rtol=0, atol=1e-4)
    np.testing.assert_allclose(result.va_deg, reference.va_deg, rtol=0, atol=1e-3)
    if method == "distflow":
        assert bool(result.converged)


def test_distflow_gradient_matches_finite_differences(case33bw):
    grid = case33bw[0]
    p0, q0 = bus_injections(grid)
    loss = lambda p: solve(grid, p, q0, method="distflow").vm_pu.sum()  # noqa: E731
    grad = jax.jit(jax.grad(loss))(p0)
    step = jnp.zeros_like(p0).at[17].set(1e-4)
    vm_sum = lambda p: jit_solve(grid, p, q0, method="distflow").vm_pu.sum()  # noqa: E731
    fd = (vm_sum(p0 + step) - vm_sum(p0 - step)) / 2e-4
    np.testing.assert_allclose(grad[17], fd, rtol=1e-6)

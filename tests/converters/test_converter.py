"""pandapower converter: admittance matrix, bad inputs, write-back round trip."""

from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from conftest import SOLVE, assert_parity, bucket, reference
from pgjax.converters.pandapower import UnsupportedElementError, _ppc_of, from_pandapower, to_pandapower
from pgjax.powerflow import check_method, make_ybus, solve


# ------------------------------------------------------------------ Ybus

@pytest.mark.parametrize("name", ["case118", "mv_oberrhein", "trafo3w", "phase_shifter", "impedance_ward",
                                  "multivoltage", "out_of_service", "ieee34_3x_ieee13"])
def test_ybus_equals_pandapower(name, case):
    from pandapower.pypower.makeYbus import makeYbus

    net, grid, netmap, _ = case(name)
    _, ppc = _ppc_of(net)
    ybus_pp, _, _ = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])
    ybus_pp = np.asarray(ybus_pp.todense())
    ours = np.asarray(make_ybus(grid))
    assert ours.shape == ybus_pp.shape
    # Isolated buses carry no current: pandapower keeps their shunts and the branches among
    # them in its matrix, pgjax drops them. Compare the energized block exactly and require
    # no coupling between energized and isolated buses in either matrix.
    on = np.asarray(grid.bus.bus_type) != 4
    scale = np.abs(ybus_pp).max()
    np.testing.assert_allclose(ours[np.ix_(on, on)], ybus_pp[np.ix_(on, on)], rtol=0, atol=1e-9 * scale)
    for y in (ours, ybus_pp):
        assert np.all(y[np.ix_(on, ~on)] == 0) and np.all(y[np.ix_(~on, on)] == 0)


# ------------------------------------------------------------------ bad inputs

def test_empty_net_raises():
    with pytest.raises(ValueError, match="no buses"):
        from_pandapower(pp.create_empty_network())


def test_net_without_slack_raises():
    net = pn.case9()
    net.ext_grid.drop(net.ext_grid.index, inplace=True)
    with pytest.raises(ValueError, match="slack"):
        from_pandapower(net)


def test_net_with_only_out_of_service_slack_raises():
    net = pn.case9()
    net.ext_grid["in_service"] = False
    with pytest.raises(ValueError, match="slack"):
        from_pandapower(net)


def test_xward_is_unsupported():
    net = pn.case9()
    pp.create_xward(net, 4, ps_mw=1.0, qs_mvar=0.5, pz_mw=0.1, qz_mvar=0.1, r_ohm=1.0, x_ohm=5.0, vm_pu=1.0)
    with pytest.raises(UnsupportedElementError, match="xward"):
        from_pandapower(net)


def test_out_of_service_xward_is_ignored():
    net = pn.case9()
    pp.create_xward(net, 4, ps_mw=1.0, qs_mvar=0.5, pz_mw=0.1, qz_mvar=0.1, r_ohm=1.0, x_ohm=5.0, vm_pu=1.0,
                    in_service=False)
    grid, netmap = from_pandapower(net)
    assert_parity(SOLVE(bucket(grid)), netmap, reference(net))


def test_nan_load_raises():
    net = pn.case9()
    net.load.loc[net.load.index[1], "p_mw"] = np.nan
    with pytest.raises(ValueError, match="load") as info:
        from_pandapower(net)
    assert "p_mw" in str(info.value)


def test_unknown_method_raises(case):
    net, grid, netmap, _ = case("case9")
    with pytest.raises(ValueError, match="no_such_method"):
        solve(grid, method="no_such_method")
    with pytest.raises(ValueError, match="no_such_method"):
        check_method(grid, "no_such_method")
    with pytest.raises(ValueError, match="jacobian"):
        solve(grid, jacobian="bogus")


def test_fixed_point_rejects_pv_buses(case):
    net, grid, netmap, _ = case("case9")
    with pytest.raises(ValueError, match="PV"):
        check_method(grid, "fixed_point")


def test_voltage_dependent_load_is_unsupported():
    net = pn.case9()
    net.load.loc[net.load.index[0], "const_z_p_percent"] = 30.0
    with pytest.raises(UnsupportedElementError, match="const_z"):
        from_pandapower(net)


# ------------------------------------------------------------------ round trip

@pytest.mark.parametrize("name", ["case33bw", "ieee13"])
def test_to_pandapower_round_trip(name, case):
    """Changed grid setpoints written back into the net give pandapower's solution = pgjax's."""
    net, grid, netmap, _ = case(name)
    net = copy.deepcopy(net)
    if name == "ieee13":
        net.load["scaling"] = 0.8  # the grid holds scaled values; write-back must reset scaling
        grid, netmap = from_pandapower(net)
    rng = np.random.default_rng(0)
    n = len(netmap.load_index)
    factor = rng.uniform(0.5, 1.5, n)
    load = grid.load.replace(p_mw=np.asarray(grid.load.p_mw) * factor,
                             q_mvar=np.asarray(grid.load.q_mvar) * factor[::-1])
    ext_grid = grid.ext_grid.replace(vm_pu=np.asarray(grid.ext_grid.vm_pu) * 0 + 1.03)
    modified = grid.replace(load=load, ext_grid=ext_grid)
    written = to_pandapower(net, modified, netmap)
    assert written is not net and not np.allclose(written.load.p_mw.values, net.load.p_mw.values)
    np.testing.assert_allclose(written.load.p_mw.values * written.load.scaling.values, load.p_mw)
    result = SOLVE(bucket(modified))
    assert bool(result.converged)
    assert_parity(result, netmap, reference(written))
    # and converting the written net back gives the same grid
    again, _ = from_pandapower(written)
    np.testing.assert_allclose(again.load.p_mw, load.p_mw, rtol=1e-12)
    np.testing.assert_allclose(again.load.q_mvar, load.q_mvar, rtol=1e-12)


def test_a_loaded_shipped_network_is_the_callers_own_copy():
    """`networks.load` parses a shipped file once per process: what a caller changes in its net
    is not seen by the next `load`."""
    import pgjax.networks

    first = pgjax.networks.load("ieee13")
    p_mw, n_bus = first.load.p_mw.to_numpy().copy(), len(first.bus)
    first.load["p_mw"] *= 3.0
    first.bus.drop(first.bus.index[-1], inplace=True)
    again = pgjax.networks.load("ieee13")
    np.testing.assert_array_equal(again.load.p_mw.to_numpy(), p_mw)
    assert len(again.bus) == n_bus

"""Shared test helpers: test networks, a pandapower reference run and result comparison.

Compile cost dominates this suite (1-3 s per new array shape), so every network solved
through `solve_jit` is first padded to one of a few fixed size classes (`bucket`); all
networks of one class then share a single compiled solver. `pad` is documented to leave
results on real entries unchanged, and `test_grid.py` checks exactly that against
unpadded solves.
"""

from __future__ import annotations

import copy
import functools
import warnings

import jax
import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

import pgjax  # noqa: F401  (enables float64)
import pgjax.networks
from converters.pandapower import bus_results, from_pandapower
from pgjax.grid import TABLES, pad, shape_of
from pgjax.powerflow import solve

# One jitted solver for the whole session; jax caches one executable per (shape, statics).
SOLVE = jax.jit(solve, static_argnames=("method", "max_iter", "tol", "jacobian"))

# Size classes: every table of a grid is padded to the smallest class that fits all tables.
BUCKETS = (96, 192)

# Tolerances of the issue (float64, newton).
TOL_VM = 1e-8  # pu
TOL_VA = 1e-6  # degree
TOL_P = 1e-6  # MW / Mvar


def bucket(grid):
    """Pad every table of `grid` to the smallest size class that holds all of them."""
    need = max(shape_of(grid).values())
    size = next((b for b in BUCKETS if b >= need), None)
    if size is None:
        raise ValueError(f"grid with {need} rows is larger than the test size classes {BUCKETS}")
    return pad(grid, **{f"n_{t}": size for t in TABLES})


def reference(net):
    """pandapower's own AC power flow on a copy of `net` (tight tolerance)."""
    net = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)
    return net


def _np(x):
    return np.asarray(x)


def compare(ref_net, result, netmap):
    """Largest absolute differences between a pgjax result and pandapower's results.

    Returns a dict name -> float (max abs error, 0 when the element kind is absent), plus
    `nan_pattern_ok` telling whether pgjax's bus results are NaN exactly where pandapower's
    are (isolated buses). Branch flows are compared at both ends through
    `netmap.branch_rows`; pandapower's NaN flows of isolated branches count as zero.
    """
    out = {}
    buses = bus_results(result, netmap)
    ref_vm = ref_net.res_bus.vm_pu.loc[netmap.bus_index].values
    ref_va = ref_net.res_bus.va_degree.loc[netmap.bus_index].values
    out["nan_pattern_ok"] = bool(
        np.array_equal(np.isnan(buses["vm_pu"]), np.isnan(ref_vm))
        and np.array_equal(np.isnan(buses["va_deg"]), np.isnan(ref_va)))
    out["vm_pu"] = float(np.nanmax(np.abs(buses["vm_pu"] - ref_vm), initial=0.0))
    # both wrap angles into (-180, 180]
    dva = buses["va_deg"] - ref_va
    out["va_deg"] = float(np.nanmax(np.abs(dva), initial=0.0))

    pf, qf, pt, qt = (_np(result.p_from_mw), _np(result.q_from_mvar), _np(result.p_to_mw), _np(result.q_to_mvar))

    def err(ours, theirs):
        theirs = np.nan_to_num(np.asarray(theirs, dtype=float))
        return float(np.max(np.abs(ours - theirs), initial=0.0))

    rows = netmap.branch_rows
    if "line" in rows:
        r, res = rows["line"], ref_net.res_line.loc[ref_net.line.index]
        out["line_p"] = max(err(pf[r], res.p_from_mw), err(pt[r], res.p_to_mw))
        out["line_q"] = max(err(qf[r], res.q_from_mvar), err(qt[r], res.q_to_mvar))
    if "trafo" in rows:
        r, res = rows["trafo"], ref_net.res_trafo.loc[ref_net.trafo.index]
        out["trafo_p"] = max(err(pf[r], res.p_hv_mw), err(pt[r], res.p_lv_mw))
        out["trafo_q"] = max(err(qf[r], res.q_hv_mvar), err(qt[r], res.q_lv_mvar))
    if "trafo3w" in rows:
        r, res = rows["trafo3w"], ref_net.res_trafo3w.loc[ref_net.trafo3w.index]
        out["trafo3w_p"] = max(err(pf[r[:, 0]], res.p_hv_mw), err(pt[r[:, 1]], res.p_mv_mw),
                               err(pt[r[:, 2]], res.p_lv_mw))
        out["trafo3w_q"] = max(err(qf[r[:, 0]], res.q_hv_mvar), err(qt[r[:, 1]], res.q_mv_mvar),
                               err(qt[r[:, 2]], res.q_lv_mvar))
    if "impedance" in rows:
        r, res = rows["impedance"], ref_net.res_impedance.loc[ref_net.impedance.index]
        out["impedance_p"] = max(err(pf[r], res.p_from_mw), err(pt[r], res.p_to_mw))
        out["impedance_q"] = max(err(qf[r], res.q_from_mvar), err(qt[r], res.q_to_mvar))

    n_eg = len(netmap.ext_grid_index)
    res_eg = ref_net.res_ext_grid.loc[netmap.ext_grid_index]
    out["ext_grid_p"] = err(_np(result.slack_p_mw)[:n_eg], res_eg.p_mw)
    out["ext_grid_q"] = err(_np(result.slack_q_mvar)[:n_eg], res_eg.q_mvar)

    # Generator Q where one in-service gen sits alone at a non-slack bus (pandapower's
    # split of Q between several gens at one bus is a convention, not physics).
    gen = ref_net.gen.loc[netmap.gen_index]
    if len(gen):
        alone = gen.bus.map(gen[gen.in_service].bus.value_counts()).fillna(0).values == 1
        alone &= ~gen.bus.isin(ref_net.ext_grid.bus[ref_net.ext_grid.in_service]).values & gen.in_service.values
        ours = _np(result.gen_q_mvar)[:len(gen)][alone]
        out["gen_q"] = err(ours, ref_net.res_gen.q_mvar.loc[netmap.gen_index].values[alone])
    return out


def assert_parity(errors, tol_vm=TOL_VM, tol_va=TOL_VA, tol_p=TOL_P):
    """Assert the issue's parity tolerances on a `compare` dict."""
    assert errors["nan_pattern_ok"], "isolated buses differ from pandapower's NaN buses"
    bad = {k: v for k, v in errors.items() if k != "nan_pattern_ok" and not (
        v <= {"vm_pu": tol_vm, "va_deg": tol_va}.get(k, tol_p))}
    assert not bad, f"parity violated: {bad} (all errors: {errors})"


# --------------------------------------------------------------------------- networks

def _ext_and_lines(net, buses, std="NA2XS2Y 1x95 RM/25 12/20 kV"):
    for a, b in zip(buses[:-1], buses[1:]):
        pp.create_line(net, a, b, length_km=1.5, std_type=std)


def net_taps():
    """pandapower's example_simple with its transformer tap moved off neutral."""
    net = pn.example_simple()
    tr = net.trafo.index[0]
    net.trafo.loc[tr, ["tap_pos", "tap_neutral", "tap_step_percent", "tap_side"]] = [3, 0, 1.5, "hv"]
    net.trafo.loc[tr, "tap_changer_type"] = "Ratio"
    return net


def net_phase_shifter():
    """110/20 kV feeder with an ideal phase shifter (tap_step_degree, tap off neutral) and a
    second transformer with a fixed 30 degree vector-group shift, meshed by a 20 kV line."""
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110)
    b = [pp.create_bus(net, 20) for _ in range(5)]
    pp.create_ext_grid(net, hv, vm_pu=1.02)
    pp.create_transformer_from_parameters(
        net, hv, b[0], sn_mva=40, vn_hv_kv=110, vn_lv_kv=20, vkr_percent=0.3, vk_percent=12,
        pfe_kw=20, i0_percent=0.05, shift_degree=0, tap_side="hv", tap_neutral=0, tap_min=-10,
        tap_max=10, tap_pos=4, tap_step_percent=0.0, tap_step_degree=2.0, tap_changer_type="Ideal")
    pp.create_transformer_from_parameters(
        net, hv, b[3], sn_mva=25, vn_hv_kv=110, vn_lv_kv=20, vkr_percent=0.4, vk_percent=11,
        pfe_kw=15, i0_percent=0.06, shift_degree=30, tap_side="lv", tap_neutral=0, tap_min=-9,
        tap_max=9, tap_pos=-2, tap_step_percent=1.25, tap_changer_type="Ratio")
    _ext_and_lines(net, [b[0], b[1], b[2], b[3], b[4]])
    for i, bus in enumerate(b[1:]):
        pp.create_load(net, bus, p_mw=2.0 + i, q_mvar=0.5 + 0.2 * i)
    pp.create_sgen(net, b[2], p_mw=1.5, q_mvar=-0.3)
    return net


def net_trafo3w():
    """110/20/10 kV three-winding transformer with loads on both lower voltages and a tap."""
    net = pp.create_empty_network()
    hv, mv, lv = pp.create_bus(net, 110), pp.create_bus(net, 20), pp.create_bus(net, 10)
    mv2, lv2 = pp.create_bus(net, 20), pp.create_bus(net, 10)
    pp.create_ext_grid(net, hv, vm_pu=1.01, va_degree=5.0)
    pp.create_transformer3w_from_parameters(
        net, hv, mv, lv, vn_hv_kv=110, vn_mv_kv=20, vn_lv_kv=10, sn_hv_mva=40, sn_mv_mva=25,
        sn_lv_mva=15, vk_hv_percent=10.5, vk_mv_percent=7.5, vk_lv_percent=6.5,
        vkr_hv_percent=0.3, vkr_mv_percent=0.25, vkr_lv_percent=0.2, pfe_kw=30, i0_percent=0.1,
        shift_mv_degree=0, shift_lv_degree=150, tap_side="hv", tap_step_percent=1.5, tap_pos=2,
        tap_neutral=0, tap_min=-8, tap_max=8, tap_changer_type="Ratio")
    pp.create_line(net, mv, mv2, length_km=3.0, std_type="NA2XS2Y 1x95 RM/25 12/20 kV")
    pp.create_line(net, lv, lv2, length_km=1.0, std_type="NA2XS2Y 1x95 RM/25 12/20 kV")
    pp.create_load(net, mv2, p_mw=8.0, q_mvar=2.0)
    pp.create_load(net, lv2, p_mw=4.0, q_mvar=1.5)
    pp.create_load(net, mv, p_mw=3.0, q_mvar=0.8)
    return net


def net_two_ext_grids():
    """A 20 kV ring fed by two external grids on different buses with different setpoints."""
    net = pp.create_empty_network()
    b = [pp.create_bus(net, 20) for _ in range(6)]
    pp.create_ext_grid(net, b[0], vm_pu=1.02, va_degree=0.0)
    pp.create_ext_grid(net, b[3], vm_pu=1.0, va_degree=-0.5)
    _ext_and_lines(net, b + [b[0]])
    for i, bus in enumerate(b):
        if bus not in (b[0], b[3]):
            pp.create_load(net, bus, p_mw=1.0 + 0.5 * i, q_mvar=0.3)
    pp.create_sgen(net, b[4], p_mw=0.7)
    return net


def net_impedance_ward():
    """Impedance element, wards, a fixed shunt and a generator on a small 20 kV grid."""
    net = pp.create_empty_network()
    b = [pp.create_bus(net, 20) for _ in range(5)]
    pp.create_ext_grid(net, b[0])
    _ext_and_lines(net, b[:3])
    pp.create_impedance(net, b[2], b[3], rft_pu=0.01, xft_pu=0.04, rtf_pu=0.012, xtf_pu=0.045, sn_mva=10)
    pp.create_line(net, b[3], b[4], length_km=2.0, std_type="NA2XS2Y 1x95 RM/25 12/20 kV")
    pp.create_ward(net, b[3], ps_mw=1.2, qs_mvar=0.4, pz_mw=0.3, qz_mvar=-0.2)
    pp.create_ward(net, b[4], ps_mw=0.8, qs_mvar=0.1, pz_mw=0.1, qz_mvar=0.05)
    pp.create_shunt(net, b[1], q_mvar=-0.8, p_mw=0.02)
    pp.create_load(net, b[1], p_mw=1.0, q_mvar=0.2)
    pp.create_gen(net, b[4], p_mw=0.5, vm_pu=1.01)
    return net


def net_multivoltage():
    """example_multivoltage (bus-bus switches closed and open, an open line switch, a
    three-winding transformer, an impedance, shunt, gen) with its xwards removed (pgjax does
    not model xwards; see test_converter for the out-of-service case)."""
    net = pn.example_multivoltage()
    net.xward.drop(net.xward.index, inplace=True)
    return net


def net_out_of_service():
    """case33bw with a bus, a line (isolating the feeder end beyond it) and loads out of service."""
    net = pn.case33bw()
    net.bus.loc[17, "in_service"] = False  # feeder end bus: isolated
    cut = net.line.index[(net.line.from_bus == 23) & (net.line.to_bus == 24)][0]
    net.line.loc[cut, "in_service"] = False  # isolates bus 24
    net.line.loc[net.line.index[(net.line.from_bus == 10)][0], "in_service"] = False
    net.load.loc[net.load.index[net.load.bus == 5], "in_service"] = False
    net.load.loc[net.load.index[net.load.bus == 20], "in_service"] = False
    return net


def net_cigre_mv():
    """CIGRE MV with DER: open line switches (tie lines), 30 degree trafos, many sgens."""
    return pn.create_cigre_network_mv(with_der="pv_wind")


NETWORKS = {
    "case33bw": pn.case33bw,  # radial
    "case30": pn.case30,  # meshed, PV
    "case118": pn.case118,  # meshed, PV, taps
    "case9": pn.case9,  # PV buses
    "taps": net_taps,
    "phase_shifter": net_phase_shifter,
    "mv_oberrhein": pn.mv_oberrhein,  # 150 degree trafos, two ext_grids, switches
    "trafo3w": net_trafo3w,
    "two_ext_grids": net_two_ext_grids,
    "impedance_ward": net_impedance_ward,
    "multivoltage": net_multivoltage,
    "out_of_service": net_out_of_service,
    "cigre_mv": net_cigre_mv,
    "ieee13": lambda: pgjax.networks.load("ieee13"),
    "ieee34_3x_ieee13": lambda: pgjax.networks.load("ieee34_3x_ieee13"),
}


@functools.lru_cache(maxsize=None)
def _case(name):
    net = NETWORKS[name]()
    grid, netmap = from_pandapower(net)
    return net, grid, netmap, reference(net)


@pytest.fixture(scope="session")
def case():
    """`case(name) -> (net, grid, netmap, ref_net)`, converted and pandapower-solved once per session.

    Treat all four as read-only (deep-copy before modifying).
    """
    return _case


@functools.lru_cache(maxsize=None)
def _solved(name, method="newton"):
    net, grid, netmap, ref = _case(name)
    return SOLVE(bucket(grid), method=method)


@pytest.fixture(scope="session")
def solved():
    """`solved(name, method="newton") -> PowerFlowResult` of the bucket-padded grid (cached)."""
    return _solved


@pytest.fixture(scope="session")
def solve_jit():
    return SOLVE

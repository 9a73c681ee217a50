"""Shared test helpers: test networks, bucket padding, and parity with pandapower.

The comparison with pandapower is `pgjax.verification`'s, the one `pgjax verify` ships:
its reference run (`run_reference`), its differences (bus voltages, P and Q of branches,
external grids and generators) and its targets (`TARGETS`: 1e-8 p.u., 1e-6 degree,
1e-6 MW / Mvar); `assert_parity` asserts them.

Compile cost dominates this suite (1-3 s per new array shape), so every network solved
through `solve_jit` is first padded to one of a few fixed size classes (`bucket`); all
networks of one class then share a single compiled solver. `pad` is documented to leave
results on real entries unchanged, and `test_grid.py` checks exactly that against
unpadded solves.

A test session is a program: it switches JAX's 64-bit mode on here, before any array is
made (importing pgjax does not; `tests/test_precision.py` checks that in a fresh process).
It also gives JAX a persistent compilation cache in a temporary folder of this session
(`PGJAX_TEST_JAX_CACHE` to choose one): many tests build the same scenario and compile the
same step program, which then compiles once (8 -> 1 CPU-s for the multi_microgrid step);
subprocesses (`pgjax train` in the CLI tests) and pytest-xdist's workers (the README's test
command runs `-n 2 --dist loadfile`: whole files per worker, so module fixtures build once)
inherit it through the environment.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import jax

jax.config.update("jax_enable_x64", True)
_OWN_CACHE = "PGJAX_TEST_JAX_CACHE" not in os.environ  # a folder of this session: removed at its end
_CACHE = os.environ.setdefault("PGJAX_TEST_JAX_CACHE", tempfile.mkdtemp(prefix="pgjax-test-jax-cache-"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

import pandapower as pp  # noqa: E402
import pandapower.networks as pn  # noqa: E402
import pytest  # noqa: E402

import pgjax.networks  # noqa: E402
from pgjax.converters.pandapower import from_pandapower  # noqa: E402
from pgjax import verification  # noqa: E402
from pgjax.grid import TABLES, pad, shape_of  # noqa: E402
from pgjax.powerflow import solve  # noqa: E402

# One jitted solver for the whole session; jax caches one executable per (shape, statics).
SOLVE = jax.jit(solve, static_argnames=("method", "max_iter", "tol", "jacobian"))

# Size classes: every table of a grid is padded to the smallest class that fits all tables.
BUCKETS = (96, 192)


def bucket(grid):
    """Pad every table of `grid` to the smallest size class that holds all of them."""
    need = max(shape_of(grid).values())
    size = next((b for b in BUCKETS if b >= need), None)
    if size is None:
        raise ValueError(f"grid with {need} rows is larger than the test size classes {BUCKETS}")
    return pad(grid, **{f"n_{t}": size for t in TABLES})


def reference(net):
    """pandapower's own AC power flow on a copy of `net` (`pgjax.verification.run_reference`)."""
    return verification.run_reference(net)[0]


def assert_parity(result, netmap, ref) -> dict:
    """Assert that a pgjax `result` equals the solved pandapower net `ref` within
    `pgjax.verification.TARGETS` (and converged); returns the differences."""
    errors = verification.differences(result, netmap, ref)
    failed = verification.failures(errors)
    assert not failed, f"differs from pandapower: {failed} (all differences: {errors})"
    return errors


# A small valid scenario (case33bw, a head with the PCC and one microgrid with storage and PV)
# that the scenario tests and the input corpus vary.
SMALL_SCENARIO = {
    "name": "tiny", "network": "case33bw",
    "time": {"dt_h": 1.0, "episode_steps": 24},
    "profiles": {"train": "caiso_2023", "test": "caiso_2024", "price": "price_0096WD_7_N001",
                 "loads": [{"match": "*", "series": "load_SDGE-TAC"}]},
    "agents": [
        {"id": "head", "level": "system", "buses": [0], "devices": [{"type": "pcc", "ext_grid": 0}]},
        {"id": "A", "level": "grid", "parent": "head", "buses": [1, 2, 3],
         "devices": [{"type": "storage", "name": "ess", "bus": 3, "e_max_mwh": 1.0,
                      "p_charge_max_mw": 0.5, "p_discharge_max_mw": 0.5},
                     {"type": "pv", "name": "pv", "bus": 2, "p_max_mw": 1.0, "s_max_mva": 1.1,
                      "profile": "solar_SP15"}]},
    ],
}


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


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)

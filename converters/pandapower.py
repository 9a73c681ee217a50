"""pandapower networks to `pgjax.Grid` and back.

Branch impedances, transformer taps and shifts, three-winding star equivalents, bus-bus
switch fusing, open branch switches, fixed shunts and isolated-bus detection are taken from
pandapower's own model builder (`_pd2ppc`), so the arrays describe exactly the network that
`pandapower.runpp` solves. Injection tables (loads, static generators, storage, wards,
generators, external grids) are read from the element tables in the net's index order and
checked against pandapower's bus totals, so anything pgjax does not model is caught here
with an error that names the element, never as a wrong answer later. Element tables are
checked first (`check_tables`): bus references that are not buses, non-positive nominal
voltages, line lengths, ratings and impedances raise `pgjax.errors.DataError` naming the
table, row, column and value.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import jax
import numpy as np
from pandapower.auxiliary import pandapowerNet

from pgjax.errors import DataError
from pgjax.grid import NONE, Branches, Buses, ExtGrids, Generators, Grid, Injections, astype
from pgjax.precision import require_x64

# Element tables that pgjax does not model; any in-service row raises `UnsupportedElementError`.
UNSUPPORTED_TABLES = (
    "xward", "motor", "asymmetric_load", "asymmetric_sgen", "dcline", "svc", "tcsc", "ssc",
    "vsc", "line_dc", "bus_dc", "source_dc", "load_dc", "b2b_vsc",
)
# Branch kinds in the order pandapower writes them into its branch matrix.
BRANCH_KINDS = ("line", "trafo", "trafo3w", "impedance", "switch", "xward")
# Load columns of voltage-dependent (ZIP) models; pgjax models constant power only.
ZIP_COLUMNS = ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent",
               "const_z_percent", "const_i_percent")


# Columns holding a bus index, per element table.
BUS_COLUMNS = {
    "line": ("from_bus", "to_bus"), "trafo": ("hv_bus", "lv_bus"), "trafo3w": ("hv_bus", "mv_bus", "lv_bus"),
    "impedance": ("from_bus", "to_bus"), "switch": ("bus",), "load": ("bus",), "sgen": ("bus",), "gen": ("bus",),
    "storage": ("bus",), "ext_grid": ("bus",), "ward": ("bus",), "xward": ("bus",), "shunt": ("bus",),
}
# Columns that must hold booleans (besides every table's `in_service`).
BOOL_COLUMNS = {"switch": ("closed",), "gen": ("slack",), "shunt": ("step_dependency_table",),
                "trafo": ("tap_phase_shifter", "tap_dependency_table")}
# The table a switch's `element` indexes, by its `et`.
SWITCH_ELEMENTS = {"b": "bus", "l": "line", "t": "trafo", "t3": "trafo3w"}
# (table, column, test, allowed) checked on in-service rows: physical ranges of the parameters.
RANGES = (
    ("bus", "vn_kv", lambda v: v > 0, "> 0 kV"),
    ("line", "length_km", lambda v: v > 0, "> 0 km"),
    ("line", "parallel", lambda v: v >= 1, ">= 1"),
    ("line", "df", lambda v: v > 0, "> 0"),
    ("line", "r_ohm_per_km", lambda v: v == v, "(ohm/km)"),
    ("line", "x_ohm_per_km", lambda v: v == v, "(ohm/km)"),
    ("line", "c_nf_per_km", lambda v: v >= 0, ">= 0 nF/km"),
    ("line", "g_us_per_km", lambda v: v >= 0, ">= 0 uS/km"),
    ("shunt", "vn_kv", lambda v: v > 0, "> 0 kV"),
    ("shunt", "step", lambda v: v >= 0, ">= 0"),
    ("shunt", "p_mw", lambda v: v == v, "(MW at vn_kv, per step)"),
    ("shunt", "q_mvar", lambda v: v == v, "(Mvar at vn_kv, per step)"),
    ("trafo", "sn_mva", lambda v: v > 0, "> 0 MVA"),
    ("trafo", "vn_hv_kv", lambda v: v > 0, "> 0 kV"),
    ("trafo", "vn_lv_kv", lambda v: v > 0, "> 0 kV"),
    ("trafo", "vk_percent", lambda v: v != 0, "!= 0 % (0: a zero impedance)"),
    ("trafo", "vkr_percent", lambda v: v == v, "(%)"),
    ("trafo", "parallel", lambda v: v >= 1, ">= 1"),
    ("trafo", "df", lambda v: v > 0, "> 0"),
    ("trafo", "pfe_kw", lambda v: v >= 0, ">= 0 kW"),
    ("trafo", "i0_percent", lambda v: v == v, "(%)"),
    ("trafo", "shift_degree", lambda v: v == v, "(degrees)"),
    *((("trafo3w", f"sn_{s}_mva", lambda v: v > 0, "> 0 MVA")) for s in ("hv", "mv", "lv")),
    *((("trafo3w", f"vn_{s}_kv", lambda v: v > 0, "> 0 kV")) for s in ("hv", "mv", "lv")),
)


class UnsupportedElementError(DataError):
    """The net holds an element or setting that pgjax cannot represent."""


def _in_service(df):
    return df.in_service.values.astype(bool) if "in_service" in df else np.ones(len(df), bool)


def check_tables(net) -> None:
    """Element tables that describe a network: `DataError` naming `net.<table>[<row>].<column>=<value>`.

    Bus references are integer columns and every one (all rows) a row of `net.bus`,
    `in_service`, `closed` and `slack` boolean columns, every switch `element` a row of the
    table its `et` names; on in-service rows the parameters of `RANGES` are finite and
    in range (NaN anywhere in them is an error; line capacitance and conductance are not
    negative), a line's impedance `r + jx` is not zero and a transformer's `vkr_percent` is
    at most its `vk_percent` in magnitude. (Negative line resistances and reactances, shunt
    conductances, short-circuit voltages and magnetizing currents are accepted: network
    equivalents such as `case145`, `case11_iwamoto`, `case1888rte` and MATPOWER conversions
    such as `case118` have them; so are negative transformer resistances, `case3120sp`.)
    """
    buses = set(net.bus.index)
    span = f"{len(buses)} buses, indices {min(buses)}..{max(buses)}" if buses else "no buses"
    for table in ("bus", *BUS_COLUMNS):
        df = net.get(table)
        if df is None or not len(df):
            continue
        for col in ("in_service", *BOOL_COLUMNS.get(table, ())):
            if col in df and df[col].dtype != bool:
                raise DataError(f"net.{table}.{col}: expected a column of true/false, got dtype {df[col].dtype} "
                                f"(net.{table}[{df.index[0]}].{col}={df[col].iloc[0]!r})")
        for col in BUS_COLUMNS.get(table, ()):
            if col in df and df[col].dtype.kind not in "iu":
                raise DataError(f"net.{table}.{col}: expected integer bus indices, got dtype {df[col].dtype} "
                                f"(net.{table}[{df.index[0]}].{col}={df[col].iloc[0]!r})")
            bad = df.index[~df[col].isin(buses)] if col in df else []
            if len(bad):
                raise DataError(f"net.{table}[{bad[0]}].{col}={df.at[bad[0], col]}: not a bus of the net ({span})")
    sw = net.get("switch")
    if sw is not None and len(sw):
        for et, target in SWITCH_ELEMENTS.items():
            rows = sw.index[(sw.et == et).values & ~sw.element.isin(set(net[target].index)).values]
            if len(rows):
                raise DataError(f"net.switch[{rows[0]}].element={sw.at[rows[0], 'element']}: not a row of "
                                f"net.{target} (switch et={et!r})")
    for table, col, test, allowed in RANGES:
        df = net.get(table)
        if df is None or not len(df) or col not in df:
            continue
        v = df[col].astype(float).values
        bad = df.index[_in_service(df) & ~(np.isfinite(v) & test(np.where(np.isfinite(v), v, 0.0)))]
        if len(bad):
            raise DataError(f"net.{table}[{bad[0]}].{col}={df.at[bad[0], col]}: expected a finite number {allowed}")
    line = net.get("line")
    if line is not None and len(line):
        zero = line.index[_in_service(line) & (line.r_ohm_per_km.values == 0) & (line.x_ohm_per_km.values == 0)]
        if len(zero):
            raise DataError(f"net.line[{zero[0]}]: r_ohm_per_km = x_ohm_per_km = 0, a zero impedance (use a bus-bus switch)")
    trafo = net.get("trafo")
    if trafo is not None and len(trafo):
        bad = trafo.index[_in_service(trafo) & (np.abs(trafo.vkr_percent.values) > np.abs(trafo.vk_percent.values))]
        if len(bad):
            raise DataError(f"net.trafo[{bad[0]}].vkr_percent={trafo.at[bad[0], 'vkr_percent']}: expected at most "
                            f"|vk_percent| ({trafo.at[bad[0], 'vk_percent']}) in magnitude")


@dataclasses.dataclass(frozen=True)
class NetMap:
    """How grid arrays map back to the net's tables (host-side, not a pytree).

    `bus_lookup[i]` is the grid bus of the i-th row of `net.bus`; `branch_rows[kind]` the
    grid branch rows of each row of that table (trafo3w: `[n, 3]`, hv/mv/lv windings);
    `*_index` the net's index values in grid row order.
    """

    bus_index: np.ndarray
    bus_lookup: np.ndarray
    branch_rows: dict
    load_index: np.ndarray
    sgen_index: np.ndarray
    storage_index: np.ndarray
    ward_index: np.ndarray
    gen_index: np.ndarray
    ext_grid_index: np.ndarray


def _ppc_of(net):
    """Run pandapower's model builder on a copy of `net`; return (net copy, ppc)."""
    from pandapower.auxiliary import _init_runpp_options
    from pandapower.pd2ppc import _pd2ppc

    net = copy.deepcopy(net)
    _init_runpp_options(
        net, algorithm="nr", calculate_voltage_angles=True, init="auto", max_iteration="auto",
        tolerance_mva=1e-8, trafo_model="t", trafo_loading="current", enforce_p_lims=False,
        enforce_q_lims=False, check_connectivity=True, voltage_depend_loads=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppc, _ = _pd2ppc(net)
    return net, ppc


def _check_supported(net) -> None:
    if not isinstance(net, pandapowerNet):
        raise DataError(f"from_pandapower: expected a pandapower net (pandapower.auxiliary.pandapowerNet), got "
                        f"{type(net).__module__}.{type(net).__qualname__}; load one with pandapower.from_json(path) "
                        "or pandapower.networks.<case>()")
    if len(net.bus) == 0:
        raise UnsupportedElementError("net has no buses")
    check_tables(net)
    for table in UNSUPPORTED_TABLES:
        df = net.get(table)
        if df is None or len(df) == 0:
            continue
        active = df[df["in_service"]] if "in_service" in df else df
        if len(active):
            raise UnsupportedElementError(
                f"net.{table}[{active.index[0]}]: element type '{table}' is not supported by pgjax "
                f"({len(active)} in service); remove it or set in_service=False")
    for col in ZIP_COLUMNS:
        if col in net.load and len(net.load):
            zip_rows = net.load.index[(net.load[col].fillna(0) != 0) & net.load.in_service]
            if len(zip_rows):
                raise UnsupportedElementError(
                    f"net.load[{zip_rows[0]}].{col}={net.load.at[zip_rows[0], col]}: voltage-dependent "
                    "loads are not supported (pgjax models constant-power loads)")
    if not (len(net.ext_grid) and net.ext_grid.in_service.any()) and not (
            len(net.gen) and "slack" in net.gen and (net.gen.slack & net.gen.in_service).any()):
        raise UnsupportedElementError("net has no slack: no in-service ext_grid (or gen with slack=True)")
    if len(net.gen) and "slack" in net.gen and (net.gen.slack & net.gen.in_service).any():
        raise UnsupportedElementError(
            f"net.gen[{net.gen.index[net.gen.slack][0]}].slack=True: model the slack as an ext_grid")
    for table, cols in {"load": ("p_mw", "q_mvar", "scaling"), "sgen": ("p_mw", "q_mvar", "scaling"),
                        "storage": ("p_mw", "q_mvar", "scaling"), "gen": ("p_mw", "vm_pu", "scaling"),
                        "ext_grid": ("vm_pu", "va_degree"), "ward": ("ps_mw", "qs_mvar", "pz_mw", "qz_mvar"),
                        "line": ("r_ohm_per_km", "x_ohm_per_km", "length_km"),
                        "trafo": ("sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent")}.items():
        df = net.get(table)
        if df is None or len(df) == 0:
            continue
        for col in cols:
            if col in df:
                bad = df.index[~np.isfinite(df[col].astype(float).values)]
                if len(bad):
                    raise DataError(f"net.{table}[{bad[0]}].{col}={df.at[bad[0], col]}: not a finite number")


def _injections(net, table: str, bus_lookup, p_col="p_mw", q_col="q_mvar") -> tuple[Injections, np.ndarray]:
    df = net[table]
    scaling = df["scaling"].values if "scaling" in df else np.ones(len(df))
    return Injections(
        bus=bus_lookup[df.bus.values].astype(np.int32),
        p_mw=(df[p_col].values * scaling).astype(np.float64),
        q_mvar=(df[q_col].values * scaling).astype(np.float64),
        in_service=df.in_service.values.astype(bool) & net.bus.in_service.loc[df.bus.values].values,
    ), df.index.values


def _branches(net, ppc) -> tuple[Branches, dict]:
    from pandapower.pypower import idx_brch as B

    br = ppc["branch"]
    lookups = net._pd2ppc_lookups["branch"]
    n = br.shape[0]
    i_max_from = np.full(n, np.inf)
    i_max_to = np.full(n, np.inf)
    rows = {}
    if "line" in lookups:
        f, t = lookups["line"]
        line = net.line
        i_max = line.max_i_ka.values * line.df.values * line.parallel.values
        i_max_from[f:t] = i_max_to[f:t] = np.where(i_max > 0, i_max, np.inf)
        rows["line"] = np.arange(f, t)
    if "trafo" in lookups:
        f, t = lookups["trafo"]
        tr = net.trafo
        rating = tr.sn_mva.values * tr.parallel.values * tr.df.values / np.sqrt(3)
        i_max_from[f:t] = rating / tr.vn_hv_kv.values
        i_max_to[f:t] = rating / tr.vn_lv_kv.values
        rows["trafo"] = np.arange(f, t)
    if "trafo3w" in lookups:
        f, t = lookups["trafo3w"]
        t3 = net.trafo3w
        k = len(t3)
        # pandapower rates each winding at its own terminal: the hv row's from end (hv bus)
        # and the mv/lv rows' to ends (mv/lv buses); the star-point ends are unrated.
        for w, side in enumerate(("hv", "mv", "lv")):
            rating = t3[f"sn_{side}_mva"].values / np.sqrt(3) / t3[f"vn_{side}_kv"].values
            (i_max_from if side == "hv" else i_max_to)[f + w * k:f + (w + 1) * k] = rating
        rows["trafo3w"] = np.arange(f, t).reshape(3, k).T
    # switch: bus-bus switches with an impedance (z_ohm > 0); xward: only out-of-service
    # ones reach this point (`_check_supported`), their rows are inactive.
    for kind in ("impedance", "switch", "xward"):
        if kind in lookups:
            f, t = lookups[kind]
            rows[kind] = np.arange(f, t)
    extra = set(lookups) - set(BRANCH_KINDS)
    if extra:
        raise UnsupportedElementError(f"branch elements {sorted(extra)} are not supported by pgjax")

    in_service = br[:, B.BR_STATUS].real > 0
    real = lambda col: np.where(in_service, br[:, col].real, 0.0)  # noqa: E731
    tap = br[:, B.TAP].real
    return Branches(
        from_bus=br[:, B.F_BUS].real.astype(np.int32),
        to_bus=br[:, B.T_BUS].real.astype(np.int32),
        r_pu=real(B.BR_R),
        x_pu=np.where(in_service, br[:, B.BR_X].real, 1.0),
        g_pu=real(B.BR_G),
        b_pu=real(B.BR_B),
        r_asym_pu=real(B.BR_R_ASYM),
        x_asym_pu=real(B.BR_X_ASYM),
        g_asym_pu=real(B.BR_G_ASYM),
        b_asym_pu=real(B.BR_B_ASYM),
        tap=np.where(tap != 0, tap, 1.0),
        shift_deg=br[:, B.SHIFT].real.astype(np.float64),
        i_max_from_ka=i_max_from,
        i_max_to_ka=i_max_to,
        in_service=in_service,
    ), rows


def from_pandapower(net, dtype=None) -> tuple[Grid, NetMap]:
    """Convert a pandapower net to a `Grid` and its `NetMap`.

    With `dtype=None` the grid holds pandapower's parameters as float64 numpy arrays (host
    data: solving it as is needs JAX's 64-bit mode, else cast it with `pgjax.grid.astype`);
    with a `dtype` it is `astype(grid, dtype)`, JAX arrays of that dtype (float64 raises
    `ValueError` unless the 64-bit mode is on, see `pgjax.precision`).

    Buses follow `net.bus` order, then pandapower's auxiliary buses (three-winding star
    points, open-switch ends); buses fused by closed bus-bus switches share one grid bus.
    Element tables follow the net's index order. Raises `UnsupportedElementError` naming
    the table, index and reason for anything pgjax does not model, and
    `pgjax.errors.DataError` (a `ValueError`, as is `UnsupportedElementError`) for bad
    element tables (`check_tables`) and non-finite parameters.
    """
    if dtype is not None:
        require_x64(f"from_pandapower(net, dtype={np.dtype(dtype).name})", dtype)
    from pandapower.pypower import idx_bus as BI

    _check_supported(net)
    built, ppc = _ppc_of(net)
    bus_lookup = built._pd2ppc_lookups["bus"]
    net_bus_lookup = bus_lookup[net.bus.index.values]
    pb = ppc["bus"]
    if not np.array_equal(pb[:, BI.BUS_I].real.astype(int), np.arange(pb.shape[0])):
        raise UnsupportedElementError("pandapower reordered its bus matrix; this network layout is not supported")

    branch, branch_rows = _branches(built, ppc)
    load, load_index = _injections(built, "load", bus_lookup)
    sgen, sgen_index = _injections(built, "sgen", bus_lookup)
    storage, storage_index = _injections(built, "storage", bus_lookup)
    ward, ward_index = _injections(built, "ward", bus_lookup, "ps_mw", "qs_mvar")
    g = built.gen
    gen = Generators(
        bus=bus_lookup[g.bus.values].astype(np.int32),
        p_mw=(g.p_mw.values * g.scaling.values).astype(np.float64),
        vm_pu=g.vm_pu.values.astype(np.float64),
        in_service=g.in_service.values.astype(bool) & built.bus.in_service.loc[g.bus.values].values,
    )
    eg = built.ext_grid
    ext_grid = ExtGrids(
        bus=bus_lookup[eg.bus.values].astype(np.int32),
        vm_pu=eg.vm_pu.values.astype(np.float64),
        va_deg=eg.va_degree.values.astype(np.float64),
        slack_weight=(eg.slack_weight.values if "slack_weight" in eg else np.ones(len(eg))).astype(np.float64),
        in_service=eg.in_service.values.astype(bool) & built.bus.in_service.loc[eg.bus.values].values,
    )
    bus_type = pb[:, BI.BUS_TYPE].real.astype(np.int32)
    energized = bus_type != NONE
    for table in (load, sgen, storage, ward, gen, ext_grid):
        table.in_service[:] &= energized[table.bus]
    grid = Grid(
        sn_mva=np.asarray(float(ppc["baseMVA"])),
        bus=Buses(
            vn_kv=pb[:, BI.BASE_KV].real.astype(np.float64),
            bus_type=bus_type,
            gs_mw=np.where(energized, pb[:, BI.GS].real, 0.0),
            bs_mvar=np.where(energized, pb[:, BI.BS].real, 0.0),
            mask=np.ones(pb.shape[0], dtype=bool),
        ),
        branch=branch, load=load, sgen=sgen, storage=storage, ward=ward, gen=gen, ext_grid=ext_grid,
    )
    netmap = NetMap(
        bus_index=net.bus.index.values, bus_lookup=net_bus_lookup, branch_rows=branch_rows,
        load_index=load_index, sgen_index=sgen_index, storage_index=storage_index,
        ward_index=ward_index, gen_index=g.index.values, ext_grid_index=eg.index.values,
    )
    _check_injections_match(grid, pb)
    return (grid if dtype is None else astype(grid, dtype)), netmap


def _check_injections_match(grid: Grid, ppc_bus) -> None:
    """pgjax's bus totals must equal pandapower's; a difference means an unmodelled feature."""
    from pandapower.pypower import idx_bus as BI

    from pgjax.powerflow import bus_injections

    with jax.enable_x64(True):  # the float64 totals, whatever the program's setting
        p_mw, q_mvar = (np.asarray(x) for x in bus_injections(grid, include_gen=False))
    energized = np.asarray(grid.bus.bus_type) != NONE
    dp = np.where(energized, p_mw + ppc_bus[:, BI.PD].real, 0.0)
    dq = np.where(energized, q_mvar + ppc_bus[:, BI.QD].real, 0.0)
    worst = int(np.argmax(np.abs(dp) + np.abs(dq)))
    if abs(dp[worst]) + abs(dq[worst]) > 1e-9 * max(1.0, float(np.abs(ppc_bus[:, BI.PD]).max())):
        raise UnsupportedElementError(
            f"grid bus {worst}: element injections differ from pandapower's by "
            f"{dp[worst]:.3g} MW / {dq[worst]:.3g} Mvar; the net uses a feature pgjax does not model")


def to_pandapower(net, grid: Grid, netmap: NetMap):
    """Return a copy of `net` with the grid's injection setpoints written back.

    Writes `p_mw`/`q_mvar` of loads, static generators and storage, `ps_mw`/`qs_mvar` of
    wards, `p_mw`/`vm_pu` of generators and `vm_pu`/`va_degree` of external grids, with
    `scaling` set to 1 (the grid holds scaled values). `grid` must be unbatched; padded
    rows beyond the net's tables are ignored.
    """
    net = copy.deepcopy(net)
    for table, tab, index, (p_col, q_col) in (
            ("load", grid.load, netmap.load_index, ("p_mw", "q_mvar")),
            ("sgen", grid.sgen, netmap.sgen_index, ("p_mw", "q_mvar")),
            ("storage", grid.storage, netmap.storage_index, ("p_mw", "q_mvar")),
            ("ward", grid.ward, netmap.ward_index, ("ps_mw", "qs_mvar"))):
        n = len(index)
        if n:
            net[table].loc[index, p_col] = np.asarray(tab.p_mw)[:n]
            net[table].loc[index, q_col] = np.asarray(tab.q_mvar)[:n]
            if "scaling" in net[table]:
                net[table].loc[index, "scaling"] = 1.0
    n = len(netmap.gen_index)
    if n:
        net.gen.loc[netmap.gen_index, "p_mw"] = np.asarray(grid.gen.p_mw)[:n]
        net.gen.loc[netmap.gen_index, "vm_pu"] = np.asarray(grid.gen.vm_pu)[:n]
        net.gen.loc[netmap.gen_index, "scaling"] = 1.0
    n = len(netmap.ext_grid_index)
    net.ext_grid.loc[netmap.ext_grid_index, "vm_pu"] = np.asarray(grid.ext_grid.vm_pu)[:n]
    net.ext_grid.loc[netmap.ext_grid_index, "va_degree"] = np.asarray(grid.ext_grid.va_deg)[:n]
    return net


def bus_results(result, netmap: NetMap) -> dict[str, np.ndarray]:
    """Per `net.bus` row: `vm_pu`, `va_deg` from a `PowerFlowResult` (NaN where isolated, as pandapower)."""
    vm = np.asarray(result.vm_pu)[netmap.bus_lookup]
    va = np.asarray(result.va_deg)[netmap.bus_lookup]
    energized = np.asarray(result.energized)[netmap.bus_lookup]
    return {"vm_pu": np.where(energized, vm, np.nan), "va_deg": np.where(energized, va, np.nan)}

"""OpenDSS circuits to power-grid-model's asymmetric input, where PGM can represent them.

power-grid-model (PGM) holds a three-phase network in sequence terms: every node has
phases a, b and c, a `line` is three-phase with positive- and zero-sequence parameters, a
`transformer` is three-phase with one tap for all phases, an `asym_load` draws per phase
from phase to ground (wye). An OpenDSS circuit maps onto that exactly when its lines are
three-phase and transposed in the sense that their phase impedance matrix has one self and
one mutual value (then `z1 = Zs - Zm`, `z0 = Zs + 2 Zm` is OpenDSS's own matrix), its
transformers are three-phase two-winding at nominal tap, and its loads are wye. Anything
else raises `pgjax.errors.InputError` naming the element and what PGM lacks for it, so a
comparison is never made on an approximated network. (The European LV test feeder maps;
IEEE 13 / 34 / 123 do not: single- and two-phase laterals, single-phase regulators, delta
loads. Their untransposed three-phase lines and capacitors are not converted either, though
PGM's `asym_line` and `shunt` could take them: no shipped feeder would become representable.)

The circuit is read through OpenDSS's API (`pgjax.converters.opendss.engine`), as compiled
and frozen there (`opendss.pin_taps`). Units: PGM's volts, amperes, ohms, farads, watts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pgjax.converters.opendss import LOAD_EXPONENTS, yprim
from pgjax.errors import InputError

IGNORED_CLASSES = ("energymeter", "monitor", "regcontrol", "capcontrol")  # controls are off once taps are pinned
# OpenDSS load model -> PGM LoadGenType (const_power 0, const_impedance 1, const_current 2)
LOAD_TYPES = {1: 0, 2: 1, 5: 2}


@dataclasses.dataclass(frozen=True)
class PgmFeeder:
    """A PGM input dataset and the names of its entries."""

    input_data: dict  # PGM component name -> structured array
    bus_names: tuple  # [n_node] OpenDSS bus of each PGM node (node id = index)
    load_names: tuple  # [n_load] OpenDSS load element of each asym_load (name without "load.")
    load_phase: np.ndarray  # [n_load, 3]: share of each load element's power drawn on phases a, b, c
    load_scale: np.ndarray  # [n_load, 2] W per kW and var per kvar (model exponent at the node base)


def _array(component, rows):
    from power_grid_model import initialize_array

    arr = initialize_array("input", component, len(rows))
    for k, row in enumerate(rows):
        for key, value in row.items():
            arr[key][k] = value
    return arr


def _phases(dss, name) -> list[list[int]]:
    """Node order of each terminal of the active element."""
    order, n = list(dss.CktElement.NodeOrder()), dss.CktElement.NumConductors()
    return [order[t * n:(t + 1) * n] for t in range(dss.CktElement.NumTerminals())]


def _sequence(z: np.ndarray, name: str) -> tuple[complex, complex]:
    """`(z1, z0)` of a 3x3 matrix with one self and one mutual value, else InputError."""
    zs, zm = np.mean(np.diag(z)), np.mean(z[~np.eye(3, dtype=bool)])
    if np.max(np.abs(z - (zm + (zs - zm) * np.eye(3)))) > 1e-9 * np.max(np.abs(z)):
        raise InputError("untransposed lines (unequal self or mutual impedances: PGM's line holds sequence values; "
                         "its asym_line would take the phase matrix, not converted here)")
    return zs - zm, zs + 2 * zm


def _line(dss, name, bus_id) -> dict:
    if dss.Lines.Phases() != 3 or _phases(dss, name) != [[1, 2, 3]] * 2:
        raise InputError(f"{dss.Lines.Phases()}-phase lines (PGM's lines are three-phase between three-phase "
                         "nodes)")
    length = dss.Lines.Length()
    z = (np.reshape(dss.Lines.RMatrix(), (3, 3)) + 1j * np.reshape(dss.Lines.XMatrix(), (3, 3))) * length
    z1, z0 = _sequence(z, name)
    c = np.reshape(dss.Lines.CMatrix(), (3, 3)) * length * 1e-9
    c1, c0 = _sequence(c.astype(complex), name)
    buses = [b.split(".")[0].lower() for b in dss.CktElement.BusNames()]
    return {"from_node": bus_id[buses[0]], "to_node": bus_id[buses[1]], "from_status": 1, "to_status": 1,
            "r1": z1.real, "x1": z1.imag, "c1": c1.real, "tan1": 0.0, "r0": z0.real, "x0": z0.imag, "c0": c0.real,
            "tan0": 0.0, "i_n": 1e6}


def _transformer(dss, name, bus_id) -> dict:
    from power_grid_model import WindingType

    t = dss.Transformers
    if dss.CktElement.NumPhases() != 3 or t.NumWindings() != 2:
        raise InputError(f"{dss.CktElement.NumPhases()}-phase {t.NumWindings()}-winding transformers, e.g. "
                         "single-phase regulators (PGM's transformer is three-phase two-winding, one tap for all "
                         "phases)")
    w = []
    for k in (1, 2):
        t.Wdg(k)
        if t.Tap() != 1.0:
            raise InputError("transformers at an off-nominal tap (not converted)")
        w.append((t.kV() * 1e3, t.kVA() * 1e3, t.IsDelta(), t.R() / 100))
    if any(p[3:] not in ([], [0]) for p in _phases(dss, name)):
        raise InputError("transformers with a wye neutral not solidly grounded (not converted)")
    r_pu, x_pu = w[0][3] + w[1][3], t.Xhl() / 100
    kind = [WindingType.delta if d else WindingType.wye_n for _, _, d, _ in w]
    clock = 0 if kind[0] == kind[1] else 1  # OpenDSS (ANSI): the low side lags the high side by 30 degrees
    buses = [b.split(".")[0].lower() for b in dss.CktElement.BusNames()]
    return {"from_node": bus_id[buses[0]], "to_node": bus_id[buses[1]], "from_status": 1, "to_status": 1,
            "u1": w[0][0], "u2": w[1][0], "sn": w[0][1], "uk": np.hypot(r_pu, x_pu), "pk": r_pu * w[0][1],
            "i0": 0.0, "p0": 0.0, "winding_from": kind[0], "winding_to": kind[1], "clock": clock, "tap_side": 0,
            "tap_pos": 0, "tap_min": 0, "tap_max": 0, "tap_nom": 0, "tap_size": 0.0,
            "r_grounding_from": 0.0, "x_grounding_from": 0.0, "r_grounding_to": 0.0, "x_grounding_to": 0.0}


def _source(dss, bus_id, u_rated) -> dict:
    dss.Vsources.First()
    name = f"vsource.{dss.Vsources.Name()}"
    dss.Circuit.SetActiveElement(name)
    z1, z0 = _sequence(np.linalg.inv(yprim(dss)[:3, :3]), name)
    bus = dss.CktElement.BusNames()[0].split(".")[0].lower()
    return {"node": bus_id[bus], "status": 1, "u_ref": dss.Vsources.PU(),
            "u_ref_angle": np.deg2rad(dss.Vsources.AngleDeg()), "sk": u_rated[bus_id[bus]] ** 2 / abs(z1),
            "rx_ratio": z1.real / z1.imag, "z01_ratio": abs(z0) / abs(z1)}


def _load(dss, name, bus_id, bus_kv) -> tuple[dict, int, tuple]:
    model, (order,) = dss.Loads.Model(), _phases(dss, name)
    nph = dss.CktElement.NumPhases()
    if dss.Loads.IsDelta() or len(order) != nph + 1 or order[-1] != 0:
        raise InputError("delta or phase-to-phase loads (PGM's asym_load draws phase to ground)")
    if model not in LOAD_TYPES:
        raise InputError(f"loads of model {model} (PGM has constant power, impedance and current: OpenDSS models "
                         "1, 2, 5)")
    bus = dss.CktElement.BusNames()[0].split(".")[0].lower()
    ratio = bus_kv[bus] / dss.Loads.kV()
    exp_p, exp_q = LOAD_EXPONENTS[model]
    row = {"node": bus_id[bus], "status": 1, "type": LOAD_TYPES[model]}
    share = np.zeros(3)
    share[np.array(order[:-1]) - 1] = 1 / nph
    return row, share, (1e3 * ratio ** exp_p, 1e3 * ratio ** exp_q)


def _convert(dss, name, convert, *args):
    """`convert(dss, name, *args)` with `name` active, or the reason of its `InputError`."""
    cls, short = name.split(".", 1)
    dss.Circuit.SetActiveElement(name)
    {"line": dss.Lines, "transformer": dss.Transformers, "load": dss.Loads}[cls.lower()].Name(short)
    try:
        return convert(dss, name, *args), None
    except InputError as err:
        return None, str(err)


def from_engine(dss) -> PgmFeeder:
    """The circuit compiled in the OpenDSS engine `dss` as PGM input (see the module docstring).

    Raises one `InputError` naming every element PGM cannot represent exactly, and why.
    """
    buses = [b.lower() for b in dss.Circuit.AllBusNames()]
    bus_id = {b: k for k, b in enumerate(buses)}
    bus_kv = {}
    for b in buses:
        dss.Circuit.SetActiveBus(b)
        bus_kv[b] = dss.Bus.kVBase()
    u_rated = np.array([bus_kv[b] * np.sqrt(3) * 1e3 for b in buses])
    lines, trafos, loads, errors = [], [], [], {}
    for name in dss.Circuit.AllElementNames():
        cls = name.split(".")[0].lower()
        if cls in ("line", "transformer", "load"):
            row, err = _convert(dss, name, {"line": _line, "transformer": _transformer, "load": _load}[cls],
                                bus_id, *((bus_kv,) if cls == "load" else ()))
            if err:
                errors.setdefault(err, []).append(name)
            {"line": lines, "transformer": trafos, "load": loads}[cls].append((name, row))
        elif cls not in ("vsource", *IGNORED_CLASSES):
            errors.setdefault(f"{cls} elements (not converted)", []).append(name)
    if errors:
        raise InputError(f"OpenDSS circuit '{dss.Circuit.Name()}': elements power-grid-model cannot represent "
                         "exactly: " + "; ".join(f"{len(v)} {k}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
                                                 for k, v in errors.items()))
    source = _source(dss, bus_id, u_rated)
    n_node = len(buses)
    ids = iter(range(n_node, n_node + len(lines) + len(trafos) + 1 + len(loads)))
    tag = lambda rows: [{"id": next(ids), **r} for r in rows]  # noqa: E731
    data = {"node": _array("node", [{"id": k, "u_rated": u} for k, u in enumerate(u_rated)]),
            "line": _array("line", tag([r for _, r in lines])),
            "transformer": _array("transformer", tag([r for _, r in trafos])),
            "source": _array("source", tag([source])),
            "asym_load": _array("asym_load", tag([r[0] for _, r in loads]))}
    share = np.array([r[1] for _, r in loads]).reshape(-1, 3)
    scale = np.array([r[2] for _, r in loads]).reshape(-1, 2)
    return PgmFeeder(data, tuple(buses), tuple(n.split(".", 1)[1].lower() for n, _ in loads), share, scale)


def load_update(feeder: PgmFeeder, p_kw, q_kvar) -> dict:
    """PGM batch update `{"asym_load": [batch, n_load]}` setting each load element's kW and
    kvar at its OpenDSS nominal voltage, `p_kw`, `q_kvar` `[batch, n_load]`."""
    from power_grid_model import initialize_array

    p_kw, q_kvar = np.atleast_2d(p_kw), np.atleast_2d(q_kvar)
    upd = initialize_array("update", "asym_load", p_kw.shape)
    upd["id"] = feeder.input_data["asym_load"]["id"]
    upd["status"] = 1
    upd["p_specified"] = (p_kw * feeder.load_scale[:, 0])[..., None] * feeder.load_phase
    upd["q_specified"] = (q_kvar * feeder.load_scale[:, 1])[..., None] * feeder.load_phase
    return {"asym_load": upd}


def node_voltages(feeder: PgmFeeder, output, node_names) -> np.ndarray:
    """Complex phase-to-ground voltages `[batch, n]` (V) of PGM's batch `output` at the
    OpenDSS nodes `node_names` (`bus.phase`, e.g. a pgjax netmap's)."""
    node = output["node"]
    v = node["u"] * np.exp(1j * node["u_angle"])  # [batch, n_pgm_node, 3]
    index = {b: k for k, b in enumerate(feeder.bus_names)}
    bus = np.array([index[n.split(".")[0]] for n in node_names])
    phase = np.array([int(n.split(".")[1]) - 1 for n in node_names])
    return v[:, bus, phase]

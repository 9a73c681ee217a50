"""OpenDSS circuits to `pgjax.grid3ph.Grid3ph`.

The .dss file is compiled by OpenDSS itself (DSS C-API through `opendssdirect.py`), and every
element is read through its API, never by parsing text:

- power-delivery elements (lines, switches, transformers and regulators, capacitors,
  reactors) by their primitive admittance matrix `CktElement.YPrim` (siemens, the matrix
  OpenDSS puts in its own system matrix: line codes or geometry, Kron reduction, winding
  connections, taps, anti-float shunts are all OpenDSS's);
- the `Vsource` as its admittance `YPrim` behind the EMF it holds (`basekv`, `pu`, `angle`);
- loads by their kW / kvar, kV, connection and model (1, 2, 3, 4, 5), one branch per phase.

Transformer taps are read as they stand in the engine: run `solve` (and pin the taps, see
`pin_taps`) through `commands` to take the taps OpenDSS's regulator controls reach.
Elements pgjax does not model (generators, PV systems, storage, current sources, disabled
or open terminals ...) raise `pgjax.errors.InputError` naming them; a file OpenDSS cannot
compile raises `pgjax.errors.DataError` with OpenDSS's message (file and line).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pgjax.errors import DataError, InputError
from pgjax.grid3ph import KIND_NAMES, OTHER, Elements3ph, Grid3ph, Loads3ph, Nodes3ph, Sources3ph, astype

S_BASE_KVA = 1000.0
# Element classes read; anything else in `Circuit.AllElementNames` is refused.
PD_CLASSES = tuple(KIND_NAMES)
# Control and meter elements that do not take part in a snapshot solve once taps are pinned.
IGNORED_CLASSES = ("regcontrol", "capcontrol", "energymeter", "monitor")
# OpenDSS load model -> (exp_p, exp_q); model 4 (CVR) reads cvrwatts / cvrvars.
LOAD_EXPONENTS = {1: (0.0, 0.0), 2: (2.0, 2.0), 3: (0.0, 2.0), 5: (1.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class NetMap3ph:
    """Names of the converted arrays' entries, in their axis order."""

    node_names: tuple  # [n_node] OpenDSS `bus.phase`, lower case
    elem_names: tuple  # [n_elem] OpenDSS `class.name`
    load_names: tuple  # [n_load] load element name of each branch
    load_phase: np.ndarray  # [n_load] int: branch number within its load element
    source_names: tuple  # [n_src]


def engine():
    """The OpenDSS engine (opendssdirect), editor off and no change of the working directory."""
    try:
        import opendssdirect as dss
    except ImportError as err:  # pragma: no cover - the threephase extra
        raise ImportError("pgjax.converters.opendss needs OpenDSS: pip install 'pgjax[threephase]'") from err
    dss.Basic.AllowEditor(False)
    dss.Basic.AllowChangeDir(False)
    return dss


def compile_file(path, commands=()) -> object:
    """Clear the engine, compile `path` and run `commands` (OpenDSS text); return the engine."""
    dss = engine()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .dss file")
    dss.Text.Command("clear")
    for cmd in (f'compile "{path.resolve()}"', *commands):
        try:
            dss.Text.Command(cmd)
        except Exception as err:  # DSSException: OpenDSS's message names the file and line
            raise DataError(f"{path}: OpenDSS refused '{cmd}': {err}") from err
    return dss


def pin_taps(dss) -> dict:
    """Solve with controls, then freeze: regulator controls off and every transformer tap at
    the value reached, loads' vminpu / vmaxpu widened (0.5 / 2.0) so none switches model.
    Return `{transformer: [tap per winding]}`."""
    dss.Text.Command("batchedit load..* vminpu=0.5 vmaxpu=2.0 vlowpu=0.01")
    dss.Text.Command("set tolerance=1e-10 maxiterations=1000 maxcontroliter=1000")
    dss.Text.Command("solve")
    taps = {}
    for name in dss.Transformers.AllNames():
        dss.Transformers.Name(name)
        taps[name] = []
        for w in range(1, dss.Transformers.NumWindings() + 1):
            dss.Transformers.Wdg(w)
            taps[name].append(dss.Transformers.Tap())
    dss.Text.Command("set controlmode=off")
    for name, wtaps in taps.items():
        for w, tap in enumerate(wtaps, 1):
            dss.Text.Command(f"edit transformer.{name} wdg={w} tap={tap!r}")
    dss.Text.Command("solve")
    return taps


def _check_elements(dss) -> list[str]:
    names = list(dss.Circuit.AllElementNames())
    bad = [n for n in names if n.split(".")[0].lower() not in (*PD_CLASSES, *IGNORED_CLASSES, "load", "vsource")]
    if bad:
        raise InputError(f"OpenDSS circuit '{dss.Circuit.Name()}': elements pgjax does not model: {bad[:10]}"
                         + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
                         + f"; supported: {('vsource', 'load', *PD_CLASSES)}")
    return names


def yprim(dss) -> np.ndarray:
    """The active element's primitive admittance matrix `[n_cond, n_cond]`, complex siemens."""
    y = np.asarray(dss.CktElement.YPrim(), float)
    n = int(round(np.sqrt(y.size // 2)))
    return (y[0::2] + 1j * y[1::2]).reshape(n, n)


def _conductors(dss, node_index, bus_kv, name) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node index, base kV and terminal of each conductor of the active element."""
    order = list(dss.CktElement.NodeOrder())
    buses = [b.split(".")[0].lower() for b in dss.CktElement.BusNames()]
    ncond = dss.CktElement.NumConductors()
    idx, kv, term = [], [], []
    for k, node in enumerate(order):
        t = k // ncond
        bus = buses[t]
        if node == 0:
            idx.append(-1)
        elif f"{bus}.{node}" in node_index:
            idx.append(node_index[f"{bus}.{node}"])
        else:
            raise InputError(f"OpenDSS element '{name}': conductor {k} on '{bus}.{node}', a node OpenDSS does not "
                             f"list (not energized?)")
        kv.append(bus_kv[bus])
        term.append(t)
    return np.array(idx), np.array(kv), np.array(term)


def _elements(dss, names, node_index, bus_kv):
    blocks = []
    for name in names:
        cls = name.split(".")[0].lower()
        if cls not in PD_CLASSES:
            continue
        dss.Circuit.SetActiveElement(name)
        if not dss.CktElement.Enabled():
            continue
        idx, kv, term = _conductors(dss, node_index, bus_kv, name)
        if any(dss.CktElement.IsOpen(t, 0) for t in range(1, dss.CktElement.NumTerminals() + 1)):
            raise InputError(f"OpenDSS element '{name}': an open terminal; pgjax models closed elements only")
        blocks.append((name, KIND_NAMES.get(cls, OTHER), yprim(dss), idx, kv, term))
    return blocks


def _loads(dss, node_index, bus_kv):
    rows, names, phase = [], [], []
    if dss.Loads.Count() == 0:
        return rows, names, phase
    dss.Loads.First()
    while True:
        name = f"load.{dss.Loads.Name()}"
        dss.Circuit.SetActiveElement(name)
        if dss.CktElement.Enabled():
            rows += _load_branches(dss, name, node_index, bus_kv)
            names += [name] * (len(rows) - len(names))
            phase += list(range(len(rows) - len(phase)))
        if not dss.Loads.Next():
            break
    return rows, names, phase


def _load_branches(dss, name, node_index, bus_kv) -> list[tuple]:
    model = dss.Loads.Model()
    if model == 4:
        exps = (dss.Loads.CVRwatts(), dss.Loads.CVRvars())
    elif model in LOAD_EXPONENTS:
        exps = LOAD_EXPONENTS[model]
    else:
        raise InputError(f"OpenDSS element '{name}': load model {model} is not modelled; use 1, 2, 3, 4 or 5")
    idx, _, _ = _conductors(dss, node_index, bus_kv, name)
    nph, delta, kv = dss.CktElement.NumPhases(), dss.Loads.IsDelta(), dss.Loads.kV()
    vnom = kv if (delta or nph == 1) else kv / np.sqrt(3.0)
    p, q = dss.Loads.kW() / nph, dss.Loads.kvar() / nph
    if delta:
        pairs = [(k, (k + 1) % len(idx)) for k in range(nph)]
    else:
        pairs = [(k, nph) for k in range(nph)]
    return [(idx[a], idx[b], p, q, vnom, *exps) for a, b in pairs]


def _source(dss, node_index, bus_kv):
    if dss.Vsources.Count() != 1:
        raise InputError(f"OpenDSS circuit: {dss.Vsources.Count()} Vsources; pgjax models exactly one")
    dss.Vsources.First()
    name = f"vsource.{dss.Vsources.Name()}"
    dss.Circuit.SetActiveElement(name)
    idx, kv, _ = _conductors(dss, node_index, bus_kv, name)
    nph = dss.CktElement.NumPhases()
    if np.any(idx[nph:] >= 0):
        raise InputError(f"OpenDSS element '{name}': bus2 is not grounded; pgjax models a grounded source")
    y = yprim(dss)[:nph, :nph]
    vmag = dss.Vsources.BasekV() * dss.Vsources.PU() / (np.sqrt(3.0) if nph > 1 else 1.0)
    ang = np.deg2rad(dss.Vsources.AngleDeg() - 360.0 / max(nph, 3) * np.arange(nph))
    e_kv = vmag * np.exp(1j * ang)
    return name, y, idx[:nph], kv[:nph], e_kv


def _per_unit(y_s, kv_i, kv_j):
    return y_s * np.outer(kv_i, kv_j) * 1e3 / S_BASE_KVA


def _nodes(dss):
    node_names = [n.lower() for n in dss.Circuit.AllNodeNames()]
    node_index = {n: i for i, n in enumerate(node_names)}
    bus_kv = {}
    for bus in dss.Circuit.AllBusNames():
        dss.Circuit.SetActiveBus(bus)
        kv = dss.Bus.kVBase()
        bus_kv[bus.lower()] = kv if kv > 0 else 1.0
    vbase = np.array([bus_kv[n.split(".")[0]] for n in node_names])
    return node_names, node_index, bus_kv, vbase


def from_opendss(path, commands=(), *, dtype=np.float64) -> tuple[Grid3ph, NetMap3ph]:
    """Compile the OpenDSS file `path` (then run `commands`) and convert the circuit.

    Returns `(grid, netmap)`: a `Grid3ph` of numpy arrays of `dtype` (float64 solves need
    JAX's 64-bit mode; a float32 grid keeps what rounding dropped of the admittances,
    `pgjax.grid3ph.astype`) and a `NetMap3ph` whose `node_names` are OpenDSS's `bus.phase` names
    (lower case) in the order of the node axis. Ends with the circuit still compiled in the
    engine (`engine()`), e.g. for a comparison.
    """
    dss = compile_file(path, commands)
    return from_engine(dss, dtype=dtype)


def from_engine(dss, *, dtype=np.float64) -> tuple[Grid3ph, NetMap3ph]:
    """Convert the circuit compiled in the OpenDSS engine `dss` (see `from_opendss`)."""
    names = _check_elements(dss)
    if dss.Circuit.NumNodes() == 0:
        try:  # a circuit never solved: let OpenDSS build its buses and nodes
            dss.Text.Command("calcvoltagebases")
        except Exception as err:
            raise DataError(f"OpenDSS circuit '{dss.Circuit.Name()}': could not initialise it: {err}") from err
    node_names, node_index, bus_kv, vbase = _nodes(dss)
    n = len(node_names)
    blocks = _elements(dss, names, node_index, bus_kv)
    src_name, ys, s_idx, s_kv, e_kv = _source(dss, node_index, bus_kv)
    loads, load_names, load_phase = _loads(dss, node_index, bus_kv)
    m = max(len(b[3]) for b in blocks)
    y = np.zeros((len(blocks), m, m), complex)
    node = np.full((len(blocks), m), n)
    kv = np.ones((len(blocks), m))
    term = np.full((len(blocks), m), -1)
    for i, (_, _, yp, idx, ckv, t) in enumerate(blocks):
        c = len(idx)
        y[i, :c, :c] = _per_unit(yp, ckv, ckv)
        node[i, :c] = np.where(idx < 0, n, idx)
        kv[i, :c], term[i, :c] = ckv, t
    elem = Elements3ph(y.real, y.imag, np.zeros(y.shape), np.zeros(y.shape), node, kv, term,
                       np.array([b[1] for b in blocks]), np.ones(len(blocks), bool))
    ys_pu = _per_unit(ys, s_kv, s_kv)[None]
    e_pu = (e_kv / s_kv)[None]
    source = Sources3ph(ys_pu.real, ys_pu.imag, np.where(s_idx < 0, n, s_idx)[None], e_pu.real, e_pu.imag,
                        np.ones(1, bool))
    cols = list(zip(*loads)) if loads else [[]] * 7
    la, lb = (np.array([n if i < 0 else i for i in c], int) for c in cols[:2])
    load = Loads3ph(la, lb, *(np.array(c, float) for c in cols[2:]), np.ones(len(loads), bool))
    nodes = Nodes3ph(vbase, np.ones(n, bool), np.zeros(n, bool), np.zeros(n), np.zeros(n))
    grid = astype(Grid3ph(nodes, elem, source, load, np.asarray(S_BASE_KVA)), dtype)
    netmap = NetMap3ph(tuple(node_names), tuple(b[0].lower() for b in blocks), tuple(load_names),
                       np.array(load_phase, int), (src_name,))
    return grid, netmap

"""The three-phase power flow against OpenDSS, feeder by feeder (what `pgjax verify
--three-phase` prints and the tests assert).

Each shipped feeder (`FEEDERS`, OpenDSS models of the IEEE test feeders in
`pgjax/data/opendss`) is compiled by OpenDSS, solved with its regulator controls on at a
tolerance of 1e-12, then frozen (`pgjax.converters.opendss.pin_taps`: taps pinned where the
controls left them, controls off, load vminpu / vmaxpu widened so no load switches model)
and solved again as the reference. pgjax converts the same circuit and solves it; the
comparison covers every node's |V| (p.u. of its base) and angle, every element
conductor's current, the total losses and the source power.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from pgjax.converters import opendss
from pgjax.powerflow import threephase

DATA = Path(__file__).resolve().parent / "data" / "opendss"
# name -> master file under DATA
FEEDERS = {
    "4bus_yy": "4Bus-YY-Bal/4Bus-YY-Bal.DSS",
    "4bus_dy": "4Bus-DY-Bal/4Bus-DY-Bal.DSS",
    "4bus_grdyd": "4Bus-GrdYD-Bal/4Bus-GrdYD-Bal.DSS",
    "4bus_oyod": "4Bus-OYOD-UnBal/4bus-OYOD-UnBal.dss",
    "ieee13": "13Bus/IEEE13Nodeckt.dss",
    "ieee34": "34Bus/ieee34Mod1.dss",
    "ieee34_mod2": "34Bus/ieee34Mod2.dss",
    "ieee123": "123Bus/IEEE123Master.dss",
    "european_lv": "LVTestCase/Master.dss",
}
# Largest differences accepted (float64): |V| in p.u., angle in degrees, conductor currents
# relative to the feeder's largest (switches carrying ~0 A differ by micro-amperes: OpenDSS's
# own current through a 1e-3 ohm switch is only as exact as its 1e-10 voltage tolerance),
# losses and source power relative.
TARGETS = {"dvm_pu": 1e-6, "dva_deg": 1e-4, "di_rel": 1e-5, "loss_rel": 1e-6, "source_rel": 1e-6}
MAX_ITER = 500  # the heavily loaded 4-bus cases take ~45 fixed-point iterations at tol 1e-12


def reference(name: str, dtype=np.float64):
    """Compile and freeze feeder `name` in OpenDSS; return `(grid, netmap, ref)` where `ref`
    holds OpenDSS's node voltages `v` `[n_node]` (complex, V), element currents `i`
    (per element, complex A), `loss_kva` and `source_kva` (complex, power delivered)."""
    return reference_file(DATA / FEEDERS[name], dtype)


def reference_file(path, dtype=np.float64):
    """`reference` for any OpenDSS master file `path`."""
    dss = opendss.compile_file(path)
    opendss.pin_taps(dss)
    if not dss.Solution.Converged():
        raise RuntimeError(f"OpenDSS did not converge on {path}")
    grid, netmap = opendss.from_engine(dss, dtype=dtype)
    v = np.asarray(dss.Circuit.AllBusVolts())
    currents = []
    for elem in netmap.elem_names:
        dss.Circuit.SetActiveElement(elem)
        c = np.asarray(dss.CktElement.Currents())
        currents.append(c[0::2] + 1j * c[1::2])
    loss = np.asarray(dss.Circuit.Losses()) / 1e3
    total = np.asarray(dss.Circuit.TotalPower())
    ref = {"v": v[0::2] + 1j * v[1::2], "i": currents, "loss_kva": loss[0] + 1j * loss[1],
           "source_kva": -(total[0] + 1j * total[1])}
    return grid, netmap, ref


def differences(grid, result, ref) -> dict:
    """Largest differences of a `PowerFlowResult3ph` from the OpenDSS reference (`reference`)."""
    vb = np.asarray(grid.node.vbase_kv, float) * 1e3
    v = (np.asarray(result.v_re_pu, float) + 1j * np.asarray(result.v_im_pu, float)) * vb
    dvm = np.abs(np.abs(v) - np.abs(ref["v"])) / vb
    dva = np.abs((np.rad2deg(np.angle(v) - np.angle(ref["v"])) + 180) % 360 - 180)
    dva = np.where(np.abs(ref["v"]) > 1e-3 * vb, dva, 0)  # angles of ~0 V nodes are noise
    i = np.asarray(result.i_re_a, float) + 1j * np.asarray(result.i_im_a, float)
    di_a = max(np.max(np.abs(i[k, :len(c)] - c)) for k, c in enumerate(ref["i"]))
    i_max = max(np.max(np.abs(c)) for c in ref["i"])
    loss = complex(result.p_loss_kw, result.q_loss_kvar)
    src = complex(np.sum(result.source_p_kw), np.sum(result.source_q_kvar))
    return {"dvm_pu": float(dvm.max()), "dva_deg": float(dva.max()), "di_a": float(di_a), "di_rel": float(di_a / i_max),
            "loss_rel": abs(loss - ref["loss_kva"]) / abs(ref["loss_kva"]),
            "source_rel": abs(src - ref["source_kva"]) / abs(ref["source_kva"]),
            "worst_node_index": int(dvm.argmax())}


def compare(name: str, dtype=np.float64, path=None) -> dict:
    """One row: feeder `name` (or the master file `path`, labelled `name`) solved by pgjax in
    `dtype` against OpenDSS (float64 needs JAX's 64-bit mode on)."""
    grid, netmap, ref = reference_file(DATA / FEEDERS[name] if path is None else path, dtype)
    prepared = threephase.prepare(grid)  # float32 grids: prepared in float64 (see `prepare`)
    solve = jax.jit(lambda g, pr: threephase.solve(g, max_iter=MAX_ITER, prepared=pr))
    result = jax.block_until_ready(solve(grid, prepared))
    row = {"feeder": name, "dtype": np.dtype(dtype).name, "nodes": grid.n_node, "elements": grid.n_elem,
           "loads": grid.n_load, "converged": bool(result.converged), "iterations": int(result.iterations),
           **differences(grid, result, ref)}
    row["worst_node"] = netmap.node_names[row.pop("worst_node_index")]
    row["passed"] = row["converged"] and all(row[k] <= t for k, t in TARGETS.items())
    return row

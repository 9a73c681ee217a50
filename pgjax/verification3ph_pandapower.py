"""pandapower's `runpp_3ph` on a feeder in sequence terms, against OpenDSS and pgjax (what
`pgjax verify --three-phase` prints after the European LV row).

pandapower's three-phase power flow solves in sequence components: lines by positive- and
zero-sequence impedance, the transformer by its vector group, loads as per-phase constant
power (`asymmetric_load`). It therefore takes only feeders power-grid-model can represent
exactly too, and is built from the same description (`pgjax.converters.power_grid_model`:
the European LV feeder): buses at PGM's nodes, lines and the Dyn transformer with PGM's
values, loads at OpenDSS's kW / kvar. Two choices make pandapower's sequence model OpenDSS's
network, and each alone moved the result measurably (European LV, max |dV| from OpenDSS):
- the source: pandapower's `ext_grid` holds its positive-sequence voltage (the short-circuit
  power enters only the negative- and zero-sequence networks), where OpenDSS's Vsource is an
  EMF behind an impedance; as a stiff `ext_grid` behind a line of the source impedance
  (6.5e-4 p.u. without);
- the transformer's zero-sequence magnetizing impedance: OpenDSS's has none (`%imag=0`), so
  `mag0_percent` is huge (1.1e-4 p.u. with pandapower's usual 100 %).
With both: 5e-8 p.u. and 4e-6 degree from OpenDSS and pgjax.
"""

from __future__ import annotations

import numpy as np

from pgjax import verification3ph as V3
from pgjax.converters import opendss
from pgjax.converters import power_grid_model as pgm


def to_pandapower(feeder: pgm.PgmFeeder, p_kw, q_kvar):
    """A pandapower net of `feeder` with load element powers `p_kw`, `q_kvar` `[n_load]`."""
    import pandapower as pp

    data = feeder.input_data
    net = pp.create_empty_network(sn_mva=1.0)
    for u in data["node"]["u_rated"]:
        pp.create_bus(net, vn_kv=u / 1e3)
    src = data["source"][0]
    # pandapower's ext_grid holds the positive-sequence voltage (its s_sc enters only the
    # negative and zero sequence): the Thevenin source is a stiff ext_grid behind a line of
    # the source's impedance, z1 = u^2 / sk at R/X rx_ratio, z0 = z01_ratio z1.
    u_kv = data["node"]["u_rated"][src["node"]] / 1e3
    z1 = u_kv ** 2 / (src["sk"] / 1e6) * (src["rx_ratio"] + 1j) / np.hypot(src["rx_ratio"], 1.0)
    z0 = src["z01_ratio"] * z1
    emf = pp.create_bus(net, vn_kv=u_kv)
    pp.create_ext_grid(net, emf, vm_pu=src["u_ref"], va_degree=np.rad2deg(src["u_ref_angle"]), s_sc_max_mva=1e9,
                       rx_max=0.1, x0x_max=1.0, r0x0_max=0.1)
    pp.create_line_from_parameters(net, emf, int(src["node"]), 1.0, z1.real, z1.imag, 0.0, 1.0,
                                   r0_ohm_per_km=z0.real, x0_ohm_per_km=z0.imag, c0_nf_per_km=0.0)
    for ln in data["line"]:
        pp.create_line_from_parameters(net, int(ln["from_node"]), int(ln["to_node"]), 1.0, ln["r1"], ln["x1"],
                                       ln["c1"] * 1e9, 1.0, r0_ohm_per_km=ln["r0"], x0_ohm_per_km=ln["x0"],
                                       c0_nf_per_km=ln["c0"] * 1e9)
    for t in data["transformer"]:
        vkr = t["pk"] / t["sn"] * 100
        pp.create_transformer_from_parameters(
            net, int(t["from_node"]), int(t["to_node"]), t["sn"] / 1e6, t["u1"] / 1e3, t["u2"] / 1e3, vkr,
            t["uk"] * 100, 0.0, 0.0, shift_degree=30.0 * t["clock"], vector_group="Dyn", vk0_percent=t["uk"] * 100,
            vkr0_percent=vkr, mag0_percent=1e6, mag0_rx=0.0, si0_hv_partial=0.9)
    p_mw, q_mvar = (feeder.load_phase * np.asarray(x)[:, None] / 1e3 for x in (p_kw, q_kvar))  # [n_load, 3]
    for k, node in enumerate(data["asym_load"]["node"]):
        pp.create_asymmetric_load(net, int(node), **{f"{kind}_{ph}_{unit}": x[k, i] for kind, unit, x in
                                                      (("p", "mw", p_mw), ("q", "mvar", q_mvar))
                                                      for i, ph in enumerate("abc")})
    return net


def compare(name: str = "european_lv") -> dict:
    """pandapower `runpp_3ph` on feeder `name` at OpenDSS's reference point: largest |V|
    (p.u.) and angle (degree) differences from OpenDSS and from pgjax (float64)."""
    import jax
    import pandapower as pp

    from pgjax.powerflow import threephase

    grid, netmap, ref = V3.reference(name)
    dss = opendss.engine()
    feeder = pgm.from_engine(dss)
    kw, kvar = [], []
    for load in feeder.load_names:
        dss.Loads.Name(load)
        kw.append(dss.Loads.kW())
        kvar.append(dss.Loads.kvar())
    net = to_pandapower(feeder, kw, kvar)
    pp.runpp_3ph(net, max_iteration=100, tolerance_mva=1e-10)
    res = net.res_bus_3ph
    index = {b: k for k, b in enumerate(feeder.bus_names)}
    bus = np.array([index[n.split(".")[0]] for n in netmap.node_names])
    phase = np.array(["abc"[int(n.split(".")[1]) - 1] for n in netmap.node_names])
    vm = np.array([res[f"vm_{p}_pu"].to_numpy()[b] for b, p in zip(bus, phase)])
    va = np.array([res[f"va_{p}_degree"].to_numpy()[b] for b, p in zip(bus, phase)])
    r = jax.jit(lambda g: threephase.solve(g, max_iter=V3.MAX_ITER))(grid)
    vb = np.asarray(grid.node.vbase_kv) * 1e3
    angle = lambda a, b: np.max(np.abs((a - b + 180) % 360 - 180))  # noqa: E731
    return {"feeder": name, "converged": bool(net.converged),
            "dvm_pu_opendss": float(np.max(np.abs(vm - np.abs(ref["v"]) / vb))),
            "dva_deg_opendss": float(angle(va, np.rad2deg(np.angle(ref["v"])))),
            "dvm_pu_pgjax": float(np.max(np.abs(vm - np.asarray(r.vm_pu)))),
            "dva_deg_pgjax": float(angle(va, np.asarray(r.va_deg)))}

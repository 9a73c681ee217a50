"""Generated benchmark networks: seeded random radial MV / LV feeders as pandapower nets.

- `random_radial_feeder(n_bus, seed)`: one feeder, calibrated in pandapower to a heavy but
  realistic loading;
- `load_network(name)`: `radial<N>` generated, any other name from `pgjax.networks`.
"""

from __future__ import annotations

import warnings

import numpy as np


FEEDER_TYPES = {
    # voltage: (vn_kv, [(line std type, share of buses downstream at or above which it is used)],
    #           (min, max) line length km, (min, max) load MW before calibration)
    "mv": (20.0, [("NA2XS2Y 1x240 RM/25 12/20 kV", 0.3), ("NA2XS2Y 1x150 RM/25 12/20 kV", 0.08),
                  ("NA2XS2Y 1x95 RM/25 12/20 kV", 0.02), ("48-AL1/8-ST1A 20.0", 0.0)],
           (0.1, 0.6), (0.05, 0.4)),
    "lv": (0.4, [("NAYY 4x150 SE", 0.3), ("NAYY 4x120 SE", 0.08), ("NAYY 4x50 SE", 0.02),
                 ("24-AL1/4-ST1A 0.4", 0.0)],
           (0.01, 0.05), (0.002, 0.01)),
}


def random_radial_feeder(n_bus: int, seed: int = 0, voltage: str = "mv", load_fraction: float = 0.85,
                         v_min: float = 0.95, vm_slack: float = 1.03, lateral: float = 0.9,
                         max_loading: float = 80.0):
    """A seeded random radial feeder as a pandapower net (one ext_grid, lines only, loads).

    - topology: bus 0 carries the ext_grid (`vm_pu = vm_slack`); bus `i > 0` hangs from a
      parent drawn among the earlier buses: with probability `lateral` one of the three
      before it (long feeders and laterals), else uniformly (branching). A tree by
      construction: `n_bus - 1` lines, every bus connected.
    - lines: pandapower standard types of the `voltage` level (`"mv"`: 20 kV XLPE cables
      NA2XS2Y 240/150/95 mm^2 and 48 mm^2 overhead line; `"lv"`: 0.4 kV NAYY cables and
      overhead line), chosen by the share of the buses downstream of the line (trunk lines
      thick, far laterals thin), lengths uniform in the level's range (MV 0.1-0.6 km,
      LV 10-50 m). Cable charging capacitance is included (pandapower's std-type values).
    - loads: on about `load_fraction` of the buses other than bus 0, P uniform in the level's
      range, power factor uniform in [0.9, 0.98] lagging; then every load is scaled by one
      factor so that, in pandapower's solution, the lowest voltage is `v_min` or the most
      loaded line is at `max_loading` percent of its rating, whichever binds first (a
      heavily loaded but realistic feeder; the benchmark's load factors up to 1.3 push it
      further).

    The returned net solves in pandapower (`runpp`; calibrated with it). `net.name` records
    the parameters.
    """
    import pandapower as pp

    if voltage not in FEEDER_TYPES:
        raise ValueError(f"voltage must be one of {sorted(FEEDER_TYPES)}")
    vn_kv, types, (len_lo, len_hi), (p_lo, p_hi) = FEEDER_TYPES[voltage]
    rng = np.random.default_rng(seed)
    parent = np.full(n_bus, -1)
    for i in range(1, n_bus):
        if i > 1 and rng.random() < lateral:
            parent[i] = i - 1 - rng.integers(0, min(3, i))
        else:
            parent[i] = rng.integers(0, i)
    below = np.ones(n_bus, int)  # buses in the subtree of each bus (itself included)
    for i in range(n_bus - 1, 0, -1):
        below[parent[i]] += below[i]

    net = pp.create_empty_network(name=f"random_radial_feeder(n_bus={n_bus}, seed={seed}, voltage={voltage!r})")
    pp.create_buses(net, n_bus, vn_kv=vn_kv, name=[f"bus {i}" for i in range(n_bus)], index=list(range(n_bus)))
    pp.create_ext_grid(net, 0, vm_pu=vm_slack, va_degree=0.0)
    lengths = rng.uniform(len_lo, len_hi, n_bus)
    share = below / n_bus
    std = [next(t for t, s in types if share[i] >= s) for i in range(n_bus)]
    for t in dict.fromkeys(std[1:]):
        rows = [i for i in range(1, n_bus) if std[i] == t]
        pp.create_lines(net, [int(parent[i]) for i in rows], rows, length_km=lengths[rows].tolist(),
                        std_type=t, name=[f"line {i}" for i in rows])
    net.line = net.line.sort_values("to_bus")
    has_load = rng.random(n_bus) < load_fraction
    has_load[0] = False
    p = rng.uniform(p_lo, p_hi, n_bus)
    pf = rng.uniform(0.9, 0.98, n_bus)
    q = p * np.tan(np.arccos(pf))
    rows = np.flatnonzero(has_load)
    pp.create_loads(net, rows.tolist(), p_mw=p[rows].tolist(), q_mvar=q[rows].tolist(),
                    name=[f"load {i}" for i in rows])

    base_p, base_q = net.load.p_mw.to_numpy().copy(), net.load.q_mvar.to_numpy().copy()
    scale = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(8):  # drop and current are nearly linear in the load: a few secant steps
            net.load["p_mw"], net.load["q_mvar"] = base_p * scale, base_q * scale
            try:
                pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)
            except pp.LoadflowNotConverged:
                scale *= 0.3
                continue
            ratio = min((vm_slack - v_min) / (vm_slack - float(net.res_bus.vm_pu.min())),
                        max_loading / float(net.res_line.loading_percent.max()))
            if abs(ratio - 1.0) < 1e-3:
                break
            scale *= ratio
        net.load["p_mw"], net.load["q_mvar"] = base_p * scale, base_q * scale
        pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)  # raises if it does not solve
    return net


RADIAL_FEEDERS = {"radial300": 300, "radial1000": 1000}


def load_network(name: str, seed: int = 0):
    """A benchmark network by name: `radial300` / `radial1000` (`random_radial_feeder` of that
    size, MV, `seed`), `radial<N>` for any N, else `pgjax.networks.load(name)`."""
    if name.startswith("radial") and name[6:].isdigit():
        return random_radial_feeder(int(name[6:]), seed=seed)
    from pgjax.networks import load

    return load(name)

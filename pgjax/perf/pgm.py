"""power-grid-model as a peer engine of the power-flow benchmark (`pgjax bench powerflow`).

power-grid-model (Alliander / LF Energy, C++, `pip install power-grid-model`) solves batches
of scenarios on several threads. `PGMBatch(grid)` builds its model from a converted pgjax
grid, so both engines see the same network:

- every active bus a `node` at its `vn_kv`;
- every active branch a `generic_branch`: series impedance and charging in ohm / siemens
  referred to the to side, off-nominal ratio `k = tap` and `theta = shift` at the from side
  (pgjax's pi model, checked against pgjax's own voltages by the benchmark);
- the bus shunts (`network.bus_shunt`) as `shunt`s, the reference buses as `source`s
  with a short-circuit power of 1e20 VA (ideal);
- one constant-power `sym_load` per bus carrying the bus's net injection; a batch
  `set_points(p_mw, q_mvar)` updates their `p_specified` / `q_specified`.

power-grid-model has no voltage-controlled generators: `applies(grid)` is False for grids
with PV buses (they are not the same problem there), and the benchmark leaves it out.
"""

from __future__ import annotations

import numpy as np

from pgjax.grid import PV, REF
from pgjax.powerflow import network

# the exact methods of power-grid-model's symmetric power flow
METHODS = ("newton_raphson", "iterative_current")


def applies(grid) -> bool:
    """True when power-grid-model can solve the same problem: no PV bus."""
    bus_type, mask = np.asarray(grid.bus.bus_type), np.asarray(grid.bus.mask)
    return not np.any((bus_type == PV) & mask)


class PGMBatch:
    """power-grid-model's batch power flow on one grid (float64, SI units inside).

    `set_points(p_mw, q_mvar)` sets `[n_points, n_bus]` net bus injections (generation
    positive); `compute(method, threads)` solves them all and returns `vm_pu [n_points, n_bus]`
    (zero at buses without a node).
    """

    def __init__(self, grid, tol: float = 1e-10, max_iter: int = 30):
        from power_grid_model import PowerGridModel

        self.tol, self.max_iter = tol, max_iter
        self.n_bus = grid.n_bus
        on = np.asarray(network.energized(grid))
        self.bus_ids = np.flatnonzero(on)
        self.model = PowerGridModel(self._input(grid, on))
        self.update = None

    def _input(self, grid, on) -> dict:
        from power_grid_model import initialize_array

        sn_va = float(grid.sn_mva) * 1e6
        vn_v = np.asarray(grid.bus.vn_kv, float) * 1e3
        ids = iter(range(self.n_bus, 10 ** 9))  # component ids after the node ids (= bus indices)
        node = initialize_array("input", "node", len(self.bus_ids))
        node["id"], node["u_rated"] = self.bus_ids, vn_v[self.bus_ids]
        br = grid.branch
        active = np.flatnonzero(np.asarray(network.branch_active(grid)))
        f, t = np.asarray(br.from_bus)[active], np.asarray(br.to_bus)[active]
        z_base = vn_v[t] ** 2 / sn_va  # ohm, to side
        gb = initialize_array("input", "generic_branch", len(active))
        gb["id"] = [next(ids) for _ in active]
        gb["from_node"], gb["to_node"], gb["from_status"], gb["to_status"] = f, t, 1, 1
        gb["r1"], gb["x1"] = np.asarray(br.r_pu)[active] * z_base, np.asarray(br.x_pu)[active] * z_base
        gb["g1"], gb["b1"] = np.asarray(br.g_pu)[active] / z_base, np.asarray(br.b_pu)[active] / z_base
        gb["k"], gb["theta"] = np.asarray(br.tap)[active], np.deg2rad(np.asarray(br.shift_deg)[active])
        gb["sn"] = sn_va
        y_sh = np.asarray(network.bus_shunt(grid))[self.bus_ids] * sn_va / vn_v[self.bus_ids] ** 2
        shunt = initialize_array("input", "shunt", len(self.bus_ids))
        shunt["id"], shunt["node"], shunt["status"] = [next(ids) for _ in self.bus_ids], self.bus_ids, 1
        shunt["g1"], shunt["b1"], shunt["g0"], shunt["b0"] = y_sh.real, y_sh.imag, y_sh.real, y_sh.imag
        vm_set, va_set = (np.asarray(a) for a in network.setpoints(grid))
        bus_type = np.asarray(grid.bus.bus_type)
        ref = np.flatnonzero(on & (bus_type == REF))
        source = initialize_array("input", "source", len(ref))
        source["id"], source["node"], source["status"] = [next(ids) for _ in ref], ref, 1
        source["u_ref"], source["u_ref_angle"], source["sk"] = vm_set[ref], va_set[ref], 1e20
        load = initialize_array("input", "sym_load", len(self.bus_ids))
        self.load_ids = np.array([next(ids) for _ in self.bus_ids])
        load["id"], load["node"], load["status"], load["type"] = self.load_ids, self.bus_ids, 1, 0
        load["p_specified"], load["q_specified"] = 0.0, 0.0
        return {"node": node, "generic_branch": gb, "shunt": shunt, "source": source, "sym_load": load}

    def set_points(self, p_mw, q_mvar) -> None:
        from power_grid_model import initialize_array

        p, q = np.asarray(p_mw, float), np.asarray(q_mvar, float)
        upd = initialize_array("update", "sym_load", (p.shape[0], len(self.bus_ids)))
        upd["id"] = self.load_ids[None, :]
        upd["status"] = 1
        upd["p_specified"] = -p[:, self.bus_ids] * 1e6  # load reference: consumption positive
        upd["q_specified"] = -q[:, self.bus_ids] * 1e6
        self.update = {"sym_load": upd}

    def compute(self, method: str = "newton_raphson", threads: int = 1) -> np.ndarray:
        """Solve every point set by `set_points` with `threads` threads; `vm_pu [n_points, n_bus]`."""
        from power_grid_model import CalculationMethod

        out = self.model.calculate_power_flow(
            update_data=self.update, threading=threads, error_tolerance=self.tol,
            max_iterations=self.max_iter, calculation_method=getattr(CalculationMethod, method),
            output_component_types={"node": ["u_pu"]})
        vm = np.zeros((out["node"]["u_pu"].shape[0], self.n_bus))
        vm[:, self.bus_ids] = out["node"]["u_pu"]
        return vm

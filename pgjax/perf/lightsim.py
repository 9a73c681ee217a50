"""lightsim2grid as a peer engine of the power-flow benchmark (`pgjax bench powerflow`).

- `lightsim_net(net)`: a copy of a pandapower net that lightsim2grid's converter reproduces exactly.
- `LightSimBatch`: lightsim2grid's C++ batch computers (`TimeSeriesCPP` on one thread,
  `InjectionSweepCPP` on one or several), driven with the operating points of `pgjax.perf.points`.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np


def lightsim_net(net):
    """A copy of `net` that lightsim2grid's pandapower converter reproduces exactly.

    - closed bus-bus switches (which the converter ignores) are fused;
    - static generators become loads of opposite sign (`TimeSeriesCPP` can vary sgen P
      but not sgen Q, and a constant-power sgen is a negative constant-power load);
    - shunt `step` and rated voltage (which the converter ignores) are folded into
      `p_mw`/`q_mvar` (pandapower: `q_mvar * step * (bus vn_kv / shunt vn_kv)**2`);
    - out-of-service external grids (which the converter still makes slacks) are dropped;
    - buses are renumbered 0..n-1 in row order; `net.bus["orig_index"]` keeps the index
      of the original net.
    """
    import pandapower as pp
    import pandapower.toolbox as tb

    net = copy.deepcopy(net)
    net.bus["orig_index"] = net.bus.index.to_numpy()
    fused_into = {}
    if len(net.switch):
        bb = net.switch[(net.switch.et == "b") & net.switch.closed.astype(bool)]
        for _, sw in bb.iterrows():
            keep, drop = int(sw.bus), int(sw.element)
            while keep in fused_into:
                keep = fused_into[keep]
            fused_into[drop] = keep
            tb.fuse_buses(net, keep, drop)
        net.switch = net.switch.drop(bb.index.intersection(net.switch.index))
    if len(net.shunt):
        sh = net.shunt
        step = sh.step.to_numpy(float) if "step" in sh else np.ones(len(sh))
        ratio = (net.bus.vn_kv.loc[sh.bus].to_numpy(float) / sh.vn_kv.to_numpy(float)) ** 2
        net.shunt["p_mw"] = sh.p_mw.to_numpy(float) * step * ratio
        net.shunt["q_mvar"] = sh.q_mvar.to_numpy(float) * step * ratio
        net.shunt["step"] = 1
        net.shunt["vn_kv"] = net.bus.vn_kv.loc[sh.bus].to_numpy(float)
    net.ext_grid = net.ext_grid[net.ext_grid.in_service.astype(bool)]
    if len(net.sgen):
        for _, sg in net.sgen.iterrows():
            pp.create_load(net, bus=int(sg.bus), p_mw=-float(sg.p_mw) * float(sg.scaling),
                           q_mvar=-float(sg.q_mvar) * float(sg.scaling), in_service=bool(sg.in_service),
                           name=f"sgen {sg.name}")
        net.sgen = net.sgen.iloc[0:0]
    # lightsim2grid lays buses out in sorted index order; make that the row order.
    net.bus = net.bus.sort_index()
    tb.create_continuous_bus_index(net)
    net._fused_into = fused_into
    return net


class LightSimBatch:
    """lightsim2grid's C++ batch power flow (Newton-Raphson, KLU) on one grid.

    `kind="timeseries"` (`TimeSeriesCPP`: each point starts from the previous solution,
    its documented fastest path for many points) or `"sweep"` (`InjectionSweepCPP`: every
    point starts from the same voltage, independent like pgjax's points; `threads` threads).
    Build it from `lightsim_net(base net)`; `set_points(factors)` sets load P/Q rows
    `factor * base` (and generator P with `scale_gen`). The start voltage is lightsim2grid's DC power flow
    of the base case (pandapower's and pgjax's `init="dc"`).
    """

    def __init__(self, ls_net, kind: str = "timeseries", tol: float = 1e-10, max_iter: int = 30,
                 scale_gen: bool = False, threads: int = 1):
        from lightsim2grid.algorithm import AlgorithmType
        from lightsim2grid.injectionSweep import InjectionSweepCPP
        from lightsim2grid.network import init_from_pandapower
        from lightsim2grid.timeSerie import TimeSeriesCPP

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = init_from_pandapower(ls_net, pp_orig_file="pandapower_v3")
        self.model.change_algorithm(AlgorithmType.NR_KLU)
        self.kind = kind
        self.tol, self.max_iter, self.scale_gen = tol, max_iter, scale_gen
        self.n_bus = len(ls_net.bus)
        self.load_p = ls_net.load.p_mw.to_numpy(float) * ls_net.load.scaling.to_numpy(float)
        self.load_q = ls_net.load.q_mvar.to_numpy(float) * ls_net.load.scaling.to_numpy(float)
        # generator rows: net.gen in table order, then the slack generators the converter adds
        self.gen_p = np.array([g.target_p_mw for g in self.model.get_generators()], float)
        self.n_net_gen = len(ls_net.gen)
        v_flat = np.full(self.model.total_bus(), self.model.get_init_vm_pu(), dtype=complex)
        v_dc = self.model.dc_pf(v_flat, max_iter, tol)
        self.v_init = v_dc if v_dc.shape[0] == v_flat.shape[0] else v_flat
        cls = TimeSeriesCPP if kind == "timeseries" else InjectionSweepCPP
        self.computer = cls(self.model)
        self.computer.change_algorithm(AlgorithmType.NR_KLU)
        if kind != "timeseries":
            self.computer.nb_thread = threads

    def set_points(self, factors):
        factors = np.asarray(factors, float)[:, None]
        n = factors.shape[0]
        gen_p = np.repeat(self.gen_p[None, :], n, axis=0)
        if self.scale_gen:
            gen_p[:, :self.n_net_gen] *= factors
        self.computer.modify_gen_p(np.ascontiguousarray(gen_p))
        self.computer.modify_load_p(np.ascontiguousarray(factors * self.load_p[None, :]))
        self.computer.modify_load_q(np.ascontiguousarray(factors * self.load_q[None, :]))

    def compute(self):
        """Solve every point set by `set_points`; returns the complex voltages `[n, n_bus]`."""
        self.computer.compute(self.v_init, self.max_iter, self.tol)
        return self.computer.get_voltages()

    def times(self) -> dict:
        """Seconds of the last `compute`: total, solver only, pre-processing."""
        c = self.computer
        return {"total_s": c.total_time(), "solver_s": c.solver_time(),
                "preprocessing_s": c.preprocessing_time()}

    def iterations(self) -> np.ndarray:
        return np.asarray(self.computer.get_row_nb_iter()).ravel()

    def converged(self) -> np.ndarray:
        return np.asarray(self.computer.converged_mask(), bool)


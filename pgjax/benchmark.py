"""Reusable pieces of the power-flow benchmarks (`scripts/bench_powerflow.py`).

- `rate(fn, seconds)`: steady-state calls per second of a blocking callable.
- `load_factors`, `scale_injections`, `operating_points`: one set of operating points that
  pgjax, pandapower and lightsim2grid all see identically (every load and static generator
  P and Q scaled by one factor per point).
- `scaled_net`: the same point as pandapower element values.
- `LightSimBatch`: lightsim2grid's C++ batch computers (`TimeSeriesCPP`, `InjectionSweepCPP`)
  on one thread, driven with the same operating points.
- `machine_info`: CPU model, core count, library versions.

Nothing here changes a solver; engines are only timed and compared.
"""

from __future__ import annotations

import copy
import os
import platform
import time
import warnings

import numpy as np

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
}


def rate(fn, seconds: float, min_calls: int = 2, max_calls: int | None = None):
    """Time `fn()` (which must block until its work is done) repeatedly for about `seconds`.

    Returns `(calls_per_second, n_calls, elapsed_s)`. At least `min_calls` calls are made,
    so a slow `fn` is still measured; `max_calls` caps very fast ones.
    """
    n = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while n < min_calls or elapsed < seconds:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if max_calls is not None and n >= max_calls:
            break
    return n / elapsed, n, elapsed


def load_factors(n_points: int, seed: int = 0, low: float = 0.7, high: float = 1.3) -> np.ndarray:
    """`[n_points]` factors, uniform in `[low, high]`, from a seeded numpy generator."""
    return np.random.default_rng(seed).uniform(low, high, size=n_points)


def scale_injections(grid, factor, scale_gen: bool = False):
    """The grid with every load and static generator `p_mw`, `q_mvar` multiplied by `factor`.

    With `scale_gen`, voltage-controlled generator `p_mw` too (a load-following dispatch,
    so that the slack does not take the whole change). Storage and wards are unchanged.
    Works traced (vmap).
    """
    load = grid.load.replace(p_mw=grid.load.p_mw * factor, q_mvar=grid.load.q_mvar * factor)
    sgen = grid.sgen.replace(p_mw=grid.sgen.p_mw * factor, q_mvar=grid.sgen.q_mvar * factor)
    grid = grid.replace(load=load, sgen=sgen)
    if scale_gen:
        grid = grid.replace(gen=grid.gen.replace(p_mw=grid.gen.p_mw * factor))
    return grid


def operating_points(grid, factors, scale_gen: bool = False):
    """pgjax bus injections `(p_mw, q_mvar)`, each `[n_points, n_bus]` numpy, one row per factor.

    Row k is `bus_injections(scale_injections(grid, factors[k], scale_gen))`.
    """
    import jax
    import jax.numpy as jnp

    from pgjax.powerflow import bus_injections

    factors = jnp.asarray(factors, dtype=jnp.asarray(grid.bus.gs_mw).dtype)
    p, q = jax.jit(jax.vmap(lambda f: bus_injections(scale_injections(grid, f, scale_gen))))(factors)
    return np.asarray(p), np.asarray(q)


def base_net(net, grid, netmap):
    """A copy of `net` whose element values equal the grid's (element `scaling` folded in)."""
    from converters.pandapower import to_pandapower

    return to_pandapower(net, grid, netmap)


def scaled_net(net, factor: float, base=None, scale_gen: bool = False):
    """Set, in place, `net`'s load and sgen `p_mw`, `q_mvar` to `base` values times `factor`.

    `base` is `(load_p, load_q, sgen_p, sgen_q, gen_p)` numpy arrays in table order; by
    default the net's current values (so call it on a copy, or pass `base_values(net)`).
    With `scale_gen`, generator `p_mw` is scaled too (see `scale_injections`).
    """
    base = base_values(net) if base is None else base
    load_p, load_q, sgen_p, sgen_q, gen_p = base
    if scale_gen and len(net.gen):
        net.gen["p_mw"] = gen_p * factor
    if len(net.load):
        net.load["p_mw"] = load_p * factor
        net.load["q_mvar"] = load_q * factor
    if len(net.sgen):
        net.sgen["p_mw"] = sgen_p * factor
        net.sgen["q_mvar"] = sgen_q * factor
    return net


def base_values(net):
    """`(load_p, load_q, sgen_p, sgen_q, gen_p)`, copies of the net's current element values."""
    return (net.load.p_mw.to_numpy(float).copy(), net.load.q_mvar.to_numpy(float).copy(),
            net.sgen.p_mw.to_numpy(float).copy(), net.sgen.q_mvar.to_numpy(float).copy(),
            net.gen.p_mw.to_numpy(float).copy())


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
    """lightsim2grid's C++ batch power flow (Newton-Raphson, KLU, one thread) on one grid.

    `kind="timeseries"` (`TimeSeriesCPP`: each point starts from the previous solution,
    its documented fastest path for many points) or `"sweep"` (`InjectionSweepCPP`: every
    point starts from the same voltage, independent like pgjax's points). Build it from
    `lightsim_net(base net)`; `set_points(factors)` sets load P/Q rows `factor * base`
    (and generator P with `scale_gen`). The start voltage is lightsim2grid's DC power flow
    of the base case (pandapower's and pgjax's `init="dc"`).
    """

    def __init__(self, ls_net, kind: str = "timeseries", tol: float = 1e-10, max_iter: int = 30,
                 scale_gen: bool = False):
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
            self.computer.nb_thread = 1

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


def machine_info() -> dict:
    """CPU model, logical core count, python / jax / numpy versions."""
    import jax

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "numpy": np.__version__,
            "jax_backend": jax.default_backend()}
    for mod in ("pandapower", "lightsim2grid", "numba"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional engines
            info[mod] = None
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        info["loadavg"] = None
    return info

"""Reference mode (`method="pandapower"`): pandapower's `runpp` solves each power flow on the host.

`solve` hands the grid and the bus injections to `jax.pure_callback`
(`vmap_method="sequential"`: a vmapped batch is solved one operating point after another),
so a scenario steps unchanged under `jit` and `vmap` with pandapower in place of a JAX
solver. It is for verification, not speed (milliseconds per power flow), and it is not
differentiable.

The grid becomes a pandapower net with the same bus admittance matrix:
- one bus per energized grid bus (net index = grid bus index, same `vn_kv`);
- the series part of every active branch: an `impedance` (`rft/xft` = from end, `rtf/xtf`
  = to end, on `sn_mva` = the grid's base) when `tap == 1` and `shift_deg == 0`, else a
  `trafo` with `vn_hv_kv = tap * vn_kv[from]`, `vn_lv_kv = vn_kv[to]`, `shift_degree`,
  `vk/vkr` from `|r + jx|` and `r`, no magnetizing, on the grid's base;
- branch charging (the from-end half divided by `tap^2`, as in the pi model) plus the
  bus's fixed shunt: one `shunt` per bus;
- the net injections `p_mw`, `q_mvar`: one `sgen` per bus;
- reference buses: an `ext_grid` at the grid's setpoint; PV buses: a `gen` with
  `p_mw = 0` (its active power is part of `p_mw`) and the setpoint `vm_pu`.
A branch with an asymmetric series impedance (`r_asym` or `x_asym` non-zero, e.g. a
t-model transformer with magnetizing) and an off-nominal tap or phase shift has no
pandapower element equivalent; `check_applies` and `solve` reject it.

The net is built once per grid structure (energized buses, active branches and their
element kind, reference and PV buses) and cached; each call writes the numbers into its
tables and runs `runpp` (Newton-Raphson, `tolerance_mva` = `tol`: pandapower compares
the p.u. mismatch with it, like pgjax). The result is `pgjax.powerflow.result.finish` at
pandapower's voltages, the same code as for every JAX method, so flows, loading, losses
and slack powers are computed identically; `max_mismatch` is pgjax's AC mismatch at those
voltages and `converged` is pandapower's flag. When pandapower does not converge the
voltages are the setpoints (flat start), finite, with `converged = False`.
"""

from __future__ import annotations

import collections
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.grid import NONE, PV, REF, Grid
from pgjax.powerflow import network, newton
from pgjax.powerflow.result import PowerFlowResult, finish

CACHE_SIZE = 16  # nets kept, one per grid structure
_NETS: collections.OrderedDict = collections.OrderedDict()
_LOCK = threading.Lock()  # one host solve at a time: the cached nets are mutated in place


def _numpy(grid: Grid) -> Grid:
    """The grid with numpy leaves, floating point as float64."""
    return jax.tree.map(lambda x: np.asarray(x, np.float64) if np.asarray(x).dtype.kind == "f" else np.asarray(x),
                        grid)


def _active(g: Grid):
    """`(energized [n_bus], active [n_branch])` bool of a numpy grid (as `pgjax.powerflow.network`)."""
    on = g.bus.mask & (g.bus.bus_type != NONE)
    return on, g.branch.in_service & on[g.branch.from_bus] & on[g.branch.to_bus]


def _first_unrepresentable(g: Grid) -> str | None:
    """Why the first active branch with an asymmetric series impedance and a tap or shift fails, or None."""
    br = g.branch
    _, active = _active(g)
    bad = np.flatnonzero(active & ((br.r_asym_pu != 0) | (br.x_asym_pu != 0)) & ((br.tap != 1) | (br.shift_deg != 0)))
    if not len(bad):
        return None
    e = int(bad[0])
    return (f"method 'pandapower': branch {e} (bus {br.from_bus[e]} - bus {br.to_bus[e]}) has an asymmetric "
            f"series impedance (r_asym={br.r_asym_pu[e]:.3g}, x_asym={br.x_asym_pu[e]:.3g} pu) and "
            f"tap={br.tap[e]:.6g}, shift={br.shift_deg[e]:.3g} deg; no pandapower element models both "
            "(convert transformers with trafo_model='pi', or use a JAX method)")


def check_applies(grid: Grid) -> None:
    """Raise `ValueError` naming the first branch that no pandapower element represents."""
    g = _numpy(grid)
    if g.bus.bus_type.ndim != 1:
        raise ValueError("method 'pandapower': check an unbatched grid")
    problem = _first_unrepresentable(g)
    if problem:
        raise ValueError(problem)


def _build(sn_mva, vn_kv, on, f, t, is_trafo, ref, pv):
    """A pandapower net for one grid structure, values still unset (host-side, cached by `_net`)."""
    import pandapower as pp

    net = pp.create_empty_network(sn_mva=sn_mva)
    buses = np.flatnonzero(on)
    zeros = np.zeros(len(buses))
    pp.create_buses(net, len(buses), vn_kv=vn_kv[buses], index=buses)
    pp.create_sgens(net, buses, p_mw=zeros, q_mvar=zeros)
    pp.create_shunts(net, buses, q_mvar=zeros, p_mw=zeros)
    imp, tr = ~is_trafo, is_trafo
    if imp.any():
        ones = np.ones(int(imp.sum()))
        pp.create_impedances(net, f[imp], t[imp], rft_pu=ones, xft_pu=ones, sn_mva=sn_mva)
    if tr.any():
        k = int(tr.sum())
        pp.create_transformers_from_parameters(
            net, f[tr], t[tr], sn_mva=sn_mva, vn_hv_kv=vn_kv[f[tr]], vn_lv_kv=vn_kv[t[tr]],
            vkr_percent=np.zeros(k), vk_percent=np.ones(k), pfe_kw=np.zeros(k), i0_percent=np.zeros(k))
    for b in np.flatnonzero(ref):
        pp.create_ext_grid(net, int(b))
    if pv.any():
        pp.create_gens(net, np.flatnonzero(pv), p_mw=np.zeros(int(pv.sum())))
    return net


def _net(*structure):
    """The cached net of this structure (the least recently used one is dropped beyond `CACHE_SIZE`)."""
    key = tuple(np.asarray(a).tobytes() for a in structure)
    if key in _NETS:
        _NETS.move_to_end(key)
    else:
        _NETS[key] = _build(*structure)
        if len(_NETS) > CACHE_SIZE:
            _NETS.popitem(last=False)
    return _NETS[key]


def _set_values(net, g: Grid, active, is_trafo, p_mw, q_mvar, vm_set, va_set) -> None:
    """Write the grid's numbers into the cached net's tables (p.u. on the grid's `sn_mva`)."""
    br, n, sn = g.branch, g.n_bus, float(g.sn_mva)
    buses = net.bus.index.values
    fa, ta, tap = br.from_bus[active], br.to_bus[active], br.tap[active]
    net.sgen["p_mw"] = p_mw[buses]
    net.sgen["q_mvar"] = q_mvar[buses]
    y_from = (br.g_pu + 1j * br.b_pu)[active] / 2 / tap ** 2
    y_to = (br.g_pu + br.g_asym_pu + 1j * (br.b_pu + br.b_asym_pu))[active] / 2
    charging = sn * (np.bincount(fa, y_from.real, n) + np.bincount(ta, y_to.real, n)
                     - 1j * (np.bincount(fa, y_from.imag, n) + np.bincount(ta, y_to.imag, n)))
    net.shunt["p_mw"] = (g.bus.gs_mw + charging.real)[buses]  # consumed at 1 pu
    net.shunt["q_mvar"] = (-g.bus.bs_mvar + charging.imag)[buses]
    r, x = br.r_pu[active], br.x_pu[active]
    imp = ~is_trafo
    net.impedance["rft_pu"], net.impedance["xft_pu"] = r[imp], x[imp]
    net.impedance["rtf_pu"] = (r + br.r_asym_pu[active])[imp]
    net.impedance["xtf_pu"] = (x + br.x_asym_pu[active])[imp]
    net.trafo["vn_hv_kv"] = (tap * g.bus.vn_kv[fa])[is_trafo]
    net.trafo["vkr_percent"] = 100 * r[is_trafo]
    net.trafo["vk_percent"] = 100 * np.sign(x[is_trafo]) * np.hypot(r[is_trafo], x[is_trafo])
    net.trafo["shift_degree"] = br.shift_deg[active][is_trafo]
    net.ext_grid["vm_pu"] = vm_set[net.ext_grid.bus.values]
    net.ext_grid["va_degree"] = np.rad2deg(va_set[net.ext_grid.bus.values])
    net.gen["vm_pu"] = vm_set[net.gen.bus.values]


def _host_solve(grid: Grid, p_mw, q_mvar, vm_set, va_set, tol, max_iter: int):
    """numpy in, numpy out: `(vm_pu [n_bus], va_rad [n_bus], converged [], iterations [])`."""
    import pandapower as pp

    dtype = np.asarray(vm_set).dtype
    g = _numpy(grid)
    p_mw, q_mvar, vm_set, va_set = (np.asarray(a, np.float64) for a in (p_mw, q_mvar, vm_set, va_set))
    problem = _first_unrepresentable(g)
    if problem:
        raise ValueError(problem)
    on, active = _active(g)
    br, kind = g.branch, g.bus.bus_type
    is_trafo = ((br.tap != 1) | (br.shift_deg != 0))[active]
    with _LOCK:
        net = _net(g.sn_mva, g.bus.vn_kv, on, br.from_bus[active], br.to_bus[active], is_trafo,
                   on & (kind == REF), on & (kind == PV))
        _set_values(net, g, active, is_trafo, p_mw, q_mvar, vm_set, va_set)
        vm, va = vm_set.copy(), va_set.copy()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runpp(net, algorithm="nr", calculate_voltage_angles=True, init="dc", tolerance_mva=float(tol),
                         max_iteration=max_iter, trafo_model="pi", check_connectivity=False,
                         enforce_q_lims=False, distributed_slack=False)
            buses = net.bus.index.values
            vm[buses] = net.res_bus.vm_pu.values
            va[buses] = np.deg2rad(net.res_bus.va_degree.values)
            converged, iterations = bool(np.isfinite(vm).all() and np.isfinite(va).all()), int(net._ppc["iterations"])
        except pp.LoadflowNotConverged:
            converged, iterations = False, max_iter
        if not converged:
            vm, va = vm_set, va_set
    return vm.astype(dtype), va.astype(dtype), np.asarray(converged), np.asarray(iterations, np.int32)


def solve(grid: Grid, p_mw, q_mvar, tol, max_iter: int) -> PowerFlowResult:
    """pandapower's AC power flow of one grid (vmap for batches; see the module docstring).

    `p_mw`, `q_mvar` `[n_bus]` net injections (generation positive) in the grid's dtype,
    `tol` the largest |mismatch| in p.u., `max_iter` Newton iterations. Returns a
    `PowerFlowResult` with the shapes and dtypes of the JAX solvers.
    """
    n = grid.n_bus
    dtype = grid.bus.gs_mw.dtype
    vm_set, va_set = network.setpoints(grid)
    shapes = (jax.ShapeDtypeStruct((n,), dtype), jax.ShapeDtypeStruct((n,), dtype),
              jax.ShapeDtypeStruct((), jnp.bool_), jax.ShapeDtypeStruct((), jnp.int32))
    vm, va, converged, iterations = jax.pure_callback(
        lambda *args: _host_solve(*args, max_iter), shapes, grid, p_mw, q_mvar, vm_set, va_set,
        jnp.asarray(tol, dtype), vmap_method="sequential")
    s_spec = (p_mw + 1j * q_mvar).astype(network.complex_dtype(grid)) / grid.sn_mva
    x, x_set = jnp.concatenate([va, vm]), jnp.concatenate([va_set, vm_set])
    res = newton.residual(x, network.make_ybus(grid), s_spec, x_set, newton.equation_mask(grid))
    return finish(grid, vm, va, p_mw, q_mvar, converged, iterations, jnp.max(jnp.abs(res)))

"""What the environment asks of its network, one class per grid kind.

`pgjax.env.core.Env` reads its grid and runs its power flow only through a grid model,
chosen by `for_scenario(compiled)` from the scenario's network:

    params_fields(dtype)              EnvParams fields: `grid`, `tree`, `network_aux`
    loaded(params, ctx, grid)         the step's grid (loads scaled by the profiles) and the
                                      bus injections its loads make, `p, q [n_bus]` MW
    start(grid)                       `(vm_pu, va_deg) [n_bus]` observed at reset
    energized(grid)                   `[n_bus]` bool
    solve(grid, p, q, params, init)   the power flow with device injections `p, q [n_bus]` MW:
                                      a result with `vm_pu`, `va_deg [n_bus]`, `converged`,
                                      `iterations`, `p_loss_mw`, `slack_p_mw [n_ext_grid]`,
                                      `loading_percent [n_branch]`
    import_mw(params, pf)             `[]` power drawn from the external grids, MW
    unbalance(params, pf)             None, or `(excess [n_bus], info)`: voltage unbalance above
                                      the limit, %, on the first node of each three-phase bus
    cost_signals                      safety signals the model adds to `Env.cost_signals`

`Balanced` is pandapower's positive-sequence `pgjax.grid.Grid` (bus axis: buses).
`ThreePhase` is a `pgjax.grid3ph.Grid3ph` feeder from OpenDSS (bus axis: nodes, `bus.phase`):
its loads are the feeder's load branches (wye and delta, OpenDSS models), scaled per step by
their profile; each device injects through one constant-power wye branch on its node
(appended to the feeder's loads); the system matrix is prepared once from the float64 feeder
(`threephase.prepare`) and carried in `params.network_aux`, so float32 envs solve with the
float64 conditioning (see docs/threephase.md, "A scenario on it").
"""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import devices as dev
from pgjax.devices.base import Context
from pgjax.env.types import CostSignal
from pgjax.errors import InputError
from pgjax.grid import Grid, astype
from pgjax.powerflow import bus_injections, check_method, network, solve
from pgjax.powerflow.tree import tree_of


def load_factors(params, ctx: Context, series_col):
    """`[n]` profile value of each load / generator (1 where `series_col` is -1)."""
    return jnp.where(series_col >= 0, ctx.series[jnp.maximum(series_col, 0)], 1.0)


def scaled_grid(params, ctx: Context, grid: Grid) -> Grid:
    """`grid` with its loads and static generators scaled by the step's profile values."""
    load_f = load_factors(params, ctx, params.load_series)
    sgen_f = load_factors(params, ctx, params.sgen_series)
    return grid.replace(
        load=grid.load.replace(p_mw=grid.load.p_mw * load_f * params.load_scale,
                               q_mvar=grid.load.q_mvar * load_f * params.load_scale),
        sgen=grid.sgen.replace(p_mw=grid.sgen.p_mw * sgen_f, q_mvar=grid.sgen.q_mvar * sgen_f))


@dataclasses.dataclass(frozen=True, eq=False)
class Balanced:
    """A balanced `pgjax.grid.Grid` solved by `pgjax.powerflow.solve` (the scenario's method)."""

    grid: Grid  # numpy leaves, as compiled
    method: str
    max_iter: int
    jacobian: str
    cost_signals = types.MappingProxyType({})

    def params_fields(self, dtype) -> dict:
        return {"grid": astype(self.grid, dtype),
                "tree": tree_of(self.grid) if self.method == "distflow" else None}

    def loaded(self, params, ctx, grid):
        grid = scaled_grid(params, ctx, grid)
        return (grid, *bus_injections(grid))

    def start(self, grid):
        vm, va = network.setpoints(grid)
        on = network.energized(grid)
        return jnp.where(on, vm, 0.0), jnp.where(on, jnp.rad2deg(va), 0.0)

    def energized(self, grid):
        return network.energized(grid)

    def solve(self, grid, p_bus, q_bus, params, init):
        return solve(grid, p_bus, q_bus, method=self.method, max_iter=self.max_iter, jacobian=self.jacobian,
                     init=init, tree=params.tree)

    def import_mw(self, params, pf):
        return jnp.sum(jnp.where(params.grid.ext_grid.in_service, pf.slack_p_mw, 0))

    def unbalance(self, params, pf):
        return None


@struct.dataclass
class Aux3ph:
    """`params.network_aux` of a three-phase env."""

    prepared: object  # pgjax.powerflow.threephase.Prepared3ph of the float64 feeder, in the env's complex dtype
    vuf_max_percent: jax.Array  # [] voltage-unbalance limit, %


@struct.dataclass
class Flow3ph:
    """A three-phase power flow as the env reads it (`[n_bus]` = nodes)."""

    vm_pu: jax.Array  # [n_node] p.u. of each node's line-to-neutral base
    va_deg: jax.Array  # [n_node]
    converged: jax.Array  # [] bool
    iterations: jax.Array  # [] int
    p_loss_mw: jax.Array  # [] source power minus every load branch's draw (float32-safe), MW
    slack_p_mw: jax.Array  # [n_src] power delivered by the source, MW
    p_from_mw: jax.Array  # [n_elem] power into each element at its first terminal, MW
    loading_percent: jax.Array  # [0] (no branch ampacities)
    vuf_percent: jax.Array  # [n_3ph_bus] voltage-unbalance factor, %


def with_injections(grid, nodes: np.ndarray):
    """`grid` (numpy leaves) with one constant-power wye load branch per node of `nodes` at zero power."""
    ld, n = grid.load, len(nodes)
    f = np.asarray(ld.p_kw).dtype
    cat = lambda x, y: np.concatenate([np.asarray(x), np.asarray(y, np.asarray(x).dtype)])  # noqa: E731
    load = ld.replace(node_a=cat(ld.node_a, nodes), node_b=cat(ld.node_b, np.full(n, grid.n_node)),
                      p_kw=cat(ld.p_kw, np.zeros(n, f)), q_kvar=cat(ld.q_kvar, np.zeros(n, f)),
                      vnom_kv=cat(ld.vnom_kv, np.asarray(grid.node.vbase_kv)[nodes]), exp_p=cat(ld.exp_p, np.zeros(n, f)),
                      exp_q=cat(ld.exp_q, np.zeros(n, f)), mask=cat(ld.mask, np.ones(n, bool)))
    return grid.replace(load=load)


@dataclasses.dataclass(frozen=True, eq=False)
class ThreePhase:
    """A `pgjax.grid3ph.Grid3ph` feeder (module docstring); `grid` already holds the injection branches."""

    grid: object  # Grid3ph, numpy float64 leaves, feeder loads then one branch per `inj_node`
    n_feeder_load: int  # load branches of the feeder (scaled by the profiles)
    inj_node: np.ndarray  # [n_inj] node of each device injection branch
    ubus_nodes: np.ndarray  # [n_3ph_bus, 3] nodes a, b, c of each three-phase bus
    phase_deg: np.ndarray  # [n_node] nominal angle of each node's phase (reset state)
    max_iter: int
    vuf_max_percent: float
    cost_signals = types.MappingProxyType({"unbalance": CostSignal(
        "safety_unbalance", "% voltage-unbalance factor above vuf_max_percent, summed over three-phase buses")})

    def params_fields(self, dtype) -> dict:
        from pgjax import grid3ph
        from pgjax.powerflow import threephase

        cdtype = np.complex64 if jnp.dtype(dtype) == jnp.float32 else np.complex128
        prepared = jax.tree.map(lambda x: jnp.asarray(np.asarray(x).astype(cdtype)), threephase.prepare(self.grid))
        return {"grid": jax.tree.map(jnp.asarray, grid3ph.astype(self.grid, dtype)), "tree": None,
                "network_aux": Aux3ph(prepared, jnp.asarray(self.vuf_max_percent, dtype))}

    def loaded(self, params, ctx, grid):
        f = load_factors(params, ctx, params.load_series) * params.load_scale  # [n_feeder_load]
        ld, k = grid.load, self.n_feeder_load
        grid = grid.replace(load=ld.replace(p_kw=ld.p_kw.at[:k].multiply(f), q_kvar=ld.q_kvar.at[:k].multiply(f)))
        zero = jnp.zeros(grid.n_node, ld.p_kw.dtype)
        return grid, zero, zero

    def start(self, grid):
        on = grid.node.mask
        return jnp.where(on, 1.0, 0.0), jnp.where(on, jnp.asarray(self.phase_deg, grid.node.vbase_kv.dtype), 0.0)

    def energized(self, grid):
        return grid.node.mask

    def solve(self, grid, p_bus, q_bus, params, init):
        from pgjax.powerflow import threephase, unbalance

        k, idx = self.n_feeder_load, jnp.asarray(self.inj_node)
        p_kw = grid.load.p_kw.at[k:].set(-p_bus[idx] * 1e3)
        q_kvar = grid.load.q_kvar.at[k:].set(-q_bus[idx] * 1e3)
        # the fixed point's matrix holds params.grid's nominal load admittances: solve that grid at this operating point
        r = threephase.solve(params.grid, p_kw, q_kvar, max_iter=self.max_iter, prepared=params.network_aux.prepared)
        u = jnp.asarray(self.ubus_nodes)
        return Flow3ph(vm_pu=r.vm_pu, va_deg=r.va_deg, converged=r.converged, iterations=r.iterations,
                       p_loss_mw=(jnp.sum(r.source_p_kw) - jnp.sum(r.load_p_kw)) / 1e3, slack_p_mw=r.source_p_kw / 1e3,
                       p_from_mw=jnp.sum(jnp.where(grid.elem.terminal == 0, r.p_kw, 0), axis=-1) / 1e3,
                       loading_percent=jnp.zeros(0, r.vm_pu.dtype), vuf_percent=unbalance.vuf_percent(r.v_re_pu[u], r.v_im_pu[u]))

    def import_mw(self, params, pf):
        return jnp.sum(pf.slack_p_mw)

    def unbalance(self, params, pf):
        dt = pf.vm_pu.dtype
        excess = jnp.maximum(pf.vuf_percent - params.network_aux.vuf_max_percent, 0)
        per_bus = jnp.zeros(self.grid.n_node, dt).at[jnp.asarray(self.ubus_nodes[:, 0])].add(excess)
        return per_bus, {"safety_unbalance": jnp.sum(excess), "vuf_max_percent": jnp.max(pf.vuf_percent, initial=0.0),
                         "converged": pf.converged.astype(dt)}


def three_phase(c) -> ThreePhase:
    """The `ThreePhase` model of a compiled scenario on an OpenDSS feeder (`c.network` a `Network3ph`)."""
    from pgjax.powerflow import unbalance

    if c.method != "fixed_point":
        raise InputError(f"scenario '{c.name}': powerflow.method '{c.method}' does not apply to a three-phase feeder; "
                         "use 'fixed_point'")
    for g in c.groups:
        if dev.get(g.type).apply_to_grid is not None:
            raise InputError(f"scenario '{c.name}': device type '{g.type}' changes the grid, which a three-phase "
                             "feeder does not support yet")
    nodes = np.unique(np.concatenate([np.asarray(g.params.bus, np.int64) for g in c.groups] or [np.zeros(0, np.int64)]))
    names = c.network.netmap.node_names
    phase = np.array([int(n.rsplit(".", 1)[1]) for n in names])
    return ThreePhase(grid=with_injections(c.grid, nodes), n_feeder_load=c.grid.n_load, inj_node=nodes,
                      ubus_nodes=unbalance.three_phase_buses(names)[1], phase_deg=-120.0 * ((phase - 1) % 3),
                      max_iter=c.max_iter, vuf_max_percent=c.vuf_max_percent)


def for_scenario(c):
    """The grid model of a compiled scenario (`pgjax.scenario.Compiled`)."""
    from pgjax.grid3ph import Grid3ph

    if isinstance(c.grid, Grid3ph):
        return three_phase(c)
    check_method(c.grid, c.method)
    return Balanced(c.grid, c.method, c.max_iter, c.jacobian)

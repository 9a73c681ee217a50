"""Power-flow results from solved bus voltages: branch flows, loading, losses, slack power."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.grid import Grid
from pgjax.powerflow import columns, network


@struct.dataclass
class PowerFlowResult:
    """Solution of one power flow (leading batch axes when vmapped).

    Bus arrays are `[n_bus]` in grid bus order, branch arrays `[n_branch]`, slack arrays
    `[n_ext_grid]`, generator arrays `[n_gen]`. Powers in MW/Mvar, flows positive into the
    branch at that end. Buses that are not energized (isolated or padding) read
    `vm_pu = va_deg = 0` and `energized = False`; inactive branches read zero flow.
    """

    vm_pu: jax.Array
    va_deg: jax.Array
    energized: jax.Array
    p_from_mw: jax.Array
    q_from_mvar: jax.Array
    p_to_mw: jax.Array
    q_to_mvar: jax.Array
    i_from_ka: jax.Array
    i_to_ka: jax.Array
    loading_percent: jax.Array
    p_loss_mw: jax.Array  # [] total active losses in branches
    q_loss_mvar: jax.Array  # [] total reactive losses in branches
    slack_p_mw: jax.Array  # [n_ext_grid] power injected by each external grid
    slack_q_mvar: jax.Array
    gen_q_mvar: jax.Array  # [n_gen] reactive power of voltage-controlled generators
    converged: jax.Array  # [] bool
    iterations: jax.Array  # [] int
    max_mismatch: jax.Array  # [] largest remaining |mismatch|, p.u.


def _share(grid: Grid, bus, in_service, weight, bus_value):
    """Split a per-bus value `[n_bus, B]` among the in-service elements at that bus by weight."""
    weight = jnp.where(in_service, weight, 0)
    total = jnp.zeros(grid.n_bus, weight.dtype).at[bus].add(weight)
    share = jnp.where(in_service, weight / jnp.where(total[bus] == 0, 1, total[bus]), 0)
    return bus_value[bus] * share[:, None]


def _finish_columns(grid: Grid, vm_pu, va_rad, p_mw, q_mvar, converged, iterations, max_mismatch) -> PowerFlowResult:
    """`finish` for a batch laid out as columns: bus arrays `[n_bus, B]`, scalars `[B]`;
    every result field with a trailing batch axis."""
    c = lambda a: a[:, None]  # noqa: E731 - a grid array as a column
    on = network.energized(grid)
    v = vm_pu * jnp.exp(1j * va_rad)
    y_ff, y_ft, y_tf, y_tt = (c(y) for y in network.branch_admittances(grid))
    f, t = grid.branch.from_bus, grid.branch.to_bus
    v_f, v_t = v[f], v[t]
    s_from = v_f * jnp.conj(y_ff * v_f + y_ft * v_t) * grid.sn_mva
    s_to = v_t * jnp.conj(y_tf * v_f + y_tt * v_t) * grid.sn_mva
    kv = grid.bus.vn_kv
    i_from_ka = jnp.abs(s_from) / (vm_pu[f] * c(kv[f])) / jnp.sqrt(3.0)
    i_to_ka = jnp.abs(s_to) / (vm_pu[t] * c(kv[t])) / jnp.sqrt(3.0)
    loading = 100 * jnp.maximum(i_from_ka / c(grid.branch.i_max_from_ka), i_to_ka / c(grid.branch.i_max_to_ka))

    # bus power = shunt power + power into every branch end at the bus (no Ybus: O(n_branch))
    s_bus = (vm_pu**2 * c(jnp.conj(network.bus_shunt(grid))) * grid.sn_mva
             + jnp.zeros(vm_pu.shape, s_from.dtype).at[f].add(s_from).at[t].add(s_to))
    is_ref, is_pv, _ = (c(b) for b in network.bus_types(grid))
    slack_p = jnp.where(is_ref, s_bus.real - p_mw, 0)
    slack_q = jnp.where(is_ref, s_bus.imag - q_mvar, 0)
    gen_q = jnp.where(is_pv & ~is_ref, s_bus.imag - q_mvar, 0)
    eg, gen = grid.ext_grid, grid.gen
    batch, dtype = vm_pu.shape[1:], vm_pu.dtype
    return PowerFlowResult(
        vm_pu=jnp.where(c(on), vm_pu, 0),
        va_deg=jnp.where(c(on), jnp.rad2deg(va_rad), 0),
        energized=jnp.broadcast_to(c(on), vm_pu.shape),
        p_from_mw=s_from.real,
        q_from_mvar=s_from.imag,
        p_to_mw=s_to.real,
        q_to_mvar=s_to.imag,
        i_from_ka=i_from_ka,
        i_to_ka=i_to_ka,
        loading_percent=loading,
        p_loss_mw=jnp.sum(s_from.real + s_to.real, axis=0),
        q_loss_mvar=jnp.sum(s_from.imag + s_to.imag, axis=0),
        slack_p_mw=_share(grid, eg.bus, eg.in_service, eg.slack_weight, slack_p),
        slack_q_mvar=_share(grid, eg.bus, eg.in_service, jnp.ones(eg.bus.shape, dtype), slack_q),
        gen_q_mvar=_share(grid, gen.bus, gen.in_service & ~is_ref[gen.bus, 0], jnp.ones(gen.bus.shape, dtype), gen_q),
        converged=jnp.broadcast_to(converged, batch),
        iterations=jnp.broadcast_to(iterations, batch),
        max_mismatch=jnp.broadcast_to(max_mismatch, batch),
    )


# A vmapped batch with the network shared computes its results as columns (`columns.per_point`).
_finish = columns.per_point(_finish_columns, (columns.SHARED,) + (columns.POINT,) * 7, differentiable=True)


def _network_only(grid: Grid) -> Grid:
    """`grid` without the injection tables (loads, static generators, storage, wards), which
    the results do not read: a batch whose loads differ per point keeps a shared network."""
    def empty(table):
        return jax.tree.map(lambda x: jnp.zeros((0,), x.dtype), table)

    return grid.replace(load=empty(grid.load), sgen=empty(grid.sgen), storage=empty(grid.storage),
                        ward=empty(grid.ward))


def finish(grid: Grid, vm_pu, va_rad, p_mw, q_mvar, converged, iterations, max_mismatch) -> PowerFlowResult:
    """Compute flows, loading, losses and slack power at the voltages `vm_pu`, `va_rad` `[n_bus]`.

    `p_mw`, `q_mvar` `[n_bus]` are the specified net injections used by the solver;
    `converged`, `iterations`, `max_mismatch` are passed through. Under `vmap` with the
    grid shared the batch is computed as columns (`pgjax.powerflow.columns`).
    """
    dtype = vm_pu.dtype
    return _finish(_network_only(grid), vm_pu, va_rad, p_mw, q_mvar, jnp.asarray(converged, bool),
                   jnp.asarray(iterations, jnp.int32), jnp.asarray(max_mismatch, dtype))

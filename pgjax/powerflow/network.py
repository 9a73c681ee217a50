"""Network equations shared by every solver: admittances, injections, setpoints, mismatch.

All functions are pure, take one (unbatched) `Grid` and are vmapped by callers. Complex
arithmetic runs in the complex type of the grid's float dtype (complex64 for float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgjax.grid import NONE, PQ, PV, REF, Grid


def complex_dtype(grid: Grid):
    """complex64 for a float32 grid, complex128 for float64."""
    return jnp.result_type(grid.branch.r_pu.dtype, jnp.complex64)


def energized(grid: Grid) -> jax.Array:
    """`[n_bus]` bool: the bus takes part in the power flow (not isolated, not padding)."""
    return (grid.bus.bus_type != NONE) & grid.bus.mask


def branch_active(grid: Grid) -> jax.Array:
    """`[n_branch]` bool: in service with both ends energized."""
    on = energized(grid)
    br = grid.branch
    return br.in_service & on[br.from_bus] & on[br.to_bus]


def branch_admittances(grid: Grid):
    """Two-port admittances `(y_ff, y_ft, y_tf, y_tt)`, each complex `[n_branch]`, p.u.

    Zero for inactive branches. pandapower's (MATPOWER's) model: see `pgjax.grid.Branches`.
    """
    br = grid.branch
    cdt = complex_dtype(grid)
    active = branch_active(grid)
    x_safe = jnp.where(active, br.x_pu, 1.0)
    r_safe = jnp.where(active, br.r_pu, 0.0)
    y_series_from = jnp.where(active, 1.0 / (r_safe + 1j * x_safe), 0).astype(cdt)
    y_series_to = jnp.where(
        active, 1.0 / (r_safe + br.r_asym_pu + 1j * (x_safe + br.x_asym_pu)), 0).astype(cdt)
    y_charge_from = jnp.where(active, br.g_pu + 1j * br.b_pu, 0).astype(cdt)
    y_charge_to = jnp.where(active, br.g_pu + br.g_asym_pu + 1j * (br.b_pu + br.b_asym_pu), 0).astype(cdt)
    tap = (br.tap * jnp.exp(1j * jnp.deg2rad(br.shift_deg))).astype(cdt)
    y_tt = y_series_to + y_charge_to / 2
    y_ff = (y_series_from + y_charge_from / 2) / (tap * jnp.conj(tap))
    y_ft = -y_series_from / jnp.conj(tap)
    y_tf = -y_series_to / tap
    return y_ff, y_ft, y_tf, y_tt


def bus_shunt(grid: Grid) -> jax.Array:
    """`[n_bus]` complex fixed shunt admittance, p.u. (`(gs + j bs) / sn_mva`)."""
    on = energized(grid)
    return jnp.where(on, grid.bus.gs_mw + 1j * grid.bus.bs_mvar, 0).astype(complex_dtype(grid)) / grid.sn_mva


def make_ybus(grid: Grid) -> jax.Array:
    """Dense bus admittance matrix `[n_bus, n_bus]`, complex p.u."""
    y_ff, y_ft, y_tf, y_tt = branch_admittances(grid)
    f, t = grid.branch.from_bus, grid.branch.to_bus
    ybus = jnp.diag(bus_shunt(grid))
    ybus = ybus.at[f, f].add(y_ff).at[f, t].add(y_ft).at[t, f].add(y_tf).at[t, t].add(y_tt)
    return ybus


def _sum_to_bus(grid: Grid, bus, values, mask) -> jax.Array:
    return jnp.zeros(grid.n_bus, values.dtype).at[bus].add(jnp.where(mask, values, 0))


def bus_injections(grid: Grid, include_gen: bool = True):
    """Net bus injections `(p_mw, q_mvar)`, each `[n_bus]`, generation positive.

    Sums loads, storage and wards (consumption) and static generators (and, with
    `include_gen`, the active power of voltage-controlled generators). This is the default
    operating point that `solve` uses when no injections are given.
    """
    p_mw = jnp.zeros(grid.n_bus, grid.bus.gs_mw.dtype)
    q_mvar = jnp.zeros(grid.n_bus, grid.bus.gs_mw.dtype)
    for table, sign in ((grid.load, -1), (grid.storage, -1), (grid.ward, -1), (grid.sgen, 1)):
        p_mw = p_mw + sign * _sum_to_bus(grid, table.bus, table.p_mw, table.in_service)
        q_mvar = q_mvar + sign * _sum_to_bus(grid, table.bus, table.q_mvar, table.in_service)
    if include_gen:
        p_mw = p_mw + _sum_to_bus(grid, grid.gen.bus, grid.gen.p_mw, grid.gen.in_service)
    return p_mw, q_mvar


def bus_types(grid: Grid):
    """Masks `(is_ref, is_pv, is_pq)`, each `[n_bus]` bool, over energized buses."""
    on = energized(grid)
    kind = grid.bus.bus_type
    return on & (kind == REF), on & (kind == PV), on & (kind == PQ)


def setpoints(grid: Grid):
    """Initial and fixed voltages `(vm_pu, va_rad)`, each `[n_bus]`.

    Reference buses take their external grid's magnitude and angle, PV buses their
    generator's magnitude; every other bus starts flat at 1 pu and the slack's angle.
    """
    dtype = grid.bus.gs_mw.dtype
    eg, gen = grid.ext_grid, grid.gen
    va_slack = jnp.sum(jnp.where(eg.in_service, jnp.deg2rad(eg.va_deg), 0)) / jnp.maximum(
        jnp.sum(eg.in_service), 1)
    vm = jnp.ones(grid.n_bus, dtype).at[jnp.where(gen.in_service, gen.bus, grid.n_bus)].set(gen.vm_pu, mode="drop")
    vm = jnp.where(grid.bus.bus_type == PV, vm, 1.0)
    vm = vm.at[jnp.where(eg.in_service, eg.bus, grid.n_bus)].set(eg.vm_pu, mode="drop")
    va = jnp.full(grid.n_bus, va_slack, dtype)
    va = va.at[jnp.where(eg.in_service, eg.bus, grid.n_bus)].set(jnp.deg2rad(eg.va_deg), mode="drop")
    return vm, va


def dc_angles(grid: Grid, p_spec_pu, va_set) -> jax.Array:
    """Initial angles `[n_bus]` (rad) from a DC power flow, as pandapower's `init="dc"`.

    Includes transformer phase shifts, which a flat start would miss by up to 150 degrees.
    `p_spec_pu` `[n_bus]` net active injections in p.u.; `va_set` fixes reference angles.
    """
    br = grid.branch
    active = branch_active(grid)
    b = jnp.where(active, 1.0 / (jnp.where(active, br.x_pu, 1.0) * br.tap), 0)
    incidence = jnp.zeros((grid.n_branch, grid.n_bus), b.dtype)
    incidence = incidence.at[jnp.arange(grid.n_branch), br.from_bus].add(1.0)
    incidence = incidence.at[jnp.arange(grid.n_branch), br.to_bus].add(-1.0)
    b_bus = incidence.T @ (b[:, None] * incidence)
    p_shift = incidence.T @ (-b * jnp.deg2rad(br.shift_deg))
    is_ref, is_pv, is_pq = bus_types(grid)
    free = is_pv | is_pq
    b_mod = jnp.where(free[:, None], b_bus, jnp.eye(grid.n_bus, dtype=b.dtype))
    rhs = jnp.where(free, p_spec_pu - p_shift - grid.bus.gs_mw / grid.sn_mva, va_set)
    return jnp.linalg.solve(b_mod, rhs)

"""Cost, safety, reward and `info` of one step (the reward is replaceable, like Jumanji's `reward_fn`).

After the power flow the step gathers an `Outcome`: per-agent cost ($) and device safety,
bus voltage and branch loading excesses, and whether the power flow converged. Then

    safety = voltage excess @ bus accounts + loading excess / 100 @ branch accounts
             + device safety + nonconverged
             (+ voltage-unbalance excess, %, @ bus accounts: three-phase grids)   [n_agents]
    reward = -(cost + penalty * safety) * reward_scale                       [n_agents]
(or the sum over agents for every agent with `reward.shared`). `Env(..., reward_fn=f)`
replaces the second line: `f(outcome, params, shared) -> [n_agents]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.env.types import CostSignal

# The entries of `info` with one value per learned agent `[n_agents]`; the others are scalars
# `[]` or, for protocol values, one per grid agent `[n_grid]`.
AGENT_INFO = ("cost", "safety")

# The signals of `info` a constrained learner can budget (`Env.cost_signals`), by name.
COST_SIGNALS = {
    "voltage": CostSignal("safety_voltage", "p.u. outside [vm_min_pu, vm_max_pu], summed over energized buses"),
    "loading": CostSignal("safety_loading", "branch loading above loading_max_percent, in units of 100 %, "
                                            "summed over branches"),
    "devices": CostSignal("safety_devices", "device limit violations in the device types' safety units, summed"),
    "nonconverged": CostSignal("nonconverged", "power flows that did not converge (1 per step)"),
    # a resource budget rather than a limit: MAPDN's Q cost, the inverters' reactive energy
    "reactive": CostSignal("reactive_mvarh", "Mvarh of inverter reactive energy, |Q| x dt_h summed over inverters"),
}


@struct.dataclass
class Outcome:
    """What a step did, before it is turned into a reward (per agent `[n_agents]` unless noted)."""

    cost: jax.Array  # $ this step, attributed to learned agents
    cost_total: jax.Array  # [] $, all devices and settlements
    safety: jax.Array  # constraint violations attributed to learned agents (see the module docstring)
    device_safety: jax.Array
    v_excess: jax.Array  # [n_bus] pu outside [vm_min_pu, vm_max_pu] (0 on de-energized buses)
    l_excess: jax.Array  # [n_branch] loading above the limit / 100
    nonconverged: jax.Array  # [] 1.0 where the power flow did not converge
    energized: jax.Array  # [n_bus] bool
    u_excess: jax.Array | None = None  # [n_bus] % voltage unbalance above the limit (three-phase grids), else None


def grid_excess(params, on, pf):
    """`(v_excess [n_bus], l_excess [n_branch], energized [n_bus])` of a power-flow result on the
    energized buses `on [n_bus]`."""
    vm = pf.vm_pu
    v_excess = jnp.where(on, jnp.maximum(params.vm_min_pu - vm, 0) + jnp.maximum(vm - params.vm_max_pu, 0), 0)
    l_excess = jnp.maximum(jnp.nan_to_num(pf.loading_percent, posinf=0.0) - params.loading_max_percent, 0) / 100
    return v_excess, l_excess, on


def outcome(layout, params, on, pf, cost, cost_total, device_safety, u_excess=None) -> Outcome:
    """The step's `Outcome` from its attributed costs and device safety, its power flow, the
    energized buses `on [n_bus]` and the voltage-unbalance excess `u_excess [n_bus]` (or None)."""
    dt = cost.dtype
    v_excess, l_excess, on = grid_excess(params, on, pf)
    nonconv = 1.0 - pf.converged.astype(dt)
    safety = (v_excess @ jnp.asarray(layout.bus_account, dt) + l_excess @ jnp.asarray(layout.branch_account, dt)
              + device_safety + nonconv)
    if u_excess is not None:
        safety = safety + u_excess.astype(dt) @ jnp.asarray(layout.bus_account, dt)
    return Outcome(cost=cost, cost_total=cost_total, safety=safety, device_safety=device_safety,
                   v_excess=v_excess, l_excess=l_excess, nonconverged=nonconv, energized=on, u_excess=u_excess)


def default_reward(out: Outcome, params, shared: bool):
    """`-(cost + penalty * safety) * reward_scale` per agent, or its sum for every agent (`shared`)."""
    if shared:
        total = -(jnp.sum(out.cost) + params.penalty * jnp.sum(out.safety)) * params.reward_scale
        return jnp.full(out.cost.shape, total, out.cost.dtype)
    return -(out.cost + params.penalty * out.safety) * params.reward_scale


def info(out: Outcome, params, pf, p_bus, net_load_mw, totals: dict, dt, slack) -> dict:
    """The scalar and per-agent diagnostics every step reports (protocol and grid-model values are
    added by the step); `slack` `[]` is the power drawn from the external grids, MW."""
    on, vm = out.energized, pf.vm_pu
    n_on = jnp.maximum(jnp.sum(on), 1)
    v_viol = on & (out.v_excess > 0)
    total = lambda k: jnp.asarray(totals.get(k, 0.0), dt)  # noqa: E731
    return {
        "cost": out.cost, "safety": out.safety, "cost_total": out.cost_total,
        "safety_voltage": jnp.sum(out.v_excess), "safety_loading": jnp.sum(out.l_excess),
        "safety_devices": jnp.sum(out.device_safety), "nonconverged": out.nonconverged,
        "pf_iterations": pf.iterations, "losses_mw": pf.p_loss_mw, "voltage_violation_rate": jnp.sum(v_viol) / n_on,
        "vm_min_pu": jnp.min(jnp.where(on, vm, jnp.inf)), "vm_max_pu": jnp.max(jnp.where(on, vm, -jnp.inf)),
        "controllable": ((jnp.sum(v_viol) == 0) & (jnp.sum(out.l_excess) == 0) & pf.converged).astype(dt),
        "curtailment_mwh": total("curtailment_mwh"), "renewable_mwh": total("renewable_mwh"),
        "reactive_mvarh": total("reactive_mvarh"),  # |Q| of inverters (MAPDN Q cost)
        "import_mwh": jnp.maximum(slack, 0) * params.dt_h, "export_mwh": jnp.maximum(-slack, 0) * params.dt_h,
        "net_load_variance_mw2": jnp.var(net_load_mw),
        "p_injected_mw": jnp.sum(jnp.where(on, p_bus, 0)), "slack_p_mw": slack,
    }

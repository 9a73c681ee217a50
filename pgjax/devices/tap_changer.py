"""Transformer on-load tap changer (OLTC): tap position steps that set a branch's ratio.

Action `[1]` in [-1, 1] moves the tap by `round(a * max_step_change)` positions (0 holds),
within `[tap_min, tap_max]`. The ratio follows pandapower's ratio tap changer:
`tap = tap_base * (1 + (pos - neutral) s) / (1 + (base_pos - neutral) s)` for a tap on the
high-voltage side, the inverse factor for one on the low-voltage side (`s` the step in
per unit, `tap_base` the grid's ratio at position `base_pos`; the scenario compiler fills
both from the network's transformer). It replaces the `tap` entry of the branch in the
Grid before the power flow.
Fixed policy (`rule`, used when no agent controls the tap): move one step per time step
towards the band `[v_low_pu, v_high_pu]` at the regulated bus `bus` (the compiler's
default: the branch's to bus).
Cost: `switching_cost * |position change|` ($). `aux`: the tap position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Feature, Field, Setpoint


@struct.dataclass
class Params:
    bus: jax.Array  # regulated bus (for the rule and observations)
    branch: jax.Array  # int
    tap_base: jax.Array  # ratio of the branch at base_pos
    base_pos: jax.Array
    initial_pos: jax.Array
    tap_neutral: jax.Array
    tap_min: jax.Array
    tap_max: jax.Array
    tap_step_percent: jax.Array
    hv_side: jax.Array  # bool: the tap sits on the from (high-voltage) side
    max_step_change: jax.Array
    switching_cost: jax.Array
    v_low_pu: jax.Array
    v_high_pu: jax.Array


@struct.dataclass
class State:
    pos: jax.Array  # float holding an integer position


FIELDS = {
    "bus": Field("bus", 0, doc="regulated bus (default: the branch's to bus)"),
    "branch": Field("branch", doc="transformer branch"),
    "tap_base": Field("float", 1.0, doc="ratio at base_pos (default: from the grid)"),
    "base_pos": Field("float", 0.0, doc="position of tap_base (default: the net's tap_pos)"),
    "initial_pos": Field("float", 0.0, doc="position at reset (default: base_pos)"),
    "tap_neutral": Field("float", 0.0),
    "tap_min": Field("float", -16.0),
    "tap_max": Field("float", 16.0),
    "tap_step_percent": Field("float", 0.625, "%"),
    "hv_side": Field("bool", True),
    "max_step_change": Field("float", 1.0),
    "switching_cost": Field("float", 0.0, "$ per position change"),
    "v_low_pu": Field("float", 0.97, "pu", "rule: raise the voltage below this"),
    "v_high_pu": Field("float", 1.03, "pu", "rule: lower the voltage above this"),
}


def init(params: Params, key) -> State:
    return State(pos=params.initial_pos)


def ratio(params: Params, pos):
    """Branch ratio at tap position `pos`."""
    s = params.tap_step_percent / 100.0
    factor = (1 + (pos - params.tap_neutral) * s) / (1 + (params.base_pos - params.tap_neutral) * s)
    return params.tap_base * jnp.where(params.hv_side, factor, 1.0 / factor)


def rule(params: Params, state: State, ctx):
    """Voltage-band control: +-1 position towards `[v_low_pu, v_high_pu]` at `bus`."""
    vm = ctx.vm_pu[params.bus]
    raise_v = jnp.where(params.hv_side, -1.0, 1.0)  # moving the tap this way raises the voltage
    move = jnp.where(vm < params.v_low_pu, raise_v, jnp.where(vm > params.v_high_pu, -raise_v, 0.0))
    move = jnp.where(vm > 0, move, 0.0)  # de-energized or not yet measured: hold
    return (move / jnp.maximum(params.max_step_change, 1.0))[:, None]


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    move = jnp.round(jnp.clip(action[:, 0], -1.0, 1.0) * params.max_step_change)
    pos = jnp.clip(state.pos + move, params.tap_min, params.tap_max)
    z = jnp.zeros_like(pos)
    return Setpoint(p_mw=z, q_mvar=z, aux=pos)


def dynamics(params: Params, state: State, sp: Setpoint, ctx) -> State:
    return State(pos=sp.aux)


def apply_to_grid(params: Params, state: State, grid):
    tap = grid.branch.tap.at[params.branch].set(ratio(params, state.pos))
    return grid.replace(branch=grid.branch.replace(tap=tap))


def cost(params: Params, state: State, sp: Setpoint, ctx):
    return params.switching_cost * jnp.abs(sp.aux - state.pos)


def safety(params: Params, state: State, sp: Setpoint, ctx):
    return jnp.maximum(sp.aux - params.tap_max, 0) + jnp.maximum(params.tap_min - sp.aux, 0)


def observe(params: Params, state: State, ctx):
    span = jnp.maximum(params.tap_max - params.tap_min, 1.0)
    return jnp.stack([2 * (state.pos - params.tap_min) / span - 1], axis=-1)


def obs_scale(params: Params):
    lo, hi = np.asarray(params.tap_min, float), np.asarray(params.tap_max, float)
    half = np.maximum(hi - lo, 1.0) / 2
    return half[:, None], (lo + half)[:, None]


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: a branch is given (not null), `tap_min <= tap_max`,
    `tap_base > 0`, a step in [0, 50] %, `max_step_change` and `switching_cost` >= 0, the
    rule's band `0 < v_low_pu <= v_high_pu <= 2`. (Limits the entry leaves out come from
    the network's transformer, so only given pairs are compared.)"""
    bounds = {"tap_base": checks.POSITIVE, "tap_step_percent": checks.Range(0.0, 50.0),
              "max_step_change": checks.NONNEGATIVE, "switching_cost": checks.NONNEGATIVE,
              "v_low_pu": checks.VOLTAGE_PU, "v_high_pu": checks.VOLTAGE_PU}
    problems = checks.ranges(entry, path, bounds) + checks.ordered(
        entry, path, [("tap_min", "tap_max"), ("v_low_pu", "v_high_pu")],
        {"tap_min": None, **checks.defaults(FIELDS, ("v_low_pu", "v_high_pu"))})  # tap limits: the net's
    if "branch" in entry and entry["branch"] is None:
        problems.append((f"{path}.branch", "{line: name|index} or {trafo: name|index}", None))
    return problems


def complete(entry: dict, net) -> dict:
    """`entry` with defaults from the network's transformer where `branch` names one.

    `net`: the `pgjax.scenario.Network` the scenario compiles against. Fills the ratio
    `tap_base` at the net's `tap_pos` (`base_pos`, also the reset position), the net's
    neutral, limits and step, the tap side, and the regulated bus (the branch's to bus).
    """
    hit = net.branch(entry["branch"]) if entry.get("branch") is not None else None
    if hit is None or hit[1] != "trafo":
        return entry
    row, _, label = hit
    tr = net.net.trafo.loc[label]
    pos = float(np.nan_to_num(tr.get("tap_pos", 0.0)))
    to_bus = int(net.grid.branch.to_bus[row])
    auto = {"tap_base": float(net.grid.branch.tap[row]), "base_pos": pos,
            "initial_pos": entry.get("base_pos", pos),
            "bus": int(net.net.bus.index[list(net.netmap.bus_lookup).index(to_bus)]),
            "tap_neutral": float(np.nan_to_num(tr.get("tap_neutral", 0.0))),
            "tap_min": float(np.nan_to_num(tr.get("tap_min", -16))),
            "tap_max": float(np.nan_to_num(tr.get("tap_max", 16))),
            "tap_step_percent": float(np.nan_to_num(tr.get("tap_step_percent", 0.0))),
            "hv_side": tr.get("tap_side") != "lv"}
    return {**auto, **entry}


TAP_CHANGER = DeviceType(
    name="tap_changer", params_cls=Params, state_cls=State, fields=FIELDS, act_dim=1, obs_dim=1,
    default_action=(0.0,), init=init, decode=decode, dynamics=dynamics, cost=cost,
    safety=safety, observe=observe, apply_to_grid=apply_to_grid, rule=rule, validate=validate,
    complete=complete, obs_scale=obs_scale, obs_features=(Feature("tap_pos", "steps"),),
    act_features=(Feature("tap_change", "steps", "-1 .. 1 -> -max_step_change .. +max_step_change"),), doc=__doc__)

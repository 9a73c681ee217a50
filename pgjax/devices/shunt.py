"""Switched shunt / capacitor bank: a number of equal steps of susceptance.

Action `[1]` in [-1, 1] moves the step count by `round(a * max_step_change)` (0 holds),
within `[0, max_step]`. The bank adds `step * q_step_mvar` (Mvar
injected at 1 pu; negative for a reactor) to the bus shunt of the grid, so its reactive
power follows V^2 as in pandapower. Fixed policy (`rule`): one step in below `v_low_pu`,
one step out above `v_high_pu` at its bus. Cost: `switching_cost * |step change|` ($).
`aux`: the step count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Feature, Field, Setpoint


@struct.dataclass
class Params:
    bus: jax.Array
    q_step_mvar: jax.Array
    max_step: jax.Array  # int
    initial_step: jax.Array  # int
    max_step_change: jax.Array  # int
    switching_cost: jax.Array
    v_low_pu: jax.Array
    v_high_pu: jax.Array


@struct.dataclass
class State:
    step: jax.Array  # float holding an integer count


FIELDS = {
    "bus": Field("bus"),
    "q_step_mvar": Field("float", unit="Mvar", doc="reactive power injected per step at 1 pu"),
    "max_step": Field("int"),
    "initial_step": Field("int", 0),
    "max_step_change": Field("int", 1),
    "switching_cost": Field("float", 0.0, "$ per step change"),
    "v_low_pu": Field("float", 0.97, "pu", "rule: add a step below this"),
    "v_high_pu": Field("float", 1.03, "pu", "rule: remove a step above this"),
}


def init(params: Params, key) -> State:
    return State(step=params.initial_step.astype(params.q_step_mvar.dtype))


def rule(params: Params, state: State, ctx):
    """Voltage-band switching: one step in below `v_low_pu`, one out above `v_high_pu`."""
    vm = ctx.vm_pu[params.bus]
    sign = jnp.sign(params.q_step_mvar)  # a reactor lowers the voltage
    move = jnp.where(vm < params.v_low_pu, sign, jnp.where(vm > params.v_high_pu, -sign, 0.0))
    move = jnp.where(vm > 0, move, 0.0)
    return (move / jnp.maximum(params.max_step_change, 1))[:, None]


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    move = jnp.round(jnp.clip(action[:, 0], -1.0, 1.0) * params.max_step_change)
    step = jnp.clip(state.step + move, 0, params.max_step)
    z = jnp.zeros_like(params.q_step_mvar)
    return Setpoint(p_mw=z, q_mvar=z, aux=step)


def dynamics(params: Params, state: State, sp: Setpoint, ctx) -> State:
    return State(step=sp.aux)


def apply_to_grid(params: Params, state: State, grid):
    bs = grid.bus.bs_mvar.at[params.bus].add(state.step * params.q_step_mvar)
    return grid.replace(bus=grid.bus.replace(bs_mvar=bs))


def cost(params: Params, state: State, sp: Setpoint, ctx):
    return params.switching_cost * jnp.abs(sp.aux - state.step)


def safety(params: Params, state: State, sp: Setpoint, ctx):
    return jnp.maximum(sp.aux - params.max_step, 0) + jnp.maximum(-sp.aux, 0)


def observe(params: Params, state: State, ctx):
    return jnp.stack([state.step / jnp.maximum(params.max_step, 1)], axis=-1)


def obs_scale(params: Params):
    return np.maximum(np.asarray(params.max_step), 1)[:, None], 0.0


MAX_STEPS = 1000  # steps of one bank a scenario may declare


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: `0 <= initial_step <= max_step <= 1000`,
    `max_step_change` and `switching_cost` >= 0, the rule's band `0 < v_low_pu <= v_high_pu <= 2`."""
    bounds = {"max_step": checks.Range(0, MAX_STEPS), "initial_step": checks.NONNEGATIVE,
              "max_step_change": checks.NONNEGATIVE, "switching_cost": checks.NONNEGATIVE,
              "v_low_pu": checks.VOLTAGE_PU, "v_high_pu": checks.VOLTAGE_PU}
    return checks.ranges(entry, path, bounds) + checks.ordered(
        entry, path, [("initial_step", "max_step"), ("v_low_pu", "v_high_pu")], checks.defaults(FIELDS))


SHUNT = DeviceType(
    name="shunt", params_cls=Params, state_cls=State, fields=FIELDS, act_dim=1, obs_dim=1,
    default_action=(0.0,), init=init, decode=decode, dynamics=dynamics, cost=cost,
    safety=safety, observe=observe, apply_to_grid=apply_to_grid, rule=rule, obs_scale=obs_scale, validate=validate,
    obs_features=(Feature("step", "steps", "switched capacitor/reactor steps"),),
    act_features=(Feature("step_change", "steps", "-1 .. 1 -> -max_step_change .. +max_step_change"),), doc=__doc__)

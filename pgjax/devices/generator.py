"""Dispatchable generator: capability, ramp limits, unit commitment, quadratic fuel cost.

Action `[3]`: commitment (> 0 asks to be on), active power within the feasible range
(-1 lowest, +1 highest), reactive power within the capability at that P.
Feasible set per step (all enforced in `decode`):
- commitment changes only after `min_up_h` on / `min_down_h` off; a unit shuts down only
  from `p <= p_min + ramp_down * dt` (so ramp limits hold through shutdown);
- on: `max(p_min, p_prev - ramp_down dt) <= p <= min(p_max, p_prev + ramp_up dt)`;
  starting: `p_min <= p <= max(p_min, min(p_max, ramp_up dt))`;
- `q_min <= q <= q_max` and `p^2 + q^2 <= s_max^2`.
Cost per step: `dt (a on + b p + c p^2) + startup_cost * started` ($).
`aux` of the setpoint: commitment (1 on, 0 off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Dispatch, Feature, Field, Setpoint, lerp, q_capability, to_action

EPS = 1e-6


@struct.dataclass
class Params:
    bus: jax.Array
    p_min_mw: jax.Array
    p_max_mw: jax.Array
    q_min_mvar: jax.Array
    q_max_mvar: jax.Array
    s_max_mva: jax.Array
    ramp_up_mw_per_h: jax.Array
    ramp_down_mw_per_h: jax.Array
    min_up_h: jax.Array
    min_down_h: jax.Array
    startup_cost: jax.Array
    cost_a_per_h: jax.Array
    cost_b_per_mwh: jax.Array
    cost_c_per_mw2h: jax.Array
    initial_on: jax.Array
    commitment: jax.Array  # bool: False keeps the unit on (no commitment decision)


@struct.dataclass
class State:
    p_mw: jax.Array  # output of the last step
    q_mvar: jax.Array
    on: jax.Array  # bool
    hours_in_state: jax.Array  # hours since the last commitment change


FIELDS = {
    "bus": Field("bus", doc="bus of the unit"),
    "p_min_mw": Field("float", 0.0, "MW", "minimum output when on"),
    "p_max_mw": Field("float", unit="MW", doc="maximum output"),
    "q_min_mvar": Field("float", -1e9, "Mvar", "reactive lower limit (also bounded by s_max)"),
    "q_max_mvar": Field("float", 1e9, "Mvar", "reactive upper limit (also bounded by s_max)"),
    "s_max_mva": Field("float", unit="MVA", doc="apparent power rating"),
    "ramp_up_mw_per_h": Field("float", 1e9, "MW/h"),
    "ramp_down_mw_per_h": Field("float", 1e9, "MW/h"),
    "min_up_h": Field("float", 0.0, "h"),
    "min_down_h": Field("float", 0.0, "h"),
    "startup_cost": Field("float", 0.0, "$ per start"),
    "cost_a_per_h": Field("float", 0.0, "$/h", "no-load cost while on"),
    "cost_b_per_mwh": Field("float", 0.0, "$/MWh", "linear fuel cost"),
    "cost_c_per_mw2h": Field("float", 0.0, "$/(MW^2 h)", "quadratic fuel cost"),
    "initial_on": Field("bool", True),
    "commitment": Field("bool", True, doc="False: always on, action[0] ignored"),
}


def init(params: Params, key) -> State:
    on = params.initial_on
    return State(p_mw=jnp.where(on, params.p_min_mw, 0.0), q_mvar=jnp.zeros_like(params.p_min_mw),
                 on=on, hours_in_state=jnp.full_like(params.p_min_mw, 1e3))


def can_switch(params: Params, state: State, dt):
    """`(can_start, can_stop)` `[n]` bool: minimum up/down times and the shutdown ramp."""
    can_start = state.hours_in_state >= params.min_down_h - EPS
    can_stop = ((state.hours_in_state >= params.min_up_h - EPS)
                & (state.p_mw <= params.p_min_mw + params.ramp_down_mw_per_h * dt + EPS))
    return can_start, can_stop


def window(params: Params, state: State, dt):
    """`(lo, hi)` MW `[n]`: output range if the unit is on after this step (ramps, limits)."""
    lo = jnp.where(state.on, jnp.maximum(params.p_min_mw, state.p_mw - params.ramp_down_mw_per_h * dt),
                   params.p_min_mw)
    hi_start = jnp.maximum(params.p_min_mw, jnp.minimum(params.p_max_mw, params.ramp_up_mw_per_h * dt))
    hi = jnp.where(state.on, jnp.minimum(params.p_max_mw, state.p_mw + params.ramp_up_mw_per_h * dt), hi_start)
    return lo, jnp.maximum(hi, lo)


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    want_on = (action[:, 0] > 0) | ~params.commitment
    can_start, can_stop = can_switch(params, state, ctx.dt_h)
    on = jnp.where(state.on, want_on | ~can_stop, want_on & can_start)
    lo, hi = window(params, state, ctx.dt_h)
    p = jnp.where(on, lerp(action[:, 1], lo, hi), 0.0)
    q_cap = q_capability(params.s_max_mva, p)
    q_lo = jnp.maximum(params.q_min_mvar, -q_cap)
    q_hi = jnp.maximum(jnp.minimum(params.q_max_mvar, q_cap), q_lo)
    q = jnp.where(on, lerp(action[:, 2], q_lo, q_hi), 0.0)
    return Setpoint(p_mw=p, q_mvar=q, aux=on.astype(p.dtype))


def dynamics(params: Params, state: State, sp: Setpoint, ctx) -> State:
    on = sp.aux > 0.5
    hours = jnp.where(on == state.on, state.hours_in_state + ctx.dt_h, ctx.dt_h)
    return State(p_mw=sp.p_mw, q_mvar=sp.q_mvar, on=on, hours_in_state=hours)


def cost(params: Params, state: State, sp: Setpoint, ctx):
    on = sp.aux
    started = on * (1.0 - state.on.astype(on.dtype))
    fuel = params.cost_a_per_h * on + params.cost_b_per_mwh * sp.p_mw + params.cost_c_per_mw2h * sp.p_mw**2
    return ctx.dt_h * fuel + params.startup_cost * started


def safety(params: Params, state: State, sp: Setpoint, ctx):
    """Capability violation, MW/Mvar/MVA (zero for setpoints from `decode`)."""
    on = sp.aux
    s = jnp.sqrt(sp.p_mw**2 + sp.q_mvar**2)
    return (jnp.maximum(sp.p_mw - params.p_max_mw, 0) + on * jnp.maximum(params.p_min_mw - sp.p_mw, 0)
            + jnp.maximum(s - params.s_max_mva * (1 + 1e-9), 0) + (1 - on) * jnp.abs(sp.p_mw))


def observe(params: Params, state: State, ctx):
    scale = jnp.maximum(params.s_max_mva, 1e-9)
    return jnp.stack([state.p_mw / jnp.maximum(params.p_max_mw, 1e-9), state.q_mvar / scale,
                      state.on.astype(scale.dtype), jnp.minimum(state.hours_in_state, 24.0) / 24.0], axis=-1)


def obs_scale(params: Params):
    p_max, s_max = np.asarray(params.p_max_mw), np.asarray(params.s_max_mva)
    one = np.ones_like(p_max)
    return np.stack([np.maximum(p_max, 1e-9), np.maximum(s_max, 1e-9), one, 24.0 * one], axis=-1), 0.0


def p_range(params: Params, state: State, ctx):
    """Lowest and highest reachable output; the lowest is 0 where the unit can be (or stay) off."""
    can_start, can_stop = can_switch(params, state, ctx.dt_h)
    lo, hi = window(params, state, ctx.dt_h)
    may_be_off = jnp.where(state.on, can_stop, True) & params.commitment
    may_be_on = state.on | can_start | ~params.commitment
    return jnp.where(may_be_off, 0.0, lo), jnp.where(may_be_on, hi, 0.0)


def p_action(params: Params, state: State, ctx, p_mw):
    """On when the target reaches half the minimum output, then the target within the window."""
    lo, hi = window(params, state, ctx.dt_h)
    on = p_mw >= 0.5 * jnp.maximum(lo, EPS)
    return jnp.stack([jnp.where(on, 1.0, -1.0), to_action(p_mw, lo, hi), jnp.zeros_like(p_mw)], axis=-1)


def price_terms(params: Params, state: State):
    z = jnp.zeros_like(params.p_max_mw)
    return params.cost_c_per_mw2h, params.cost_b_per_mwh, jnp.zeros(z.shape, bool), z


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: ratings, ramps, minimum times and the start-up and
    quadratic costs >= 0; `p_min_mw <= p_max_mw <= s_max_mva`, `q_min_mvar <= q_max_mvar`."""
    nonneg = ("p_min_mw", "p_max_mw", "s_max_mva", "ramp_up_mw_per_h", "ramp_down_mw_per_h", "min_up_h",
              "min_down_h", "startup_cost", "cost_c_per_mw2h")
    return (checks.ranges(entry, path, dict.fromkeys(nonneg, checks.NONNEGATIVE))
            + checks.ordered(entry, path, [("p_min_mw", "p_max_mw"), ("p_max_mw", "s_max_mva"),
                                           ("q_min_mvar", "q_max_mvar")], checks.defaults(FIELDS)))


GENERATOR = DeviceType(
    name="generator", params_cls=Params, state_cls=State, fields=FIELDS, act_dim=3, obs_dim=4,
    default_action=(1.0, -1.0, 0.0), init=init, decode=decode, dynamics=dynamics, cost=cost,
    safety=safety, observe=observe, validate=validate, doc=__doc__,
    dispatch=Dispatch(p_range=p_range, p_action=p_action, merit=2, price_terms=price_terms, p_columns=(0, 1)),
    obs_features=(Feature("p_mw", "MW"), Feature("q_mvar", "Mvar"), Feature("on", "", "committed (1) or off (0)"),
                  Feature("hours_in_state", "h", "hours since the last switch, capped at 24")),
    act_features=(Feature("commit", "", "> 0: on"), Feature("p_mw", "MW", "ramp- and limit-feasible window"),
                  Feature("q_mvar", "Mvar", "capability range")),
    obs_scale=obs_scale)

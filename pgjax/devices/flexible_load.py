"""Flexible loads: curtailable (comfort cost) and shiftable (daily energy constraint).

Both consume: the injection is `p_mw = -consumption`, `q_mvar = -consumption * q_per_p`.

`curtailable_load`: demand `p_nom_mw * profile`; action `[1]` curtails a share
`(a + 1) / 2 * curtail_max` of it (-1: none). Cost: `comfort_cost_per_mwh * curtailed * dt`
($). `aux`: curtailed power, MW.

`shiftable_load`: must consume `e_daily_mwh` per day (days start at hour 0 of the
profiles) at a power in `[0, p_max_mw]`. Action `[1]` picks the power within the range
that keeps the rest of the day feasible:
    lo = max(0, (remaining - p_max (hours_left - dt)) / dt),  hi = min(p_max, remaining / dt)
so the daily energy is met exactly if `p_max * 24 >= e_daily`. Cost: 0 (the energy is
paid at the PCC). Safety: energy still missing at the end of a day, MWh. `aux`: energy served today after the step, MWh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Feature, Field, Setpoint, lerp, take, unit_interval

EPS = 1e-9


@struct.dataclass
class CurtailableParams:
    bus: jax.Array
    p_nom_mw: jax.Array
    q_per_p: jax.Array
    profile: jax.Array  # int, -1: constant 1
    curtail_max: jax.Array
    comfort_cost_per_mwh: jax.Array


@struct.dataclass
class CurtailableState:
    p_mw: jax.Array  # consumption of the last step
    curtailed_mw: jax.Array


CURTAILABLE_FIELDS = {
    "bus": Field("bus"),
    "p_nom_mw": Field("float", unit="MW", doc="demand at profile value 1"),
    "q_per_p": Field("float", 0.0, doc="reactive per active power (tan phi)"),
    "profile": Field("series", None),
    "curtail_max": Field("float", 1.0, "fraction"),
    "comfort_cost_per_mwh": Field("float", 0.0, "$/MWh curtailed"),
}


def _curt_init(params, key):
    z = jnp.zeros_like(params.p_nom_mw)
    return CurtailableState(p_mw=z, curtailed_mw=z)


def _curt_decode(params, state, action, ctx):
    demand = params.p_nom_mw * jnp.maximum(take(ctx.series, params.profile, 1.0), 0.0)
    cut = demand * unit_interval(action[:, 0]) * params.curtail_max
    p = demand - cut
    return Setpoint(p_mw=-p, q_mvar=-p * params.q_per_p, aux=cut)


def _curt_dynamics(params, state, sp, ctx):
    return CurtailableState(p_mw=-sp.p_mw, curtailed_mw=sp.aux)


def _curt_cost(params, state, sp, ctx):
    return params.comfort_cost_per_mwh * sp.aux * ctx.dt_h


def _curt_safety(params, state, sp, ctx):
    return jnp.maximum(sp.p_mw, 0)  # a load never injects


def _curt_observe(params, state, ctx):
    scale = jnp.maximum(params.p_nom_mw, EPS)
    return jnp.stack([state.p_mw / scale, state.curtailed_mw / scale], axis=-1)


def _curt_metrics(params, state, sp, ctx):
    return {"load_curtailed_mwh": sp.aux * ctx.dt_h}


def _curt_obs_scale(params):
    return np.maximum(np.asarray(params.p_nom_mw), EPS)[:, None], 0.0


def _curt_validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: `p_nom_mw`, `comfort_cost_per_mwh` >= 0, `curtail_max` in [0, 1]."""
    return checks.ranges(entry, path, {"p_nom_mw": checks.NONNEGATIVE, "comfort_cost_per_mwh": checks.NONNEGATIVE,
                                       "curtail_max": checks.FRACTION})


CURTAILABLE_LOAD = DeviceType(
    name="curtailable_load", params_cls=CurtailableParams, state_cls=CurtailableState,
    fields=CURTAILABLE_FIELDS, act_dim=1, obs_dim=2, default_action=(-1.0,), init=_curt_init,
    decode=_curt_decode, dynamics=_curt_dynamics, cost=_curt_cost, safety=_curt_safety,
    observe=_curt_observe, metrics=_curt_metrics, obs_scale=_curt_obs_scale, validate=_curt_validate,
    obs_features=(Feature("p_mw", "MW", "consumption"), Feature("curtailed_mw", "MW")),
    act_features=(Feature("curtail", "", "-1 .. 1 -> 0 .. curtail_max of the demand"),), doc=__doc__)


@struct.dataclass
class ShiftableParams:
    bus: jax.Array
    p_max_mw: jax.Array
    e_daily_mwh: jax.Array
    q_per_p: jax.Array


@struct.dataclass
class ShiftableState:
    p_mw: jax.Array
    e_served_mwh: jax.Array  # energy served since the start of the day


SHIFTABLE_FIELDS = {
    "bus": Field("bus"),
    "p_max_mw": Field("float", unit="MW"),
    "e_daily_mwh": Field("float", unit="MWh", doc="energy to serve per day"),
    "q_per_p": Field("float", 0.0),
}


def _shift_init(params, key):
    z = jnp.zeros_like(params.p_max_mw)
    return ShiftableState(p_mw=z, e_served_mwh=z)


def _served_today(state, ctx):
    """Energy served so far today (0 at the first step of a day)."""
    return jnp.where(ctx.hour < 1e-6, 0.0, state.e_served_mwh)


def shiftable_range(params, state, ctx):
    """Feasible consumption `(lo, hi)`, MW, that keeps the day's energy reachable."""
    remaining = jnp.maximum(params.e_daily_mwh - _served_today(state, ctx), 0.0)
    hours_left = 24.0 - ctx.hour
    lo = jnp.maximum(remaining - params.p_max_mw * (hours_left - ctx.dt_h), 0.0) / ctx.dt_h
    hi = jnp.minimum(params.p_max_mw, remaining / ctx.dt_h)
    return jnp.minimum(lo, hi), hi


def _shift_decode(params, state, action, ctx):
    lo, hi = shiftable_range(params, state, ctx)
    p = lerp(action[:, 0], lo, hi)
    return Setpoint(p_mw=-p, q_mvar=-p * params.q_per_p, aux=_served_today(state, ctx) + p * ctx.dt_h)


def _shift_dynamics(params, state, sp, ctx):
    return ShiftableState(p_mw=-sp.p_mw, e_served_mwh=sp.aux)


def _shift_cost(params, state, sp, ctx):
    return jnp.zeros_like(sp.p_mw)


def _shift_safety(params, state, sp, ctx):
    end_of_day = ctx.hour + ctx.dt_h >= 24.0 - 1e-6
    return jnp.where(end_of_day, jnp.maximum(params.e_daily_mwh - sp.aux - 1e-6 * params.e_daily_mwh, 0), 0.0)


def _shift_observe(params, state, ctx):
    return jnp.stack([state.p_mw / jnp.maximum(params.p_max_mw, EPS),
                      state.e_served_mwh / jnp.maximum(params.e_daily_mwh, EPS)], axis=-1)


def _shift_obs_scale(params):
    return np.stack([np.maximum(np.asarray(params.p_max_mw), EPS), np.maximum(np.asarray(params.e_daily_mwh), EPS)],
                    axis=-1), 0.0


def _shift_validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: `p_max_mw`, `e_daily_mwh` >= 0."""
    return checks.ranges(entry, path, dict.fromkeys(("p_max_mw", "e_daily_mwh"), checks.NONNEGATIVE))


SHIFTABLE_LOAD = DeviceType(
    name="shiftable_load", params_cls=ShiftableParams, state_cls=ShiftableState,
    fields=SHIFTABLE_FIELDS, act_dim=1, obs_dim=2, default_action=(0.0,), init=_shift_init,
    decode=_shift_decode, dynamics=_shift_dynamics, cost=_shift_cost, safety=_shift_safety,
    observe=_shift_observe, obs_scale=_shift_obs_scale, validate=_shift_validate,
    obs_features=(Feature("p_mw", "MW", "consumption"), Feature("e_served_mwh", "MWh", "energy served today")),
    act_features=(Feature("p_mw", "MW", "-1 .. 1 -> the range that still meets the daily energy"),), doc=__doc__)

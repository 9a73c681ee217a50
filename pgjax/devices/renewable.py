"""PV and wind: available power from a profile, curtailment, inverter reactive power.

Available power `p_avail = p_max_mw * clip(profile, 0, 1)`. Action `[2]`: output as a share
of the available power (-1 nothing, +1 all of it; ignored when `curtailable` is False) and
reactive power within the inverter limit `|q| <= sqrt(s_max^2 - p^2)`.
Cost: `curtailment_cost_per_mwh * (p_avail - p) * dt` ($). `aux`: available power, MW.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import (DeviceType, Dispatch, Feature, Field, Setpoint, q_capability, take, to_action,
                              unit_interval)


@struct.dataclass
class Params:
    bus: jax.Array
    p_max_mw: jax.Array  # installed capacity
    s_max_mva: jax.Array  # inverter rating
    profile: jax.Array  # int: column of the profile table (capacity factor), -1: always 1
    curtailable: jax.Array  # bool
    curtailment_cost_per_mwh: jax.Array


@struct.dataclass
class State:
    p_mw: jax.Array
    q_mvar: jax.Array
    p_avail_mw: jax.Array


FIELDS = {
    "bus": Field("bus"),
    "p_max_mw": Field("float", unit="MW", doc="installed capacity"),
    "s_max_mva": Field("float", unit="MVA", doc="inverter rating (>= p_max_mw for Q at full output)"),
    "profile": Field("series", None, doc="capacity-factor column of the scenario's profiles"),
    "curtailable": Field("bool", True),
    "curtailment_cost_per_mwh": Field("float", 0.0, "$/MWh"),
}


def init(params: Params, key) -> State:
    z = jnp.zeros_like(params.p_max_mw)
    return State(p_mw=z, q_mvar=z, p_avail_mw=z)


def available(params: Params, ctx):
    return params.p_max_mw * jnp.clip(take(ctx.series, params.profile, 1.0), 0.0, 1.0)


def usable(params: Params, ctx):
    """Available power the inverter can deliver, MW `[n]`."""
    return jnp.minimum(available(params, ctx), params.s_max_mva)


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    avail = usable(params, ctx)
    share = jnp.where(params.curtailable, unit_interval(action[:, 0]), 1.0)
    p = avail * share
    q = jnp.clip(action[:, 1], -1.0, 1.0) * q_capability(params.s_max_mva, p)
    return Setpoint(p_mw=p, q_mvar=q, aux=avail)


def dynamics(params: Params, state: State, sp: Setpoint, ctx) -> State:
    return State(p_mw=sp.p_mw, q_mvar=sp.q_mvar, p_avail_mw=sp.aux)


def cost(params: Params, state: State, sp: Setpoint, ctx):
    return params.curtailment_cost_per_mwh * (sp.aux - sp.p_mw) * ctx.dt_h


def safety(params: Params, state: State, sp: Setpoint, ctx):
    """Output above the available power plus apparent power above the rating, MW/MVA."""
    return (jnp.maximum(sp.p_mw - sp.aux, 0)
            + jnp.maximum(jnp.sqrt(sp.p_mw**2 + sp.q_mvar**2) - params.s_max_mva * (1 + 1e-9), 0))


def observe(params: Params, state: State, ctx):
    cap = jnp.maximum(params.p_max_mw, 1e-9)
    return jnp.stack([state.p_avail_mw / cap, state.p_mw / cap,
                      state.q_mvar / jnp.maximum(params.s_max_mva, 1e-9)], axis=-1)


def obs_scale(params: Params):
    cap = np.maximum(np.asarray(params.p_max_mw), 1e-9)
    return np.stack([cap, cap, np.maximum(np.asarray(params.s_max_mva), 1e-9)], axis=-1), 0.0


def metrics(params, state, sp, ctx):
    return {"curtailment_mwh": (sp.aux - sp.p_mw) * ctx.dt_h, "renewable_mwh": sp.p_mw * ctx.dt_h,
            "reactive_mvarh": jnp.abs(sp.q_mvar) * ctx.dt_h}


def p_range(params: Params, state: State, ctx):
    avail = usable(params, ctx)
    return jnp.where(params.curtailable, 0.0, avail), avail


def p_action(params: Params, state: State, ctx, p_mw):
    a = to_action(p_mw, 0.0, usable(params, ctx))
    return jnp.stack([jnp.where(params.curtailable, a, 1.0), jnp.zeros_like(a)], axis=-1)


def price_terms(params: Params, state: State):
    z = jnp.zeros_like(params.p_max_mw)
    return z, -params.curtailment_cost_per_mwh, jnp.zeros(z.shape, bool), z


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: capacity, inverter rating and curtailment cost >= 0."""
    keys = ("p_max_mw", "s_max_mva", "curtailment_cost_per_mwh")
    return checks.ranges(entry, path, dict.fromkeys(keys, checks.NONNEGATIVE))


def _make(name):
    return DeviceType(
        name=name, params_cls=Params, state_cls=State, fields=FIELDS, act_dim=2, obs_dim=3,
        default_action=(1.0, 0.0), init=init, decode=decode, dynamics=dynamics, cost=cost,
        safety=safety, observe=observe, metrics=metrics, validate=validate, doc=__doc__,
        dispatch=Dispatch(p_range=p_range, p_action=p_action, merit=0, price_terms=price_terms),
        obs_features=(Feature("p_avail_mw", "MW"), Feature("p_mw", "MW"), Feature("q_mvar", "Mvar")),
        act_features=(Feature("p_share", "", "-1 .. 1 -> 0 .. 100 % of the available power (curtailable units)"),
                      Feature("q_mvar", "Mvar", "fraction of the capability left by p")),
        obs_scale=obs_scale)


PV = _make("pv")
WIND = _make("wind")

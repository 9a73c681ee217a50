"""Energy storage: SOC kept in bounds by construction, efficiencies, degradation cost.

Action `[2]`: active power (+1 full discharge, -1 full charge, 0 idle), reactive power
within the inverter rating. Injection `p_mw > 0` discharges. The feasible power range is
derived from the stored energy `e_mwh` so that `e_min <= e <= e_max` after every step:
    discharge <= min(p_discharge_max, (e - e_min) * eta_discharge / dt)
    charge    <= min(p_charge_max,   (e_max - e) / (eta_charge * dt))
    e' = e + dt * (eta_charge * charge - discharge / eta_discharge)
Cost: `degradation_cost_per_mwh * |p| * dt` ($). `aux`: energy after the step, MWh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Dispatch, Feature, Field, Setpoint, q_capability


@struct.dataclass
class Params:
    bus: jax.Array
    e_min_mwh: jax.Array
    e_max_mwh: jax.Array
    p_charge_max_mw: jax.Array
    p_discharge_max_mw: jax.Array
    eta_charge: jax.Array
    eta_discharge: jax.Array
    s_max_mva: jax.Array
    degradation_cost_per_mwh: jax.Array
    soc_init_min: jax.Array
    soc_init_max: jax.Array


@struct.dataclass
class State:
    e_mwh: jax.Array  # stored energy
    p_mw: jax.Array  # last injection
    q_mvar: jax.Array


FIELDS = {
    "bus": Field("bus"),
    "e_min_mwh": Field("float", 0.0, "MWh"),
    "e_max_mwh": Field("float", unit="MWh"),
    "p_charge_max_mw": Field("float", unit="MW"),
    "p_discharge_max_mw": Field("float", unit="MW"),
    "eta_charge": Field("float", 0.95),
    "eta_discharge": Field("float", 0.95),
    "s_max_mva": Field("float", 0.0, "MVA", "inverter rating, bounds P and Q (0: unrated, no Q)"),
    "degradation_cost_per_mwh": Field("float", 0.0, "$/MWh", "per MWh of |p| dt throughput"),
    "soc_init_min": Field("float", 0.5, "fraction of e_max", "initial SOC drawn uniformly"),
    "soc_init_max": Field("float", 0.5, "fraction of e_max"),
}


def init(params: Params, key) -> State:
    u = jax.random.uniform(key, params.e_max_mwh.shape, params.e_max_mwh.dtype)
    soc = params.soc_init_min + u * (params.soc_init_max - params.soc_init_min)
    e = jnp.clip(soc * params.e_max_mwh, params.e_min_mwh, params.e_max_mwh)
    zero = jnp.zeros_like(e)
    return State(e_mwh=e, p_mw=zero, q_mvar=zero)


def limits(params: Params, state: State, dt_h):
    """`(max_discharge_mw, max_charge_mw)` feasible at the current energy, both >= 0."""
    dis = jnp.minimum(params.p_discharge_max_mw, (state.e_mwh - params.e_min_mwh) * params.eta_discharge / dt_h)
    ch = jnp.minimum(params.p_charge_max_mw, (params.e_max_mwh - state.e_mwh) / (params.eta_charge * dt_h))
    s_cap = jnp.where(params.s_max_mva > 0, params.s_max_mva, jnp.inf)  # the inverter also bounds P
    return jnp.clip(dis, 0.0, s_cap), jnp.clip(ch, 0.0, s_cap)


def next_energy(params: Params, e_mwh, p_mw, dt_h):
    """Energy after injecting `p_mw` for `dt_h` hours (closed form of the dynamics)."""
    return e_mwh + dt_h * (params.eta_charge * jnp.maximum(-p_mw, 0) - jnp.maximum(p_mw, 0) / params.eta_discharge)


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    dis, ch = limits(params, state, ctx.dt_h)
    a = jnp.clip(action[:, 0], -1.0, 1.0)
    p = jnp.where(a >= 0, a * dis, a * ch)
    q = jnp.clip(action[:, 1], -1.0, 1.0) * q_capability(params.s_max_mva, p)
    e = jnp.clip(next_energy(params, state.e_mwh, p, ctx.dt_h), params.e_min_mwh, params.e_max_mwh)
    return Setpoint(p_mw=p, q_mvar=q, aux=e)


def dynamics(params: Params, state: State, sp: Setpoint, ctx) -> State:
    return State(e_mwh=sp.aux, p_mw=sp.p_mw, q_mvar=sp.q_mvar)


def cost(params: Params, state: State, sp: Setpoint, ctx):
    return params.degradation_cost_per_mwh * jnp.abs(sp.p_mw) * ctx.dt_h


def safety(params: Params, state: State, sp: Setpoint, ctx):
    """SOC outside [e_min, e_max] (MWh) plus apparent power above the rating (MVA)."""
    e = next_energy(params, state.e_mwh, sp.p_mw, ctx.dt_h)
    tol = 1e-6 * params.e_max_mwh
    s_excess = jnp.where(params.s_max_mva > 0,
                         jnp.maximum(jnp.sqrt(sp.p_mw**2 + sp.q_mvar**2) - params.s_max_mva * (1 + 1e-9), 0), 0)
    return (jnp.maximum(params.e_min_mwh - e - tol, 0) + jnp.maximum(e - params.e_max_mwh - tol, 0) + s_excess)


def observe(params: Params, state: State, ctx):
    p_scale = jnp.maximum(jnp.maximum(params.p_charge_max_mw, params.p_discharge_max_mw), 1e-9)
    return jnp.stack([state.e_mwh / params.e_max_mwh, state.p_mw / p_scale], axis=-1)


def obs_scale(params: Params):
    p_scale = np.maximum(np.maximum(np.asarray(params.p_charge_max_mw), np.asarray(params.p_discharge_max_mw)), 1e-9)
    return np.stack([np.asarray(params.e_max_mwh), p_scale], axis=-1), 0.0


def metrics(params, state, sp, ctx):
    return {"storage_throughput_mwh": jnp.abs(sp.p_mw) * ctx.dt_h}


def p_range(params: Params, state: State, ctx):
    dis, ch = limits(params, state, ctx.dt_h)
    return -ch, dis


def p_action(params: Params, state: State, ctx, p_mw):
    dis, ch = limits(params, state, ctx.dt_h)
    a = jnp.where(p_mw >= 0, p_mw / jnp.maximum(dis, 1e-12), p_mw / jnp.maximum(ch, 1e-12))
    return jnp.stack([jnp.clip(a, -1.0, 1.0), jnp.zeros_like(a)], axis=-1)


def price_terms(params: Params, state: State):
    soc = state.e_mwh / jnp.maximum(params.e_max_mwh, 1e-12)
    return jnp.zeros_like(soc), params.degradation_cost_per_mwh, jnp.ones(soc.shape, bool), soc


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: `e_max_mwh > 0`, `0 <= e_min_mwh <= e_max_mwh`, power
    ratings and degradation cost >= 0, efficiencies in (0, 1], initial SOC fractions in
    [0, 1] with `soc_init_min <= soc_init_max`."""
    bounds = {"e_max_mwh": checks.POSITIVE, "eta_charge": checks.EFFICIENCY, "eta_discharge": checks.EFFICIENCY,
              "soc_init_min": checks.FRACTION, "soc_init_max": checks.FRACTION,
              **dict.fromkeys(("e_min_mwh", "p_charge_max_mw", "p_discharge_max_mw", "s_max_mva",
                               "degradation_cost_per_mwh"), checks.NONNEGATIVE)}
    return checks.ranges(entry, path, bounds) + checks.ordered(
        entry, path, [("e_min_mwh", "e_max_mwh"), ("soc_init_min", "soc_init_max")], checks.defaults(FIELDS))


STORAGE = DeviceType(
    name="storage", params_cls=Params, state_cls=State, fields=FIELDS, act_dim=2, obs_dim=2,
    default_action=(0.0, 0.0), init=init, decode=decode, dynamics=dynamics, cost=cost,
    safety=safety, observe=observe, metrics=metrics, validate=validate, doc=__doc__,
    dispatch=Dispatch(p_range=p_range, p_action=p_action, merit=1, price_terms=price_terms),
    obs_features=(Feature("e_mwh", "MWh", "stored energy (observed as SOC, a fraction of e_max_mwh)"),
                  Feature("p_mw", "MW", "last injection, negative: charging")),
    act_features=(Feature("p_mw", "MW", "-1 full charge .. +1 full discharge within SOC limits"),
                  Feature("q_mvar", "Mvar", "fraction of the capability left by p")),
    obs_scale=obs_scale)

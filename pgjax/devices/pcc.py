"""Grid connection / point of common coupling: buy at the price, sell at a discount.

No action. The exchange is measured after the power flow, either on a branch (`branch`,
positive `direction` means power flowing from the branch's from end into the grid behind
it is an import) or at an external grid (`ext_grid`, its slack power is the import).
Cost per step: `dt * price * (import - (1 - sell_discount) * export)` ($), with the price
the scenario's price series times `price_scale`. Safety: import above `import_max_mw` plus
export above `export_max_mw`, MW. `aux`: 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax.devices import checks
from pgjax.devices.base import DeviceType, Feature, Field, GridConnection, Setpoint, take


@struct.dataclass
class Params:
    bus: jax.Array  # unused (no injection), 0
    branch: jax.Array  # int, -1 if measured at an external grid
    ext_grid: jax.Array  # int, -1 if measured on a branch
    direction: jax.Array  # +1: from end -> to end is import; -1: reverse
    import_max_mw: jax.Array
    export_max_mw: jax.Array
    sell_discount: jax.Array
    price_scale: jax.Array


@struct.dataclass
class State:
    import_mw: jax.Array  # measured at the end of the last step (negative: export)


FIELDS = {
    "bus": Field("int", 0, doc="unused"),
    "branch": Field("branch", None, doc="branch the exchange is measured on"),
    "ext_grid": Field("ext_grid", None, doc="external grid the exchange is measured at"),
    "direction": Field("float", 1.0),
    "import_max_mw": Field("float", 1e9, "MW"),
    "export_max_mw": Field("float", 1e9, "MW"),
    "sell_discount": Field("float", 0.0, "fraction", "export is paid (1 - sell_discount) * price"),
    "price_scale": Field("float", 1.0),
}


def init(params: Params, key) -> State:
    return State(import_mw=jnp.zeros_like(params.direction))


def exchange(params: Params, pf):
    """Import `[n]`, MW (negative: export), from a power-flow result."""
    on_branch = params.direction * take(pf.p_from_mw, params.branch)
    at_slack = take(pf.slack_p_mw, params.ext_grid)
    return jnp.where(params.branch >= 0, on_branch, at_slack)


def decode(params: Params, state: State, action, ctx) -> Setpoint:
    z = jnp.zeros_like(params.direction)
    return Setpoint(p_mw=z, q_mvar=z, aux=z)


def dynamics(params, state, sp, ctx):
    return state


def bill(params: Params, price, import_mw, dt_h):
    """$ per step for importing `import_mw` (negative: export) at `price` $/MWh, `[n]`."""
    price = price * params.price_scale
    return dt_h * price * (jnp.maximum(import_mw, 0) - (1 - params.sell_discount) * jnp.maximum(-import_mw, 0))


def cost(params: Params, state: State, sp: Setpoint, ctx):
    return bill(params, ctx.price, exchange(params, ctx.pf), ctx.dt_h)


def safety(params: Params, state: State, sp: Setpoint, ctx):
    p = exchange(params, ctx.pf)
    return jnp.maximum(p - params.import_max_mw, 0) + jnp.maximum(-p - params.export_max_mw, 0)


def measure(params: Params, state: State, ctx) -> State:
    return State(import_mw=exchange(params, ctx.pf))


FINITE_MAX_MW = 1e3  # exchange limits above this count as unlimited (normalization, protocol ranges)


def limits(params: Params):
    """Finite import and export limits `[n]`, MW (capped at `FINITE_MAX_MW`)."""
    return (jnp.minimum(params.import_max_mw, FINITE_MAX_MW), jnp.minimum(params.export_max_mw, FINITE_MAX_MW))


def tariff(params: Params):
    return params.sell_discount, params.price_scale


def last_import(params: Params, state: State):
    return state.import_mw


def observe(params: Params, state: State, ctx):
    scale = jnp.maximum(limits(params)[0], 1e-9)
    return jnp.stack([state.import_mw / scale], axis=-1)


def obs_scale(params: Params):
    return np.maximum(np.minimum(np.asarray(params.import_max_mw), FINITE_MAX_MW), 1e-9)[:, None], 0.0


def metrics(params, state, sp, ctx):
    p = exchange(params, ctx.pf)
    return {"import_mwh": jnp.maximum(p, 0) * ctx.dt_h, "export_mwh": jnp.maximum(-p, 0) * ctx.dt_h}


def validate(entry: dict, path: str) -> list[tuple]:
    """Scenario check of a YAML entry: exactly one of `branch` and `ext_grid`; `direction`
    +1 or -1; exchange limits and `price_scale` >= 0; `sell_discount` in [0, 1]."""
    problems = checks.ranges(entry, path, {"import_max_mw": checks.NONNEGATIVE, "export_max_mw": checks.NONNEGATIVE,
                                           "price_scale": checks.NONNEGATIVE, "sell_discount": checks.FRACTION})
    direction = checks.number(entry, "direction")
    if direction is not None and direction not in (1, -1):
        problems.append((f"{path}.direction", "+1 or -1", direction))
    if (entry.get("branch") is None) == (entry.get("ext_grid") is None):
        both = {k: entry.get(k) for k in ("branch", "ext_grid")}
        problems.append((f"{path}.branch", "exactly one of 'branch' and 'ext_grid'", both))
    return problems


PCC = DeviceType(
    name="pcc", params_cls=Params, state_cls=State, fields=FIELDS, act_dim=0, obs_dim=1,
    default_action=(), init=init, decode=decode, dynamics=dynamics, cost=cost, safety=safety,
    observe=observe, measure=measure, metrics=metrics, validate=validate,
    grid_connection=GridConnection(import_mw=last_import, exchange=exchange, limits=limits, tariff=tariff, bill=bill),
    obs_features=(Feature("import_mw", "MW", "measured import, negative: export"),), obs_scale=obs_scale, doc=__doc__)

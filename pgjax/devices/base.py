"""The device-type interface: parameters, state, context, setpoints and the registry entry.

A device type is a `DeviceType` record of pure functions over parameter and state
dataclasses whose arrays are `[n]` (one row per device of that type). The environment calls
them once per type and step, never per device:

    setpoint = decode(params, state, action [n, act_dim], ctx)   # feasible by construction
    state'   = dynamics(params, state, setpoint, ctx)
    grid'    = apply_to_grid(params, state', grid)                 # optional (taps, shunts)
    ... power flow ...  (ctx.pf is set from here on)
    cost     = cost(params, state, setpoint, ctx)     -> [n] $
    safety   = safety(params, state, setpoint, ctx)   -> [n] >= 0 (constraint violation)
    metrics  = metrics(params, state, setpoint, ctx)  -> {name: [n]} (optional)
    state''  = measure(params, state', ctx)                        # optional (post power flow)
    obs      = observe(params, state'', ctx)          -> [n, obs_dim]

Devices that no learned agent controls act by `rule(params, state, ctx)` if the type has
one (e.g. voltage-band control of tap changers and capacitor banks), else by
`default_action`.

Types whose active power can be dispatched (generator, storage, PV, wind) also carry a
`Dispatch` record: the feasible injection range this step, the action that realizes a
target injection, a merit tier and cost coefficients. Fixed grid controllers
(`pgjax.protocols.dispatch`) use it to track a setpoint or respond to a price sent from above.

Parameters are declared once in `fields` (name -> `Field`); the scenario compiler validates
YAML entries against it and `build` turns them into the parameter dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

REQUIRED = object()
# Field kinds: plain numbers, or references resolved by the scenario compiler to indices.
KINDS = ("float", "int", "bool", "bus", "branch", "series", "ext_grid")


@dataclasses.dataclass(frozen=True)
class Field:
    """One device parameter: kind (see `KINDS`), default (`REQUIRED` if none), unit, doc.

    `bus`, `branch`, `series` and `ext_grid` fields hold a reference in YAML (a bus name or
    index, a branch spec, a profile column name, an external-grid index) and an int index
    in the compiled parameters (`-1` for "none" where `default=None`).
    """

    kind: str = "float"
    default: Any = REQUIRED
    unit: str = ""
    doc: str = ""


@struct.dataclass
class Context:
    """What a device sees at one step (scalars `[]` unless noted)."""

    dt_h: jax.Array  # step length, hours
    hour: jax.Array  # hour of day at the start of the step, [0, 24)
    price: jax.Array  # energy price at this step, $/MWh
    series: jax.Array  # [n_series] profile values at this step (per unit or $/MWh)
    vm_pu: jax.Array  # [n_bus] voltages measured at the end of the previous step
    pf: Any = None  # PowerFlowResult of this step (set after the power flow)


@struct.dataclass
class Setpoint:
    """A feasible operating point per device, all `[n]`.

    `p_mw`, `q_mvar` are injections into the device's bus (generation positive); `aux` is
    type-specific (commitment, tap position, available power, ...), documented per type.
    """

    p_mw: jax.Array
    q_mvar: jax.Array
    aux: jax.Array


def _identity_state(params, state, ctx):
    return state


def _no_metrics(params, state, setpoint, ctx):
    return {}


@dataclasses.dataclass(frozen=True, eq=False)
class Dispatch:
    """How a fixed controller dispatches a type's active power (all arrays `[n]`, MW).

    - `p_range(params, state, ctx) -> (lo, hi)`: injections reachable this step;
    - `p_action(params, state, ctx, p_mw) -> action [n, act_dim]`: the action whose decoded
      setpoint is `p_mw` clipped to the feasible set (reactive power at its default);
    - `merit`: order in which a tracking controller raises output (0 first; it lowers in
      reverse order): 0 renewables, 1 storage, 2 fuel-burning units;
    - `price_terms(params, state) -> (a, b, is_storage, soc)`: cost `a p^2 + b p` ($/h) seen
      by a price response (storage: `b` is its degradation cost per MWh, `soc` in [0, 1]).
    """

    p_range: Callable
    p_action: Callable
    merit: int
    price_terms: Callable
    p_columns: tuple = (0,)  # action columns `p_action` sets for the active power (the rest keep their action)


@dataclasses.dataclass(frozen=True)
class Feature:
    """One named column of a device type's observation or action, with its physical unit."""

    name: str
    unit: str = ""
    doc: str = ""


@dataclasses.dataclass(frozen=True, eq=False)
class GridConnection:
    """What a type that couples an agent's grid to the grid above (a PCC) tells the core.

    - `import_mw(params, state) -> [n]`: the import measured at the end of the last step;
    - `exchange(params, pf) -> [n]`: the import of this step's power flow (MW, import > 0);
    - `limits(params) -> (import_max_mw, export_max_mw)`: finite exchange limits `[n]`;
    - `tariff(params) -> (sell_discount, price_scale)`: terms of the energy bill `[n]`;
    - `bill(params, price, import_mw, dt_h) -> [n]`: the bill of an exchange, $.
    """

    import_mw: Callable
    exchange: Callable
    limits: Callable
    tariff: Callable
    bill: Callable


def _unit_scale(params, n: int, dim: int):
    return np.ones((n, dim)), np.zeros((n, dim))


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (a static jit argument)
class DeviceType:
    """A registered device type (see the module docstring for the call order)."""

    name: str
    params_cls: type
    state_cls: type
    fields: dict  # parameter name -> Field (every field of params_cls)
    act_dim: int
    obs_dim: int
    default_action: tuple  # safe action used for NaN actions and devices no agent controls
    init: Callable  # (params, key) -> state
    decode: Callable
    dynamics: Callable
    cost: Callable
    safety: Callable
    observe: Callable
    apply_to_grid: Callable | None = None  # (params, state, grid) -> grid
    measure: Callable = _identity_state
    metrics: Callable = _no_metrics
    rule: Callable | None = None  # (params, state, ctx) -> [n, act_dim]: fixed policy when no agent
    dispatch: Dispatch | None = None  # active-power dispatch by fixed grid controllers
    grid_connection: GridConnection | None = None  # set by types that are an agent's point of common coupling
    obs_features: tuple = ()  # [obs_dim] Feature: the columns `observe` returns (default names obs0, obs1, ...)
    act_features: tuple = ()  # [act_dim] Feature: the action columns, each in [-1, 1] (see the type's decode)
    # (params of numpy arrays [n]) -> (scale, offset) [n, obs_dim]: observed = (physical - offset) / scale
    obs_scale: Callable | None = None
    validate: Callable | None = None  # (entry: dict, path: str) -> list of (path, expected, actual): type-specific checks of a YAML entry
    complete: Callable | None = None  # (entry: dict, net) -> entry with type-specific defaults filled (net: pgjax.scenario.Network)
    doc: str = ""

    def observation_features(self) -> tuple:
        return self.obs_features or tuple(Feature(f"obs{k}") for k in range(self.obs_dim))

    def action_features(self) -> tuple:
        return self.act_features or tuple(Feature(f"act{k}") for k in range(self.act_dim))

    def observation_scale(self, params, n: int):
        """`(scale, offset)` `[n, obs_dim]` of the observation columns (host numpy)."""
        if self.obs_scale is None:
            return _unit_scale(params, n, self.obs_dim)
        scale, offset = self.obs_scale(params)
        shape = (n, self.obs_dim)
        return np.broadcast_to(np.asarray(scale, float), shape).copy(), np.broadcast_to(np.asarray(offset, float), shape).copy()

    def build(self, values: dict[str, list]) -> Any:
        """Parameter dataclass from resolved per-device values (`name -> list of n values`)."""
        arrays = {}
        for name, f in self.fields.items():
            dtype = {"float": np.float64, "bool": bool}.get(f.kind, np.int32)
            arrays[name] = np.asarray(values[name], dtype=dtype)
        return self.params_cls(**arrays)


def to_action(p, lo, hi):
    """Inverse of `lerp`: the action in [-1, 1] that maps to `p` in `[lo, hi]` (0 if `hi == lo`)."""
    span = hi - lo
    return jnp.where(span > 0, jnp.clip(2.0 * (p - lo) / jnp.where(span > 0, span, 1.0) - 1.0, -1.0, 1.0), 0.0)


def unit_interval(a):
    """Map an action in [-1, 1] to [0, 1]."""
    return (jnp.clip(a, -1.0, 1.0) + 1.0) / 2.0


def lerp(a, lo, hi):
    """Map an action in [-1, 1] to [lo, hi] linearly."""
    return lo + unit_interval(a) * (hi - lo)


def q_capability(s_max_mva, p_mw):
    """Reactive headroom `sqrt(max(S^2 - P^2, 0))` of an inverter or machine, Mvar."""
    return jnp.sqrt(jnp.maximum(s_max_mva**2 - p_mw**2, 0.0))


def take(x, idx, fill=0.0):
    """`x[idx]` with `fill` where `idx < 0` (optional references)."""
    return jnp.where(idx >= 0, x[jnp.maximum(idx, 0)], fill)

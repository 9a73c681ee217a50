"""Fixed grid controllers: turn a setpoint or a price from above into device actions.

When the learned level is the system operator, the microgrid (grid-agent) controllers
below it run one of these fixed policies over the devices they own; both are pure `jnp`
over all dispatchable devices of all grid agents at once (segment sums by grid agent, a
static loop over device types and merit tiers, none over agents or devices):

- `track`: follow an exchange setpoint `P*` (MW imported through the grid agent's point of
  common coupling). The controller needs `sum_d p_d = net_load - P*` from its devices,
  with `net_load` the agent's own load minus its static generation (losses ignored, so the
  realized exchange differs from `P*` by the agent's losses). Devices start from a base
  point (renewables at their available power, storage idle, fuel units at their lowest
  reachable output: 0 where they may be off); a shortfall is covered in merit order
  (storage discharge, then fuel units) and a surplus absorbed in reverse (fuel units down,
  storage charging, then curtailment), each tier proportionally to its devices' headroom.
The price response (each device maximizes its profit at the price it receives) is
`pgjax.protocols.price_signal.respond`, built on `ranges`.

`track` returns per-group device actions `[n_type, act_dim]` through each type's
`Dispatch.p_action`, so the environment decodes them like any other action.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgjax import devices as dev

MERIT_TIERS = (0, 1, 2)
RENEWABLE, STORAGE, FUEL = MERIT_TIERS  # `Dispatch.merit` of renewables, storage, fuel-burning units


def dispatchable(group_types) -> list[int]:
    """Positions in `group_types` of device types with a `Dispatch` record."""
    return [i for i, t in enumerate(group_types) if dev.get(t).dispatch is not None]


def ranges(types, params, states, ctx):
    """`(lo, hi)` lists of `[n_type]` reachable injections, MW, one entry per type in `types`."""
    out = [dev.get(t).dispatch.p_range(params[t], states[t], ctx) for t in types]
    return [o[0] for o in out], [o[1] for o in out]


def track(types, params, states, ctx, grid_of, need_mw, n_grid):
    """Device actions realizing `need_mw [n_grid]` of total injection per grid agent.

    `types`: dispatchable type names; `grid_of[t] [n_type]` the grid agent owning each device
    (-1: not tracked, its entry is returned but meaningless). Returns `{type: action}`.
    """
    lo, hi = ranges(types, params, states, ctx)
    merit = [dev.get(t).dispatch.merit for t in types]
    seg = [jnp.where(g >= 0, g, n_grid) for g in (grid_of[t] for t in types)]  # untracked -> dump row

    def per_grid(values):
        return sum(jax.ops.segment_sum(v, s, n_grid + 1) for v, s in zip(values, seg))[:n_grid]

    def spread(share, room):  # each device moves its grid agent's share of its own room
        return [jnp.where(s < n_grid, share[jnp.minimum(s, n_grid - 1)], 0.0) * r for s, r in zip(seg, room)]

    p = [jnp.where(m == 0, h, jnp.clip(0.0, lo_, h)) for lo_, h, m in zip(lo, hi, merit)]
    p = [jnp.where(m == 2, lo_, p_) for lo_, p_, m in zip(lo, p, merit)]
    residual = need_mw - per_grid(p)
    for tier in MERIT_TIERS:  # raise output: storage discharge, then fuel units
        room = [jnp.where(m == tier, h - p_, 0.0) for p_, h, m in zip(p, hi, merit)]
        share = jnp.clip(residual / jnp.maximum(per_grid(room), 1e-12), 0.0, 1.0)
        moved = spread(share, room)
        p = [p_ + mv for p_, mv in zip(p, moved)]
        residual = residual - per_grid(moved)
    for tier in reversed(MERIT_TIERS):  # lower output: fuel units, storage charging, curtailment
        room = [jnp.where(m == tier, p_ - lo_, 0.0) for p_, lo_, m in zip(p, lo, merit)]
        share = jnp.clip(-residual / jnp.maximum(per_grid(room), 1e-12), 0.0, 1.0)
        moved = spread(share, room)
        p = [p_ - mv for p_, mv in zip(p, moved)]
        residual = residual + per_grid(moved)
    return {t: dev.get(t).dispatch.p_action(params[t], states[t], ctx, p_) for t, p_ in zip(types, p)}

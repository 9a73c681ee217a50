"""`setpoint` (vertical): the parent's action becomes its devices' active-power setpoints.

Sends: parent `owner[d]` -> device `d` one message, the setpoint in MW (`msg_dim = 1`).
Acts: device `d` gets `p_mw = p_min + (a + 1) / 2 (p_max - p_min)` with
`a = clip(action[owner[d], column[d]], -1, 1)`, so setpoints lie within the device limits
by construction. Limits default to `params.p_min_mw / p_max_mw`; pass state-dependent
limits (e.g. a battery's SOC-feasible range) as `agent_outputs["p_min_mw"/"p_max_mw"]`.

agent_outputs: `action [n_agents, act_dim]` in [-1, 1] (optional `p_min_mw`, `p_max_mw` `[n_dev]`).
commands: `p_mw [n_dev]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.protocols import dispatch
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    owner: jax.Array  # [n_dev] int, agent (sender) controlling each device
    column: jax.Array  # [n_dev] int, column of the owner's action driving the device
    p_min_mw: jax.Array  # [n_dev]
    p_max_mw: jax.Array  # [n_dev]
    n_agents: int = struct.field(pytree_node=False, default=1)


def init(params: Params):
    return ()


def apply(params: Params, state, agent_outputs, messages_in):
    a = jnp.clip(agent_outputs["action"][params.owner, params.column], -1.0, 1.0)
    lo = agent_outputs.get("p_min_mw", params.p_min_mw)
    hi = jnp.maximum(agent_outputs.get("p_max_mw", params.p_max_mw), lo)
    p = lo + (a + 1.0) / 2.0 * (hi - lo)
    link = params.owner[None, :] == jnp.arange(params.n_agents)[:, None]  # [n_agents, n_dev]
    msgs = Messages(jnp.where(link[..., None], p[None, :, None], 0.0), link)
    return {"p_mw": p}, msgs, state


def _exchange_setpoints(links, u, price):
    """A learned parent's action `u` in [0, 1] -> exchange setpoint in [-export_max, import_max] MW."""
    d = u.dtype
    learned = -jnp.asarray(links.export_max_mw, d) + u * jnp.asarray(links.import_max_mw + links.export_max_mw, d)
    zero = jnp.zeros(links.n_grid, d)  # a fixed parent asks each child to balance itself
    return learned, zero, zero


def _track(links, received, inputs):
    grid_of = {t: jnp.asarray(links.tracked_of[t]) for t in links.dispatch_types}
    return dispatch.track(links.dispatch_types, inputs.params, inputs.states, inputs.ctx, grid_of,
                          inputs.net_load_mw - received, links.n_grid)


# In a scenario: each grid agent's exchange setpoint from its parent; tracked children dispatch
# their devices to meet it (`pgjax.protocols.dispatch.track`).
ENV_COUPLING = coupling.vertical_coupling(
    features=(Feature("setpoint_mw", "MW", "exchange setpoint received, over the import limit"),),
    scale=lambda links: links.scale_mw[:, None], values=_exchange_setpoints, respond=_track)
SETPOINT = register(Protocol("setpoint", "vertical", Params, init, apply, __doc__, coupling=ENV_COUPLING))

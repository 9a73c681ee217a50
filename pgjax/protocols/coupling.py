"""How a registered protocol enters the environment step: `Coupling`, `Links`, inputs and outputs.

A protocol that a scenario can name (`protocol.vertical` / `protocol.horizontal`) carries a
`Coupling` next to its message-level `apply`:

    state           = coupling.init(links, dtype)
    outputs, state  = coupling.step(links, state, inputs, key)        # before the devices act
    adjust_usd      = coupling.settle(links, outputs, import_mw, price, dt_h)  # optional, after the power flow

- `links` (`Links`, host-side, built once per scenario by `pgjax.protocols.coordination`): who talks
  to whom among the grid agents (microgrid controllers), their channels, exchange limits,
  the protocol's options (`protocol.<key>` of the scenario, with the coupling's defaults).
- `inputs` (`Inputs`): the learned agents' actions, the price, each grid agent's last
  measured import and this step's net load, the device parameters and states.
- `outputs` (`Outputs`): what each child grid agent received from its parent (vertical),
  the message features each grid agent observes (physical units; the environment divides
  by `coupling.scale(links)`), device actions that replace the devices' own (e.g. tracked
  children, a joint dispatch), the number of messages sent and values for `info`.

The coupling names its message features (`features`, one `Feature` per column) so
observation schemas and exporters can decode them; nothing in the core branches on a
protocol's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.protocols import channels
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages

BIG_AGE = 1 << 20  # channel age of a link that never delivered


@dataclasses.dataclass(frozen=True, eq=False)
class Links:
    """Static description (host numpy) of the grid agents' communication, `n_grid` of them."""

    grid_nodes: np.ndarray  # [n_grid] tree index of each grid agent
    parent: np.ndarray  # [n_grid] tree index of its parent, -1 if none
    n_tree: int
    tracked: np.ndarray  # [n_grid] bool: fixed child of a learned parent (follows the vertical protocol)
    parent_agent: np.ndarray  # [n_grid] learned agent sending to a tracked child, -1 otherwise
    parent_col: np.ndarray  # [n_grid] column of that agent's action
    connection_of_grid: np.ndarray  # [n_grid] index of the grid agent's connection device, -1 if none
    connection_type: str | None  # the device type that is a grid connection (`DeviceType.grid_connection`)
    grid_of_connection: np.ndarray  # [n_connection] grid agent owning each connection device, -1 if none
    scale_mw: np.ndarray  # [n_grid] import limit (or 1) normalizing MW features
    import_max_mw: np.ndarray  # [n_grid]
    export_max_mw: np.ndarray  # [n_grid]
    adjacency: np.ndarray  # [n_grid, n_grid] bool, peers (`protocol.graph`)
    options: dict  # the protocol section's other keys, completed with the coupling's defaults
    vparams: channels.ChannelParams  # parents (tree agents) -> grid agents
    hparams: channels.ChannelParams  # grid agent -> grid agent
    v_links: np.ndarray  # [n_tree, n_grid] bool, parent -> child links
    unit_of_grid: np.ndarray  # [n_grid] index of the grid agent's first joint-dispatch unit, -1 if none
    unit_type: str | None  # the device type dispatched jointly (first type with `Dispatch.merit == 2`)
    tracked_of: dict  # device type -> [n] index of the tracked grid agent owning each device, -1 otherwise
    dispatch_types: tuple  # dispatchable device types with devices in tracked grid agents

    @property
    def n_grid(self) -> int:
        return len(self.grid_nodes)


@struct.dataclass
class Inputs:
    """What the environment hands a protocol at one step."""

    actions: jax.Array  # [n_agents, act_dim] learned agents' actions in [-1, 1] (after timing)
    price: jax.Array  # [] $/MWh
    import_mw: jax.Array  # [n_grid] each grid agent's import measured at the end of the last step
    net_load_mw: jax.Array  # [n_grid] each grid agent's load minus static generation this step
    ctx: Any  # pgjax.devices.Context
    params: dict  # device type -> Params
    states: dict  # device type -> State


@struct.dataclass
class Outputs:
    received: jax.Array  # [n_grid] value each child received from its parent (vertical), else 0
    messages: jax.Array  # [n_grid, n_features] message features, physical units
    actions: dict  # device type -> (mask [n, act_dim] bool, action [n, act_dim]): replaces the devices' own
    n_sent: jax.Array  # [] int
    info: dict  # extra per-step values for `info` (name -> array)


@dataclasses.dataclass(frozen=True, eq=False)
class Coupling:
    """A protocol's entry into the environment step (see the module docstring)."""

    features: tuple  # [n_features] Feature: the message features each grid agent observes
    init: Callable  # (links, dtype) -> state
    step: Callable  # (links, state, inputs, key) -> (Outputs, state)
    scale: Callable  # (links) -> [n_grid, n_features] numpy: observed feature = message / scale
    defaults: dict = dataclasses.field(default_factory=dict)  # protocol options and their defaults
    settle: Callable | None = None  # (links, outputs, import_mw, price, dt_h, connection params) -> [n_grid] $
    sends: bool = True  # False: no messages at all (`none`): no links, no tracked children
    info: dict = dataclasses.field(default_factory=dict)  # `Outputs.info` keys -> "grid" ([n_grid]) or "scalar"
    values: Callable | None = None  # vertical: what parents send (`vertical_coupling`'s `values`)


def empty_outputs(n_grid: int, dtype) -> Outputs:
    return Outputs(received=jnp.zeros(n_grid, dtype), messages=jnp.zeros((n_grid, 0), dtype), actions={},
                   n_sent=jnp.zeros((), jnp.int32), info={})


def take_grid(values, index: np.ndarray, fill):
    """`values[index]` per grid agent, `fill` where `index < 0`."""
    return jnp.where(jnp.asarray(index >= 0), values[jnp.asarray(np.maximum(index, 0))], fill)


def grid_imports(links: Links, import_mw) -> jax.Array:
    """Import per grid agent `[n_grid]` (MW): the sum of its connection devices' `import_mw` `[n_connection]`."""
    n = links.n_grid
    if not len(links.grid_of_connection):
        return jnp.zeros(n, import_mw.dtype)
    seg = jnp.asarray(np.where(links.grid_of_connection >= 0, links.grid_of_connection, n))
    return jax.ops.segment_sum(import_mw, seg, n + 1)[:n]


def parent_actions(links: Links, actions):
    """`[n_grid]` in [0, 1]: each tracked child's column of its learned parent's action."""
    a = jnp.clip(actions[jnp.asarray(np.maximum(links.parent_agent, 0)), jnp.asarray(np.maximum(links.parent_col, 0))],
                 -1.0, 1.0)
    return (a + 1.0) / 2.0


def send_down(links: Links, chan: channels.ChannelState, key, value, default):
    """Send `value [n_grid]` from each parent to its children through the channel.

    Returns `(received [n_grid], n_sent, chan)`: the last value delivered, `default` before
    anything arrived.
    """
    v_links = links.v_links
    msgs = Messages(jnp.where(v_links[..., None], value[None, :, None], 0.0), jnp.asarray(v_links))
    _, chan = channels.transmit(links.vparams, chan, msgs, key)
    got = jnp.any((chan.age < BIG_AGE) & v_links, axis=0)
    received = jnp.where(got, jnp.sum(jnp.where(v_links, chan.last[..., 0], 0.0), axis=0), default)
    return received, msgs.count, chan


def vertical_coupling(features: tuple, scale: Callable, values: Callable, respond: Callable, defaults=None) -> Coupling:
    """A parent -> child protocol: a value per child through the channel, tracked children respond.

    `values(links, u [n_grid] in [0, 1], price) -> (learned, fixed, default)` `[n_grid]`:
    what a learned parent sends for its action `u`, what a fixed parent sends, what a child
    uses before anything arrives. `respond(links, received, inputs) -> {type: action}`:
    the tracked children's device actions.
    """

    def init(links: Links, dtype):
        return channels.channel_init(links.vparams, 1, dtype)

    def step(links: Links, chan, inputs: Inputs, key):
        learned, fixed, default = values(links, parent_actions(links, inputs.actions), inputs.price)
        value = jnp.where(jnp.asarray(links.tracked), learned, fixed)
        received, n_sent, chan = send_down(links, chan, key, value, default)
        actions = {}
        if links.dispatch_types:
            acts = respond(links, received, inputs)
            actions = {t: (jnp.broadcast_to(jnp.asarray(links.tracked_of[t] >= 0)[:, None], a.shape), a)
                       for t, a in acts.items()}
        out = Outputs(received=received, messages=received[:, None], actions=actions, n_sent=n_sent, info={})
        return out, chan

    return Coupling(features=features, init=init, step=step, scale=scale, defaults=dict(defaults or {}),
                    values=values)


def peer_channel_init(msg_dim: int):
    """`init` of a horizontal coupling whose only state is its peer channel."""

    def init(links: Links, dtype):
        return channels.channel_init(links.hparams, msg_dim, dtype)

    return init


def scale_mw_and_price(links: Links) -> np.ndarray:
    """`[n_grid, 2]`: MW over the import limit, $/MWh over 100."""
    return np.stack([links.scale_mw, np.full(links.n_grid, 100.0)], axis=-1)


def connection_terms(links: Links, params: dict, dtype):
    """`(sell_discount, price_scale)` `[n_grid]` of each grid agent's connection (0, 1 without one)."""
    from pgjax import devices as dev

    if links.connection_type is None:
        return jnp.zeros(links.n_grid, dtype), jnp.ones(links.n_grid, dtype)
    discount, scale = dev.get(links.connection_type).grid_connection.tariff(params[links.connection_type])
    return take_grid(discount, links.connection_of_grid, 0.0), take_grid(scale, links.connection_of_grid, 1.0)


def graph(kind: str, n: int) -> np.ndarray:
    """Boolean adjacency `[n, n]` of a complete graph, a ring or a line."""
    a = np.zeros((n, n), bool)
    if kind == "complete":
        a[:] = True
    else:
        for i in range(n - 1):
            a[i, i + 1] = a[i + 1, i] = True
        if kind == "ring" and n > 2:
            a[0, -1] = a[-1, 0] = True
    np.fill_diagonal(a, False)
    return a


GRAPHS = ("complete", "ring", "line")

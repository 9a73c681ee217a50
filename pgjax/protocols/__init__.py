"""Coordination protocols: pure functions over message tensors, and their registry.

A protocol is a `Protocol` record whose `apply` has the signature (see DESIGN.md)

    device_commands, messages_out, proto_state = apply(params, proto_state, agent_outputs, messages_in)

- `params`: the protocol's `flax.struct` dataclass of arrays (static Python values, such as
  iteration counts or a mechanism name, are `struct.field(pytree_node=False)`), built once
  when a scenario is compiled; varying its arrays never retraces.
- `proto_state`: a pytree carried across steps (`init(params)` makes the first one).
- `agent_outputs`: a dict of arrays the agents (or the environment) produce this step;
  every protocol documents the keys it reads (e.g. `action [n_agents, k]`, `value [n]`).
- `messages_in`: the `Messages` delivered to the protocol's agents by the channel this step
  (`pgjax.comms`); `Messages.full(...)` stands for an ideal channel.
- `device_commands`: a dict of arrays (documented per protocol), e.g. `p_mw [n_devices]`.
- `messages_out`: the `Messages` the protocol sends, `data [n_senders, n_receivers, msg_dim]`
  with a boolean `mask [n_senders, n_receivers]` of links that carry a message; the
  environment hands them to the channel and counts them (`Messages.count`).

Everything is `jnp` with static shapes: protocols jit, vmap over environments and scan
over time; none loops in Python over agents or steps at run time.

Built-in protocols (module `pgjax.protocols.<module>`):
  vertical   (parent -> children): `none`, `setpoint`, `price_signal`
  horizontal (peer <-> peer):      `none_horizontal` (`none` in scenarios), `consensus`, `p2p_trading`,
                                   `admm_dispatch`
Local controllers (droop P-f / Q-V, volt-var curves) are plain functions in
`pgjax.protocols.local` (the device rules use them); they send no messages and are not protocols.
Add a protocol with `register(Protocol(...))`; with a `coupling`
(`pgjax.protocols.coupling.Coupling`) a scenario can name it. See
`scripts/example_protocol.py` for a complete one in under 100 lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.registry import Registry


@struct.dataclass
class Messages:
    """A batch of messages: `data [n_senders, n_receivers, msg_dim]`, `mask [n_senders, n_receivers]`.

    `mask[s, r]` is True where sender `s` has a message for receiver `r` (sent, or for
    `messages_in`, delivered by the channel); `data` is meaningless where the mask is False.
    """

    data: jax.Array
    mask: jax.Array

    @staticmethod
    def empty(n_senders: int, n_receivers: int, msg_dim: int = 1, dtype=float) -> Messages:
        return Messages(jnp.zeros((n_senders, n_receivers, msg_dim), dtype),
                        jnp.zeros((n_senders, n_receivers), bool))

    @staticmethod
    def full(data) -> Messages:
        """Every link delivered (an ideal channel) carrying `data`."""
        return Messages(data, jnp.ones(data.shape[:2], bool))

    @staticmethod
    def broadcast(values, adjacency) -> Messages:
        """Each sender `s` sends `values[s] ([msg_dim] or scalar)` to every `r` with `adjacency[s, r]`."""
        values = jnp.asarray(values)
        values = values[:, None] if values.ndim == 1 else values
        adjacency = jnp.asarray(adjacency, bool)
        data = jnp.broadcast_to(values[:, None, :], (values.shape[0], adjacency.shape[1], values.shape[1]))
        return Messages(jnp.where(adjacency[..., None], data, 0.0), adjacency)

    @property
    def count(self):
        """Number of messages (links carrying one)."""
        return jnp.sum(self.mask)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: usable as a static jit argument
class Protocol:
    """A registered protocol (see the module docstring for `apply`'s signature)."""

    name: str
    kind: str  # "vertical" | "horizontal"
    params_cls: type
    init: Callable  # (params) -> proto_state
    apply: Callable  # (params, proto_state, agent_outputs, messages_in) -> (commands, messages_out, state)
    doc: str = ""
    coupling: Any = None  # `pgjax.protocols.coupling.Coupling`: how a scenario uses it (None: not selectable)

    def __call__(self, params, proto_state, agent_outputs, messages_in):
        return self.apply(params, proto_state, agent_outputs, messages_in)


def _check(protocol: Protocol) -> None:
    if protocol.kind not in ("vertical", "horizontal"):
        raise ValueError(f"protocol '{protocol.name}': kind must be 'vertical' or 'horizontal', got {protocol.kind!r}")


REGISTRY = Registry("protocol", _check)
register = REGISTRY.register
get = REGISTRY.lookup


def names(kind: str | None = None, selectable: bool = False) -> list[str]:
    """Registered protocol names, optionally only of one kind or only those a scenario can name."""
    return sorted(n for n, p in REGISTRY.items()
                  if (kind is None or p.kind == kind) and (not selectable or p.coupling is not None))


def scenario_names(kind: str) -> list[str]:
    """What `protocol.<kind>` of a scenario accepts: the selectable protocols of that kind ('none' for none)."""
    return sorted(NONE_ALIASES.get(n, n) for n in names(kind, selectable=True))


def find(kind: str, name: str) -> Protocol:
    """The selectable protocol a scenario's `protocol.<kind>: <name>` means."""
    full = {v: k for k, v in NONE_ALIASES.items()}.get(name, name) if kind == "horizontal" else name
    protocol = REGISTRY.get(full)
    if protocol is None or protocol.kind != kind or protocol.coupling is None:
        raise ValueError(f"protocol.{kind}: unknown protocol {name!r}; selectable: {scenario_names(kind)}")
    return protocol


NONE_ALIASES = {"none_horizontal": "none"}  # registered name -> the name scenarios use


# Built-ins register themselves on import (after the names above exist).
from pgjax.protocols import admm, consensus, local, none, p2p, price_signal, setpoint  # noqa: F401

__all__ = ["REGISTRY", "Messages", "Protocol", "find", "get", "names", "register", "scenario_names"]

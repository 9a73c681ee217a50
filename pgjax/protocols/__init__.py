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
  (`pgjax.protocols.channels`); `Messages.full(...)` stands for an ideal channel.
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

from pgjax.protocols.messages import Messages
from pgjax.protocols.registry import REGISTRY, Protocol, find, get, names, register, scenario_names

# The built-ins register themselves on import.
from pgjax.protocols import admm, consensus, none, p2p, price_signal, setpoint  # noqa: E402, F401

__all__ = ["REGISTRY", "Messages", "Protocol", "find", "get", "names", "register", "scenario_names"]

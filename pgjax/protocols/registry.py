"""The protocol registry: `Protocol` records by name, and what a scenario may name.

See `pgjax.protocols` for the `apply` signature and the built-ins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pgjax.registry import Registry


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

"""`none` (vertical) and `none_horizontal`: no coordination, the baselines.

Sends nothing (`messages_out.mask` all False) and commands nothing (`{}`): devices act on
their own actions (learned or rule-based), peers do not interact.
"""

from __future__ import annotations

from flax import struct

from pgjax.protocols import Messages, Protocol, register


@struct.dataclass
class Params:
    n_senders: int = struct.field(pytree_node=False, default=1)
    n_receivers: int = struct.field(pytree_node=False, default=1)


def init(params: Params):
    return ()


def apply(params: Params, state, agent_outputs, messages_in):
    return {}, Messages.empty(params.n_senders, params.n_receivers), state


NONE = register(Protocol("none", "vertical", Params, init, apply, __doc__))
NONE_HORIZONTAL = register(Protocol("none_horizontal", "horizontal", Params, init, apply, __doc__))

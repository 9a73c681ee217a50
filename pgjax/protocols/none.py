"""`none` (vertical) and `none_horizontal`: no coordination, the baselines.

Sends nothing (`messages_out.mask` all False) and commands nothing (`{}`): devices act on
their own actions (learned or rule-based), peers do not interact.
"""

from __future__ import annotations

from flax import struct

import jax.numpy as jnp
import numpy as np

from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    n_senders: int = struct.field(pytree_node=False, default=1)
    n_receivers: int = struct.field(pytree_node=False, default=1)


def init(params: Params):
    return ()


def apply(params: Params, state, agent_outputs, messages_in):
    return {}, Messages.empty(params.n_senders, params.n_receivers), state


def _env_init(links, dtype):
    return ()


def _env_step(links, state, inputs, key):
    return coupling.empty_outputs(links.n_grid, inputs.price.dtype), state


NOTHING = coupling.Coupling(features=(), init=_env_init, step=_env_step, scale=lambda links: np.zeros((links.n_grid, 0)),
                            sends=False)
NONE = register(Protocol("none", "vertical", Params, init, apply, __doc__, coupling=NOTHING))
NONE_HORIZONTAL = register(Protocol("none_horizontal", "horizontal", Params, init, apply, __doc__, coupling=NOTHING))

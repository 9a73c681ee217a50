"""`consensus` (horizontal): iterated averaging `x <- W x` over a communication graph.

Sends: each agent its current value to every neighbour, every iteration
(`messages_out` holds the last round: `data [n, n, dim]`, mask = the links used).
Acts: starting from `agent_outputs["value"] [n, dim]` (or `[n]`), `iterations` rounds of
`x <- W x` with Metropolis-Hastings weights
    W_ij = 1 / (1 + max(deg_i, deg_j))  for a link i-j,   W_ii = 1 - sum_j W_ij,
which are symmetric and doubly stochastic, so on a connected graph `x` converges to the
mean of the initial values and on a disconnected graph each connected component converges
to its own mean (nothing crosses between components). A link is used only if it is in
`params.adjacency` (symmetrized) *and* the channel delivered on it this step
(`messages_in.mask`, both directions required): lost or late messages thin the graph for
the step, and the weights are recomputed on the thinned graph, so they stay doubly stochastic.
`params.step_size` in (0, 1] damps the update (`x <- x + step_size (W x - x)`).

commands: `value [n, dim]` (or `[n]`, matching the input), the agreed values.
state: `iterations_run` (total rounds so far), `last [n, dim]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.protocols import channels
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    adjacency: jax.Array  # [n, n] bool communication graph (made symmetric, diagonal ignored)
    step_size: jax.Array  # [] in (0, 1]
    iterations: int = struct.field(pytree_node=False, default=50)
    dim: int = struct.field(pytree_node=False, default=1)


@struct.dataclass
class State:
    iterations_run: jax.Array
    last: jax.Array


def metropolis_weights(adjacency):
    """Metropolis-Hastings weight matrix `[n, n]` of a boolean graph (symmetric, doubly stochastic)."""
    adj = jnp.asarray(adjacency, bool)
    n = adj.shape[0]
    adj = (adj | adj.T) & ~jnp.eye(n, dtype=bool)
    deg = jnp.sum(adj, axis=1)
    w = jnp.where(adj, 1.0 / (1.0 + jnp.maximum(deg[:, None], deg[None, :])), 0.0)
    return w + jnp.diag(1.0 - jnp.sum(w, axis=1))


def init(params: Params):
    n = params.adjacency.shape[0]
    return State(iterations_run=jnp.zeros((), jnp.int32), last=jnp.zeros((n, params.dim)))


def apply(params: Params, state: State, agent_outputs, messages_in):
    x0 = jnp.asarray(agent_outputs["value"])
    x = x0[:, None] if x0.ndim == 1 else x0
    delivered = messages_in.mask & messages_in.mask.T
    adj = (params.adjacency | params.adjacency.T) & delivered
    w = metropolis_weights(adj)
    w = (1.0 - params.step_size) * jnp.eye(w.shape[0]) + params.step_size * w
    x = jax.lax.fori_loop(0, params.iterations, lambda _, v: w @ v, x)
    used = adj & ~jnp.eye(adj.shape[0], dtype=bool)
    msgs = Messages.broadcast(x, used)
    new_state = State(iterations_run=state.iterations_run + params.iterations, last=x.astype(state.last.dtype))
    return {"value": x.reshape(x0.shape)}, msgs, new_state


def make_params(adjacency, iterations=50, step_size=1.0, dim=1):
    return Params(adjacency=jnp.asarray(adjacency, bool), step_size=jnp.asarray(step_size, float),
                  iterations=int(iterations), dim=int(dim))


def _env_step(links, chan, inputs, key):
    """Each grid agent starts from its last import and averages over the links delivered this step."""
    h_links = links.adjacency
    msgs = Messages.broadcast(inputs.import_mw, h_links)
    delivered, chan = channels.transmit(links.hparams, chan, msgs, key)
    prm = make_params(links.adjacency, iterations=links.options["iterations"])
    out, _, _ = apply(prm, init(prm), {"value": inputs.import_mw}, delivered)
    value = out["value"].reshape(-1)
    return coupling.Outputs(received=jnp.zeros_like(value), messages=value[:, None], actions={}, n_sent=msgs.count,
                            info={}), chan


# In a scenario: the grid agents agree on their mean import; each observes the agreed value.
ENV_COUPLING = coupling.Coupling(
    features=(Feature("consensus_mw", "MW", "agreed import, over the import limit"),),
    init=coupling.peer_channel_init(1), step=_env_step, scale=lambda links: links.scale_mw[:, None],
    defaults={"iterations": 10, "graph": "complete"})
CONSENSUS = register(Protocol("consensus", "horizontal", Params, init, apply, __doc__, coupling=ENV_COUPLING))

"""Message tensors: what protocols send and channels (`pgjax.protocols.channels`) deliver."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


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

"""flax networks of the actor-critic baselines, sized from their inputs (no hard-coded dimensions).

`Actor`: local observation `[..., in_dim]` -> Gaussian mean `[..., act_dim]` and a
state-independent `log_std [act_dim]`. `Critic`: `[..., in_dim]` -> values `[..., outputs]` (one
head per output on a shared trunk: a centralized critic evaluates the world state once for
every agent and every cost signal).
Orthogonal initialization as in PPO implementations: sqrt(2) hidden, 0.01 policy head, 1.0 value head.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}


class MLP(nn.Module):
    """Dense layers with an activation after each: `[..., in] -> [..., hidden[-1]]`."""

    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)),
                             bias_init=nn.initializers.zeros)(x))
        return x


class Actor(nn.Module):
    """Diagonal Gaussian policy: `mean [..., act_dim]`, `log_std [act_dim]` (state-independent)."""

    act_dim: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = -0.5

    @nn.compact
    def __call__(self, obs):
        x = MLP(self.hidden, self.activation)(obs)
        mean = nn.Dense(self.act_dim, kernel_init=nn.initializers.orthogonal(0.01),
                        bias_init=nn.initializers.zeros)(x)
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.act_dim,))
        return mean, log_std


class Critic(nn.Module):
    """State values, one per head: `[..., in_dim] -> [..., outputs]`."""

    hidden: Sequence[int] = (128, 128)
    activation: str = "tanh"
    outputs: int = 1

    @nn.compact
    def __call__(self, x):
        x = MLP(self.hidden, self.activation)(x)
        return nn.Dense(self.outputs, kernel_init=nn.initializers.orthogonal(1.0), bias_init=nn.initializers.zeros)(x)


def gaussian_log_prob(x, mean, log_std, mask):
    """Log density of `x [..., d]` under N(mean, exp(log_std)^2), summed over `mask`ed dims -> `[...]`."""
    z = (x - mean) * jnp.exp(-log_std)
    per_dim = -0.5 * z ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(per_dim * mask, axis=-1)


def gaussian_entropy(log_std, mask):
    """Entropy of the diagonal Gaussian over `mask`ed dims; `log_std [d]`, `mask [..., d]` -> `[...]`."""
    return jnp.sum((0.5 + 0.5 * jnp.log(2 * jnp.pi) + log_std) * mask, axis=-1)


def sample_action(key, mean, log_std):
    """A raw Gaussian sample `[..., d]` (the env receives it clipped to [-1, 1])."""
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

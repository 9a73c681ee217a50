"""`price_signal` (vertical): the parent broadcasts a price; each device maximizes its profit.

Sends: parent `owner[d]` -> each of its devices `d` the price in $/MWh (`msg_dim = 1`).
The price is `agent_outputs["price"] [n_agents]` ($/MWh) if given, else the action
`agent_outputs["action"] [n_agents]` in [-1, 1] mapped linearly onto
`[price_min, price_max]`.

Acts (closed form, one evaluation, no iterations): device `d` with injection `p` (MW,
generation positive) and cost `a p^2 + b p` ($/h) chooses
    p* = argmax_{p_min <= p <= p_max} price p - a p^2 - b p = clip((price - b) / (2a), p_min, p_max)
(with `a` floored at `a_min`, so `a = 0` becomes a near bang-bang response). Loads use the
same rule with `p_min < 0` (consumption) and `b` their marginal utility, so they consume
more when the price is low. Storage (`is_storage`) values its stored energy at
    v = energy_value + energy_value_slope * (soc_ref - soc)     ($/MWh, higher when empty)
and pays `degradation |p|`; its profit `(price - v) p - deg |p| - a p^2` is maximized by
    p* = clip((price - v - deg) / 2a, 0, dis_max) + clip((price - v + deg) / 2a, -ch_max, 0)
within the SOC-feasible range `[-ch_max, dis_max]`, which the caller passes as
`agent_outputs["p_min_mw"]` / `["p_max_mw"]` (e.g. from `pgjax.devices.storage.limits`),
together with `agent_outputs["soc"] [n_dev]` (defaults: the params' limits and `soc_ref`).
Every response is non-decreasing in the price and within `[p_min, p_max]`.

commands: `p_mw [n_dev]`, `price [n_dev]` (the price each device saw).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import devices as dev
from pgjax.protocols import dispatch
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    owner: jax.Array  # [n_dev] int, agent broadcasting to each device
    p_min_mw: jax.Array  # [n_dev]
    p_max_mw: jax.Array  # [n_dev]
    cost_a: jax.Array  # [n_dev] $/(MW^2 h), quadratic cost coefficient
    cost_b: jax.Array  # [n_dev] $/MWh, linear cost (storage: degradation per MWh)
    is_storage: jax.Array  # [n_dev] bool
    energy_value: jax.Array  # [n_dev] $/MWh, value of stored energy at soc_ref (storage)
    energy_value_slope: jax.Array  # [n_dev] $/MWh per unit SOC below soc_ref (storage)
    soc_ref: jax.Array  # [n_dev] in [0, 1]
    price_min: jax.Array  # [] $/MWh (action -1)
    price_max: jax.Array  # [] $/MWh (action +1)
    a_min: float = struct.field(pytree_node=False, default=1e-6)
    n_agents: int = struct.field(pytree_node=False, default=1)


def make_params(owner, p_min_mw, p_max_mw, cost_a, cost_b, *, is_storage=None, energy_value=None,
                energy_value_slope=None, soc_ref=None, price_min=0.0, price_max=200.0, n_agents=None):
    """Convenience constructor: storage fields default to 'no storage'."""
    owner = jnp.asarray(owner, jnp.int32)
    f = lambda x, v: jnp.broadcast_to(jnp.asarray(v if x is None else x, float), owner.shape)
    return Params(owner=owner, p_min_mw=f(p_min_mw, 0), p_max_mw=f(p_max_mw, 0), cost_a=f(cost_a, 0),
                  cost_b=f(cost_b, 0),
                  is_storage=jnp.broadcast_to(jnp.asarray(False if is_storage is None else is_storage), owner.shape),
                  energy_value=f(energy_value, 0), energy_value_slope=f(energy_value_slope, 0),
                  soc_ref=f(soc_ref, 0.5), price_min=jnp.asarray(price_min, float),
                  price_max=jnp.asarray(price_max, float),
                  n_agents=int(n_agents if n_agents is not None else int(jnp.max(owner)) + 1))


def response(params: Params, price, p_min, p_max, soc):
    """Profit-maximizing injection `[n_dev]` for a price per device `[n_dev]` (see module doc)."""
    a2 = 2.0 * jnp.maximum(params.cost_a, params.a_min)
    gen = jnp.clip((price - params.cost_b) / a2, p_min, p_max)
    v = params.energy_value + params.energy_value_slope * (params.soc_ref - soc)
    dis = jnp.clip((price - v - params.cost_b) / a2, 0.0, jnp.maximum(p_max, 0.0))
    ch = jnp.clip((price - v + params.cost_b) / a2, jnp.minimum(p_min, 0.0), 0.0)
    return jnp.where(params.is_storage, jnp.clip(dis + ch, p_min, p_max), gen)


def init(params: Params):
    return ()


def apply(params: Params, state, agent_outputs, messages_in):
    if "price" in agent_outputs:
        agent_price = jnp.asarray(agent_outputs["price"])
    else:
        u = (jnp.clip(agent_outputs["action"], -1.0, 1.0) + 1.0) / 2.0
        agent_price = params.price_min + u * (params.price_max - params.price_min)
    agent_price = agent_price.reshape(-1)
    price = agent_price[params.owner]
    lo = agent_outputs.get("p_min_mw", params.p_min_mw)
    hi = jnp.maximum(agent_outputs.get("p_max_mw", params.p_max_mw), lo)
    p = response(params, price, lo, hi, agent_outputs.get("soc", params.soc_ref))
    link = params.owner[None, :] == jnp.arange(params.n_agents)[:, None]
    return {"p_mw": p, "price": price}, Messages.broadcast(agent_price, link), state


def respond(types, params, states, ctx, price_of, price_range):
    """Device actions of profit-maximizing responses to `price_of[t] [n_type]` ($/MWh).

    Storage values its energy at the middle of `price_range = (low, high)` $/MWh, more when
    nearly empty and less when nearly full (`energy_value_slope` = half the range).
    """
    lo, hi = dispatch.ranges(types, params, states, ctx)
    low, high = price_range
    out = {}
    for t, lo_, hi_ in zip(types, lo, hi):
        a, b, is_storage, soc = dev.get(t).dispatch.price_terms(params[t], states[t])
        prm = Params(
            owner=jnp.zeros(lo_.shape, jnp.int32), p_min_mw=lo_, p_max_mw=hi_, cost_a=a, cost_b=b,
            is_storage=is_storage, energy_value=jnp.full_like(lo_, (low + high) / 2),
            energy_value_slope=jnp.full_like(lo_, (high - low) / 2), soc_ref=jnp.full_like(lo_, 0.5),
            price_min=jnp.asarray(low, lo_.dtype), price_max=jnp.asarray(high, lo_.dtype))
        p = response(prm, price_of[t], lo_, hi_, soc)
        out[t] = dev.get(t).dispatch.p_action(params[t], states[t], ctx, p)
    return out


def _price_range(links):
    return float(links.options["price_min"]), float(links.options["price_max"])


def _prices(links, u, price):
    """A learned parent's action `u` in [0, 1] -> price in `[price_min, price_max]`; fixed: the market price."""
    low, high = _price_range(links)
    market = jnp.full(links.n_grid, price, u.dtype)
    return low + u * (high - low), market, market


def _respond(links, received, inputs):
    price_of = {t: received[jnp.maximum(jnp.asarray(links.tracked_of[t]), 0)] for t in links.dispatch_types}
    return respond(links.dispatch_types, inputs.params, inputs.states, inputs.ctx, price_of, _price_range(links))


# In a scenario: each grid agent's price from its parent; tracked children's devices respond (`respond`).
ENV_COUPLING = coupling.vertical_coupling(
    features=(Feature("price", "$/MWh", "price received, over 100"),),
    scale=lambda links: np.full((links.n_grid, 1), 100.0), values=_prices, respond=_respond,
    defaults={"price_min": 0.0, "price_max": 200.0})
PRICE_SIGNAL = register(Protocol("price_signal", "vertical", Params, init, apply, __doc__, coupling=ENV_COUPLING))

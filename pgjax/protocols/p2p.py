"""`p2p_trading` (horizontal): a double auction among peers, cleared every step.

Inputs (`agent_outputs`): `net_mw [n]` surplus (> 0, offered for sale) or deficit (< 0,
wanted), and `price [n]` $/MWh: a seller's offer (its marginal cost, lowest acceptable
price) or a buyer's bid (its marginal value, e.g. the grid import price it avoids, highest
acceptable price). Agents with `params.participate` False do not trade.

Clearing (static shapes, no loops): sellers sorted by offer ascending and buyers by bid
descending (`jnp.argsort`) give stepwise supply and demand curves (`cumsum`). The traded
volume `Q*` is the largest curve breakpoint at which the marginal offer does not exceed
the marginal bid (found with `searchsorted`); sellers and buyers are filled in merit order
up to `Q*`, and the bilateral trade matrix is the overlap of their intervals on `[0, Q*]`.
Every matched pair therefore has `offer <= bid`. Prices:
- `uniform`: all trades at `p* = o_m + k (b_m - o_m)` between the marginal matched offer
  `o_m` and bid `b_m` (`k = params.k`, 0.5 by default); `o_m <= p* <= b_m`, hence no seller
  sells below its offer and no buyer pays above its bid;
- `pay_as_bid`: each pair trades at its buyer's bid (buyers pay what they bid; sellers
  receive it, which is >= their offer).
Nothing trades when no bid crosses an offer. Energy and money only move between agents:
`sum(p2p_mw) = 0` and `sum(payment) = 0` (up to float rounding of the row/column sums).

Sends: seller -> buyer trade confirmations `data [n, n, 2] = (MW, $/MWh)`, mask = trades > 0.
commands: `trades_mw [n, n]` (seller row -> buyer column), `trade_price [n, n]`,
`p2p_mw [n]` (bought - sold: MW each agent now gets from peers, i.e. its grid import
drops by this much), `payment [n]` ($ per step paid - received, `price * MW * dt_h`),
`volume_mw []`, `clearing_price []` (the uniform price `p*`, also reported under pay-as-bid;
NaN when nothing trades).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.protocols import channels
from pgjax import devices as dev
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    participate: jax.Array  # [n] bool
    dt_h: jax.Array  # [] hours per step (payments in $ per step)
    k: jax.Array  # [] uniform price position between marginal offer (0) and bid (1)
    mechanism: str = struct.field(pytree_node=False, default="uniform")  # or "pay_as_bid"


def make_params(n, mechanism="uniform", dt_h=1.0, k=0.5, participate=None):
    if mechanism not in ("uniform", "pay_as_bid"):
        raise ValueError(f"p2p_trading mechanism must be 'uniform' or 'pay_as_bid', got {mechanism!r}")
    part = jnp.ones(n, bool) if participate is None else jnp.asarray(participate, bool)
    return Params(participate=part, dt_h=jnp.asarray(dt_h, float), k=jnp.asarray(k, float),
                  mechanism=mechanism)


def clear(net_mw, price, participate, mechanism="uniform", k=0.5):
    """Double-auction clearing. Returns `(trades [n, n], trade_price [n, n], clearing_price [])`."""
    net = jnp.where(participate, net_mw, 0.0)
    sell_q, buy_q = jnp.maximum(net, 0.0), jnp.maximum(-net, 0.0)
    big = jnp.asarray(jnp.finfo(jnp.result_type(price)).max / 4, price.dtype)
    so = jnp.argsort(jnp.where(sell_q > 0, price, big))  # sellers: cheapest first
    bo = jnp.argsort(jnp.where(buy_q > 0, -price, big))  # buyers: highest bid first
    s_q, b_q = sell_q[so], buy_q[bo]
    s_p, b_p = price[so], price[bo]
    s_hi, b_hi = jnp.cumsum(s_q), jnp.cumsum(b_q)
    # exclusive cumsums (not `hi - q`, which rounds): intervals are contiguous and disjoint
    s_lo = jnp.concatenate([jnp.zeros(1, s_hi.dtype), s_hi[:-1]])
    b_lo = jnp.concatenate([jnp.zeros(1, b_hi.dtype), b_hi[:-1]])
    # candidate volumes: every breakpoint of either curve; a candidate q is feasible if both
    # sides hold q and the marginal offer at q- does not exceed the marginal bid at q-
    q = jnp.concatenate([s_hi, b_hi])
    n = s_q.shape[0]
    i_s = jnp.minimum(jnp.searchsorted(s_hi, q, side="left"), n - 1)
    i_b = jnp.minimum(jnp.searchsorted(b_hi, q, side="left"), n - 1)
    ok = (q > 0) & (q <= s_hi[-1]) & (q <= b_hi[-1]) & (s_p[i_s] <= b_p[i_b])
    q_star = jnp.max(jnp.where(ok, q, 0.0))
    # bilateral matrix in sorted order: overlap of seller and buyer intervals within [0, Q*]
    lo = jnp.maximum(s_lo[:, None], b_lo[None, :])
    hi = jnp.minimum(jnp.minimum(s_hi[:, None], b_hi[None, :]), q_star)
    t_sorted = jnp.maximum(hi - lo, 0.0)
    traded = q_star > 0
    j_s = jnp.minimum(jnp.searchsorted(s_hi, q_star, side="left"), n - 1)
    j_b = jnp.minimum(jnp.searchsorted(b_hi, q_star, side="left"), n - 1)
    p_uniform = jnp.where(traded, s_p[j_s] + k * (b_p[j_b] - s_p[j_s]), jnp.nan)
    if mechanism == "uniform":
        p_sorted = jnp.broadcast_to(jnp.where(traded, p_uniform, 0.0), t_sorted.shape)
    else:
        p_sorted = jnp.broadcast_to(b_p[None, :], t_sorted.shape)
    p_sorted = jnp.where(t_sorted > 0, p_sorted, 0.0)
    # back to agent order: row so[i] sells to column bo[j]
    trades = jnp.zeros_like(t_sorted).at[so[:, None], bo[None, :]].set(t_sorted)
    tprice = jnp.zeros_like(t_sorted).at[so[:, None], bo[None, :]].set(p_sorted)
    return trades, tprice, p_uniform


def init(params: Params):
    return {"volume_mw": jnp.zeros(()), "trades": jnp.zeros((), jnp.int32)}


def apply(params: Params, state, agent_outputs, messages_in):
    net = jnp.asarray(agent_outputs["net_mw"])
    price = jnp.asarray(agent_outputs["price"], net.dtype)
    trades, tprice, p_clear = clear(net, price, params.participate, params.mechanism, params.k)
    money = trades * tprice * params.dt_h  # [seller, buyer] $ paid by buyer to seller
    p2p = jnp.sum(trades, axis=0) - jnp.sum(trades, axis=1)
    payment = jnp.sum(money, axis=0) - jnp.sum(money, axis=1)
    mask = trades > 0
    msgs = Messages(jnp.stack([trades, tprice], axis=-1), mask)
    volume = jnp.sum(trades)
    commands = {"trades_mw": trades, "trade_price": tprice, "p2p_mw": p2p, "payment": payment,
                "volume_mw": volume, "clearing_price": p_clear}
    new_state = {"volume_mw": state["volume_mw"] + volume,
                 "trades": state["trades"] + jnp.sum(mask, dtype=jnp.int32)}
    return commands, msgs, new_state


def bid(import_mw, price, sell_discount, price_scale):
    """One grid agent's bid `(net MW, offer $/MWh)` from its last measured import (elementwise: a scalar
    per agent on a controller's host, `[n_grid]` in the step): the surplus `-import_mw` offered at
    the export tariff, a deficit bid at the import tariff."""
    net = -import_mw
    offer = jnp.where(net > 0, (1.0 - sell_discount) * price_scale * price, price_scale * price)
    return jnp.stack([net, offer], axis=-1)


def clear_delivered(links, delivered: Messages, dtype):
    """Clear the market on the bids `delivered` (`data [n, n, 2]`, sender rows): `(p2p_mw [n], clearing
    price [] (0 when nothing trades), payment [n])`. A sender whose bid arrived at any peer takes part."""
    arrived = jnp.any(delivered.mask, axis=1)  # a bid arrives at the peers together
    count = jnp.maximum(jnp.sum(delivered.mask, axis=1), 1)[:, None]
    bids = jnp.sum(jnp.where(delivered.mask[..., None], delivered.data, 0.0), axis=1) / count
    prm = make_params(links.n_grid, mechanism=links.options["mechanism"],
                      participate=arrived & (links.connection_of_grid >= 0))
    prm = prm.replace(dt_h=jnp.asarray(1.0, dtype), k=jnp.asarray(0.5, dtype))
    out, _, _ = apply(prm, init(prm), {"net_mw": bids[:, 0], "price": bids[:, 1]}, delivered)
    return out["p2p_mw"].astype(dtype), jnp.nan_to_num(out["clearing_price"]), out["payment"]


def _env_step(links, chan, inputs, key):
    """Bids of the last measured deficit / surplus to the peers; delivered bids clear the market."""
    d = inputs.import_mw.dtype
    discount, scale = coupling.connection_terms(links, inputs.params, d)
    msgs = Messages.broadcast(bid(inputs.import_mw, inputs.price, discount, scale), links.adjacency)
    delivered, chan = channels.transmit(links.hparams, chan, msgs, key)
    p2p_mw, clearing_price, payment = clear_delivered(links, delivered, d)
    messages = jnp.stack([p2p_mw, clearing_price * jnp.ones(links.n_grid, d)], axis=-1)
    info = {"p2p_mw": p2p_mw, "p2p_volume_mw": jnp.sum(jnp.maximum(p2p_mw, 0)), "p2p_payment": payment}
    return coupling.Outputs(received=jnp.zeros(links.n_grid, d), messages=messages, actions={}, n_sent=msgs.count,
                            info=info), chan


def _settle(links, outputs, import_mw, price, dt_h, params):
    """Change of each grid agent's cost `[n_grid]` ($): the grid bills the untraded rest, peers pay the trades."""
    if links.connection_type is None:
        return jnp.zeros(links.n_grid, import_mw.dtype)
    conn = dev.get(links.connection_type).grid_connection
    prm = jax.tree.map(lambda x: x[jnp.asarray(links.connection_of_grid.clip(0))], params[links.connection_type])
    grid_import = import_mw - outputs.info["p2p_mw"]
    return (conn.bill(prm, price, grid_import, dt_h) - conn.bill(prm, price, import_mw, dt_h)
            + outputs.info["p2p_payment"] * dt_h)


# In a scenario: double auction among the grid agents, settled after the power flow.
ENV_COUPLING = coupling.Coupling(
    features=(Feature("p2p_mw", "MW", "traded, over the import limit"), Feature("clearing_price", "$/MWh", "over 100")),
    init=coupling.peer_channel_init(2), step=_env_step, scale=coupling.scale_mw_and_price, settle=_settle,
    defaults={"mechanism": "uniform", "graph": "complete"},
    info={"p2p_mw": "grid", "p2p_volume_mw": "scalar", "p2p_payment": "grid"})
P2P_TRADING = register(Protocol("p2p_trading", "horizontal", Params, init, apply, __doc__, coupling=ENV_COUPLING))

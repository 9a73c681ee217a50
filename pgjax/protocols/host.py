"""Protocol messages per agent, outside the compiled step: the couplings' own functions, one agent at a time.

A deployed agent (`pgjax.deploy.agents`) runs as its own process: it computes what it sends from
its own measurements, and what it observes from the messages it received. Both come from the
functions the environment step calls (one source, two executions), evaluated eagerly on the
controller's host with numpy inputs and returned as numpy arrays:

    spec = host.spec(env.coordinator, "horizontal")          # or "vertical"
    payload = spec.send(links, i, local)                      # [msg_dim] what agent i publishes
    features, extra = spec.receive(links, i, received, local) # [n_features] what agent i observes

`local` is the agent's own `Local` (its last measured import, the price, its tariff, ...);
`received` maps a sender index to the payload it published for this step (what the channel
delivered: a sender missing from it is a lost or late message); the agent's own payload is in
it when the agent sent one (its own message counts as delivered to its peers). `mask [n, n]`,
when given, says which links delivered (from the receivers' receipts), so that every agent
sees the step's delivery exactly as the simulated channel made it. Per protocol:

- `p2p_trading`: sends its bid `(net MW, offer $/MWh)` (`p2p.bid`); with the peers' bids every
  agent clears the same market (`p2p.clear_delivered`) and observes its own `p2p_mw` and the
  clearing price; `extra` holds every agent's trade and its payment.
- `consensus`: sends its import; averages over the graph of the senders it heard from
  (`consensus.apply`) and observes its own agreed value.
- `admm_dispatch`: sends its unit's report `(a, b, p_min, p_max, need)` (`admm.agent_terms`);
  every agent solves the same joint dispatch (`admm.solve_reports`, warm-started from its own
  copy of the iterate) and observes its dispatch and the price.
- `setpoint` / `price_signal` (vertical): a parent sends each tracked child the value of its
  action column (the coupling's `values`); a child observes what it last received, the
  coupling's default before anything arrived.
- `none`: nothing sent, nothing observed.

The equality with the compiled step's messages is tested for every protocol on random inputs
(`tests/protocols/test_host.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from pgjax.protocols import admm, consensus, coupling, p2p
from pgjax.protocols.messages import Messages


@dataclasses.dataclass
class Local:
    """What one agent knows of itself this step (physical units)."""

    import_mw: float = 0.0  # its last measured import
    price: float = 0.0  # $/MWh, the market price of this step
    sell_discount: float = 0.0  # its connection's tariff (`coupling.connection_terms`)
    price_scale: float = 1.0
    actions: Any = None  # vertical parents: their action row [act_dim] in [-1, 1]
    report: Any = None  # admm: its report row [5]
    state: Any = None  # admm: its copy of the iterate (`admm.State`)


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """Per-agent send / receive of one protocol (see the module docstring)."""

    name: str
    msg_dim: int
    send: Callable  # (links, i, local, dtype) -> [msg_dim] numpy, or None (nothing to send)
    receive: Callable  # (links, i, received {sender: payload}, local, dtype, mask=None) -> ([n_features], extra)


def _delivered(links, received: dict, msg_dim: int, dtype, mask=None) -> Messages:
    """The step's `Messages` as one receiver sees them: sender rows of the payloads it has, on the links
    (all of a sender's links, or those `mask [n, n]` says delivered, when the receivers told it)."""
    adj = np.asarray(links.adjacency, bool)
    if mask is not None:
        adj = adj & np.asarray(mask, bool)
    n = adj.shape[0]
    data = np.zeros((n, n, msg_dim), dtype)
    present = np.zeros(n, bool)
    for s, payload in received.items():
        data[s] = np.asarray(payload, dtype)[None, :]
        present[s] = True
    mask = adj & present[:, None]
    return Messages(jnp.asarray(np.where(mask[..., None], data, 0).astype(dtype)), jnp.asarray(mask))


# ----------------------------------------------------------------------------- horizontal

def _p2p_send(links, i, local: Local, dtype):
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return np.asarray(p2p.bid(f(local.import_mw), f(local.price), f(local.sell_discount), f(local.price_scale)))


def _p2p_receive(links, i, received, local, dtype, mask=None):
    p2p_mw, price, payment = p2p.clear_delivered(links, _delivered(links, received, 2, dtype, mask), dtype)
    p2p_mw, payment = np.asarray(p2p_mw), np.asarray(payment)
    features = np.array([p2p_mw[i], np.asarray(price)], dtype)
    return features, {"p2p_mw": p2p_mw.tolist(), "payment": float(payment[i]), "clearing_price": float(price)}


def _consensus_send(links, i, local: Local, dtype):
    return np.array([local.import_mw], dtype)


def _consensus_receive(links, i, received, local, dtype, mask=None):
    msgs = _delivered(links, received, 1, dtype, mask)
    mask = np.asarray(msgs.mask)
    x0 = np.zeros(links.n_grid, dtype)
    for s, payload in received.items():
        x0[s] = np.asarray(payload, dtype)[0]
    x0[i] = local.import_mw
    both = mask & mask.T  # a link counts when both directions arrived
    prm = consensus.make_params(links.adjacency, iterations=links.options["iterations"])
    out, _, _ = consensus.apply(prm, consensus.init(prm), {"value": jnp.asarray(x0, dtype)},
                                Messages(msgs.data, jnp.asarray(both)))
    return np.array([np.asarray(out["value"]).reshape(-1)[i]], dtype), {}


def _admm_send(links, i, local: Local, dtype):
    return np.asarray(local.report, dtype)


def _admm_receive(links, i, received, local, dtype, mask=None):
    reports = np.zeros((links.n_grid, 5), dtype)
    for s, payload in received.items():
        reports[s] = payload
    state = local.state if local.state is not None else admm.State(x=jnp.zeros(links.n_grid + 1, dtype),
                                                                     u=jnp.zeros((), dtype))
    out, _, state = admm.solve_reports(links, tuple(jnp.asarray(reports[:, c]) for c in range(5)),
                                       jnp.asarray(local.price, dtype), state)
    features = np.array([np.asarray(out["p_mw"])[i], np.asarray(out["price"])[0]], dtype)
    return features, {"state": state, "p_mw": np.asarray(out["p_mw"])[:links.n_grid].tolist()}


def _nothing_send(links, i, local, dtype):
    return None


def _nothing_receive(links, i, received, local, dtype, mask=None):
    return np.zeros(0, dtype), {}


# ----------------------------------------------------------------------------- vertical

def _vertical_send(cp):
    def send(links, i, local: Local, dtype):
        """Parent agent `i`'s value for every grid agent `[n_grid]` (NaN where it is not the parent)."""
        actions = np.zeros((max(int(np.max(links.parent_agent, initial=-1)) + 1, i + 1), len(local.actions)), dtype)
        actions[i] = local.actions
        u = coupling.parent_actions(links, jnp.asarray(actions))
        learned, fixed, _ = cp.values(links, u, jnp.asarray(local.price, dtype))
        value = np.asarray(jnp.where(jnp.asarray(links.tracked), learned, fixed))
        return np.where(np.asarray(links.parent_agent) == i, value, np.nan).astype(dtype)
    return send


def _vertical_receive(cp):
    def receive(links, i, received, local: Local, dtype, mask=None):
        """Grid agent `i` observes its parent's last value (`received`: sender -> [n_grid] values)."""
        _, _, default = cp.values(links, jnp.zeros(links.n_grid, dtype), jnp.asarray(local.price, dtype))
        got = [np.asarray(v)[i] for v in received.values() if not np.isnan(np.asarray(v)[i])]
        return np.array([got[-1] if got else np.asarray(default)[i]], dtype), {}
    return receive


HORIZONTAL = {
    "p2p_trading": HostSpec("p2p_trading", 2, _p2p_send, _p2p_receive),
    "consensus": HostSpec("consensus", 1, _consensus_send, _consensus_receive),
    "admm_dispatch": HostSpec("admm_dispatch", 5, _admm_send, _admm_receive),
    "none_horizontal": HostSpec("none_horizontal", 0, _nothing_send, _nothing_receive),
}


def spec(coordinator, kind: str) -> HostSpec:
    """The per-agent execution of a coordinator's `kind` ("vertical" / "horizontal") protocol."""
    from pgjax import protocols

    cp = coordinator.vertical if kind == "vertical" else coordinator.horizontal
    proto = next(p for p in protocols.REGISTRY.values() if p.coupling is cp and p.kind == kind)
    if kind == "horizontal":
        if proto.name not in HORIZONTAL:
            raise ValueError(f"protocol '{proto.name}': no per-agent execution; these have one: {sorted(HORIZONTAL)}")
        return HORIZONTAL[proto.name]
    if cp.values is None:
        return HostSpec(proto.name, 0, _nothing_send, _nothing_receive)
    return HostSpec(proto.name, coordinator.links.n_grid, _vertical_send(cp), _vertical_receive(cp))

"""Protocols, communication channels and timing inside the environment step.

A scenario's `protocol` and `communication` blocks (see `pgjax.scenario`) become a
`Coordinator`: host-side layout built once, and pure functions the step calls.

Vertical protocol (`protocol.vertical`), between each grid agent (microgrid controller) and
its parent (system operator):
- `none`: no message; learned agents act on their devices directly (a learned system
  operator then commands every device below it).
- `setpoint`: the parent sends each child an exchange setpoint, MW imported through the
  child's point of common coupling, `lerp(action, -export_max, import_max)`.
- `price_signal`: the parent sends each child a price, `lerp(action, price_min, price_max)` $/MWh.
When the parent is learned (`hierarchy.learned: system`), the parent's action has one
column per child and the children are fixed controllers (`pgjax.dispatch.track` for
setpoints, `pgjax.dispatch.respond` for prices) acting on the last message they received.
When the children are learned, the fixed parent sends setpoint 0 (balance yourself) or the
market price, and the children observe what they receive.

Horizontal protocol (`protocol.horizontal`), among grid agents over `protocol.graph`:
- `consensus`: each agent starts from its last measured import and runs
  `protocol.iterations` rounds of averaging over the links delivered this step; it
  observes the agreed value (the mean import on a connected graph).
- `p2p_trading`: each agent bids its last measured deficit at the market price (buyers) or
  offers its surplus at the export price `(1 - sell_discount)` times it (sellers); bids are
  messages to the peers and only delivered bids take part in the double auction
  (`pgjax.protocols.p2p`). The traded energy is settled between agents at the clearing
  price; the rest of each agent's exchange is billed by the grid as usual, so a trade
  changes the energy an agent buys from (or sells to) the grid and the money it pays.
  Energy and money traded sum to zero over agents.
- `admm_dispatch`: the grid agents' first dispatchable generators are dispatched jointly by
  consensus ADMM (`pgjax.protocols.admm`, warm-started from the last step,
  `protocol.iterations` rounds): each agent reports its need (last import plus its
  generator's last output) and the generators, together with the grid as a participant
  selling at the market price (curvature `GRID_COST_A`), cover the total need at least
  cost. The dispatch replaces those generators' commitment and active-power actions (the
  agents keep their reactive power, storage and renewables); agents observe their
  dispatch and the ADMM price.

Channels (`pgjax.comms`): every message goes through a channel with the sender's delay
(`communication.msg_delay`, steps), jitter and loss probability; a receiver uses the last
message it received. Timing per learned agent: `tick_interval` / `tick_offset` (acts on
its ticks, holds its last action otherwise), `act_delay`, `obs_delay` (steps).

Observations: each grid agent has `n_features` message features (the received setpoint
over its import limit or price / 100; the consensus value over its import limit; its
traded MW over its import limit and the clearing price / 100). They are part of the world
state; in distributed mode an agent sees those of its own grid agent.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax import comms, dispatch
from pgjax.devices import pcc
from pgjax.devices import generator
from pgjax.protocols import Messages, admm, consensus, p2p

VERTICAL = ("none", "setpoint", "price_signal")
HORIZONTAL = ("none", "consensus", "p2p_trading", "admm_dispatch")
GRID_COST_A = 1.0  # $/(MW^2 h): curvature given to the grid as an ADMM participant (import at the price)
GRAPHS = ("complete", "ring", "line")
BIG_AGE = 1 << 20


@dataclasses.dataclass
class Layout:
    """Static description (host numpy) of who talks to whom."""

    vertical: str
    horizontal: str
    grid_nodes: np.ndarray  # [n_grid] tree index of each grid agent
    parent: np.ndarray  # [n_grid] tree index of the parent, -1 if none
    n_tree: int
    tracked: np.ndarray  # [n_grid] bool: fixed child of a learned parent
    parent_agent: np.ndarray  # [n_grid] learned agent sending to a tracked child, -1 otherwise
    parent_col: np.ndarray  # [n_grid] column of that agent's action
    pcc_of_grid: np.ndarray  # [n_grid] index in the pcc group, -1 if none
    scale_mw: np.ndarray  # [n_grid] import limit (or 1) normalizing MW features
    import_max_mw: np.ndarray  # [n_grid]
    export_max_mw: np.ndarray  # [n_grid]
    adjacency: np.ndarray  # [n_grid, n_grid] bool
    price_min: float
    price_max: float
    iterations: int
    mechanism: str
    v_delay: np.ndarray  # [n_tree, n_grid] int
    h_delay: np.ndarray  # [n_grid, n_grid] int
    loss_prob: float
    jitter: float
    jitter_kind: str
    timing: dict  # tick_interval, tick_offset, act_delay, obs_delay: [n_agents] int


def graph(kind: str, n: int) -> np.ndarray:
    """Boolean adjacency `[n, n]` of a complete graph, a ring or a line."""
    a = np.zeros((n, n), bool)
    if kind == "complete":
        a[:] = True
    else:
        for i in range(n - 1):
            a[i, i + 1] = a[i + 1, i] = True
        if kind == "ring" and n > 2:
            a[0, -1] = a[-1, 0] = True
    np.fill_diagonal(a, False)
    return a


def _per(spec, ids, what: str, default=0) -> np.ndarray:
    """A scalar or an `{agent_id: value}` mapping as an int array over `ids`."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(ids))
        if unknown:
            raise ValueError(f"communication.{what}: unknown agent ids {unknown}; agents are {list(ids)}")
        return np.array([int(spec.get(i, default)) for i in ids], np.int64)
    return np.full(len(ids), int(spec if spec is not None else default), np.int64)


def build_layout(c, grid_nodes, tracked, parent_agent, parent_col, agents) -> Layout:
    """The `Layout` of a compiled scenario (`pgjax.scenario.Compiled`) and the env's agent layout."""
    proto = {"vertical": c.protocol.vertical, "horizontal": c.protocol.horizontal, **c.protocol.options}
    com = vars(c.communication)
    n_grid = len(grid_nodes)
    pcc_group = next((g for g in c.groups if g.type == "pcc"), None)
    pcc_of_grid = np.full(n_grid, -1, np.int64)
    imax, emax = np.ones(n_grid), np.ones(n_grid)
    if pcc_group is not None:
        for i, k in enumerate(grid_nodes):
            hits = np.flatnonzero(pcc_group.owner == k)
            if len(hits):
                pcc_of_grid[i] = hits[0]
                imax[i] = min(float(pcc_group.params.import_max_mw[hits[0]]), 1e3)
                emax[i] = min(float(pcc_group.params.export_max_mw[hits[0]]), 1e3)
    sender_delay = _per(com.get("msg_delay", 0), c.tree_ids, "msg_delay")
    grid_delay = sender_delay[np.asarray(grid_nodes, np.int64)] if n_grid else np.zeros(0, np.int64)
    return Layout(
        vertical=proto.get("vertical", "none"), horizontal=proto.get("horizontal", "none"),
        grid_nodes=np.asarray(grid_nodes, np.int64), parent=np.asarray(c.tree_parent)[grid_nodes].astype(np.int64),
        n_tree=len(c.tree_ids), tracked=np.asarray(tracked, bool), parent_agent=parent_agent,
        parent_col=parent_col, pcc_of_grid=pcc_of_grid, scale_mw=np.maximum(imax, 1e-9),
        import_max_mw=imax, export_max_mw=emax, adjacency=graph(proto.get("graph", "complete"), n_grid),
        price_min=float(proto.get("price_min", 0.0)), price_max=float(proto.get("price_max", 200.0)),
        iterations=int(proto.get("iterations", 50 if proto.get("horizontal") == "admm_dispatch" else 10)), mechanism=proto.get("mechanism", "uniform"),
        v_delay=np.broadcast_to(sender_delay[:, None], (len(c.tree_ids), n_grid)).copy(),
        h_delay=np.broadcast_to(grid_delay[:, None], (n_grid, n_grid)).copy(),
        loss_prob=float(com.get("loss_prob", 0.0)), jitter=float(com.get("jitter", 0.0)),
        jitter_kind=com.get("jitter_kind", "uniform"),
        timing={k: _per(com.get(k, d), agents, k, d) for k, d in
                (("tick_interval", 1), ("tick_offset", 0), ("act_delay", 0), ("obs_delay", 0))})


def n_features(vertical: str, horizontal: str) -> int:
    return (vertical != "none") + {"none": 0, "consensus": 1, "p2p_trading": 2, "admm_dispatch": 2}[horizontal]


@struct.dataclass
class CoordState:
    vchan: comms.ChannelState
    hchan: comms.ChannelState
    timing: comms.TimingState | None  # None without tick intervals or delays
    admm: admm.State  # warm start of `admm_dispatch` ([n_grid + 1], the grid last)
    features: jax.Array  # [n_grid, n_features]


class Coordinator:
    """Pure per-step functions over a `Layout` (see the module docstring)."""

    def __init__(self, layout: Layout, dtype):
        self.layout, self.dtype = layout, dtype
        lay = layout
        self.n_grid = len(lay.grid_nodes)
        self.n_features = n_features(lay.vertical, lay.horizontal)
        kind = lay.jitter_kind if lay.jitter > 0 else "none"
        v_links = lay.parent[None, :] == np.arange(lay.n_tree)[:, None]  # [n_tree, n_grid]
        self.v_links = v_links & (lay.vertical != "none")
        self.h_links = lay.adjacency & (lay.horizontal != "none")
        self.vparams = comms.channel_params(lay.n_tree, self.n_grid, lay.v_delay, lay.loss_prob, lay.jitter, kind)
        self.hparams = comms.channel_params(self.n_grid, self.n_grid, lay.h_delay, lay.loss_prob, lay.jitter, kind)
        t = lay.timing
        self.tparams = comms.timing_params(len(t["tick_interval"]), t["tick_interval"], t["tick_offset"],
                                           t["act_delay"], t["obs_delay"])
        self.timed = bool(np.any(np.asarray(t["tick_interval"]) != 1) or np.any(np.asarray(t["act_delay"]))
                          or np.any(np.asarray(t["obs_delay"])))

    # ------------------------------------------------------------------ state

    def init(self, default_actions, obs0) -> CoordState:
        d = self.dtype
        return CoordState(vchan=comms.channel_init(self.vparams, 1, d), hchan=comms.channel_init(self.hparams, 2, d),
                          timing=comms.timing_init(self.tparams, jnp.asarray(default_actions, d), obs0)
                          if self.timed else None,
                          features=jnp.zeros((self.n_grid, self.n_features), d),
                          admm=admm.State(x=jnp.zeros(self.n_grid + 1, d), u=jnp.zeros((), d)))

    def act_timing(self, cs: CoordState, actions):
        """Tick hold and action delay of the learned agents' actions."""
        if not self.timed:
            return actions, cs
        eff, _, timing = comms.apply_action_timing(self.tparams, cs.timing, actions)
        return eff, cs.replace(timing=timing)

    def obs_timing(self, cs: CoordState, obs):
        if not self.timed:
            return obs, cs
        y, timing = comms.apply_obs_timing(self.tparams, cs.timing, obs)
        return y, cs.replace(timing=timing)

    # ------------------------------------------------------------------ vertical

    def vertical(self, cs: CoordState, key, actions, price):
        """Send parent messages, deliver them; `(value received per child [n_grid], n_sent, cs)`.

        Value: exchange setpoint MW or price $/MWh; before anything arrives, 0 MW or `price`.
        """
        lay, d = self.layout, self.dtype
        agent = jnp.asarray(np.maximum(lay.parent_agent, 0))
        col = jnp.asarray(np.maximum(lay.parent_col, 0))
        a = jnp.clip(actions[agent, col], -1.0, 1.0)
        u = (a + 1.0) / 2.0
        if lay.vertical == "setpoint":
            learned = -jnp.asarray(lay.export_max_mw, d) + u * jnp.asarray(lay.import_max_mw + lay.export_max_mw, d)
            fixed, default = jnp.zeros(self.n_grid, d), jnp.zeros(self.n_grid, d)
        else:
            learned = lay.price_min + u * (lay.price_max - lay.price_min)
            fixed = default = jnp.full(self.n_grid, price, d)
        value = jnp.where(jnp.asarray(lay.tracked), learned, fixed)
        msgs = Messages(jnp.where(self.v_links[..., None], value[None, :, None], 0.0), jnp.asarray(self.v_links))
        _, vchan = comms.transmit(self.vparams, cs.vchan, msgs, key)
        got = jnp.any((vchan.age < BIG_AGE) & self.v_links, axis=0)
        received = jnp.where(got, jnp.sum(jnp.where(self.v_links, vchan.last[..., 0], 0.0), axis=0), default)
        return received, msgs.count, cs.replace(vchan=vchan)

    def grid_actions(self, received, net_load_mw, types, params, states, ctx, grid_of):
        """Actions of the devices of tracked children: `{type: [n_type, act_dim]}`."""
        if self.layout.vertical == "setpoint":
            return dispatch.track(types, params, states, ctx, grid_of, net_load_mw - received, self.n_grid)
        price_of = {t: received[jnp.maximum(grid_of[t], 0)] for t in types}
        return dispatch.respond(types, params, states, ctx, price_of,
                                (self.layout.price_min, self.layout.price_max))

    # ------------------------------------------------------------------ horizontal

    def horizontal(self, cs: CoordState, key, import_mw, price, pcc_params):
        """Peer messages of this step: `(outputs dict, n_sent, cs)`.

        `import_mw [n_grid]`: each agent's last measured import. Outputs: `value [n_grid]`
        (consensus) or `p2p_mw`, `payment`, `clearing_price` (p2p trading).
        """
        lay, d = self.layout, self.dtype
        if lay.horizontal == "consensus":
            msgs = Messages.broadcast(import_mw, self.h_links)
            delivered, hchan = comms.transmit(self.hparams, cs.hchan, _pad2(msgs), key)
            prm = consensus.make_params(lay.adjacency, iterations=lay.iterations)
            out, _, _ = consensus.apply(prm, consensus.init(prm), {"value": import_mw},
                                        Messages(delivered.data[..., :1], delivered.mask))
            return {"value": out["value"]}, msgs.count, cs.replace(hchan=hchan)
        discount, scale = self._pcc_terms(pcc_params, d)
        net = -import_mw
        offer = jnp.where(net > 0, (1.0 - discount) * scale * price, scale * price)
        msgs = Messages.broadcast(jnp.stack([net, offer], axis=-1), self.h_links)
        delivered, hchan = comms.transmit(self.hparams, cs.hchan, msgs, key)
        arrived = jnp.any(delivered.mask, axis=1)  # a bid arrives at the peers together
        count = jnp.maximum(jnp.sum(delivered.mask, axis=1), 1)[:, None]
        bid = jnp.sum(jnp.where(delivered.mask[..., None], delivered.data, 0.0), axis=1) / count
        prm = p2p.make_params(self.n_grid, mechanism=lay.mechanism, participate=arrived & (lay.pcc_of_grid >= 0))
        prm = prm.replace(dt_h=jnp.asarray(1.0, d), k=jnp.asarray(0.5, d))
        out, _, _ = p2p.apply(prm, p2p.init(prm), {"net_mw": bid[:, 0], "price": bid[:, 1]}, delivered)
        return out, msgs.count, cs.replace(hchan=hchan)

    def admm_dispatch(self, cs: CoordState, import_mw, price, gen_params, gen_state, ctx, gen_of_grid):
        """Joint generator dispatch: `(p_mw [n_grid], price [], residual_mw [], n_sent, cs)`.

        `gen_of_grid [n_grid]`: index of each agent's generator (-1: none, it then only reports need).
        """
        lay, d = self.layout, self.dtype
        idx, has = jnp.asarray(np.maximum(gen_of_grid, 0)), jnp.asarray(gen_of_grid >= 0)
        lo, hi = generator.p_range(gen_params, gen_state, ctx)
        a, b, _, _ = generator.price_terms(gen_params, gen_state)
        pick = lambda x, fill: jnp.where(has, x[idx], fill)  # noqa: E731
        need = import_mw + pick(gen_state.p_mw, 0.0)
        cost_a = jnp.concatenate([pick(jnp.maximum(a, 1e-3), 1.0), jnp.full(1, GRID_COST_A, d)])
        cost_b = jnp.concatenate([pick(b, 0.0), jnp.full(1, price, d)])
        p_min = jnp.concatenate([pick(lo, 0.0), -jnp.full(1, lay.export_max_mw.sum(), d)])
        p_max = jnp.concatenate([pick(hi, 0.0), jnp.full(1, lay.import_max_mw.sum() + 1e3, d)])
        prm = admm.make_params(cost_a, cost_b, p_min, p_max, iterations=lay.iterations,
                               adjacency=graph("complete", self.n_grid + 1))
        prm = jax.tree.map(lambda x: x.astype(d) if jnp.issubdtype(x.dtype, jnp.floating) else x, prm)
        need_all = jnp.concatenate([need, jnp.zeros(1, d)])
        out, msgs, state = admm.apply(prm, cs.admm, {"demand_mw": need_all}, None)
        return (out["p_mw"][:self.n_grid], out["price"][0], out["residual"], msgs.count,
                cs.replace(admm=jax.tree.map(lambda x: x.astype(d), state)))

    def _pcc_terms(self, pcc_params, d):
        idx = jnp.asarray(np.maximum(self.layout.pcc_of_grid, 0))
        has = jnp.asarray(self.layout.pcc_of_grid >= 0)
        if pcc_params is None:
            return jnp.zeros(self.n_grid, d), jnp.ones(self.n_grid, d)
        return (jnp.where(has, pcc_params.sell_discount[idx], 0.0),
                jnp.where(has, pcc_params.price_scale[idx], 1.0))

    def settle(self, out, import_mw, price, dt_h, pcc_params):
        """Change of each grid agent's cost `[n_grid]` ($) from its p2p trades this step."""
        if self.layout.horizontal != "p2p_trading" or pcc_params is None:
            return jnp.zeros(self.n_grid, self.dtype)
        idx = jnp.asarray(np.maximum(self.layout.pcc_of_grid, 0))
        prm = jax.tree.map(lambda x: x[idx], pcc_params)
        grid_import = import_mw - out["p2p_mw"]
        return (pcc.bill(prm, price, grid_import, dt_h) - pcc.bill(prm, price, import_mw, dt_h)
                + out["payment"] * dt_h)

    def features(self, received, h_out):
        """Message features `[n_grid, n_features]` (see the module docstring)."""
        lay, d = self.layout, self.dtype
        scale = jnp.asarray(lay.scale_mw, d)
        cols = []
        if lay.vertical == "setpoint":
            cols.append(received / scale)
        elif lay.vertical == "price_signal":
            cols.append(received / 100.0)
        if lay.horizontal == "consensus":
            cols.append(h_out["value"].reshape(-1) / scale)
        elif lay.horizontal == "admm_dispatch":
            cols += [h_out["p_mw"] / scale, jnp.full(self.n_grid, h_out["price"], d) / 100]
        elif lay.horizontal == "p2p_trading":
            cols += [h_out["p2p_mw"] / scale, jnp.nan_to_num(h_out["clearing_price"]) * jnp.ones(self.n_grid, d) / 100]
        return jnp.stack(cols, axis=-1).astype(d) if cols else jnp.zeros((self.n_grid, 0), d)


def _pad2(msgs: Messages) -> Messages:
    """One-value messages padded to the channel's two values."""
    return Messages(jnp.concatenate([msgs.data, jnp.zeros_like(msgs.data)], axis=-1), msgs.mask)

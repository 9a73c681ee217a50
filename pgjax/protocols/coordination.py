"""Protocols, communication channels and timing inside the environment step.

A scenario's `protocol` and `communication` sections become a `Coordinator`: the host-side
`Links` among grid agents (microgrid controllers), built once, and pure functions the step
calls. The protocols themselves are looked up in the registry (`pgjax.protocols.find`) by
the names the scenario gives; what each one sends, how its receivers act and what agents
observe is its `Coupling` (`pgjax.protocols.coupling`), documented in its module:

- vertical (`protocol.vertical`), parent -> child grid agent: `none`, `setpoint` (exchange
  setpoints; tracked children dispatch their devices to meet them), `price_signal` (prices;
  tracked children's devices respond to them). When the parent is learned, its action has
  one column per tracked child; when the children are learned, the fixed parent sends what
  the protocol's fixed value is (setpoint 0, the market price) and the children observe it.
- horizontal (`protocol.horizontal`), among grid agents over `protocol.graph`: `none`,
  `consensus`, `p2p_trading` (settled after the power flow), `admm_dispatch`.
A protocol registered from a user's own module with a coupling is named the same way.

Channels (`pgjax.protocols.channels`): every message goes through a channel with the sender's delay
(`communication.msg_delay`, steps), jitter and loss probability; a receiver uses the last
message it received. Timing per learned agent: `tick_interval` / `tick_offset` (acts on
its ticks, holds its last action otherwise), `act_delay`, `obs_delay` (steps).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.protocols import channels, dispatch
from pgjax import devices as dev
from pgjax import protocols
from pgjax.protocols.coupling import Inputs, Links, Outputs, graph


def _per(spec, ids, what: str, default=0) -> np.ndarray:
    """A scalar or an `{agent_id: value}` mapping as an int array over `ids`."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(ids))
        if unknown:
            raise ValueError(f"communication.{what}: unknown agent ids {unknown}; agents are {list(ids)}")
        return np.array([int(spec.get(i, default)) for i in ids], np.int64)
    return np.full(len(ids), int(spec if spec is not None else default), np.int64)


def _first_of_type(groups, owners_of_grid: np.ndarray, pick) -> tuple[str | None, np.ndarray]:
    """The first group type for which `pick(DeviceType)` holds, and its first device per grid agent."""
    for g in groups:
        if pick(dev.get(g.type)):
            first = np.array([np.flatnonzero(g.owner == k)[0] if (g.owner == k).any() else -1 for k in owners_of_grid],
                             np.int64)
            return g.type, first
    return None, np.full(len(owners_of_grid), -1, np.int64)


def build_links(c, layout, vertical, horizontal) -> Links:
    """The `Links` of a compiled scenario (`pgjax.scenario.Compiled`) and its env `Layout`."""
    com = c.communication
    grid_nodes = layout.grid_nodes
    n_grid = len(grid_nodes)
    conn_type, conn_of_grid = _first_of_type(c.groups, grid_nodes, lambda t: t.grid_connection is not None)
    grid_index = {int(k): i for i, k in enumerate(grid_nodes)}
    imax, emax = np.ones(n_grid), np.ones(n_grid)
    grid_of_conn = np.zeros(0, np.int64)
    if conn_type is not None:
        cg = next(g for g in c.groups if g.type == conn_type)
        grid_of_conn = np.array([grid_index.get(int(o), -1) for o in cg.owner], np.int64)
        lim_i, lim_e = (np.asarray(x) for x in dev.get(conn_type).grid_connection.limits(cg.params))
        has = conn_of_grid >= 0
        imax[has], emax[has] = lim_i[conn_of_grid[has]], lim_e[conn_of_grid[has]]
    unit_type, unit_of_grid = _first_of_type(c.groups, grid_nodes,
                                             lambda t: t.dispatch is not None and t.dispatch.merit == dispatch.FUEL)
    options = {**vertical.coupling.defaults, **horizontal.coupling.defaults, **c.protocol.options}
    sender_delay = _per(com.msg_delay, c.tree_ids, "msg_delay")
    grid_delay = sender_delay[grid_nodes] if n_grid else np.zeros(0, np.int64)
    rnd = com.randomize
    jitter_hi = max(float(com.jitter), float(rnd.get("jitter", (0, 0))[1]))
    kind = com.jitter_kind if jitter_hi > 0 else "none"
    max_delay = None  # what the fixed delays and jitter need, unless episodes draw larger ones
    if rnd:
        extra = 0 if kind == "none" else int(np.ceil(jitter_hi * (4 if kind == "gaussian" else 1)))
        max_delay = max(int(sender_delay.max(initial=0)), int(rnd.get("msg_delay", (0, 0))[1])) + extra
    n_tree = len(c.tree_ids)
    vparams = channels.channel_params(n_tree, n_grid, np.broadcast_to(sender_delay[:, None], (n_tree, n_grid)).copy(),
                                   float(com.loss_prob), float(com.jitter), kind, max_delay)
    hparams = channels.channel_params(n_grid, n_grid, np.broadcast_to(grid_delay[:, None], (n_grid, n_grid)).copy(),
                                   float(com.loss_prob), float(com.jitter), kind, max_delay)
    parent = np.asarray(c.tree_parent)[grid_nodes].astype(np.int64)
    tracked_of = {g.type: np.array([grid_index[int(o)] if int(o) in grid_index and layout.tracked[grid_index[int(o)]]
                                    else -1 for o in g.owner], np.int64) for g in layout.groups}
    types = [g.type for g in layout.groups]
    dispatch_types = tuple(types[i] for i in dispatch.dispatchable(types) if (tracked_of[types[i]] >= 0).any())
    return Links(
        grid_nodes=grid_nodes, parent=parent, n_tree=n_tree, tracked=layout.tracked,
        parent_agent=layout.parent_agent, parent_col=layout.parent_col, connection_of_grid=conn_of_grid,
        connection_type=conn_type, grid_of_connection=grid_of_conn, scale_mw=np.maximum(imax, 1e-9), import_max_mw=imax, export_max_mw=emax,
        adjacency=graph(options.get("graph", "complete"), n_grid) & horizontal.coupling.sends,
        options=options, vparams=vparams, hparams=hparams,
        v_links=(parent[None, :] == np.arange(n_tree)[:, None]) & vertical.coupling.sends,
        unit_of_grid=unit_of_grid, unit_type=unit_type, tracked_of=tracked_of, dispatch_types=dispatch_types)


@struct.dataclass
class CoordState:
    vertical: Any  # the vertical coupling's state (its channel)
    horizontal: Any  # the horizontal coupling's state
    timing: channels.TimingState | None  # None without tick intervals or delays
    features: jax.Array  # [n_grid, n_features] message features observed


class Coordinator:
    """Pure per-step functions over a scenario's protocols and `Links` (see the module docstring)."""

    def __init__(self, c, layout, dtype):
        vertical = protocols.find("vertical", c.protocol.vertical)
        horizontal = protocols.find("horizontal", c.protocol.horizontal)
        self.vertical, self.horizontal = vertical.coupling, horizontal.coupling
        self.links = links = build_links(c, layout, vertical, horizontal)
        self.dtype = dtype
        self.scales = [np.asarray(cp.scale(links), float) for cp in (self.vertical, self.horizontal)]
        self.n_features = sum(s.shape[1] for s in self.scales)
        com = c.communication
        t = {k: _per(getattr(com, k), layout.agents, k, d) for k, d in
             (("tick_interval", 1), ("tick_offset", 0), ("act_delay", 0), ("obs_delay", 0))}
        self.tparams = channels.timing_params(len(layout.agents), t["tick_interval"], t["tick_offset"], t["act_delay"],
                                           t["obs_delay"])
        self.timed = bool(np.any(t["tick_interval"] != 1) or np.any(t["act_delay"]) or np.any(t["obs_delay"]))
        self.randomize = dict(com.randomize)  # communication.randomize: ranges drawn per episode
        self.info_keys = {k: kind for p in protocols.REGISTRY.values() if p.coupling is not None
                          for k, kind in p.coupling.info.items()}

    def scale_of(self, coupling) -> np.ndarray:
        """`[n_grid, n_features]` observation scales of one of this scenario's couplings."""
        return self.scales[0] if coupling is self.vertical else self.scales[1]

    def init(self, default_actions, obs0, key=None) -> CoordState:
        """A new episode's coordination state; with `key`, its link conditions drawn from the
        scenario's `communication.randomize` ranges (`randomize_links`)."""
        d = self.dtype
        cs = CoordState(vertical=self.vertical.init(self.links, d), horizontal=self.horizontal.init(self.links, d),
                        timing=channels.timing_init(self.tparams, jnp.asarray(default_actions, d), obs0)
                        if self.timed else None,
                        features=jnp.zeros((self.links.n_grid, self.n_features), d))
        return cs if key is None or not self.randomize else self.randomize_links(cs, key)

    def randomize_links(self, cs: CoordState, key) -> CoordState:
        """Every message channel of `cs` with one draw of the `communication.randomize` ranges
        (uniform: an integer `msg_delay` in [low, high], `loss_prob` and `jitter` in [low, high))
        for all its links; the fixed values stay for what is not randomized."""
        k_delay, k_loss, k_jitter = jax.random.split(key, 3)
        rnd = self.randomize
        draw = {
            "delay": jax.random.randint(k_delay, (), rnd["msg_delay"][0], rnd["msg_delay"][1] + 1)
            if "msg_delay" in rnd else None,
            "loss_prob": jax.random.uniform(k_loss, (), minval=rnd["loss_prob"][0], maxval=rnd["loss_prob"][1])
            if "loss_prob" in rnd else None,
            "jitter": jax.random.uniform(k_jitter, (), minval=rnd["jitter"][0], maxval=rnd["jitter"][1])
            if "jitter" in rnd else None,
        }
        is_channel = lambda x: isinstance(x, channels.ChannelState)  # noqa: E731
        return jax.tree.map(lambda x: channels.with_conditions(x, **draw) if is_channel(x) else x, cs, is_leaf=is_channel)

    def act_timing(self, cs: CoordState, actions):
        """Tick hold and action delay of the learned agents' actions."""
        if not self.timed:
            return actions, cs
        eff, _, timing = channels.apply_action_timing(self.tparams, cs.timing, actions)
        return eff, cs.replace(timing=timing)

    def obs_timing(self, cs: CoordState, obs):
        if not self.timed:
            return obs, cs
        y, timing = channels.apply_obs_timing(self.tparams, cs.timing, obs)
        return y, cs.replace(timing=timing)

    def exchange(self, cs: CoordState, key, inputs: Inputs) -> tuple[Outputs, Outputs, CoordState]:
        """This step's messages: `(vertical outputs, horizontal outputs, cs)`."""
        k_vertical, k_horizontal = jax.random.split(key)
        v_out, v_state = self.vertical.step(self.links, cs.vertical, inputs, k_vertical)
        h_out, h_state = self.horizontal.step(self.links, cs.horizontal, inputs, k_horizontal)
        return v_out, h_out, cs.replace(vertical=v_state, horizontal=h_state)

    def settle(self, h_out: Outputs, import_mw, price, dt_h, device_params):
        """Change of each grid agent's cost `[n_grid]` ($) after the power flow (e.g. p2p trades)."""
        if self.horizontal.settle is None:
            return None
        return self.horizontal.settle(self.links, h_out, import_mw, price, dt_h, device_params)

    def features(self, v_out: Outputs, h_out: Outputs):
        """Message features `[n_grid, n_features]`: each coupling's messages over its scales."""
        d = self.dtype
        cols = [out.messages / jnp.asarray(s, d) for out, s in zip((v_out, h_out), self.scales) if s.shape[1]]
        return jnp.concatenate(cols, axis=-1).astype(d) if cols else jnp.zeros((self.links.n_grid, 0), d)

    def info(self, v_out: Outputs, h_out: Outputs) -> dict:
        """Protocol values for `info`: every registered coupling's keys (zeros where this one has none)."""
        d, n = self.dtype, self.links.n_grid
        out = {k: jnp.zeros(n if kind == "grid" else (), d) for k, kind in self.info_keys.items()}
        out.update({k: v.astype(d) for k, v in {**v_out.info, **h_out.info}.items()})
        out["messages_sent"] = v_out.n_sent + h_out.n_sent
        out["message_received"] = v_out.received
        return out

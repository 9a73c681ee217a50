"""The environment's layout: agents, action columns, cost accounts and observation features.

`build_layout(compiled)` turns a compiled scenario into one frozen, host-side `Layout`, the
object that the step, the baselines, the wrappers, the scripts and the exporter read:

- agents: the learned level's tree agents (`hierarchy.learned: system | grid`), or one
  agent per controllable device (`learned: device`);
- action columns (`Layout.action`, an `ActionSchema`): each learned agent controls its own
  devices and those of fixed agents below it, except the devices of *tracked* grid agents
  (fixed children of a learned parent under a vertical protocol that sends messages): for
  each of those the parent has one column, the message it sends;
- accounts: how each device's, bus's and branch's cost and safety is attributed to the
  learned agents (a learned agent's own items to itself, items of a fixed agent split
  equally among the learned agents below it, else its nearest learned ancestor, else all);
- observation features (`Layout.observation`, an `ObservationSchema`), global order
  `[device features | bus voltages | time | profiles | message features per grid agent]`;
  an agent sees all of them (`observation.centralized`) or its own devices, buses and
  messages plus the time and profile features.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pgjax import devices as dev
from pgjax import protocols
from pgjax.env.types import ActionColumn, ActionSchema, ObservationSchema, ObservedFeature

TIME_FEATURES = (  # name, unit, scale
    ("price", "$/MWh", 100.0), ("sin_hour", "", 1.0), ("cos_hour", "", 1.0), ("progress", "", 1.0))
VM_OFFSET_PU, VM_SCALE_PU = 1.0, 0.05  # observed voltage: (vm - 1) / 0.05


@dataclasses.dataclass(frozen=True, eq=False)
class GroupLayout:
    """All devices of one type (host numpy, `[n]` arrays)."""

    type: str
    names: tuple
    owner: np.ndarray  # [n] tree index of the agent owning each device
    bus: np.ndarray  # [n]
    controller: np.ndarray  # [n] learned agent acting on the device, -1: fixed policy
    offset: np.ndarray  # [n] first action column in the controller's action vector
    account: np.ndarray  # [n, n_agents] share of the device's cost / safety per agent
    obs_start: int  # first index of this group's features in the global feature vector

    @property
    def n(self) -> int:
        return len(self.names)


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """A scenario's agents, actions, accounts and observations (see the module docstring)."""

    agents: tuple
    agent_nodes: tuple  # tree index each agent stands for (device agents: their device's owner)
    learned_level: str  # "system" | "grid" | "device"
    tree_ids: tuple
    tree_parent: np.ndarray  # [n_tree]
    groups: tuple  # GroupLayout per device type, scenario order
    grid_nodes: np.ndarray  # [n_grid] tree index of each grid agent
    tracked: np.ndarray  # [n_grid] bool: fixed child following its learned parent's messages
    parent_agent: np.ndarray  # [n_grid] learned agent sending to a tracked child, -1 otherwise
    parent_col: np.ndarray  # [n_grid] that agent's action column
    action_mask: np.ndarray  # [n_agents, act_dim] bool, real (not padded) columns
    default_actions: np.ndarray  # [n_agents, act_dim] the devices' safe default actions
    bus_account: np.ndarray  # [n_bus, n_agents]
    branch_account: np.ndarray  # [n_branch, n_agents] (by the branch's to bus)
    grid_account: np.ndarray  # [n_grid, n_agents]
    bus_grid: np.ndarray  # [n_bus, n_grid] one-hot: grid agent owning each bus
    observation: ObservationSchema
    action: ActionSchema

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def act_sizes(self) -> tuple:
        return tuple(int(n) for n in self.action_mask.sum(axis=1))

    @property
    def act_dim(self) -> int:
        return self.action_mask.shape[1]

    def group(self, type_name: str) -> GroupLayout | None:
        return next((g for g in self.groups if g.type == type_name), None)


def accounts(tree_parent, learned_nodes: list, device_agent_nodes: list) -> np.ndarray:
    """`[n_tree, n_agents]`: how each tree agent's cost and safety is split among learned agents."""
    n_tree, n_agents = len(tree_parent), len(learned_nodes)
    children = {i: [j for j in range(n_tree) if tree_parent[j] == i] for i in range(n_tree)}

    def subtree(i):
        out = [i]
        for j in children[i]:
            out += subtree(j)
        return out

    w = np.zeros((n_tree, n_agents))
    for i in range(n_tree):
        mine = [a for a, node in enumerate(learned_nodes) if node == i]
        below = [a for a, node in enumerate(device_agent_nodes) if node in subtree(i)]
        if not mine and not below:
            k = tree_parent[i]
            while k >= 0 and not [a for a, node in enumerate(learned_nodes) if node == k]:
                k = tree_parent[k]
            below = [a for a, node in enumerate(learned_nodes) if node == k] if k >= 0 else list(range(n_agents))
        for a in mine or below:
            w[i, a] = 1.0 / len(mine or below)
    return w


def _agents(c) -> tuple[list, list, list]:
    """`(agent names, learned tree node per agent or None, tree node each agent stands for)`."""
    if c.learned == "device":
        names, nodes = [], []
        for g in c.groups:
            if dev.get(g.type).act_dim:
                names += list(g.names)
                nodes += [int(o) for o in g.owner]
        learned = [None] * len(names)
    else:
        idx = [i for i, lv in enumerate(c.tree_level) if lv == c.learned]
        names, learned, nodes = [c.tree_ids[i] for i in idx], list(idx), list(idx)
    if not names:
        raise ValueError(f"scenario '{c.name}': no agent at the learned level '{c.learned}'")
    return names, learned, nodes


def _controllers(c, agents, learned, tracked_nodes):
    """Per group: `(controller [n], offset [n])`, and the columns used per agent so far."""
    used = np.zeros(len(agents), np.int64)

    def controller_of(node):
        k = node
        while k >= 0 and k not in tracked_nodes:
            if k in learned:
                return learned.index(k)
            k = c.tree_parent[k]
        return -1

    out = []
    for g in c.groups:
        t = dev.get(g.type)
        ctrl, off = np.full(len(g.names), -1, np.int64), np.zeros(len(g.names), np.int64)
        for k, (name, owner) in enumerate(zip(g.names, g.owner)):
            a = agents.index(name) if (c.learned == "device" and t.act_dim) else controller_of(int(owner))
            if a >= 0 and t.act_dim:
                ctrl[k], off[k] = a, used[a]
                used[a] += t.act_dim
        out.append((ctrl, off))
    return out, used


def bus_names(c) -> list[str]:
    """Owner names of the bus features `[n_bus]`: the pandapower bus index of each grid bus (the
    OpenDSS node name, `bus.phase`, on a three-phase feeder)."""
    return c.network.bus_labels()


def _device_features(c) -> tuple[list, list]:
    """Global device features and each group's first position."""
    feats, starts = [], []
    for g in c.groups:
        t = dev.get(g.type)
        starts.append(len(feats))
        scale, offset = t.observation_scale(g.params, len(g.names))
        for k, name in enumerate(g.names):
            for j, f in enumerate(t.observation_features()):
                feats.append(ObservedFeature(g.type, str(name), f.name, f.unit, float(scale[k, j]),
                                             float(offset[k, j]), f.doc))
    return feats, starts


def _global_features(c, device_feats, grid_ids, couplings) -> list:
    """`[device features | vm per bus | time | profiles | messages per grid agent]`."""
    feats = list(device_feats)
    feats += [ObservedFeature("bus", b, "vm_pu", "pu", VM_SCALE_PU, VM_OFFSET_PU) for b in bus_names(c)]
    feats += [ObservedFeature("time", "", name, unit, scale) for name, unit, scale in TIME_FEATURES]
    feats += [ObservedFeature("profile", "", str(s)) for s in c.series_names]
    for gid in grid_ids:
        for cp in couplings:
            feats += [ObservedFeature("message", gid, f.name, f.unit, doc=f.doc) for f in cp.features]
    return feats


def _local_indices(c, agents, learned_level, groups, feats, agent_nodes, tracked_nodes, grid_ids):
    """Global feature positions each agent observes in distributed mode."""
    pos = {f.key: i for i, f in enumerate(feats)}
    global_idx = [i for i, f in enumerate(feats) if f.kind in ("time", "profile")]
    bus_pos = [pos[f"bus/{b}/vm_pu"] for b in bus_names(c)]
    messages = {gid: [] for gid in grid_ids}
    for j, f in enumerate(feats):
        if f.kind == "message":
            messages[f.owner].append(j)
    local = []
    for a, node in enumerate(agent_nodes):
        idx = []
        for g, cg in zip(groups, c.groups):
            n_obs = dev.get(g.type).obs_dim
            for k in range(g.n):
                owner = int(cg.owner[k])
                mine = g.controller[k] == a or (learned_level != "device" and (
                    owner == node or (owner in tracked_nodes and c.tree_parent[owner] == node)))
                if mine:
                    idx += list(range(g.obs_start + k * n_obs, g.obs_start + (k + 1) * n_obs))
        if learned_level == "device":
            g, k = next((g, list(g.names).index(agents[a])) for g in groups if agents[a] in g.names)
            buses = [int(g.bus[k])]
        else:
            buses = list(np.flatnonzero(c.bus_owner == node))
        idx += [bus_pos[b] for b in buses] + global_idx
        for gid in grid_ids:
            k = c.tree_ids.index(gid)
            if k == node or (k in tracked_nodes and c.tree_parent[k] == node):
                idx += messages[gid]
        local.append(idx)
    return local


def _action_schema(agents, groups, grid_ids, tracked, parent_agent, parent_col, vertical, n_cols):
    columns = [[None] * int(n) for n in n_cols]
    for g in groups:
        t = dev.get(g.type)
        for k in range(g.n):
            a = int(g.controller[k])
            for j, f in enumerate(t.action_features() if a >= 0 else ()):
                columns[a][int(g.offset[k]) + j] = ActionColumn(agents[a], int(g.offset[k]) + j, str(g.names[k]),
                                                                g.type, f.name, f.unit, f.doc)
    for i, gid in enumerate(grid_ids):
        if tracked[i]:
            a, col = int(parent_agent[i]), int(parent_col[i])
            f = vertical.coupling.features[0]
            columns[a][col] = ActionColumn(agents[a], col, gid, "message", f.name, f.unit, f.doc)
    return ActionSchema(tuple(agents), tuple(tuple(cols) for cols in columns))


def with_message_scales(layout: Layout, scales: list) -> Layout:
    """`layout` with its message features' scales `[n_grid, n_features]` per coupling (vertical, horizontal)."""
    per_grid = np.concatenate([np.asarray(s, float) for s in scales], axis=-1)
    feats, row = list(layout.observation.features), {}
    grid_ids = [layout.tree_ids[k] for k in layout.grid_nodes]
    for j, f in enumerate(feats):
        if f.kind == "message":
            i = grid_ids.index(f.owner)
            col = row[i] = row.get(i, -1) + 1
            feats[j] = dataclasses.replace(f, scale=float(per_grid[i, col]))
    obs = dataclasses.replace(layout.observation, features=tuple(feats))
    return dataclasses.replace(layout, observation=obs)


def build_layout(c) -> Layout:
    """The `Layout` of a compiled scenario (`pgjax.scenario.Compiled`); message scales 1 (`with_message_scales`)."""
    vertical = protocols.find("vertical", c.protocol.vertical)
    horizontal = protocols.find("horizontal", c.protocol.horizontal)
    agents, learned, agent_nodes = _agents(c)
    n_agents = len(agents)
    w_tree = accounts(c.tree_parent, learned, agent_nodes)
    grid_nodes = [i for i, lv in enumerate(c.tree_level) if lv == "grid"]
    grid_ids = [c.tree_ids[k] for k in grid_nodes]
    tracked = np.array([vertical.coupling.sends and c.tree_parent[k] >= 0 and c.tree_parent[k] in learned
                        and k not in learned for k in grid_nodes], bool)
    tracked_nodes = {k for k, tr in zip(grid_nodes, tracked) if tr}

    per_group, used = _controllers(c, agents, learned, tracked_nodes)
    parent_agent = np.full(len(grid_nodes), -1, np.int64)
    parent_col = np.zeros(len(grid_nodes), np.int64)
    for i, k in enumerate(grid_nodes):
        if tracked[i]:
            parent_agent[i] = learned.index(int(c.tree_parent[k]))
            parent_col[i] = used[parent_agent[i]]
            used[parent_agent[i]] += 1

    device_feats, starts = _device_features(c)
    groups = []
    for g, (ctrl, off), start in zip(c.groups, per_group, starts):
        account = w_tree[g.owner].copy()
        if c.learned == "device" and dev.get(g.type).act_dim:
            account[:] = np.eye(n_agents)[ctrl]
        groups.append(GroupLayout(g.type, tuple(g.names), np.asarray(g.owner, np.int64),
                                  np.asarray(g.params.bus, np.int64), ctrl, off, account, start))

    act_dim = max(1, int(used.max()))
    action_mask = np.arange(act_dim)[None, :] < used[:, None]
    default = np.zeros((n_agents, act_dim))
    for g in groups:
        t = dev.get(g.type)
        for k in np.flatnonzero(g.controller >= 0):
            default[g.controller[k], g.offset[k]:g.offset[k] + t.act_dim] = t.default_action

    couplings = [p.coupling for p in (vertical, horizontal)]
    feats = _global_features(c, device_feats, grid_ids, couplings)
    if c.centralized:
        local = [list(range(len(feats)))] * n_agents
    else:
        local = _local_indices(c, agents, c.learned, groups, feats, agent_nodes, tracked_nodes, grid_ids)
    sizes = tuple(len(ix) for ix in local)
    index = np.full((n_agents, max(sizes)), -1, np.int64)
    for a, ix in enumerate(local):
        index[a, :len(ix)] = ix

    bus_account = w_tree[c.bus_owner]
    return Layout(
        agents=tuple(agents), agent_nodes=tuple(agent_nodes), learned_level=c.learned, tree_ids=tuple(c.tree_ids),
        tree_parent=np.asarray(c.tree_parent), groups=tuple(groups), grid_nodes=np.asarray(grid_nodes, np.int64),
        tracked=tracked, parent_agent=parent_agent, parent_col=parent_col, action_mask=action_mask,
        default_actions=default, bus_account=bus_account,
        branch_account=bus_account[c.network.branch_to_bus()],
        grid_account=w_tree[grid_nodes].reshape(len(grid_nodes), n_agents),
        bus_grid=(c.bus_owner[:, None] == np.asarray(grid_nodes)[None, :]).astype(float),
        observation=ObservationSchema(tuple(agents), tuple(feats), index, sizes),
        action=_action_schema(agents, groups, grid_ids, tracked, parent_agent, parent_col, vertical, used))


def policy_differences(trained: Layout, other: Layout, limit: int = 6) -> list[str]:
    """Why a policy trained on `trained` cannot act in `other`: different agents, or an agent
    observing other features (kind/owner/name, order or scale) or controlling other action
    columns. Empty when each agent's observation and action vectors mean the same in both."""
    if trained.agents != other.agents:
        return [f"agents {list(other.agents)} instead of the trained {list(trained.agents)}"]
    out = []
    for agent in trained.agents:
        was = [(f.key, f.scale, f.offset) for f in trained.observation.agent_features(agent)]
        now = [(f.key, f.scale, f.offset) for f in other.observation.agent_features(agent)]
        if was != now:
            gone = [k for k, *_ in was if k not in {n[0] for n in now}]
            new = [k for k, *_ in now if k not in {w[0] for w in was}]
            what = (f"{len(now)} observed features instead of {len(was)}" if len(now) != len(was)
                    else "observed features in another order or scale")
            out.append(f"agent {agent}: {what}" + (f"; no longer observed: {gone[:limit]}" if gone else "")
                       + (f"; newly observed: {new[:limit]}" if new else ""))
        a = trained.agents.index(agent)
        cols_was = [c.key for c in trained.action.columns[a]]
        cols_now = [c.key for c in other.action.columns[a]]
        if cols_was != cols_now:
            out.append(f"agent {agent}: action columns {cols_now[:limit]} instead of the trained {cols_was[:limit]}")
    return out

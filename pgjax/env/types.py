"""The environment's data types: parameters, state, spaces and the observation / action schema.

`EnvParams` and `EnvState` are the pytrees a step reads and writes. `ObservationSchema` and
`ActionSchema` are the public, named description of what an agent observes and controls:
baselines, wrappers, exporters and scripts find a feature or an action column by its key,
never by an offset computed outside the schema.

Feature keys are `"<kind>/<owner>/<name>"`:
- `<device type>/<device name>/<feature>`, e.g. `storage/mg1_ess/e_mwh` (the device type's
  `obs_features`);
- `bus/<bus index>/vm_pu` (pandapower bus index);
- `time//price`, `time//sin_hour`, `time//cos_hour`, `time//progress`;
- `profile//<series name>`;
- `message/<grid agent id>/<feature>` (the protocols' `Coupling.features`).
An observed value is `(physical - offset) / scale` (`ObservedFeature.decode` inverts it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import struct

from pgjax.grid import Grid
from pgjax.powerflow.tree import FeederTree


@struct.dataclass
class EnvParams:
    """Everything numeric a step reads; replace fields to vary scenarios without retracing."""

    grid: Grid  # or a pgjax.grid3ph.Grid3ph (three-phase scenarios: the bus axis is its nodes)
    devices: dict  # type name -> that type's Params, arrays [n_type]
    profiles: jax.Array  # [n_steps, n_series]
    load_series: jax.Array  # [n_load] int, -1: constant
    sgen_series: jax.Array  # [n_sgen] int
    starts: jax.Array  # [n_starts] int, allowed episode starts
    hour0: jax.Array  # [] hour of day of profile step 0
    flat_price: jax.Array  # [] $/MWh when the scenario has no price series
    dt_h: jax.Array
    load_scale: jax.Array
    vm_min_pu: jax.Array
    vm_max_pu: jax.Array
    loading_max_percent: jax.Array
    penalty: jax.Array
    reward_scale: jax.Array
    tree: FeederTree | None = None  # the grid's feeder tree (`distflow`), from its topology
    network_aux: Any = None  # what the grid model precomputes (three-phase: `grid_model.Aux3ph`)


@struct.dataclass
class EnvState:
    t: jax.Array  # [] int, steps taken in this episode
    start: jax.Array  # [] int, profile step of the episode's first step
    devices: dict  # type name -> that type's State
    vm_pu: jax.Array  # [n_bus] voltage magnitudes of the last power flow
    va_deg: jax.Array  # [n_bus] voltage angles of the last power flow (the next one's warm start)
    coord: Any  # pgjax.protocols.coordination.CoordState: channels, timing and message features


@dataclasses.dataclass(frozen=True)
class CostSignal:
    """A safety signal an env reports every step in `info[info_key]` (a scalar, or one value per
    agent, summed), usable as a constraint: an episode's cost is the sum of its steps' values
    (`algorithm: mappo_lagrangian`, `cost_budgets`)."""

    info_key: str
    unit: str  # of one step's value


@dataclasses.dataclass(frozen=True)
class Box:
    """A continuous space: `shape`, bounds and dtype (gymnax-style)."""

    low: float
    high: float
    shape: tuple
    dtype: Any


@dataclasses.dataclass(frozen=True)
class ObservedFeature:
    """One entry of the global feature vector (the world state)."""

    kind: str  # device type, "bus", "time", "profile" or "message"
    owner: str  # device name, bus index, grid agent id, or "" (global)
    name: str
    unit: str = ""
    scale: float = 1.0  # observed = (physical - offset) / scale
    offset: float = 0.0
    doc: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.owner}/{self.name}"

    def decode(self, observed):
        """The physical value of an observed one (array or scalar)."""
        return observed * self.scale + self.offset

    def encode(self, physical):
        return (physical - self.offset) / self.scale


@dataclasses.dataclass(frozen=True, eq=False)
class ObservationSchema:
    """What each agent observes: named global features and each agent's selection of them.

    `features [n_features]`; `index [n_agents, obs_dim]`: the global feature at each local
    position (-1: padding, observed as 0); `sizes [n_agents]`: each agent's real length.
    """

    agents: tuple
    features: tuple
    index: np.ndarray
    sizes: tuple

    def __post_init__(self):
        object.__setattr__(self, "_by_key", {f.key: i for i, f in enumerate(self.features)})

    @property
    def n_features(self) -> int:
        return len(self.features)

    def position(self, key: str) -> int:
        """Global position of a feature key (KeyError naming close keys if unknown)."""
        pos = self._by_key.get(key)
        if pos is None:
            kind = key.split("/", 1)[0]
            near = [k for k in self._by_key if k.startswith(kind + "/")][:8]
            raise KeyError(f"observation schema: no feature {key!r}; features of kind {kind!r}: {near}")
        return pos

    def local(self, agent: int | str, key: str) -> int:
        """Position of feature `key` in `agent`'s observation, -1 if the agent does not observe it."""
        a = self.agents.index(agent) if isinstance(agent, str) else agent
        hits = np.flatnonzero(self.index[a] == self.position(key))
        return int(hits[0]) if len(hits) else -1

    def feature(self, key: str) -> ObservedFeature:
        return self.features[self.position(key)]

    def find(self, kind: str | None = None, owner: str | None = None, name: str | None = None) -> list[str]:
        """Keys of the features matching every given field."""
        return [f.key for f in self.features if (kind is None or f.kind == kind)
                and (owner is None or f.owner == owner) and (name is None or f.name == name)]

    def agent_features(self, agent: int | str) -> list[ObservedFeature]:
        """`agent`'s observation, position by position (without padding)."""
        a = self.agents.index(agent) if isinstance(agent, str) else agent
        return [self.features[i] for i in self.index[a, :self.sizes[a]]]

    def decode(self, obs, agent: int | str, key: str):
        """The physical value of feature `key` in `agent`'s observation row(s) `obs [..., obs_dim]`."""
        pos = self.local(agent, key)
        if pos < 0:
            raise KeyError(f"observation schema: agent {agent!r} does not observe {key!r}")
        return self.feature(key).decode(obs[..., pos])


@dataclasses.dataclass(frozen=True)
class ActionColumn:
    """One column of an agent's action vector, in [-1, 1]."""

    agent: str
    column: int
    target: str  # device name, or the grid agent a message goes to
    kind: str  # device type, or "message"
    name: str
    unit: str = ""
    doc: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.target}/{self.name}"


@dataclasses.dataclass(frozen=True, eq=False)
class ActionSchema:
    """What each agent controls: `columns[a]` lists agent `a`'s action columns in order."""

    agents: tuple
    columns: tuple  # [n_agents] tuples of ActionColumn

    def column(self, agent: int | str, key: str) -> int:
        a = self.agents.index(agent) if isinstance(agent, str) else agent
        for col in self.columns[a]:
            if col.key == key:
                return col.column
        raise KeyError(f"action schema: agent {self.agents[a]!r} has no action {key!r}; "
                       f"it has {[c.key for c in self.columns[a]][:8]}")

    def find(self, kind: str | None = None, target: str | None = None, name: str | None = None) -> list[ActionColumn]:
        return [c for cols in self.columns for c in cols if (kind is None or c.kind == kind)
                and (target is None or c.target == target) and (name is None or c.name == name)]

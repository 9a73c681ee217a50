"""A three-phase OpenDSS feeder as the network a scenario compiles against.

A scenario names it as `network: {opendss: <master .dss>, commands: [<OpenDSS command>, ...]}`:
the path relative to the scenario file's folder, else to the shipped feeders
(`pgjax/data/opendss`). The file is compiled by OpenDSS, `commands` run (e.g. `disable
transformer.xfm1`), the regulator taps solved and pinned (`pgjax.converters.opendss.pin_taps`:
taps where OpenDSS's controls leave them at the published loads, loads held at their model),
and the circuit converted (`from_engine`, float64).

The env's bus axis is the feeder's *node* axis (OpenDSS `bus.phase`, lower case, e.g.
`"48.2"`): YAML bus references and agent bus patterns match node names (`"48.*"` is bus 48's
phases), devices sit on one phase (node) each, observed voltages are per node
(`bus/48.2/vm_pu`), load profiles match load element names (`"load.s48"`). The converter reads
no line ampacities, so there are no branch-loading limits (`branch_to_bus` is empty), and no
branch or external-grid references beyond the one source (`ext_grid: 0`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "opendss"


@dataclasses.dataclass(frozen=True, eq=False)
class Network3ph:
    """A converted three-phase feeder with `pgjax.scenario.compile.Network`'s reading methods."""

    grid: Any  # pgjax.grid3ph.Grid3ph, numpy float64 leaves
    netmap: Any  # pgjax.converters.opendss.NetMap3ph
    net: Any = None  # no pandapower net

    @property
    def n_bus(self) -> int:
        return self.grid.n_node

    @property
    def n_ext_grid(self) -> int:
        return len(self.netmap.source_names)

    def bus_names(self) -> list[str]:
        return list(self.netmap.node_names)

    def bus_ids(self) -> list:
        return list(range(self.grid.n_node))

    def bus_lookup(self) -> np.ndarray:
        return np.arange(self.grid.n_node)

    def bus_labels(self) -> list[str]:
        return list(self.netmap.node_names)

    def branch_to_bus(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def element_names(self, kind: str) -> list:
        return list(self.netmap.load_names) if kind == "load" else []

    def branch_names(self, kind: str) -> list:
        return []

    def branch(self, ref: dict):
        return None


def feeder_path(name: str, source: str) -> Path:
    """The master file `name`: relative to the scenario file's folder where it is there, else to `DATA`."""
    path = Path(name)
    if path.is_absolute():
        return path
    if source.endswith((".yaml", ".yml")) and (Path(source).parent / path).is_file():
        return Path(source).parent / path
    return DATA / path


def load_network3ph(spec: dict, source: str) -> Network3ph:
    """Compile, pin the taps of and convert the feeder of a `{opendss, commands}` network entry."""
    from pgjax.converters import opendss

    dss = opendss.compile_file(feeder_path(spec["opendss"], source), tuple(spec.get("commands", ())))
    opendss.pin_taps(dss)
    grid, netmap = opendss.from_engine(dss, dtype=np.float64)
    return Network3ph(grid, netmap)

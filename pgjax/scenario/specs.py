"""Typed sections of a compiled scenario: `protocol`, `communication` and `profiles`.

Built from a mapping that `pgjax.scenario.schema.validate_structure` accepted, so they
only convert; the defaults are the documented YAML defaults. `Compiled.protocol`,
`Compiled.communication` and `Compiled.profile_spec` hold them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PER_AGENT_TIMING = {"tick_interval": 1, "tick_offset": 0, "act_delay": 0, "obs_delay": 0}


@dataclasses.dataclass(frozen=True)
class ProtocolSpec:
    """The `protocol` section (see `pgjax.protocols.coordination`).

    `options`: the section's other keys as written (`graph`, `iterations`, `price_min`,
    `price_max`, `mechanism`); absent keys stay absent, their defaults are the consumer's.
    """

    vertical: str = "none"
    horizontal: str = "none"
    options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_raw(cls, section: dict) -> ProtocolSpec:
        rest = {k: v for k, v in section.items() if k not in ("vertical", "horizontal")}
        return cls(section.get("vertical", "none"), section.get("horizontal", "none"), rest)


@dataclasses.dataclass(frozen=True)
class CommunicationSpec:
    """The `communication` section (see `pgjax.protocols.channels`, `pgjax.protocols.coordination`).

    `msg_delay` and the timing fields are steps: one int for every agent, or a mapping
    `{agent_id: int}` (agents not named get the default).
    """

    msg_delay: int | dict = 0
    loss_prob: float = 0.0
    jitter: float = 0.0
    jitter_kind: str = "uniform"
    tick_interval: int | dict = 1
    tick_offset: int | dict = 0
    act_delay: int | dict = 0
    obs_delay: int | dict = 0
    # domain randomization: {msg_delay | loss_prob | jitter: (low, high)} drawn per episode for
    # every message link, in place of the fixed values above (`pgjax.protocols.coordination`)
    randomize: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_raw(cls, section: dict) -> CommunicationSpec:
        per_agent = {k: _copy(section[k]) for k in ("msg_delay", *PER_AGENT_TIMING) if k in section}
        return cls(loss_prob=float(section.get("loss_prob", 0.0)), jitter=float(section.get("jitter", 0.0)),
                   jitter_kind=section.get("jitter_kind", "uniform"),
                   randomize={k: tuple(v) for k, v in section.get("randomize", {}).items()}, **per_agent)


def _copy(value):
    return dict(value) if isinstance(value, dict) else value


@dataclasses.dataclass(frozen=True)
class ProfileSpec:
    """The `profiles` section: which data the episodes draw on and how series map to the grid.

    `train` / `test`: shipped dataset names or CSV paths (`None`: no profiles, constant
    loads); `price`: a column name, a flat $/MWh number, or `None`; `loads` / `sgens`:
    `(fnmatch pattern, column)` rules, the first match per grid element wins.
    `time_column` / `data_dt_h`: for CSV files, the time-stamp column (it gives the step
    and the first step's time of day) and the data's step in hours; with neither, the rows
    are the scenario's steps (`time.dt_h`).
    """

    train: str | None = None
    test: str | None = None
    split: str = "train"
    price: Any = None
    loads: tuple = ()  # ((match, series), ...)
    sgens: tuple = ()
    load_scale: float = 1.0
    resample: str = "repeat"  # "repeat" | "linear", when time.dt_h differs from the data's step
    time_column: str | None = None
    data_dt_h: float | None = None

    @classmethod
    def from_raw(cls, section: dict) -> ProfileSpec:
        def rules(key):
            return tuple((r["match"], r["series"]) for r in section.get(key, []))

        return cls(train=section.get("train"), test=section.get("test"), split=section.get("split", "train"),
                   price=section.get("price"), loads=rules("loads"), sgens=rules("sgens"),
                   load_scale=float(section.get("load_scale", 1.0)), resample=section.get("resample", "repeat"),
                   time_column=section.get("time_column"),
                   data_dt_h=float(section["data_dt_h"]) if "data_dt_h" in section else None)

    @property
    def dataset(self) -> str | None:
        """The data the episodes draw from: `test` for `split: test` (the training data if none)."""
        if self.split == "test" and self.test is not None:
            return self.test
        return self.train

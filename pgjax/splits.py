"""Named evaluation splits per scenario, defined once in `pgjax/data/splits.yaml`.

    splits = splits_for("multi_microgrid")          # {"train": Split, "test": Split, "load_growth": ...}
    env, _ = pgjax.commands.eval.test_env(cfg, splits["load_growth"].sets)

A split is a set of `pgjax eval --set` keys (`pgjax.scenario.keypaths`; for env families and
toy envs their `make` keyword arguments) applied on top of the run's scenario on its test
data: `test` sets nothing, `train` sets `split: train` (the training year), and each stress
split names exactly what it changes (`profiles.load_scale: 1.2`, ...). `pgjax splits
[SCENARIO]` lists them; `pgjax eval RUN --split NAME` and `pgjax benchmark` evaluate on them.

The file is validated when read: a mapping of scenario -> {split name -> {describe, set}}
(plus `inherit: SCENARIO`); a bad entry raises `InputError` naming the file and key path.
Values are checked against the scenario only when a split's env is built (as `--set` is).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from pgjax.errors import InputError, brief

SPLITS_FILE = Path(__file__).resolve().parent / "data" / "splits.yaml"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # split names: also file names (eval_<name>.json)
TEST = "test"
# unit of a key by its last path part's suffix (the project's naming habit: `vm_min_pu`, `p_max_mw`)
UNIT_SUFFIXES = (("_pu", "pu"), ("_mw", "MW"), ("_hz", "Hz"), ("_s", "s"), ("_h", "h"), ("_prob", "probability"),
                 ("_scale", "x (factor)"), ("_delay", "steps"), ("_droop", "pu frequency / pu power"),
                 ("_damping", "pu load / pu frequency"), ("_steps", "steps"))


@dataclasses.dataclass(frozen=True)
class Split:
    """One evaluation split: `sets` (key path -> value) on top of the scenario on its test data."""

    name: str
    scenario: str  # the scenario (or env family) it belongs to
    describe: str  # what it changes, for an operator, with units
    sets: dict[str, Any]  # `pgjax eval --set` keys; empty for `test`

    def changes(self) -> list[str]:
        """`["KEY = VALUE [unit]", ...]`: what the split sets, one line per key."""
        return [f"{key} = {value}" + (f" [{unit_of(key)}]" if unit_of(key) else "") for key, value in self.sets.items()]


def unit_of(key: str) -> str:
    """The unit of a key path by its last part's suffix (`limits.vm_min_pu` -> "pu"), "" if none is known."""
    last = key.rsplit(".", 1)[-1]
    if last == "split":
        return "data year"
    return next((unit for suffix, unit in UNIT_SUFFIXES if last.endswith(suffix)), "")


@functools.cache
def _table(path: str) -> dict[str, dict[str, Split]]:
    """The split file at `path` read and validated: scenario -> {name: Split} (inheritance resolved)."""
    import yaml

    where = Path(path)
    try:
        raw = yaml.safe_load(where.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{where}: not a readable split file ({brief(str(e), 160)})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping of scenario -> splits, got {type(raw).__name__}")
    own: dict[str, dict[str, Split]] = {}
    parents: dict[str, str] = {}
    for scenario, entry in raw.items():
        if not isinstance(entry, dict):
            raise InputError(f"{where}: {scenario}: expected a mapping of split name -> split, got {brief(entry)}")
        own[scenario] = {}
        for name, spec in entry.items():
            if name == "inherit":
                if spec not in raw or spec == scenario:
                    raise InputError(f"{where}: {scenario}.inherit: expected another scenario of the file, got "
                                     f"{brief(spec)}")
                parents[scenario] = spec
                continue
            own[scenario][name] = _split(where, scenario, name, spec)
    table = {}
    for scenario in raw:
        chain, s = [], scenario
        while s is not None:
            if s in chain:
                raise InputError(f"{where}: {scenario}.inherit: a cycle ({' -> '.join([*chain, s])})")
            chain.append(s)
            s = parents.get(s)
        merged: dict[str, Split] = {}
        for s in reversed(chain):
            merged.update({n: dataclasses.replace(sp, scenario=scenario) for n, sp in own[s].items()})
        if TEST not in merged or merged[TEST].sets:
            raise InputError(f"{where}: {scenario}: needs a '{TEST}' split that sets nothing (the reference)")
        table[scenario] = merged
    return table


def _split(where: Path, scenario: str, name, spec) -> Split:
    """One entry `{describe: TEXT, set: {KEY: VALUE}}`, checked."""
    at = f"{where}: {scenario}.{name}"
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(f"{where}: {scenario}: split name {brief(name)}: expected lower-case letters, digits and "
                         f"'_', starting with a letter")
    if not isinstance(spec, dict) or set(spec) - {"describe", "set"} or "set" not in spec:
        raise InputError(f"{at}: expected a mapping {{describe: TEXT, set: {{KEY: VALUE, ...}}}}, got {brief(spec)}")
    describe, sets = spec.get("describe", ""), spec["set"]
    if not isinstance(describe, str) or not describe.strip():
        raise InputError(f"{at}.describe: expected a non-empty text, got {brief(describe)}")
    if not isinstance(sets, dict) or not all(isinstance(k, str) and k.strip() for k in sets):
        raise InputError(f"{at}.set: expected a mapping of key paths to values, got {brief(sets)}")
    if name != TEST and not sets:
        raise InputError(f"{at}.set: empty; only '{TEST}' may set nothing (the split would equal it)")
    return Split(name, scenario, describe.strip(), dict(sets))


def scenarios(path=SPLITS_FILE) -> list[str]:
    """The scenarios (and env families) the split file defines splits for."""
    return list(_table(str(path)))


def splits_for(scenario: str, path=SPLITS_FILE) -> dict[str, Split]:
    """`{name: Split}` of `scenario` (a registered name such as `multi_microgrid`, or an env
    family / toy env); an `InputError` names the scenarios that have splits otherwise."""
    table = _table(str(path))
    if scenario not in table:
        raise InputError(f"{scenario!r}: no evaluation splits defined in {path}; scenarios with splits: "
                         f"{sorted(table)}")
    return dict(table[scenario])


def split(scenario: str, name: str, path=SPLITS_FILE) -> Split:
    """The split `name` of `scenario`; an `InputError` lists the scenario's splits otherwise."""
    known = splits_for(scenario, path)
    if name not in known:
        raise InputError(f"split {name!r}: not a split of {scenario}; its splits: {sorted(known)} (pgjax splits "
                         f"{scenario})")
    return known[name]

"""Scenario keys by path, as the command line gives them: `--set communication.msg_delay=2`.

    sets = parse_sets(["communication.msg_delay=2", "observation.centralized=false"])
    env = pgjax.make(name, **env_kwargs, **key_path_overrides(name, env_kwargs, sets))

A key is a path of mapping keys from the top of the scenario (`communication.loss_prob`,
`protocol.horizontal`, `protocol.options.rho`) or one of `pgjax.make`'s flat names
(`OVERRIDE_PATHS`: `msg_delay`, `loss_prob`, `centralized`, ...); values are YAML
(`2`, `0.3`, `false`, `[1, 2]`). `key_path_overrides` turns them into whole-section
overrides of `pgjax.make` on top of the scenario as `name` and `env_kwargs` make it (its
registry variant and the run's own overrides), so the result is validated like the YAML
file itself: an unknown key or a value out of range is a `ScenarioError` naming its key path.
"""

from __future__ import annotations

import copy

import yaml

from pgjax.errors import InputError
from pgjax.scenario.compile import made_raw
from pgjax.scenario.schema import OVERRIDE_PATHS, TOP_KEYS


def parse_sets(items: list[str], flag: str = "--set") -> dict:
    """`["KEY=VALUE", ...]` -> `{KEY: YAML value}` (later items win)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} {item!r}: expected KEY=VALUE, e.g. communication.msg_delay=2")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"{flag} {key}: value {text!r} is not YAML ({str(e).splitlines()[0]})") from None
        out[key.strip()] = value
    return out


def key_path_overrides(name, env_kwargs: dict, sets: dict) -> dict:
    """`pgjax.make` overrides (flat names and whole sections) that set each key path of `sets`."""
    raw = None
    out: dict = {}
    for key, value in sets.items():
        if key in OVERRIDE_PATHS:
            out[key] = value
            continue
        head, *rest = key.split(".")
        if head not in TOP_KEYS:
            raise InputError(f"--set {key}: unknown scenario key {head!r}; expected a section of "
                             f"{sorted(TOP_KEYS)} (then .key...) or one of {sorted(OVERRIDE_PATHS)}")
        if not rest:
            out[head] = value
            continue
        if raw is None:
            raw = made_raw(name, env_kwargs)[0]
        section = copy.deepcopy(out.get(head, raw.get(head) or {}))
        if not isinstance(section, dict):
            raise InputError(f"--set {key}: {head} is a {type(section).__name__} in this scenario, not a mapping")
        node = section
        for i, part in enumerate(rest[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {key}: {'.'.join([head, *rest[:i + 1]])} is a {type(node).__name__}, "
                                 f"not a mapping")
        node[rest[-1]] = value
        out[head] = section
    return out

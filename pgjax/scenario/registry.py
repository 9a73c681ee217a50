"""The registry of named scenario versions (`family-vN`) and the loader of raw mappings.

The shipped YAML files (`pgjax/scenarios/*.yaml`, package data) and their `variants` are
registered at import, and so are the generated scenarios of `pgjax.scenario.builders`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pgjax.scenario.schema import Problem, ScenarioError

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

REGISTRY: dict[str, dict] = {}


def register(name: str, path_or_raw, *, large: bool = False, **overrides) -> None:
    """Register a scenario `name` (`family-vN`) from a YAML path, a raw mapping or a builder, plus overrides.

    A builder is a callable returning a raw mapping; `make(name, **kwargs)` passes it the
    keyword arguments its signature names (e.g. `n_microgrids`), the rest are overrides.
    `large`: a scale scenario (thousands of buses, hundreds of agents), listed by
    `names(large=True)` only.
    """
    if "-v" not in name:
        raise ValueError(f"scenario name '{name}' must carry a version: '<family>-v<N>'")
    REGISTRY[name] = {"source": path_or_raw, "overrides": overrides, "large": bool(large)}


def names(large: bool = False) -> list[str]:
    """Registered scenario names; the scale scenarios (`register(..., large=True)`, e.g.
    `multi_microgrid_xl`) only with `large=True`: the tests that run every scenario for
    thousands of steps leave them out, their own tests check them."""
    return sorted(k for k, v in REGISTRY.items() if large or not v.get("large", False))


def resolve_name(name: str) -> str:
    """`family-vN` as given, or the latest version of `family`."""
    if name in REGISTRY:
        return name
    versions = [k for k in REGISTRY if k.rsplit("-v", 1)[0] == name]
    if not versions:
        raise KeyError(f"scenario '{name}' unknown; registered: {names(large=True)}")
    return max(versions, key=lambda k: int(k.rsplit("-v", 1)[1]))


def builder_of(name_or_path):
    """The builder callable of a registered generated scenario, else None."""
    if isinstance(name_or_path, dict) or str(name_or_path).endswith((".yaml", ".yml")):
        return None
    source = REGISTRY[resolve_name(str(name_or_path))]["source"]
    return source if callable(source) else None


def load(name_or_path, **builder_kwargs) -> tuple[dict, str, dict]:
    """`(raw mapping, source, registry overrides)` for a registered name, YAML path or mapping."""
    if isinstance(name_or_path, dict):
        return copy.deepcopy(name_or_path), "<dict>", {}
    text = str(name_or_path)
    overrides = {}
    if not text.endswith((".yaml", ".yml")):
        entry = REGISTRY[resolve_name(text)]
        overrides = dict(entry["overrides"])
        if callable(entry["source"]):
            try:
                return entry["source"](**builder_kwargs), text, overrides
            except (TypeError, ValueError) as e:
                raise ScenarioError(text, [Problem("<builder>", "valid builder arguments", str(e))]) from None
        if isinstance(entry["source"], dict):
            return copy.deepcopy(entry["source"]), text, overrides
        text = str(entry["source"])
    return _read_yaml(text), text, overrides


def _read_yaml(text: str) -> dict:
    path = Path(text)
    if not path.exists():
        raise ScenarioError(text, [Problem("<file>", "an existing YAML file", text)])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(text, [Problem("<file>", "valid YAML", str(e).replace("\n", " "))]) from None
    if not isinstance(raw, dict):
        raise ScenarioError(text, [Problem("<root>", "a mapping", type(raw).__name__)])
    return raw


def _register_shipped() -> None:
    """The YAML files of `SCENARIO_DIR` (with their variants; `builders` registers the generated ones)."""
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        register(f"{raw['name']}-v{raw.get('version', 0)}", path)
        for variant, over in (raw.get("variants") or {}).items():
            register(f"{variant}-v{raw.get('version', 0)}", path, **over)


_register_shipped()

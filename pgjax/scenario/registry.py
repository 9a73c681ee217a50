"""The registry of named scenario versions (`family-vN`) and the loader of raw mappings.

The shipped YAML files (`pgjax/scenarios/*.yaml`, package data) and their `variants` are
registered at import, and so are the generated scenarios of `pgjax.scenario.builders`.

Reading a YAML file is bounded: at most `MAX_FILE_BYTES`, UTF-8 text, and at most
`MAX_YAML_NODES` nodes once every alias is expanded (an alias bomb is refused after
composing its small node graph, before anything walks the expanded mapping); any failure
is a `ScenarioError` naming the file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pgjax.scenario.schema import Problem, ScenarioError

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
MAX_FILE_BYTES = 16 * 2**20
MAX_YAML_NODES = 200_000  # scalars, lists and mappings after alias expansion (a shipped file: ~2,000)

REGISTRY: dict[str, dict] = {}


class UnknownScenarioError(ScenarioError, KeyError):
    """A name that is neither registered nor a YAML path: a `ScenarioError` and a `KeyError`."""

    __str__ = Exception.__str__  # KeyError would quote the message


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
        raise UnknownScenarioError(str(name), [Problem("<name>", f"a registered scenario {names(large=True)} "
                                                                 "or a .yaml / .yml file", name)])
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


class _TooLarge(Exception):
    pass


def _expanded_size(root) -> int:
    """Nodes of a composed YAML document with every alias expanded (linear in the node graph).

    Raises `_TooLarge` past `MAX_YAML_NODES` and `yaml.YAMLError` for a recursive alias.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = [] if isinstance(node, yaml.ScalarNode) else (
            [x for pair in node.value for x in pair] if isinstance(node, yaml.MappingNode) else node.value)
        if done:
            sizes[id(node)] = 1 + sum(sizes[id(ch)] for ch in children)
            on_path.discard(id(node))
            if sizes[id(node)] > MAX_YAML_NODES:
                raise _TooLarge(sizes[id(node)])
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise yaml.YAMLError(f"recursive alias at line {node.start_mark.line + 1}")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((ch, False) for ch in children)
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses documents over `MAX_YAML_NODES` expanded nodes."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _expanded_size(node)
        return node


def _read_yaml(text: str) -> dict:
    """The mapping of a YAML file, read within the bounds of the module docstring."""
    path = Path(text)
    if not path.is_file():
        raise ScenarioError(text, [Problem("<file>", "an existing YAML file", text)])
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ScenarioError(text, [Problem("<file>", f"a YAML file of at most {MAX_FILE_BYTES} bytes", f"{size} bytes")])
    data = path.read_bytes()
    try:
        source = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScenarioError(text, [Problem("<file>", "a UTF-8 text file",
                                           f"byte 0x{data[e.start]:02x} at offset {e.start} (binary or another encoding)")]) from None
    if "\x00" in source:
        raise ScenarioError(text, [Problem("<file>", "a UTF-8 text file", f"a NUL byte at offset {source.index(chr(0))} (binary)")])
    try:
        raw = yaml.load(source, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except _TooLarge as e:
        raise ScenarioError(text, [Problem("<file>", f"at most {MAX_YAML_NODES} YAML nodes with aliases expanded",
                                           f"{e.args[0]} or more (an alias bomb?)")]) from None
    except RecursionError:
        raise ScenarioError(text, [Problem("<file>", "YAML nested at most a few hundred levels deep", "deeper")]) from None
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

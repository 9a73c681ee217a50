"""Scenarios: YAML files validated with clear errors, a registry of named versions, and the
compiler that turns one into the arrays the environment steps on.

A scenario file (see `pgjax/scenarios/*.yaml` for complete examples)::

    name: multi_microgrid            # required
    version: 0
    network: ieee34_3x_ieee13        # shipped name | pandapower.networks builder | .json path
                                     # | {builder: name, kwargs: {...}}
    dtype: float64                   # or float32
    powerflow: {method: newton, jacobian: exact, max_iter: 20}
    time: {dt_h: 1.0, episode_steps: 24, start: day}   # start: day | any | <step index>
    profiles:
      train: caiso_2023              # shipped dataset (pgjax.profiles) or a CSV path
      test: caiso_2024
      split: train                   # which one the episodes draw from
      price: price_0096WD_7_N001     # $/MWh column (or a number: a flat price)
      loads: [{match: "MG1 *", series: load_PGE}, {match: "*", series: "load_CA ISO-TAC"}]
      sgens: []                      # same, for the network's static generators
      load_scale: 1.0
      resample: repeat               # repeat | linear, when dt_h differs from the data
    limits: {vm_min_pu: 0.95, vm_max_pu: 1.05, loading_max_percent: 100}
    reward: {penalty: 100.0, shared: false, scale: 1.0}
    observation: {centralized: false}
    hierarchy: {learned: grid}       # system | grid | device
    protocol: {vertical: none, horizontal: none}   # see pgjax.coordination
    communication: {msg_delay: 0, loss_prob: 0.0, tick_interval: 1}
    agents:
      - id: DSO
        level: system
        buses: ["DSO *"]             # bus names (fnmatch patterns) or net bus indices
        devices:
          - {type: tap_changer, name: reg1, branch: {trafo: "DSO Regulator1"}}
      - id: MG1
        level: grid
        parent: DSO
        buses: ["MG1 *"]
        devices:
          - {type: storage, name: mg1_ess, bus: "MG1 Bus 645", e_max_mwh: 2.0, ...}

`load(name_or_path)` returns the raw mapping, `validate(raw)` every problem found (key
path, expected, actual), `compile_scenario(raw, **overrides)` a `Compiled` record that
`pgjax.env.Env` wraps. `pgjax validate FILE` prints every problem of a file.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pgjax import devices as dev
from pgjax.devices.base import REQUIRED

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
LEVELS = ("system", "grid", "device")
AGENT_LEVELS = ("system", "grid")


# ------------------------------------------------------------------------------- errors

@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    expected: str
    actual: Any

    def format(self, source: str = "") -> str:
        where = f"{source}: " if source else ""
        return f"{where}{self.path}: expected {self.expected}, got {self.actual!r}"


class ScenarioError(ValueError):
    """A scenario has problems; `.problems` lists all of them."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join("  " + p.format(source) for p in self.problems)
        super().__init__(f"scenario {source or '<dict>'} has {len(self.problems)} problem(s):\n{lines}")


# ----------------------------------------------------------------------------- registry

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
    path = Path(text)
    if not path.exists():
        raise ScenarioError(text, [Problem("<file>", "an existing YAML file", text)])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(text, [Problem("<file>", "valid YAML", str(e).replace("\n", " "))]) from None
    if not isinstance(raw, dict):
        raise ScenarioError(text, [Problem("<root>", "a mapping", type(raw).__name__)])
    return raw, text, overrides


# --------------------------------------------------------------------------- validation

def _tname(x) -> str:
    return {bool: "bool", int: "int", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(x), type(x).__name__)


class _Checker:
    """Collects problems while walking a raw scenario mapping."""

    def __init__(self):
        self.problems: list[Problem] = []

    def add(self, path, expected, actual):
        problem = Problem(path, expected, actual if not isinstance(actual, (dict, list)) else str(actual))
        if problem not in self.problems:
            self.problems.append(problem)

    def section(self, raw, key, path="", required=False) -> dict:
        full = f"{path}.{key}" if path else key
        if key not in raw:
            if required:
                self.add(full, "a mapping (required key missing)", None)
            return {}
        value = raw[key]
        if not isinstance(value, dict):
            self.add(full, "a mapping", _tname(value))
            return {}
        return value

    def keys(self, raw: dict, allowed, path):
        for k in raw:
            if k not in allowed:
                self.add(f"{path}.{k}" if path else str(k), f"one of the keys {sorted(allowed)}", k)

    def value(self, raw, key, kind, path, required=False, choices=None, minimum=None, exclusive=False):
        full = f"{path}.{key}" if path else key
        if key not in raw:
            if required:
                self.add(full, f"{kind} (required key missing)", None)
            return None
        v = raw[key]
        ok = {
            "number": isinstance(v, (int, float)) and not isinstance(v, bool),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "bool": isinstance(v, bool),
            "string": isinstance(v, str),
            "list": isinstance(v, list),
        }[kind]
        if not ok:
            self.add(full, kind, v if not isinstance(v, (dict, list)) else _tname(v))
            return None
        if choices is not None and v not in choices:
            self.add(full, f"one of {list(choices)}", v)
            return None
        if minimum is not None and (v <= minimum if exclusive else v < minimum):
            self.add(full, f"a number {'>' if exclusive else '>='} {minimum}", v)
            return None
        return v


TOP_KEYS = {"name", "version", "description", "variants", "network", "dtype", "powerflow", "time", "profiles",
            "limits", "reward", "observation", "hierarchy", "protocol", "communication", "agents"}
PER_AGENT_TIMING = {"tick_interval": 1, "tick_offset": 0, "act_delay": 0, "obs_delay": 0}


def _check_coordination(c: _Checker, raw: dict, ids: list) -> None:
    """The `protocol` and `communication` sections (see `pgjax.coordination`)."""
    from pgjax.coordination import GRAPHS, HORIZONTAL, VERTICAL
    from pgjax.comms import JITTER_KINDS

    pr = c.section(raw, "protocol")
    c.keys(pr, {"vertical", "horizontal", "graph", "price_min", "price_max", "iterations", "mechanism"}, "protocol")
    c.value(pr, "vertical", "string", "protocol", choices=VERTICAL)
    c.value(pr, "horizontal", "string", "protocol", choices=HORIZONTAL)
    c.value(pr, "graph", "string", "protocol", choices=GRAPHS)
    c.value(pr, "iterations", "int", "protocol", minimum=1)
    c.value(pr, "mechanism", "string", "protocol", choices=("uniform", "pay_as_bid"))
    lo, hi = c.value(pr, "price_min", "number", "protocol"), c.value(pr, "price_max", "number", "protocol")
    if lo is not None and hi is not None and lo >= hi:
        c.add("protocol.price_max", f"a number > protocol.price_min ({lo})", hi)
    com = c.section(raw, "communication")
    c.keys(com, {"msg_delay", "loss_prob", "jitter", "jitter_kind", *PER_AGENT_TIMING}, "communication")
    p = c.value(com, "loss_prob", "number", "communication", minimum=0)
    if p is not None and p > 1:
        c.add("communication.loss_prob", "a probability in [0, 1]", p)
    c.value(com, "jitter", "number", "communication", minimum=0)
    c.value(com, "jitter_kind", "string", "communication", choices=JITTER_KINDS)
    for key in ("msg_delay", *PER_AGENT_TIMING):
        low = 1 if key == "tick_interval" else 0
        spec = com.get(key)
        items = spec.items() if isinstance(spec, dict) else [(None, spec)] if key in com else []
        for aid, v in items:
            path = f"communication.{key}" + (f".{aid}" if aid is not None else "")
            if aid is not None and aid not in ids:
                c.add(path, f"one of the agent ids {ids}", aid)
            elif isinstance(v, bool) or not isinstance(v, int) or v < low:
                c.add(path, f"an integer >= {low} (steps), or a mapping agent id -> integer", v)


def validate_structure(raw: dict) -> list[Problem]:
    """Problems of the mapping's shape and types (no network or data needed)."""
    c = _Checker()
    c.keys(raw, TOP_KEYS, "")
    c.value(raw, "name", "string", "", required=True)
    c.value(raw, "version", "int", "", minimum=0)
    c.value(raw, "description", "string", "")
    c.value(raw, "dtype", "string", "", choices=("float32", "float64"))
    net = raw.get("network")
    if net is None:
        c.add("network", "a network name, .json path or {builder, kwargs} (required key missing)", None)
    elif isinstance(net, dict):
        c.keys(net, {"builder", "kwargs"}, "network")
        c.value(net, "builder", "string", "network", required=True)
        if "kwargs" in net and not isinstance(net["kwargs"], dict):
            c.add("network.kwargs", "a mapping", _tname(net["kwargs"]))
    elif not isinstance(net, str):
        c.add("network", "a string or a mapping", _tname(net))

    from pgjax.powerflow import METHODS
    pf = c.section(raw, "powerflow")
    c.keys(pf, {"method", "jacobian", "max_iter"}, "powerflow")
    c.value(pf, "method", "string", "powerflow", choices=METHODS)
    c.value(pf, "jacobian", "string", "powerflow", choices=("exact", "chord"))
    c.value(pf, "max_iter", "int", "powerflow", minimum=1)

    t = c.section(raw, "time", required=True)
    c.keys(t, {"dt_h", "episode_steps", "start"}, "time")
    c.value(t, "dt_h", "number", "time", minimum=0, exclusive=True)
    c.value(t, "episode_steps", "int", "time", required=True, minimum=1)
    if "start" in t and not (t["start"] in ("day", "any") or (isinstance(t["start"], int) and t["start"] >= 0)):
        c.add("time.start", "'day', 'any' or a step index >= 0", t["start"])

    pr = c.section(raw, "profiles")
    c.keys(pr, {"train", "test", "split", "price", "loads", "sgens", "load_scale", "resample"}, "profiles")
    if pr:
        c.value(pr, "train", "string", "profiles", required=True)
    c.value(pr, "test", "string", "profiles")
    c.value(pr, "split", "string", "profiles", choices=("train", "test"))
    if "price" in pr and not isinstance(pr["price"], (str, int, float)) or isinstance(pr.get("price"), bool):
        c.add("profiles.price", "a column name or a number ($/MWh)", pr["price"])
    c.value(pr, "load_scale", "number", "profiles", minimum=0)
    c.value(pr, "resample", "string", "profiles", choices=("repeat", "linear"))
    for table in ("loads", "sgens"):
        rules = c.value(pr, table, "list", "profiles")
        for i, rule in enumerate(rules or []):
            path = f"profiles.{table}[{i}]"
            if not isinstance(rule, dict):
                c.add(path, "a mapping {match, series}", _tname(rule))
                continue
            c.keys(rule, {"match", "series"}, path)
            c.value(rule, "match", "string", path, required=True)
            c.value(rule, "series", "string", path, required=True)

    lim = c.section(raw, "limits")
    c.keys(lim, {"vm_min_pu", "vm_max_pu", "loading_max_percent"}, "limits")
    lo = c.value(lim, "vm_min_pu", "number", "limits", minimum=0)
    hi = c.value(lim, "vm_max_pu", "number", "limits", minimum=0)
    if lo is not None and hi is not None and lo >= hi:
        c.add("limits.vm_max_pu", f"a number > limits.vm_min_pu ({lo})", hi)
    c.value(lim, "loading_max_percent", "number", "limits", minimum=0, exclusive=True)

    rw = c.section(raw, "reward")
    c.keys(rw, {"penalty", "shared", "scale"}, "reward")
    c.value(rw, "penalty", "number", "reward", minimum=0)
    c.value(rw, "shared", "bool", "reward")
    c.value(rw, "scale", "number", "reward", minimum=0, exclusive=True)

    ob = c.section(raw, "observation")
    c.keys(ob, {"centralized"}, "observation")
    c.value(ob, "centralized", "bool", "observation")

    hi_ = c.section(raw, "hierarchy")
    c.keys(hi_, {"learned"}, "hierarchy")
    c.value(hi_, "learned", "string", "hierarchy", choices=LEVELS)

    agents = c.value(raw, "agents", "list", "", required=True) or []
    if "agents" in raw and isinstance(raw["agents"], list) and not raw["agents"]:
        c.add("agents", "a non-empty list", [])
    ids, device_names = [], []
    for i, a in enumerate(agents):
        path = f"agents[{i}]"
        if not isinstance(a, dict):
            c.add(path, "a mapping", _tname(a))
            continue
        c.keys(a, {"id", "level", "parent", "buses", "devices"}, path)
        aid = c.value(a, "id", "string", path, required=True)
        if aid is not None:
            if aid in ids:
                c.add(f"{path}.id", "a unique agent id", aid)
            ids.append(aid)
        c.value(a, "level", "string", path, required=True, choices=AGENT_LEVELS)
        if a.get("parent") is not None:
            c.value(a, "parent", "string", path)
        buses = c.value(a, "buses", "list", path) or []
        for j, b in enumerate(buses):
            if not isinstance(b, (str, int)) or isinstance(b, bool):
                c.add(f"{path}.buses[{j}]", "a bus name pattern or a bus index", b)
        for j, d in enumerate(c.value(a, "devices", "list", path) or []):
            dpath = f"{path}.devices[{j}]"
            if not isinstance(d, dict):
                c.add(dpath, "a mapping with a 'type'", _tname(d))
                continue
            _check_device_entry(c, d, dpath)
            name = d.get("name")
            if isinstance(name, str):
                if name in device_names:
                    c.add(f"{dpath}.name", "a unique device name", name)
                device_names.append(name)
    for i, a in enumerate(agents):
        if isinstance(a, dict) and a.get("parent") is not None and a["parent"] not in ids:
            c.add(f"agents[{i}].parent", f"one of the agent ids {ids}", a["parent"])
    _check_coordination(c, raw, ids)
    return c.problems


def _check_device_entry(c: _Checker, d: dict, path: str) -> None:
    kind = d.get("type")
    if kind is None:
        c.add(f"{path}.type", f"one of the device types {sorted(dev.REGISTRY)} (required key missing)", None)
        return
    if kind not in dev.REGISTRY:
        c.add(f"{path}.type", f"one of the device types {sorted(dev.REGISTRY)}", kind)
        return
    fields = dev.get(kind).fields
    c.keys(d, set(fields) | {"type", "name"}, path)
    c.value(d, "name", "string", path)
    for fname, f in fields.items():
        full = f"{path}.{fname}"
        if fname not in d:
            if f.default is REQUIRED and not (kind == "tap_changer" and fname != "branch"):
                c.add(full, f"{'a number' if f.kind == 'float' else 'a ' + f.kind} (required key missing)", None)
            continue
        v = d[fname]
        if f.kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            c.add(full, f"a number ({f.unit})" if f.unit else "a number", v)
        elif f.kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            c.add(full, "an integer", v)
        elif f.kind == "bool" and not isinstance(v, bool):
            c.add(full, "true or false", v)
        elif f.kind == "bus" and (isinstance(v, bool) or not isinstance(v, (str, int))):
            c.add(full, "a bus name or index", v)
        elif f.kind == "series" and v is not None and not isinstance(v, str):
            c.add(full, "a profile column name", v)
        elif f.kind == "ext_grid" and v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            c.add(full, "an external-grid index", v)
        elif f.kind == "branch" and v is not None and not (
                isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("line", "trafo")
                and isinstance(next(iter(v.values())), (str, int))):
            c.add(full, "{line: name|index} or {trafo: name|index}", v)
    _check_device_values(c, kind, d, path)
    if kind == "pcc" and (d.get("branch") is None) == (d.get("ext_grid") is None):
        c.add(f"{path}.branch", "exactly one of 'branch' and 'ext_grid'", {k: d.get(k) for k in ("branch", "ext_grid")})


# ------------------------------------------------------------------------------ compile

OVERRIDE_PATHS = {
    "dt_h": ("time", "dt_h"), "episode_steps": ("time", "episode_steps"), "start": ("time", "start"),
    "split": ("profiles", "split"), "penalty": ("reward", "penalty"), "shared_reward": ("reward", "shared"),
    "reward_scale": ("reward", "scale"), "centralized": ("observation", "centralized"),
    "learned": ("hierarchy", "learned"), "method": ("powerflow", "method"),
    "jacobian": ("powerflow", "jacobian"), "max_iter": ("powerflow", "max_iter"), "dtype": ("dtype",),
    "network": ("network",), "vm_min_pu": ("limits", "vm_min_pu"), "vm_max_pu": ("limits", "vm_max_pu"),
    "vertical": ("protocol", "vertical"), "horizontal": ("protocol", "horizontal"),
    "msg_delay": ("communication", "msg_delay"), "loss_prob": ("communication", "loss_prob"),
}


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """Copy of `raw` with `make(...)` keyword overrides applied (flat names or sections)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        if key in OVERRIDE_PATHS:
            *head, last = OVERRIDE_PATHS[key]
            node = raw
            for h in head:
                node = node.setdefault(h, {})
            node[last] = value
        elif key in TOP_KEYS and isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        elif key in TOP_KEYS:
            raw[key] = value
        else:
            raise TypeError(f"make: unknown override '{key}'; use one of {sorted(OVERRIDE_PATHS)} "
                            f"or a top-level section {sorted(TOP_KEYS)}")
    return raw


@dataclasses.dataclass
class DeviceGroup:
    """All devices of one type, compiled (host-side numpy)."""

    type: str
    names: tuple
    params: Any  # the type's Params dataclass of numpy arrays [n]
    owner: np.ndarray  # [n] index into Compiled.tree_ids (agent owning the device)


@dataclasses.dataclass
class Compiled:
    """A scenario resolved against its network and data (host-side; `Env` makes arrays)."""

    name: str
    source: str
    raw: dict
    net: Any
    grid: Any
    netmap: Any
    dtype: str
    method: str
    jacobian: str
    max_iter: int
    dt_h: float
    episode_steps: int
    starts: np.ndarray  # [n_starts] allowed episode start steps
    hour0: np.ndarray  # [] hour of day of profile step 0
    profiles: np.ndarray  # [n_steps, n_series]
    series_names: tuple
    price_col: int  # -1: flat price
    flat_price: float
    load_series: np.ndarray  # [n_load] column per grid load, -1: constant
    sgen_series: np.ndarray  # [n_sgen]
    load_scale: float
    vm_min_pu: float
    vm_max_pu: float
    loading_max_percent: float
    penalty: float
    shared: bool
    reward_scale: float
    centralized: bool
    learned: str
    tree_ids: tuple  # every agent of the tree (scenario order)
    tree_level: tuple
    tree_parent: np.ndarray  # [n_tree] parent index, -1 for roots
    bus_owner: np.ndarray  # [n_bus] tree index
    groups: list  # [DeviceGroup]


def _resolve_network(spec):
    from pgjax import networks

    if isinstance(spec, dict):
        import pandapower.networks as pn

        import pgjax.scenario_builders as sb

        builder = getattr(sb, spec["builder"], None) or getattr(pn, spec["builder"])
        return builder(**spec.get("kwargs", {}))
    return networks.load(spec)


def _load_profiles(name: str):
    from pgjax import profiles

    if name.endswith(".csv"):
        return profiles.from_csv(name)
    return profiles.load(name)


def _hour0(start: str) -> float:
    """Local hour of day of the first profile step (CAISO: UTC-8; others: as stamped)."""
    try:
        import datetime

        t = datetime.datetime.fromisoformat(start)
        if t.utcoffset() is not None and t.utcoffset().total_seconds() == 0 and t.hour == 8:
            return 0.0  # CAISO series start at local (PST) midnight
        return t.hour + t.minute / 60
    except (ValueError, TypeError):
        return 0.0


def compile_scenario(name_or_raw, **overrides) -> Compiled:
    """Validate and resolve a scenario; raise `ScenarioError` listing every problem."""
    from converters.pandapower import from_pandapower

    builder = builder_of(name_or_raw)
    accepted = inspect.signature(builder).parameters if builder else {}
    raw, source, reg_overrides = load(name_or_raw, **{k: overrides.pop(k) for k in list(overrides) if k in accepted})
    raw = apply_overrides(raw, {**reg_overrides, **overrides})
    problems = validate_structure(raw)
    if problems:
        raise ScenarioError(source, problems)
    c = _Checker()
    try:
        net = _resolve_network(raw["network"])
    except Exception as e:  # noqa: BLE001 (report any failure as a problem)
        raise ScenarioError(source, [Problem("network", "a loadable network", f"{raw['network']} ({e})")]) from None
    grid, netmap = from_pandapower(net)

    t = raw["time"]
    dt_h = float(t.get("dt_h", 1.0))
    steps = int(t["episode_steps"])
    pr = raw.get("profiles", {})
    split = pr.get("split", "train")
    data = None
    if pr:
        dataset = pr.get("test", pr["train"]) if split == "test" else pr["train"]
        try:
            data = _load_profiles(dataset)
        except Exception as e:  # noqa: BLE001
            c.add(f"profiles.{split}", "a shipped dataset or a CSV file", f"{dataset} ({e})")
    series: list[str] = []

    def series_index(col, path):
        if col is None:
            return -1
        if data is None:
            return -1
        if col not in data.names:
            close = [n for n in data.names if n.split("_")[0] == str(col).split("_")[0]][:8]
            c.add(path, f"a column of the profiles (e.g. {close or list(data.names[:8])})", col)
            return -1
        if col not in series:
            series.append(col)
        return series.index(col)

    price_col, flat_price = -1, 0.0
    price = pr.get("price")
    if isinstance(price, str):
        price_col = series_index(price, "profiles.price")
    elif price is not None:
        flat_price = float(price)

    def assign(rules, names_, path):
        out = np.full(len(names_), -1, np.int32)
        for i, n in enumerate(names_):
            for j, rule in enumerate(rules):
                if fnmatch.fnmatchcase(str(n), rule["match"]):
                    out[i] = series_index(rule["series"], f"{path}[{j}].series")
                    break
        return out

    load_names = net.load.name.loc[netmap.load_index].values if len(netmap.load_index) else []
    sgen_names = net.sgen.name.loc[netmap.sgen_index].values if len(netmap.sgen_index) else []
    load_series = assign(pr.get("loads", []), load_names, "profiles.loads")
    sgen_series = assign(pr.get("sgens", []), sgen_names, "profiles.sgens")

    # agents
    agents = raw["agents"]
    tree_ids = tuple(a["id"] for a in agents)
    tree_level = tuple(a["level"] for a in agents)
    tree_parent = np.array([tree_ids.index(a["parent"]) if a.get("parent") else -1 for a in agents], np.int32)
    bus_names = [str(n) for n in net.bus.name.values]
    bus_pos = {idx: i for i, idx in enumerate(net.bus.index)}
    name_pos = {}
    for i, n in enumerate(bus_names):
        name_pos.setdefault(n, i)

    def bus_of(ref, path):
        if isinstance(ref, int) and not isinstance(ref, bool):
            if ref not in bus_pos:
                c.add(path, f"a bus index of the network (0..{max(bus_pos)})", ref)
                return 0
            return int(netmap.bus_lookup[bus_pos[ref]])
        if ref not in name_pos:
            close = [n for n in bus_names if fnmatch.fnmatchcase(n, f"*{str(ref).split()[-1]}*")][:6]
            c.add(path, f"a bus name of the network (e.g. {close or bus_names[:6]})", ref)
            return 0
        return int(netmap.bus_lookup[name_pos[ref]])

    roots = [i for i, p in enumerate(tree_parent) if p < 0]
    bus_owner = np.full(grid.n_bus, roots[0] if roots else 0, np.int32)
    for i, a in enumerate(agents):
        for j, pat in enumerate(a.get("buses", [])):
            if isinstance(pat, int):
                bus_owner[bus_of(pat, f"agents[{i}].buses[{j}]")] = i
                continue
            hits = [k for k, n in enumerate(bus_names) if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                c.add(f"agents[{i}].buses[{j}]", "a pattern matching at least one bus name", pat)
            for k in hits:
                bus_owner[netmap.bus_lookup[k]] = i

    def branch_of(ref, path):
        kind, key = next(iter(ref.items()))
        table = net[kind]
        if isinstance(key, str):
            rows = np.flatnonzero(table.name.astype(str).values == key)
            if not len(rows):
                c.add(path, f"a {kind} name of the network (e.g. {list(table.name.astype(str).values[:6])})", key)
                return 0, None
            pos = int(rows[0])
        else:
            if key not in set(table.index):
                c.add(path, f"a {kind} index of the network", key)
                return 0, None
            pos = int(np.flatnonzero(table.index.values == key)[0])
        return int(netmap.branch_rows[kind][pos]), (kind, table.index[pos])

    # devices
    entries: dict[str, list] = {}
    for i, a in enumerate(agents):
        for j, d in enumerate(a.get("devices", [])):
            entries.setdefault(d["type"], []).append((i, j, d))
    groups = []
    for kind in sorted(entries, key=list(dev.REGISTRY).index):
        dtype_ = dev.get(kind)
        values = {f: [] for f in dtype_.fields}
        owners, dnames = [], []
        for i, j, d in entries[kind]:
            path = f"agents[{i}].devices[{j}]"
            d = dict(d)
            if kind == "tap_changer" and "branch" in d:
                row, ref = branch_of(d["branch"], f"{path}.branch")
                if ref is not None and ref[0] == "trafo":
                    tr = net.trafo.loc[ref[1]]
                    pos = float(np.nan_to_num(tr.get("tap_pos", 0.0)))
                    auto = {"tap_base": float(grid.branch.tap[row]), "base_pos": pos,
                            "initial_pos": d.get("base_pos", pos),
                            "bus": int(net.bus.index[list(netmap.bus_lookup).index(int(grid.branch.to_bus[row]))]),
                            "tap_neutral": float(np.nan_to_num(tr.get("tap_neutral", 0.0))),
                            "tap_min": float(np.nan_to_num(tr.get("tap_min", -16))),
                            "tap_max": float(np.nan_to_num(tr.get("tap_max", 16))),
                            "tap_step_percent": float(np.nan_to_num(tr.get("tap_step_percent", 0.0))),
                            "hv_side": tr.get("tap_side") != "lv"}
                    for k, v in auto.items():
                        d.setdefault(k, v)
            for fname, f in dtype_.fields.items():
                v = d.get(fname, f.default)
                fpath = f"{path}.{fname}"
                if f.kind == "bus":
                    v = bus_of(v, fpath)
                elif f.kind == "series":
                    v = series_index(v, fpath)
                elif f.kind == "branch":
                    v = -1 if v is None else branch_of(v, fpath)[0]
                elif f.kind == "ext_grid":
                    if v is not None and not 0 <= v < len(netmap.ext_grid_index):
                        c.add(fpath, f"an external-grid index in [0, {len(netmap.ext_grid_index)})", v)
                    v = -1 if v is None else int(v)
                values[fname].append(v)
            owners.append(i)
            dnames.append(d.get("name", f"{tree_ids[i]}/{kind}{len(dnames)}"))
        groups.append(DeviceGroup(kind, tuple(dnames), dtype_.build(values), np.asarray(owners, np.int32)))

    # time axis and starts
    values = np.zeros((max(steps + 1, 1), 0))
    hour0 = 0.0
    if data is not None:
        from pgjax import profiles

        sel = profiles.select(data, series) if series else data
        if abs(sel.dt_h - dt_h) > 1e-12:
            try:
                sel = profiles.resample(sel, dt_h, method=pr.get("resample", "repeat"))
            except ValueError as e:
                c.add("time.dt_h", f"a step the profiles can be resampled to ({data.dt_h} h data)", f"{dt_h} ({e})")
        values = sel.values[:, :len(series)] if series else np.zeros((sel.values.shape[0], 0))
        hour0 = _hour0(data.start)
    n_steps = values.shape[0]
    if n_steps < steps + 1 and data is not None:
        c.add("time.episode_steps", f"at most {n_steps - 1} steps of profile data", steps)
    start = t.get("start", "day")
    last = max(n_steps - steps - 1, 0)
    if start == "any" or data is None:
        starts = np.arange(0, last + 1)
    elif start == "day":
        per_day = int(round(24 / dt_h))
        first = int(round(((24 - hour0) % 24) / dt_h))
        starts = np.arange(first, last + 1, max(per_day, 1))
    else:
        if start > last:
            c.add("time.start", f"a step index <= {last}", start)
        starts = np.array([min(int(start), last)])
    if not len(starts):
        starts = np.array([0])

    if c.problems:
        raise ScenarioError(source, c.problems)
    lim, rw = raw.get("limits", {}), raw.get("reward", {})
    pf = raw.get("powerflow", {})
    return Compiled(
        name=raw["name"], source=source, raw=raw, net=net, grid=grid, netmap=netmap,
        dtype=raw.get("dtype", "float64"), method=pf.get("method", "newton"),
        jacobian=pf.get("jacobian", "exact"), max_iter=int(pf.get("max_iter", 20)), dt_h=dt_h,
        episode_steps=steps, starts=starts.astype(np.int32), hour0=np.asarray(hour0),
        profiles=np.asarray(values, np.float64), series_names=tuple(series), price_col=price_col,
        flat_price=flat_price, load_series=load_series, sgen_series=sgen_series,
        load_scale=float(pr.get("load_scale", 1.0)), vm_min_pu=float(lim.get("vm_min_pu", 0.95)),
        vm_max_pu=float(lim.get("vm_max_pu", 1.05)),
        loading_max_percent=float(lim.get("loading_max_percent", 100.0)),
        penalty=float(rw.get("penalty", 100.0)), shared=bool(rw.get("shared", False)),
        reward_scale=float(rw.get("scale", 1.0)),
        centralized=bool(raw.get("observation", {}).get("centralized", False)),
        learned=raw.get("hierarchy", {}).get("learned", "grid"), tree_ids=tree_ids,
        tree_level=tree_level, tree_parent=tree_parent, bus_owner=bus_owner, groups=groups)


def _check_device_values(c: _Checker, kind: str, d: dict, path: str) -> None:
    """Physical consistency of one device's parameters."""
    def get(k, default=None):
        v = d.get(k, default)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    pairs = {"generator": [("p_min_mw", "p_max_mw")], "storage": [("e_min_mwh", "e_max_mwh")],
             "tap_changer": [("tap_min", "tap_max")]}
    for lo, hi in pairs.get(kind, []):
        a, b = get(lo, 0.0), get(hi)
        if b is not None and a is not None and a > b:
            c.add(f"{path}.{hi}", f"a number >= {lo} ({a})", b)
    for k in ("eta_charge", "eta_discharge"):
        v = get(k)
        if kind == "storage" and v is not None and not 0 < v <= 1:
            c.add(f"{path}.{k}", "an efficiency in (0, 1]", v)
    for k in ("p_max_mw", "s_max_mva", "e_max_mwh", "p_charge_max_mw", "p_discharge_max_mw"):
        v = get(k)
        if v is not None and v < 0:
            c.add(f"{path}.{k}", "a number >= 0", v)


def validate(name_or_path) -> list[str]:
    """Every problem of a scenario (structure, then network, data and device references)."""
    try:
        raw, source, overrides = load(name_or_path)
    except ScenarioError as e:
        return [p.format(e.source) for p in e.problems]
    try:
        compile_scenario(apply_overrides(raw, overrides))
    except ScenarioError as e:
        return [p.format(source) for p in e.problems]
    return []


for _path in sorted(SCENARIO_DIR.glob("*.yaml")):
    _raw = yaml.safe_load(_path.read_text())
    register(f"{_raw['name']}-v{_raw.get('version', 0)}", _path)
    for _variant, _over in (_raw.get("variants") or {}).items():
        register(f"{_variant}-v{_raw.get('version', 0)}", _path, **_over)

from pgjax import scenario_builders  # noqa: E402  (after the registry exists)

register("multi_microgrid_large-v0", scenario_builders.multi_microgrid)
register("multi_microgrid_xl-v0", scenario_builders.multi_microgrid_xl, large=True)  # 3,283 buses, 250 agents

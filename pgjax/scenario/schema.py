"""Validation of raw scenario mappings: every problem found, as (key path, expected, actual).

`validate_structure(raw)` checks shape, types and ranges without loading anything; the
compiler (`pgjax.scenario.compile`) adds the problems that need the network and the data
(bus names, profile columns). Device entries are checked against their type's declared
`fields`, then by the type's own `validate` hook (`pgjax.devices.base.DeviceType`, ranges
of its parameters), so a new device type needs no edit here.

Every number anywhere in the mapping must be finite with magnitude below `MAX_MAGNITUDE`
(float32 holds it); every integer field fits int32; counts, delays and step numbers that
size a buffer or a loop have their own bounds (`MAX_*`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from pgjax import devices as dev
from pgjax.devices.base import REQUIRED
from pgjax.devices.checks import NONNEGATIVE, POSITIVE, VOLTAGE_PU, Range
from pgjax.errors import PgjaxError, brief
from pgjax.scenario.specs import PER_AGENT_TIMING

LEVELS = ("system", "grid", "device")
AGENT_LEVELS = ("system", "grid")
TOP_KEYS = {"name", "version", "description", "variants", "network", "dtype", "powerflow", "time", "profiles",
            "limits", "reward", "observation", "hierarchy", "protocol", "communication", "agents"}
MAX_MAGNITUDE = 1e30  # any number in a scenario (float32 holds it, with room for products)
INT32 = Range(-2**31, 2**31 - 1)
MAX_ITER = 1000  # power-flow iterations, protocol iterations
MAX_DT_H = 24.0  # time.dt_h
MAX_EPISODE_STEPS = 10**6
MAX_DELAY_STEPS = 1000  # message / action / observation delays and jitter: they size ring buffers
MAX_TICK_STEPS = 10**6  # tick_interval, tick_offset
MAX_TEXT = 400  # characters of a value quoted in a problem
MAX_LISTED = 50  # problems a ScenarioError's message lists


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    expected: str
    actual: Any

    def format(self, source: str = "") -> str:
        where = f"{source}: " if source else ""
        return f"{where}{self.path}: expected {self.expected}, got {brief(self.actual, MAX_TEXT + 2)}"


class ScenarioError(PgjaxError):
    """A scenario has problems; `.problems` lists all of them (the message the first `MAX_LISTED`)."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join("  " + p.format(source) for p in self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        tail = f"\n  ... and {more} more (ScenarioError.problems, or pgjax validate, lists them all)" if more > 0 else ""
        super().__init__(f"scenario {source or '<dict>'} has {len(self.problems)} problem(s):\n{lines}{tail}")


def _tname(x) -> str:
    return {bool: "bool", int: "int", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(x), type(x).__name__)


class _Checker:
    """Collects problems while walking a raw scenario mapping."""

    def __init__(self):
        self.problems: list[Problem] = []

    def add(self, path, expected, actual):
        if isinstance(actual, (dict, list)):
            actual = brief(actual)
        elif isinstance(actual, str) and len(actual) > MAX_TEXT:
            actual = actual[:MAX_TEXT - 15] + f"... ({len(actual)} chars)"
        problem = Problem(path, expected, actual)
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

    def value(self, raw, key, kind, path, required=False, choices=None, within: Range | None = None):
        """`raw[key]` if it is a `kind` (in `choices`, in the range `within`), else None with a problem.

        Non-finite numbers return None without a problem here: `check_numbers` reports them.
        """
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
        if kind == "number" and not math.isfinite(v):
            return None
        if choices is not None and v not in choices:
            self.add(full, f"one of {list(choices)}", v)
            return None
        if kind == "int" and within is None:
            within = INT32
        if within is not None and v not in within:
            self.add(full, within.describe("an integer" if kind == "int" else "a number"), v)
            return None
        return v


def check_numbers(c: _Checker, node, path: str = "") -> None:
    """Every number in `node` (nested mappings and lists) finite, of magnitude < MAX_MAGNITUDE."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_numbers(c, v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_numbers(c, v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        if not (math.isfinite(node) and abs(node) < MAX_MAGNITUDE):
            c.add(path, f"a finite number of magnitude < {MAX_MAGNITUDE:g}", node)


# ------------------------------------------------------------------------------ sections

def _check_network(c: _Checker, raw: dict) -> None:
    net = raw.get("network")
    if net is None:
        c.add("network", "a network name, .json path, {builder, kwargs} or {opendss, commands} (required key missing)",
              None)
    elif isinstance(net, dict) and "opendss" in net:  # a three-phase feeder (pgjax.scenario.opendss_network)
        c.keys(net, {"opendss", "commands"}, "network")
        c.value(net, "opendss", "string", "network", required=True)
        if not isinstance(net.get("commands", []), list) or not all(isinstance(x, str) for x in net.get("commands", [])):
            c.add("network.commands", "a list of OpenDSS commands (strings)", net.get("commands"))
    elif isinstance(net, dict):
        c.keys(net, {"builder", "kwargs"}, "network")
        c.value(net, "builder", "string", "network", required=True)
        if "kwargs" in net and not isinstance(net["kwargs"], dict):
            c.add("network.kwargs", "a mapping", _tname(net["kwargs"]))
    elif not isinstance(net, str):
        c.add("network", "a string or a mapping", _tname(net))


def _check_solver_and_time(c: _Checker, raw: dict) -> None:
    from pgjax.powerflow import METHODS

    pf = c.section(raw, "powerflow")
    c.keys(pf, {"method", "jacobian", "max_iter"}, "powerflow")
    c.value(pf, "method", "string", "powerflow", choices=METHODS)
    c.value(pf, "jacobian", "string", "powerflow", choices=("exact", "chord"))
    c.value(pf, "max_iter", "int", "powerflow", within=Range(1, MAX_ITER))

    t = c.section(raw, "time", required=True)
    c.keys(t, {"dt_h", "episode_steps", "start"}, "time")
    c.value(t, "dt_h", "number", "time", within=Range(0, MAX_DT_H, lo_open=True))
    c.value(t, "episode_steps", "int", "time", required=True, within=Range(1, MAX_EPISODE_STEPS))
    start = t.get("start")
    if "start" in t and not (start in ("day", "any") or (
            isinstance(start, int) and not isinstance(start, bool) and start in INT32 and start >= 0)):
        c.add("time.start", f"'day', 'any' or a step index in [0, {INT32.hi}]", start)


def _check_profiles(c: _Checker, raw: dict) -> None:
    pr = c.section(raw, "profiles")
    c.keys(pr, {"train", "test", "split", "price", "loads", "sgens", "load_scale", "resample", "time_column",
                "data_dt_h"}, "profiles")
    c.value(pr, "time_column", "string", "profiles")
    c.value(pr, "data_dt_h", "number", "profiles", within=Range(0, MAX_DT_H, lo_open=True))
    if pr:
        c.value(pr, "train", "string", "profiles", required=True)
    c.value(pr, "test", "string", "profiles")
    c.value(pr, "split", "string", "profiles", choices=("train", "test"))
    if "price" in pr and not isinstance(pr["price"], (str, int, float)) or isinstance(pr.get("price"), bool):
        c.add("profiles.price", "a column name or a number ($/MWh)", pr["price"])
    c.value(pr, "load_scale", "number", "profiles", within=NONNEGATIVE)
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


def _check_objective(c: _Checker, raw: dict) -> None:
    """`limits`, `reward`, `observation` and `hierarchy`."""
    lim = c.section(raw, "limits")
    c.keys(lim, {"vm_min_pu", "vm_max_pu", "loading_max_percent", "vuf_max_percent"}, "limits")
    c.value(lim, "vuf_max_percent", "number", "limits", within=POSITIVE)
    lo = c.value(lim, "vm_min_pu", "number", "limits", within=Range(0.0, VOLTAGE_PU.hi))
    hi = c.value(lim, "vm_max_pu", "number", "limits", within=VOLTAGE_PU)
    if lo is not None and hi is not None and lo >= hi:
        c.add("limits.vm_max_pu", f"a number > limits.vm_min_pu ({lo})", hi)
    c.value(lim, "loading_max_percent", "number", "limits", within=POSITIVE)

    rw = c.section(raw, "reward")
    c.keys(rw, {"penalty", "shared", "scale"}, "reward")
    c.value(rw, "penalty", "number", "reward", within=NONNEGATIVE)
    c.value(rw, "shared", "bool", "reward")
    c.value(rw, "scale", "number", "reward", within=POSITIVE)

    ob = c.section(raw, "observation")
    c.keys(ob, {"centralized"}, "observation")
    c.value(ob, "centralized", "bool", "observation")

    hi_ = c.section(raw, "hierarchy")
    c.keys(hi_, {"learned"}, "hierarchy")
    c.value(hi_, "learned", "string", "hierarchy", choices=LEVELS)


def _check_agents(c: _Checker, raw: dict) -> list:
    """The `agents` list and their devices; returns the agent ids."""
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
    return ids


def _check_coordination(c: _Checker, raw: dict, ids: list) -> None:
    """The `protocol` and `communication` sections (see `pgjax.protocols.coordination`)."""
    from pgjax import protocols
    from pgjax.protocols.channels import JITTER_KINDS
    from pgjax.protocols.coupling import GRAPHS

    pr = c.section(raw, "protocol")
    options = {"graph", "price_min", "price_max", "iterations", "mechanism"}
    for kind in ("vertical", "horizontal"):
        if c.value(pr, kind, "string", "protocol", choices=protocols.scenario_names(kind)) is not None:
            options |= set(protocols.find(kind, pr[kind]).coupling.defaults)  # a plug-in's own options
    c.keys(pr, {"vertical", "horizontal", *options}, "protocol")
    c.value(pr, "graph", "string", "protocol", choices=GRAPHS)
    c.value(pr, "iterations", "int", "protocol", within=Range(1, MAX_ITER))
    c.value(pr, "mechanism", "string", "protocol", choices=("uniform", "pay_as_bid"))
    lo, hi = c.value(pr, "price_min", "number", "protocol"), c.value(pr, "price_max", "number", "protocol")
    if lo is not None and hi is not None and lo >= hi:
        c.add("protocol.price_max", f"a number > protocol.price_min ({lo})", hi)
    com = c.section(raw, "communication")
    c.keys(com, {"msg_delay", "loss_prob", "jitter", "jitter_kind", "randomize", *PER_AGENT_TIMING}, "communication")
    _check_randomize(c, c.section(com, "randomize", "communication"))
    p = c.value(com, "loss_prob", "number", "communication")
    if p is not None and not 0 <= p <= 1:
        c.add("communication.loss_prob", "a probability in [0, 1]", p)
    c.value(com, "jitter", "number", "communication", within=Range(0, MAX_DELAY_STEPS))
    c.value(com, "jitter_kind", "string", "communication", choices=JITTER_KINDS)
    bounds = {"tick_interval": Range(1, MAX_TICK_STEPS), "tick_offset": Range(0, MAX_TICK_STEPS),
              "msg_delay": Range(0, MAX_DELAY_STEPS), "act_delay": Range(0, MAX_DELAY_STEPS),
              "obs_delay": Range(0, MAX_DELAY_STEPS)}
    for key, allowed in bounds.items():
        spec = com.get(key)
        items = spec.items() if isinstance(spec, dict) else [(None, spec)] if key in com else []
        for aid, v in items:
            path = f"communication.{key}" + (f".{aid}" if aid is not None else "")
            if aid is not None and aid not in ids:
                c.add(path, f"one of the agent ids {ids}", aid)
            elif isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
                c.add(path, f"{allowed.describe('an integer')} (steps), or a mapping agent id -> integer", v)


RANDOMIZED = {"msg_delay": ("an integer", Range(0, MAX_DELAY_STEPS)), "loss_prob": ("a probability", Range(0, 1)),
              "jitter": ("a number", Range(0, MAX_DELAY_STEPS))}


def _check_randomize(c: _Checker, rnd: dict) -> None:
    """`communication.randomize`: `{msg_delay | loss_prob | jitter: [low, high]}`, drawn per episode."""
    c.keys(rnd, set(RANDOMIZED), "communication.randomize")
    for key, (what, allowed) in RANDOMIZED.items():
        if key not in rnd:
            continue
        v, path = rnd[key], f"communication.randomize.{key}"
        pair = isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        if not pair or (key == "msg_delay" and not all(isinstance(x, int) for x in v)):
            c.add(path, f"[low, high]: two of {what} (a range drawn per episode)", v)
        elif not (v[0] in allowed and v[1] in allowed):
            c.add(path, f"[low, high] within {allowed.describe(what)}", v)
        elif v[0] > v[1]:
            c.add(path, "[low, high] with low <= high", v)


def _check_variants(c: _Checker, raw: dict) -> None:
    """`variants`: name -> a mapping of overrides (the names of `OVERRIDE_PATHS` or sections)."""
    variants = c.section(raw, "variants")
    for name, over in variants.items():
        if not isinstance(over, dict):
            c.add(f"variants.{name}", "a mapping of overrides", _tname(over))
            continue
        c.keys(over, set(OVERRIDE_PATHS) | TOP_KEYS, f"variants.{name}")


def validate_structure(raw: dict) -> list[Problem]:
    """Problems of the mapping's shape and types (no network or data needed)."""
    c = _Checker()
    c.keys(raw, TOP_KEYS, "")
    c.value(raw, "name", "string", "", required=True)
    c.value(raw, "version", "int", "", within=Range(0, INT32.hi))
    c.value(raw, "description", "string", "")
    c.value(raw, "dtype", "string", "", choices=("float32", "float64"))
    _check_network(c, raw)
    _check_solver_and_time(c, raw)
    _check_profiles(c, raw)
    _check_objective(c, raw)
    ids = _check_agents(c, raw)
    _check_coordination(c, raw, ids)
    _check_variants(c, raw)
    check_numbers(c, raw)
    return c.problems


# ------------------------------------------------------------------------------- devices

def _field_problem(f, v) -> str | None:
    """What a YAML value `v` of field `f` should have been, or None if its type fits."""
    if f.kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
        return f"a number ({f.unit})" if f.unit else "a number"
    if f.kind == "int" and (isinstance(v, bool) or not isinstance(v, int) or v not in INT32):
        return INT32.describe("an integer")
    if f.kind == "bool" and not isinstance(v, bool):
        return "true or false"
    if f.kind == "bus" and (isinstance(v, bool) or not isinstance(v, (str, int))):
        return "a bus name or index"
    if f.kind == "series" and v is not None and not isinstance(v, str):
        return "a profile column name"
    if f.kind == "ext_grid" and v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        return "an external-grid index"
    if f.kind == "branch" and v is not None and not (
            isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("line", "trafo")
            and isinstance(next(iter(v.values())), (str, int))):
        return "{line: name|index} or {trafo: name|index}"
    return None


def _check_device_entry(c: _Checker, d: dict, path: str) -> None:
    """One device entry: its type, its fields' types and the type's own checks (ranges)."""
    kind = d.get("type")
    if kind is None:
        c.add(f"{path}.type", f"one of the device types {sorted(dev.REGISTRY)} (required key missing)", None)
        return
    if not isinstance(kind, str) or kind not in dev.REGISTRY:
        c.add(f"{path}.type", f"one of the device types {sorted(dev.REGISTRY)}", kind)
        return
    device_type = dev.get(kind)
    c.keys(d, set(device_type.fields) | {"type", "name"}, path)
    c.value(d, "name", "string", path)
    for fname, f in device_type.fields.items():
        full = f"{path}.{fname}"
        if fname not in d:
            if f.default is REQUIRED:
                c.add(full, f"{'a number' if f.kind == 'float' else 'a ' + f.kind} (required key missing)", None)
            continue
        expected = _field_problem(f, d[fname])
        if expected is not None:
            c.add(full, expected, d[fname])
    for problem in device_type.validate(d, path) if device_type.validate else ():
        c.add(*problem)


# ----------------------------------------------------------------------------- overrides

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

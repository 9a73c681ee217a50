"""The device map: which Modbus unit and registers carry each observed feature and each action.

    data = map_for_env(pgjax.make("multi_microgrid"), port=5020)    # generated from a scenario
    write_map("map.yaml", data)
    dmap = load_map("map.yaml")                                       # validated: DataError naming key paths

YAML layout (`format: pgjax-device-map/1`), one TCP server (`host`, `port`) with one Modbus
unit id per device (a gateway in front of several devices, as a plant controller has):

    devices:
      site:                              # unit 1: site meter and EMS values, heartbeat
        unit_id: 1
        kind: site
        measurements:                    # holding registers, read-only (the plant refuses writes)
          - {name: Seq, role: sequence, address: 0, dtype: uint16, sf: 0, unit: "", min: 0, max: 65534}
          - {name: V_36, feature: bus/36/vm_pu, address: 1, dtype: int16, sf: -4, unit: pu, min: 0.5, max: 1.5}
        heartbeat: {address: 1000, dtype: uint16}
      mg1_ess:
        unit_id: 3
        kind: storage
        model: ...                       # which SunSpec model it follows, and how
        measurements: [...]              # W, VAr, SoC ..., and {role: availability}
        setpoints:
          - {name: WSetPct, action: storage/mg1_ess/p_mw, address: 1001, dtype: int16, sf: -2,
             unit: "%", full_scale: 100, min: -100, max: 100, ramp_per_s: null, safe: default, default: 0}
        reversion_timeout: {address: 1000, dtype: uint16, sf: -2, unit: s, value: 5.0}

A measurement carries an observed feature (`feature`: an `ObservationSchema` key, in the
feature's unit) or a role: `sequence` (the plant's measurement counter, for staleness) or
`availability` (1 available, 0 not). `min` / `max` are plausibility limits: a reading
outside them (or NaN, SunSpec's "not implemented" value) is a fault, not an input.

A setpoint carries one action column (`action`: an `ActionSchema` key): the register holds
`action * full_scale` (by default percent, -100 .. 100 % for -1 .. 1), `min` / `max` bound
what the controller may write, `ramp_per_s` limits its change per second (null: none),
`safe` is what the controller writes when it cannot act (`default`: the device's safe
action `default`, e.g. zero storage power; `hold`: the last value written).

SunSpec conventions followed, and the simplifications:
- point names, scale factors (`*_SF`, `physical = raw * 10**sf`), "not implemented" values
  (0x8000 / 0xFFFF / NaN), immediate controls as percentages with a reversion timeout
  (model 123's `WMaxLimPct` / `OutPFSet` / `VArPct` with `*_RvrtTms`), storage power as a
  percentage (model 124's `OutWRte` / `InWRte`, here one signed `WSetPct`), a heartbeat;
- simplified: values in the feature's own unit (MW, Mvar, MWh, p.u.) instead of W, var,
  Wh, V (no nominal-voltage and unit-prefix scaling); the scale factor is fixed in the map,
  not read from a `*_SF` register; no `SunS` header or model ids, each unit's points are
  contiguous from address 0 (measurements) and 1000 (controls: the reversion timeout, then
  the setpoints, so one write refreshes both); the reversion timeout has
  a scale factor (-2: 10 ms steps) so that fast hardware-in-the-loop periods can use it;
- the site unit (bus voltages, price, clock features, profile values) stands for the
  site meter and the energy-management feeds a field controller gets from elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pgjax.deploy import registers
from pgjax.errors import DataError

FORMAT = "pgjax-device-map/1"
CONTROLS_BASE = 1000  # first control register of every unit
ROLES = ("sequence", "availability")
SAFE = ("default", "hold")
# SunSpec-like point names of pgjax features and actions (others keep the pgjax name)
MEASUREMENT_NAMES = {"p_mw": "W", "q_mvar": "VAr", "e_mwh": "StoredMWh", "p_avail_mw": "WAvail", "on": "St",
                     "import_mw": "TotW_import", "hours_in_state": "Hrs"}
SETPOINT_NAMES = {("storage", "p_mw"): "WSetPct", ("storage", "q_mvar"): "VArPct", "p_mw": "WSetPct",
                  "p_share": "WMaxLimPct", "q_mvar": "VArPct", "commit": "Conn"}
SUNSPEC_MODELS = {"storage": "SunSpec 103 (inverter) + 124 (storage), simplified",
                  "pv": "SunSpec 103 (inverter) + 123 (immediate controls), simplified",
                  "wind": "SunSpec 103 (inverter) + 123 (immediate controls), simplified",
                  "generator": "no SunSpec model (generic genset: 103-style measurements, 123-style controls)",
                  "pcc": "SunSpec 201 (meter), simplified", "site": "site meter and EMS feeds (no SunSpec model)",
                  "ems": "a microgrid controller's exchange setpoint input (no SunSpec model), written by the "
                         "microgrid's process with what its parent sent over the broker"}


@dataclasses.dataclass(frozen=True)
class Point:
    """A register point: `physical = raw * 10**sf`, `width(dtype)` registers from `address`."""

    name: str
    address: int
    dtype: str
    sf: int = 0
    unit: str = ""
    min: float = -math.inf
    max: float = math.inf

    @property
    def width(self) -> int:
        return registers.width(self.dtype)


@dataclasses.dataclass(frozen=True)
class Measurement(Point):
    feature: str | None = None  # observation key, or None for a role
    role: str | None = None  # "sequence" | "availability"


@dataclasses.dataclass(frozen=True)
class Setpoint(Point):
    action: str = ""  # action key
    full_scale: float = 100.0  # register value at action +1
    ramp_per_s: float | None = None
    safe: str = "default"
    default: float = 0.0  # safe action in [-1, 1] (the register holds default * full_scale)


@dataclasses.dataclass(frozen=True)
class Unit:
    name: str
    unit_id: int
    kind: str
    model: str
    measurements: tuple
    setpoints: tuple
    heartbeat: Point | None = None
    reversion_timeout: Point | None = None
    reversion_s: float = 0.0  # value written to the reversion-timeout register (0: none)

    def points(self) -> tuple:
        extra = tuple(p for p in (self.heartbeat, self.reversion_timeout) if p is not None)
        return self.measurements + self.setpoints + extra


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceMap:
    scenario: str
    host: str
    port: int
    units: tuple  # Unit

    def unit(self, name: str) -> Unit:
        return next(u for u in self.units if u.name == name)

    def measurement(self, feature: str) -> tuple[Unit, Measurement] | None:
        """The unit and measurement carrying observation key `feature`, None if unmapped."""
        return next(((u, m) for u in self.units for m in u.measurements if m.feature == feature), None)

    def setpoint(self, action: str) -> tuple[Unit, Setpoint] | None:
        return next(((u, s) for u in self.units for s in u.setpoints if s.action == action), None)

    def writable(self, unit_id: int) -> dict:
        """`address -> Point` of every register the controller may write on unit `unit_id`."""
        u = next((u for u in self.units if u.unit_id == unit_id), None)
        if u is None:
            return {}
        pts = u.setpoints + tuple(p for p in (u.heartbeat, u.reversion_timeout) if p is not None)
        return {p.address: p for p in pts}


# ------------------------------------------------------------------------- generation

def _int16_point(name, address, unit, lo, hi, **extra) -> dict:
    sf = registers.scale_factor_for(max(abs(lo), abs(hi)))
    return {"name": name, "address": address, "dtype": "int16", "sf": sf, "unit": unit,
            "min": float(lo), "max": float(hi), **extra}


def _plausible(feature) -> tuple[float, float]:
    """Generous plausibility limits of a device feature from its observation scale: offset +- 4 scales."""
    if feature.kind == "bus":
        return 0.5, 1.5
    span = 4.0 * max(abs(feature.scale), 1e-6)
    return feature.offset - span, feature.offset + span


def _dead_buses(env, observed: dict) -> set:
    """Observed bus features that read 0 p.u. at the start of an episode (de-energized buses: 0 is plausible)."""
    import jax
    import numpy as np

    _, state = env.reset(jax.random.PRNGKey(0))
    world = np.asarray(env.world_state(state, env.default_params), np.float64)
    schema = env.layout.observation
    return {k for k, f in observed.items() if f.kind == "bus" and f.decode(world[schema.position(k)]) == 0.0}


def map_for_env(env, host: str = "127.0.0.1", port: int = 5020, reversion_s: float = 5.0) -> dict:
    """The device map (YAML data) of an environment's learned agents: a site unit (unit 1) with
    every observed bus, time and profile feature, then one unit per device that an agent
    observes or controls (unit ids from 2, scenario order). Message features (protocols) have no
    device: the agents get them over the broker (`pgjax deploy --broker`, `pgjax.deploy.agents`).
    A message action (a parent's value for a child grid agent, e.g. an exchange setpoint) becomes
    the setpoint of the child's `<child>_ems` unit, which the child's process writes with what it
    received over the broker."""
    layout = env.layout
    observed = {f.key: f for a in range(layout.num_agents) for f in layout.observation.agent_features(a)}
    actions = [c for cols in layout.action.columns for c in cols]
    observed = {k: f for k, f in observed.items() if f.kind != "message"}  # they come over the broker
    site = [{"name": "Seq", "role": "sequence", "address": 0, "dtype": "uint16", "sf": 0, "unit": "",
             "min": 0.0, "max": 65534.0}]
    address = 1
    dead = _dead_buses(env, observed)
    for key, f in observed.items():
        if f.kind == "bus":
            lo = 0.0 if key in dead else 0.5
            site.append(_int16_point(f"V_{f.owner}", address, f.unit, lo, 1.5, feature=key))
            address += 1
        elif f.kind in ("time", "profile"):
            site.append({"name": f.name, "address": address, "dtype": "float32", "sf": 0, "unit": f.unit,
                         "min": -1e6, "max": 1e6, "feature": key})
            address += 2
    devices = {"site": {"unit_id": 1, "kind": "site", "model": SUNSPEC_MODELS["site"], "measurements": site,
                        "heartbeat": {"name": "Heartbeat", "address": CONTROLS_BASE, "dtype": "uint16"}}}
    unit_id = 2
    for g in layout.groups:
        for k, name in enumerate(g.names):
            feats = [f for f in observed.values() if f.kind == g.type and f.owner == name]
            cols = [c for c in actions if c.kind == g.type and c.target == name]
            if not feats and not cols:
                continue
            meas = []
            for i, f in enumerate(feats):
                lo, hi = _plausible(f)
                meas.append(_int16_point(MEASUREMENT_NAMES.get(f.name, f.name), i, f.unit, lo, hi, feature=f.key))
            meas.append({"name": "Avail", "role": "availability", "address": len(feats), "dtype": "uint16", "sf": 0,
                         "unit": "", "min": 0.0, "max": 1.0})
            entry = {"unit_id": unit_id, "kind": g.type, "model": SUNSPEC_MODELS.get(g.type, "no SunSpec model"),
                     "measurements": meas}
            if cols:
                a = cols[0].agent
                entry["setpoints"] = [
                    {"name": SETPOINT_NAMES.get((g.type, c.name), SETPOINT_NAMES.get(c.name, c.name)),
                     "action": c.key, "address": CONTROLS_BASE + 1 + i, "dtype": "int16", "sf": -2, "unit": "%",
                     "full_scale": 100.0, "min": -100.0, "max": 100.0, "ramp_per_s": None,
                     "safe": "hold" if g.type == "generator" else "default",
                     "default": float(layout.default_actions[layout.agents.index(a), c.column])}
                    for i, c in enumerate(cols)]
                entry["reversion_timeout"] = {"name": "RvrtTms", "address": CONTROLS_BASE, "dtype": "uint16",
                                              "sf": -2, "unit": "s", "value": float(reversion_s)}
            devices[str(name)] = entry
            unit_id += 1
    for c in (c for c in actions if c.kind == "message"):  # a parent's value for a child: the child's EMS input
        a = layout.agents.index(c.agent)
        devices[f"{str(c.target).lower()}_ems"] = {
            "unit_id": unit_id, "kind": "ems", "model": SUNSPEC_MODELS["ems"], "measurements": [],
            "setpoints": [{"name": "ExchSetPct", "action": c.key, "address": CONTROLS_BASE + 1, "dtype": "int16",
                           "sf": -2, "unit": "%", "full_scale": 100.0, "min": -100.0, "max": 100.0,
                           "ramp_per_s": None, "safe": "default", "default": float(layout.default_actions[a, c.column])}],
            "reversion_timeout": {"name": "RvrtTms", "address": CONTROLS_BASE, "dtype": "uint16", "sf": -2,
                                  "unit": "s", "value": float(reversion_s)}}
        unit_id += 1
    return {"format": FORMAT, "scenario": env.name, "host": host, "port": int(port), "devices": devices}


def write_map(path, data: dict) -> None:
    import yaml

    from pgjax.runio import write_atomic

    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


# ------------------------------------------------------------------------- validation

class _Problems:
    def __init__(self, source: str):
        self.source, self.items = source, []

    def add(self, path: str, expected: str, got) -> None:
        self.items.append(f"{path}: expected {expected}, got {got!r}")

    def raise_any(self) -> None:
        if self.items:
            more = f"\n  ... {len(self.items) - 20} more" if len(self.items) > 20 else ""
            raise DataError(f"{self.source}: {len(self.items)} problem(s) in the device map:\n  " +
                            "\n  ".join(self.items[:20]) + more)


def _number(p: _Problems, d: dict, key: str, path: str, default=None, integer=False):
    v = d.get(key, default)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or float(v).is_integer())
    if v is None and default is None and key in d:
        return None
    if not ok:
        p.add(f"{path}.{key}", "an integer" if integer else "a number", v)
        return default
    return int(v) if integer else float(v)


def _point(p: _Problems, d, path: str, cls, **fixed):
    if not isinstance(d, dict):
        p.add(path, "a mapping", d)
        return None
    dtype = d.get("dtype")
    if dtype not in registers.DTYPES:
        p.add(f"{path}.dtype", f"one of {list(registers.DTYPES)}", dtype)
        return None
    address = _number(p, d, "address", path, integer=True)
    if address is not None and not 0 <= address <= 65535 - registers.width(dtype) + 1:
        p.add(f"{path}.address", "a register address in [0, 65535]", address)
    sf = _number(p, d, "sf", path, default=0, integer=True)
    lo = _number(p, d, "min", path, default=-math.inf)
    hi = _number(p, d, "max", path, default=math.inf)
    if lo is not None and hi is not None and not lo < hi:
        p.add(f"{path}.min", f"min < max ({hi})", lo)
    if None not in (sf, lo, hi) and math.isfinite(lo) and math.isfinite(hi):
        r_lo, r_hi = registers.raw_range(dtype, sf)
        if lo < r_lo or hi > r_hi:
            p.add(f"{path}.min/max", f"limits a {dtype} register with sf {sf} can hold ({r_lo}, {r_hi})", (lo, hi))
    kwargs = {"name": str(d.get("name", path.rsplit(".", 1)[-1])), "address": address or 0, "dtype": dtype,
              "sf": sf or 0, "unit": str(d.get("unit", "")), "min": lo if lo is not None else -math.inf,
              "max": hi if hi is not None else math.inf, **fixed}
    return cls(**kwargs)


def _measurement(p, d, path):
    if isinstance(d, dict):
        feature, role = d.get("feature"), d.get("role")
        if (feature is None) == (role is None):
            p.add(path, "exactly one of 'feature' (an observation key) and 'role'",
                  {k: d.get(k) for k in ("feature", "role")})
        elif role is not None and role not in ROLES:
            p.add(f"{path}.role", f"one of {list(ROLES)}", role)
        elif feature is not None and (not isinstance(feature, str) or feature.count("/") != 2):
            p.add(f"{path}.feature", "an observation key 'kind/owner/name'", feature)
        return _point(p, d, path, Measurement, feature=feature, role=role)
    return _point(p, d, path, Measurement)


def _setpoint(p, d, path):
    if not isinstance(d, dict):
        return _point(p, d, path, Setpoint)
    action = d.get("action")
    if not isinstance(action, str) or action.count("/") != 2:
        p.add(f"{path}.action", "an action key 'kind/device/name'", action)
    full = _number(p, d, "full_scale", path, default=100.0)
    if full is not None and not full > 0:
        p.add(f"{path}.full_scale", "a number > 0", full)
    ramp = d.get("ramp_per_s")
    if ramp is not None and (_number(p, d, "ramp_per_s", path) or 0) <= 0:
        p.add(f"{path}.ramp_per_s", "null or a number > 0", ramp)
    safe = d.get("safe", "default")
    if safe not in SAFE:
        p.add(f"{path}.safe", f"one of {list(SAFE)}", safe)
    default = _number(p, d, "default", path, default=0.0)
    sp = _point(p, d, path, Setpoint, action=str(action), full_scale=full or 100.0,
                ramp_per_s=None if ramp is None else float(ramp), safe=str(safe), default=default or 0.0)
    if sp is not None and default is not None and full and not sp.min <= default * full <= sp.max:
        p.add(f"{path}.default", f"a safe action whose register value lies in [min, max] = [{sp.min}, {sp.max}]",
              default)
    for key in ("min", "max"):
        if sp is not None and full and abs(getattr(sp, key)) > full * (1 + 1e-9):
            p.add(f"{path}.{key}", f"a bound within +-full_scale ({full}: actions are in [-1, 1])", getattr(sp, key))
    return sp


def _overlaps(p: _Problems, unit: Unit, path: str) -> None:
    """Registers used twice, and point names used twice, in one unit."""
    taken, names = {}, set()
    for pt in unit.points():
        if pt.name in names:
            p.add(f"{path}.{pt.name}", "point names unique within the unit", pt.name)
        names.add(pt.name)
        for r in range(pt.address, pt.address + pt.width):
            if r in taken:
                p.add(f"{path}.{pt.name}.address", f"a register not used by {taken[r]!r}", pt.address)
                break
            taken[r] = pt.name


def parse_map(data, source: str = "device map") -> DeviceMap:
    """A validated `DeviceMap` from YAML data; every problem is listed in one `DataError` by key path."""
    p = _Problems(source)
    if not isinstance(data, dict):
        p.add("(top level)", "a mapping", type(data).__name__)
        p.raise_any()
    if data.get("format") != FORMAT:
        p.add("format", repr(FORMAT), data.get("format"))
    port = _number(p, data, "port", "", integer=True)
    if port is not None and not 0 <= port < 65536:
        p.add("port", "a TCP port in [0, 65535] (0: the plant lets the OS choose one)", port)
    devices = data.get("devices")
    if not isinstance(devices, dict) or not devices:
        p.add("devices", "a mapping of device name -> unit", devices)
        p.raise_any()
    units, ids = [], {}
    for name, d in devices.items():
        path = f"devices.{name}"
        if not isinstance(d, dict):
            p.add(path, "a mapping", d)
            continue
        uid = _number(p, d, "unit_id", path, integer=True)
        if uid is not None and not 1 <= uid <= 247:
            p.add(f"{path}.unit_id", "a Modbus unit id in [1, 247]", uid)
        elif uid in ids:
            p.add(f"{path}.unit_id", f"an id not used by {ids[uid]!r}", uid)
        ids[uid] = name
        meas = d.get("measurements", [])
        sets = d.get("setpoints", [])
        for key, value in (("measurements", meas), ("setpoints", sets)):
            if not isinstance(value, list):
                p.add(f"{path}.{key}", "a list", value)
        meas = tuple(m for i, x in enumerate(meas if isinstance(meas, list) else [])
                     if (m := _measurement(p, x, f"{path}.measurements[{i}]")) is not None)
        sets = tuple(s for i, x in enumerate(sets if isinstance(sets, list) else [])
                     if (s := _setpoint(p, x, f"{path}.setpoints[{i}]")) is not None)
        hb = _point(p, d["heartbeat"], f"{path}.heartbeat", Point) if "heartbeat" in d else None
        rv, rv_s = None, 0.0
        if "reversion_timeout" in d:
            rv = _point(p, d["reversion_timeout"], f"{path}.reversion_timeout", Point)
            rv_s = _number(p, d["reversion_timeout"], "value", f"{path}.reversion_timeout", default=0.0) or 0.0
            if rv is not None and not 0 <= rv_s <= registers.raw_range(rv.dtype, rv.sf)[1]:
                p.add(f"{path}.reversion_timeout.value", "seconds >= 0 that the register can hold", rv_s)
        unit = Unit(str(name), uid or 0, str(d.get("kind", "")), str(d.get("model", "")), meas, sets, hb, rv, rv_s)
        _overlaps(p, unit, path)
        units.append(unit)
    for key in ("feature", "action"):
        seen = {}
        for u in units:
            for pt in (u.measurements if key == "feature" else u.setpoints):
                k = getattr(pt, key)
                if k is not None and k in seen:
                    p.add(f"devices.{u.name}.{pt.name}.{key}", f"a {key} not mapped already by {seen[k]}", k)
                seen[k] = f"devices.{u.name}.{pt.name}"
    p.raise_any()
    return DeviceMap(str(data.get("scenario", "")), str(data.get("host", "127.0.0.1")),
                     502 if port is None else port, tuple(units))


def load_map(path) -> DeviceMap:
    """`parse_map` of a YAML file (`DataError` naming the file for unreadable YAML too)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: device map not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: not a readable YAML device map ({e})") from None
    return parse_map(data, str(path))


class WriteRefused(DataError):
    """A write the map does not allow (address not a writable point, partial point, value outside [min, max])."""


def check_write(dmap: DeviceMap, unit_id: int, address: int, values: list) -> list:
    """The writable points `values` (registers from `address` on unit `unit_id`) cover, each whole and
    within its [min, max]; anything else raises `WriteRefused` naming unit, address and value."""
    writable = dmap.writable(unit_id)
    covered, r = [], address
    while r < address + len(values):
        p = writable.get(r)
        if p is None or r + p.width > address + len(values):
            raise WriteRefused(f"write to unit {unit_id} address {r}: not a writable register of the device map "
                               f"(writable: {sorted(writable)[:8]})")
        covered.append(p)
        r += p.width
    for p in covered:
        v = registers.decode(values[p.address - address:p.address - address + p.width], p.dtype, p.sf)
        if math.isnan(v) or not p.min <= v <= p.max:
            raise WriteRefused(f"write to unit {unit_id} address {p.address} ({p.name}): value {v} outside "
                               f"[{p.min}, {p.max}]")
    return covered


def check_against_schema(dmap: DeviceMap, observation_keys: dict, action_keys: dict, source: str) -> None:
    """Every feature an exported agent observes has a measurement, every mapped action is one an agent
    has (`observation_keys` / `action_keys`: key -> agent names); a `DataError` lists what is missing."""
    p = _Problems(source)
    for key, agents in observation_keys.items():
        if dmap.measurement(key) is None:
            p.add(f"devices.*.measurements (feature {key}, observed by {agents})", "a measurement", None)
    for u in dmap.units:
        for i, s in enumerate(u.setpoints):
            if s.action not in action_keys:
                p.add(f"devices.{u.name}.setpoints[{i}].action", "an action of the exported agents", s.action)
    p.raise_any()

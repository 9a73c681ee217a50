"""The scenario compiler: a validated mapping resolved against its network and data.

`compile_scenario(name_or_raw, **overrides)` loads, applies overrides, validates the
structure (`pgjax.scenario.schema`), loads the network and the profiles, resolves every
reference (bus names, branches, profile columns) and returns a `Compiled` record of
host-side numpy arrays that `pgjax.env.Env` wraps. Device entries are completed by their
type's `complete` hook and built by its `fields` (`pgjax.devices.base.DeviceType`), so a
new device type needs no edit here.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np

from pgjax import devices as dev
from pgjax.errors import DataError, brief
from pgjax.scenario.registry import builder_of, load
from pgjax.scenario.schema import Problem, ScenarioError, _Checker, apply_overrides, validate_structure
from pgjax.scenario.specs import CommunicationSpec, ProfileSpec, ProtocolSpec

# The environment's dtype when neither the scenario nor the caller names one: float32 works
# whatever JAX's 64-bit mode (the training path's dtype); float64 only on request.
DEFAULT_DTYPE = "float32"
# Voltage-unbalance factor limit of three-phase networks when `limits` names none: IEC
# 61000-2-2's compatibility level for LV / MV networks, |V2| / |V1| in %.
VUF_MAX_PERCENT = 2.0


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
    protocol: ProtocolSpec
    communication: CommunicationSpec
    profile_spec: ProfileSpec  # the `profiles` section (`profiles` holds the compiled series)
    network: Any = None  # the Network (or opendss_network.Network3ph) compiled against
    vuf_max_percent: float = 2.0  # voltage-unbalance limit (three-phase networks), %


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """The network a scenario compiles against; device `complete` hooks read it.

    The compiler and the layout read a network only through the methods below, so a network
    of another kind (`pgjax.scenario.opendss_network.Network3ph`, a three-phase feeder whose
    buses are OpenDSS nodes) compiles the same way.
    """

    net: Any  # pandapower net
    grid: Any  # pgjax Grid converted from it
    netmap: Any  # pgjax.converters.pandapower NetMap: pandapower rows -> grid indices

    @property
    def n_bus(self) -> int:
        """Length of the env's bus axis (the grid's buses)."""
        return self.grid.n_bus

    @property
    def n_ext_grid(self) -> int:
        return len(self.netmap.ext_grid_index)

    def bus_names(self) -> list[str]:
        """`[n_net_bus]` name of each bus row of the network (YAML references match them)."""
        return [str(n) for n in self.net.bus.name.values]

    def bus_ids(self) -> list:
        """`[n_net_bus]` the index a YAML file may use instead of a name."""
        return list(self.net.bus.index)

    def bus_lookup(self) -> np.ndarray:
        """`[n_net_bus]` grid bus of each network bus row."""
        return np.asarray(self.netmap.bus_lookup)

    def bus_labels(self) -> list[str]:
        """`[n_bus]` owner names of the observed bus features: the pandapower bus index per grid bus."""
        index = list(np.asarray(self.netmap.bus_index))
        return [str(b) for b in index] + [f"pad{i}" for i in range(len(index), self.grid.n_bus)]

    def branch_to_bus(self) -> np.ndarray:
        """`[n_branch]` grid bus at the to end of each branch (whose owner is charged its overload)."""
        return np.asarray(self.grid.branch.to_bus)

    def element_names(self, kind: str) -> list:
        """Names of the grid's `"load"` or `"sgen"` entries, in grid order (profile rules match them)."""
        index = self.netmap.load_index if kind == "load" else self.netmap.sgen_index
        return list(self.net[kind].name.loc[index].values) if len(index) else []

    def branch_names(self, kind: str) -> list:
        """Names of the network's `"line"` or `"trafo"` rows (for error messages)."""
        return list(self.net[kind].name.astype(str).values)

    def branch(self, ref: dict) -> tuple[int, str, Any] | None:
        """`(grid branch row, "line" | "trafo", pandapower index)` of `{line|trafo: name|index}`; None if absent."""
        kind, key = next(iter(ref.items()))
        table = self.net[kind]
        if isinstance(key, str):
            rows = np.flatnonzero(table.name.astype(str).values == key)
            if not len(rows):
                return None
            pos = int(rows[0])
        else:
            if key not in set(table.index):
                return None
            pos = int(np.flatnonzero(table.index.values == key)[0])
        return int(self.netmap.branch_rows[kind][pos]), kind, table.index[pos]


class _Resolver:
    """Resolves YAML references (buses, branches, profile columns), collecting problems in `c`."""

    def __init__(self, c: _Checker, network: Network, data):
        self.c, self.network, self.data = c, network, data
        self.series: list[str] = []  # the profile columns used, in first-use order
        self.bus_names = network.bus_names()
        self.bus_pos = {idx: i for i, idx in enumerate(network.bus_ids())}
        self.name_pos = {}
        for i, n in enumerate(self.bus_names):
            self.name_pos.setdefault(n, i)

    def series_index(self, col, path) -> int:
        if col is None or self.data is None:
            return -1
        names = self.data.names
        if col not in names:
            close = [n for n in names if n.split("_")[0] == str(col).split("_")[0]][:8]
            self.c.add(path, f"a column of the profiles (e.g. {close or list(names[:8])})", col)
            return -1
        if col not in self.series:
            self.series.append(col)
        return self.series.index(col)

    def rules(self, rules, element_names, path) -> np.ndarray:
        """`[n]` column per element: the first `(match, series)` rule whose pattern matches its name."""
        out = np.full(len(element_names), -1, np.int32)
        for i, n in enumerate(element_names):
            for j, (match, series) in enumerate(rules):
                if fnmatch.fnmatchcase(str(n), match):
                    out[i] = self.series_index(series, f"{path}[{j}].series")
                    break
        return out

    def bus(self, ref, path) -> int:
        lookup = self.network.bus_lookup()
        if isinstance(ref, int) and not isinstance(ref, bool):
            if ref not in self.bus_pos:
                self.c.add(path, f"a bus index of the network (0..{max(self.bus_pos)})", ref)
                return 0
            return int(lookup[self.bus_pos[ref]])
        if ref not in self.name_pos:
            last_word = (str(ref).split() or [""])[-1]
            close = [n for n in self.bus_names if last_word and fnmatch.fnmatchcase(n, f"*{last_word}*")][:6]
            self.c.add(path, f"a bus name of the network (e.g. {close or self.bus_names[:6]})", ref)
            return 0
        return int(lookup[self.name_pos[ref]])

    def branch(self, ref, path) -> int:
        hit = self.network.branch(ref)
        if hit is not None:
            return hit[0]
        kind, key = next(iter(ref.items()))
        if isinstance(key, str):
            self.c.add(path, f"a {kind} name of the network (e.g. {self.network.branch_names(kind)[:6]})", key)
        else:
            self.c.add(path, f"a {kind} index of the network", key)
        return 0

    def field(self, f, v, path):
        """The compiled value of one device field (references become indices, -1 for none)."""
        if f.kind == "bus":
            return self.bus(v, path)
        if f.kind == "series":
            return self.series_index(v, path)
        if f.kind == "branch":
            return -1 if v is None else self.branch(v, path)
        if f.kind == "ext_grid":
            n = self.network.n_ext_grid
            if v is not None and not 0 <= v < n:
                self.c.add(path, f"an external-grid index in [0, {n})", v)
                return -1
            return -1 if v is None else int(v)
        return v


def _resolve_network(spec, source: str):
    from pgjax import networks

    if isinstance(spec, dict):
        import pandapower.networks as pn

        from pgjax.scenario import builders  # noqa: F811  (the builder a YAML file names)

        builder = getattr(builders, spec["builder"], None) or getattr(pn, spec["builder"])
        return builder(**spec.get("kwargs", {}))
    return networks.load(str(_data_path(spec, source)) if spec.endswith(".json") else spec)


def _data_path(name: str, source: str) -> Path:
    """A data file's path as written, or relative to the scenario file's folder where it is found there."""
    path = Path(name)
    if not path.is_absolute() and source.endswith((".yaml", ".yml")) and (Path(source).parent / path).exists():
        return Path(source).parent / path
    return path


def _load_data(c: _Checker, spec: ProfileSpec, dt_h: float, source: str):
    """The profile dataset the episodes draw from (None without profiles or on a problem).

    A CSV file is read with the section's `time_column` and `data_dt_h` (neither: one row
    per scenario step, `dt_h`).
    """
    from pgjax import profiles

    if spec.train is None:
        return None
    key = f"profiles.{'test' if spec.dataset == spec.test and spec.split == 'test' else 'train'}"
    if not spec.dataset.endswith(".csv"):
        if spec.dataset not in profiles.DATASETS:
            c.add(key, f"a shipped dataset {profiles.datasets()} or a .csv file", spec.dataset)
            return None
        return profiles.load(spec.dataset)
    data_dt_h = spec.data_dt_h if spec.data_dt_h is not None or spec.time_column else dt_h
    try:
        return profiles.from_csv(_data_path(spec.dataset, source), time_column=spec.time_column, dt_h=data_dt_h)
    except (DataError, OSError) as e:
        c.add(key, "a readable CSV file of profiles", str(e))
        return None


def _bus_owner(r: _Resolver, agents: list, tree_parent: np.ndarray) -> np.ndarray:
    """`[n_bus]` tree index of the agent owning each bus (the first root by default)."""
    roots = [i for i, p in enumerate(tree_parent) if p < 0]
    bus_owner = np.full(r.network.n_bus, roots[0] if roots else 0, np.int32)
    lookup = r.network.bus_lookup()
    for i, a in enumerate(agents):
        for j, pat in enumerate(a.get("buses", [])):
            if isinstance(pat, int):
                bus_owner[r.bus(pat, f"agents[{i}].buses[{j}]")] = i
                continue
            hits = [k for k, n in enumerate(r.bus_names) if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                r.c.add(f"agents[{i}].buses[{j}]", "a pattern matching at least one bus name", pat)
            for k in hits:
                bus_owner[lookup[k]] = i
    return bus_owner


def _device_group(r: _Resolver, kind: str, entries: list, tree_ids: tuple) -> DeviceGroup:
    """The devices of one type: `entries` are `(agent index, device index, YAML entry)`."""
    device_type = dev.get(kind)
    values = {f: [] for f in device_type.fields}
    owners, names = [], []
    for i, j, d in entries:
        path = f"agents[{i}].devices[{j}]"
        d = dict(d)
        if device_type.complete is not None:
            for fname, f in device_type.fields.items():  # report bad references before the hook reads them
                if f.kind == "branch" and d.get(fname) is not None:
                    r.branch(d[fname], f"{path}.{fname}")
            d = device_type.complete(d, r.network)
        for fname, f in device_type.fields.items():
            values[fname].append(r.field(f, d.get(fname, f.default), f"{path}.{fname}"))
        owners.append(i)
        names.append(d.get("name", f"{tree_ids[i]}/{kind}{len(names)}"))
    return DeviceGroup(kind, tuple(names), device_type.build(values), np.asarray(owners, np.int32))


def _device_groups(r: _Resolver, agents: list, tree_ids: tuple) -> list:
    """One `DeviceGroup` per device type present, in registry order."""
    entries: dict[str, list] = {}
    for i, a in enumerate(agents):
        for j, d in enumerate(a.get("devices", [])):
            if d is not None:  # None: an entry `validate` left out (its problems are reported already)
                entries.setdefault(d["type"], []).append((i, j, d))
    return [_device_group(r, kind, entries[kind], tree_ids) for kind in sorted(entries, key=list(dev.REGISTRY).index)]


def _profile_values(r: _Resolver, dt_h: float, spec: ProfileSpec) -> tuple[np.ndarray, float]:
    """`([n_steps, n_series] values of the used columns at step dt_h, hour of day of step 0)`."""
    from pgjax import profiles

    data, series = r.data, r.series
    sel = profiles.select(data, series) if series else data
    if abs(sel.dt_h - dt_h) > 1e-12:
        try:
            sel = profiles.resample(sel, dt_h, method=spec.resample)
        except ValueError as e:
            r.c.add("time.dt_h", f"a step the profiles can be resampled to ({data.dt_h} h data)", f"{dt_h} ({e})")
    values = sel.values[:, :len(series)] if series else np.zeros((sel.values.shape[0], 0))
    return values, profiles.start_hour(data.start)


def _starts(c: _Checker, start, n_steps: int, steps: int, dt_h: float, hour0: float, has_data: bool) -> np.ndarray:
    """Allowed episode start steps for `time.start` (`day`: every local midnight, `any`, or one index)."""
    if n_steps < steps + 1 and has_data:
        c.add("time.episode_steps", f"at most {n_steps - 1} steps of profile data", steps)
    last = max(n_steps - steps - 1, 0)
    if start == "any" or not has_data:
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
    return starts.astype(np.int32)


def made_raw(name_or_raw, overrides: dict) -> tuple[dict, str]:
    """`(raw mapping, source)` as `make(name_or_raw, **overrides)` compiles it: a builder's own
    keyword arguments passed to it, then the registry variant and the other overrides applied
    (not validated)."""
    builder = builder_of(name_or_raw)
    accepted = inspect.signature(builder).parameters if builder else {}
    rest = dict(overrides)
    raw, source, reg_overrides = load(name_or_raw, **{k: rest.pop(k) for k in list(rest) if k in accepted})
    return apply_overrides(raw, {**reg_overrides, **rest}), source


def _load(name_or_raw, overrides: dict) -> tuple[dict, str]:
    """The raw mapping with registry and call overrides applied, structurally valid, and its source."""
    raw, source = made_raw(name_or_raw, overrides)
    problems = validate_structure(raw)
    if problems:
        raise ScenarioError(source, problems)
    return raw, source


def _network(raw: dict, source: str) -> Network:
    from pgjax.converters.pandapower import from_pandapower

    def problem(expected, e):
        spec = brief(raw["network"]) if not isinstance(raw["network"], str) else raw["network"]
        text = str(e) if spec in str(e) else f"{spec}: {e}"
        return ScenarioError(source, [Problem("network", expected, text)])

    if isinstance(raw["network"], dict) and "opendss" in raw["network"]:
        from pgjax.scenario.opendss_network import load_network3ph

        try:
            return load_network3ph(raw["network"], source)
        except Exception as e:  # noqa: BLE001 (DataError / InputError name the file, element or line)
            raise problem("an OpenDSS feeder pgjax can convert", e) from None
    try:
        net = _resolve_network(raw["network"], source)
    except Exception as e:  # noqa: BLE001 (report any failure as a problem)
        raise problem("a loadable network", e) from None
    try:
        return Network(net, *from_pandapower(net))
    except ValueError as e:  # DataError / UnsupportedElementError: table, row, column and value
        raise problem("a network pgjax can convert", e) from None


def compile_scenario(name_or_raw, **overrides) -> Compiled:
    """Validate and resolve a scenario; raise `ScenarioError` listing every problem."""
    raw, source = _load(name_or_raw, overrides)
    return _compile(raw, source)


def _compile(raw: dict, source: str) -> Compiled:
    """`Compiled` of a structurally valid mapping (device entries may be None: skipped)."""
    network = _network(raw, source)
    c = _Checker()
    spec = ProfileSpec.from_raw(raw.get("profiles", {}))
    r = _Resolver(c, network, _load_data(c, spec, float(raw["time"].get("dt_h", 1.0)), source))

    price_col, flat_price = -1, 0.0
    if isinstance(spec.price, str):
        price_col = r.series_index(spec.price, "profiles.price")
    elif spec.price is not None:
        flat_price = float(spec.price)
    load_series = r.rules(spec.loads, network.element_names("load"), "profiles.loads")
    sgen_series = r.rules(spec.sgens, network.element_names("sgen"), "profiles.sgens")

    agents = raw["agents"]
    tree_ids = tuple(a["id"] for a in agents)
    tree_parent = np.array([tree_ids.index(a["parent"]) if a.get("parent") else -1 for a in agents], np.int32)
    bus_owner = _bus_owner(r, agents, tree_parent)
    groups = _device_groups(r, agents, tree_ids)

    t = raw["time"]
    dt_h, steps = float(t.get("dt_h", 1.0)), int(t["episode_steps"])
    values, hour0 = np.zeros((max(steps + 1, 1), 0)), 0.0
    if r.data is not None:
        values, hour0 = _profile_values(r, dt_h, spec)
    starts = _starts(c, t.get("start", "day"), values.shape[0], steps, dt_h, hour0, r.data is not None)
    if c.problems:
        raise ScenarioError(source, c.problems)
    lim, rw, pf = raw.get("limits", {}), raw.get("reward", {}), raw.get("powerflow", {})
    return Compiled(
        name=raw["name"], source=source, net=network.net, grid=network.grid, netmap=network.netmap,
        dtype=raw.get("dtype", DEFAULT_DTYPE), method=pf.get("method", "newton"),
        jacobian=pf.get("jacobian", "exact"), max_iter=int(pf.get("max_iter", 20)), dt_h=dt_h,
        episode_steps=steps, starts=starts, hour0=np.asarray(hour0),
        profiles=np.asarray(values, np.float64), series_names=tuple(r.series), price_col=price_col,
        flat_price=flat_price, load_series=load_series, sgen_series=sgen_series,
        load_scale=spec.load_scale, vm_min_pu=float(lim.get("vm_min_pu", 0.95)),
        vm_max_pu=float(lim.get("vm_max_pu", 1.05)),
        loading_max_percent=float(lim.get("loading_max_percent", 100.0)),
        penalty=float(rw.get("penalty", 100.0)), shared=bool(rw.get("shared", False)),
        reward_scale=float(rw.get("scale", 1.0)),
        centralized=bool(raw.get("observation", {}).get("centralized", False)),
        learned=raw.get("hierarchy", {}).get("learned", "grid"), tree_ids=tree_ids,
        tree_level=tuple(a["level"] for a in agents), tree_parent=tree_parent, bus_owner=bus_owner,
        groups=groups, protocol=ProtocolSpec.from_raw(raw.get("protocol", {})),
        communication=CommunicationSpec.from_raw(raw.get("communication", {})), profile_spec=spec, network=network,
        vuf_max_percent=float(lim.get("vuf_max_percent", VUF_MAX_PERCENT)))


_KEY = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path_keys(path: str) -> list:
    """`'agents[1].devices[0].bus'` -> `['agents', 1, 'devices', 0, 'bus']`."""
    return [int(i) if i else name for name, i in _KEY.findall(path)]


def _target(keys: list) -> list:
    """What to leave out for a problem at `keys`: a device entry, else the key (a list holding it, whole)."""
    head, rest = ([], keys)
    if keys[:1] == ["agents"] and len(keys) >= 2 and isinstance(keys[1], int):
        if len(keys) >= 4 and keys[2] == "devices" and isinstance(keys[3], int):
            return keys[:4]
        head, rest = keys[:2], keys[2:]
    cut = next((k for k, key in enumerate(rest) if isinstance(key, int)), len(rest))
    return head + rest[:cut]


def _prune(raw: dict, problems: list[Problem]) -> dict | None:
    """`raw` without what `problems` name, so the compiler can check the rest; None if it cannot.

    A device entry with a problem becomes None (skipped, so later entries keep their
    index); any other key with a problem is removed; the result must pass
    `validate_structure` (it does not when a required key was removed).
    """
    pruned = copy.deepcopy(raw)
    for p in problems:
        *parents, last = _target(_path_keys(p.path)) or [None]
        node = pruned
        for key in parents:
            ok = isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and key < len(node)
            node = node[key] if ok else None
        if isinstance(node, dict) and last in node:
            del node[last]
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = None
    check = copy.deepcopy(pruned)
    for a in check.get("agents") if isinstance(check.get("agents"), list) else []:
        if isinstance(a, dict) and isinstance(a.get("devices"), list):
            a["devices"] = [d for d in a["devices"] if d is not None]
    return pruned if not validate_structure(check) else None


def validate(name_or_path) -> list[str]:
    """Every problem of a scenario that can be found: structure and ranges, then (for the
    parts without a structure problem) network, data and device references."""
    try:
        raw, source, overrides = load(name_or_path)
    except ScenarioError as e:
        return [p.format(e.source) for p in e.problems]
    raw = apply_overrides(raw, overrides)
    problems = validate_structure(raw)
    pruned = _prune(raw, problems) if problems else raw
    if pruned is not None:
        try:
            _compile(pruned, source)
        except ScenarioError as e:
            problems += [p for p in e.problems if p not in problems]
        problems += [p for p in _other_split(pruned, source) if p not in problems]
    return [p.format(source) for p in problems]


def _other_split(raw: dict, source: str) -> list[Problem]:
    """Problems reading the profiles of the split the episodes do not draw from (a CSV file of
    `profiles.test` is read only when evaluating otherwise)."""
    spec = ProfileSpec.from_raw(raw.get("profiles", {}))
    other = dataclasses.replace(spec, split="test" if spec.split == "train" else "train")
    if spec.test is None or other.dataset == spec.dataset:
        return []
    c = _Checker()
    _load_data(c, other, float(raw["time"].get("dt_h", 1.0)), source)
    return c.problems

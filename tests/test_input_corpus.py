"""A corpus of malformed inputs at the file edges: scenario YAML (ranges, containers, hostile
files), CSV profiles, pandapower network JSON files and tables, and every `pgjax` command's
arguments. Each case asserts the error class and that the message names the offending item
(key path, file, table / row / column, argument) and, where there is one, the value.

Together with `tests/test_api_edges.py` (arrays at the API edge: power flow, env, shim) and
`tests/commands/test_run_folders.py` (checkpoints, metrics, config files) this is the
issue-12 corpus. Nothing here compiles a JAX program: scenario problems are found before
the environment is built, network tables before the power flow, command arguments before
any work starts.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import pandapower as pp
import pandapower.networks as pn
import pytest
import yaml

from pgjax import networks, profiles, scenario
from pgjax.cli import main as cli_main
from pgjax.converters.pandapower import from_pandapower
from pgjax.errors import DataError

from conftest import SMALL_SCENARIO

# ------------------------------------------------------------------------------ scenarios

GOOD = {**copy.deepcopy(SMALL_SCENARIO), "name": "corpus"}
GOOD["profiles"].pop("test")  # the training data only
NAN, INF = float("nan"), float("inf")
GEN = {"type": "generator", "name": "dg", "bus": 4, "p_min_mw": 0.1, "p_max_mw": 1.0, "s_max_mva": 1.2}
SHUNT = {"type": "shunt", "name": "cap", "bus": 5, "q_step_mvar": 0.1, "max_step": 4}
TAP = {"type": "tap_changer", "name": "oltc", "branch": {"line": 0}}
CURT = {"type": "curtailable_load", "name": "dr", "bus": 6, "p_nom_mw": 0.2}
SHIFT = {"type": "shiftable_load", "name": "ev", "bus": 7, "p_max_mw": 0.2, "e_daily_mwh": 1.0}


def _set(raw: dict, path: str, value) -> None:
    """Set `raw` at a dotted path with `[i]` list indices (missing mappings are created)."""
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    node = raw
    for k in keys[:-1]:
        node = node[k] if isinstance(k, int) else node.setdefault(k, {})
    node[keys[-1]] = value


def _device(extra: dict):
    """A change that adds a device entry to agent A (it becomes `agents[1].devices[2]`)."""
    return lambda raw: raw["agents"][1]["devices"].append(copy.deepcopy(extra))


D = "agents[1].devices[0]"  # the storage
PV = "agents[1].devices[1]"
NEW = "agents[1].devices[2]"  # a device added by _device
PCC = "agents[0].devices[0]"

# (id, {path: value} or a callable changing the raw mapping, reported key path, fragment of `expected`)
RANGES = [
    ("dt_nan", {"time.dt_h": NAN}, "time.dt_h", "finite"),
    ("dt_inf", {"time.dt_h": INF}, "time.dt_h", "finite"),
    ("dt_zero", {"time.dt_h": 0}, "time.dt_h", "(0, 24]"),
    ("dt_two_days", {"time.dt_h": 48}, "time.dt_h", "(0, 24]"),
    ("episode_zero", {"time.episode_steps": 0}, "time.episode_steps", "[1, 1000000]"),
    ("episode_wraps_int32", {"time.episode_steps": 2**40}, "time.episode_steps", "[1, 1000000]"),
    ("start_negative", {"time.start": -1}, "time.start", "step index"),
    ("start_wraps_int32", {"time.start": 2**40}, "time.start", "step index"),
    ("max_iter_zero", {"powerflow.max_iter": 0}, "powerflow.max_iter", "[1, 1000]"),
    ("max_iter_huge", {"powerflow.max_iter": 10**9}, "powerflow.max_iter", "[1, 1000]"),
    ("vm_min_above_max", {"limits.vm_min_pu": 1.1, "limits.vm_max_pu": 1.0}, "limits.vm_max_pu", "vm_min_pu"),
    ("vm_max_zero", {"limits.vm_max_pu": 0.0}, "limits.vm_max_pu", "(0, 2]"),
    ("vm_max_unphysical", {"limits.vm_max_pu": 5.0}, "limits.vm_max_pu", "(0, 2]"),
    ("vm_min_nan", {"limits.vm_min_pu": NAN}, "limits.vm_min_pu", "finite"),
    ("loading_zero", {"limits.loading_max_percent": 0}, "limits.loading_max_percent", "> 0"),
    ("penalty_negative", {"reward.penalty": -1.0}, "reward.penalty", ">= 0"),
    ("penalty_inf", {"reward.penalty": INF}, "reward.penalty", "finite"),
    ("reward_scale_zero", {"reward.scale": 0.0}, "reward.scale", "> 0"),
    ("reward_scale_nan", {"reward.scale": NAN}, "reward.scale", "finite"),
    ("load_scale_negative", {"profiles.load_scale": -0.5}, "profiles.load_scale", ">= 0"),
    ("flat_price_nan", {"profiles.price": NAN}, "profiles.price", "finite"),
    ("data_dt_zero", {"profiles.data_dt_h": 0}, "profiles.data_dt_h", "(0, 24]"),
    ("loss_prob_above_1", {"communication.loss_prob": 1.5}, "communication.loss_prob", "[0, 1]"),
    ("loss_prob_nan", {"communication.loss_prob": NAN}, "communication.loss_prob", "finite"),
    ("msg_delay_huge_buffer", {"communication.msg_delay": 10**9}, "communication.msg_delay", "[0, 1000]"),
    ("msg_delay_negative", {"communication.msg_delay": -1}, "communication.msg_delay", "[0, 1000]"),
    ("jitter_huge_buffer", {"communication.jitter": 1e9}, "communication.jitter", "[0, 1000]"),
    ("tick_interval_zero", {"communication.tick_interval": 0}, "communication.tick_interval", "[1, 1000000]"),
    ("act_delay_per_agent_wraps", {"communication.act_delay": {"A": 2**31}}, "communication.act_delay.A", "[0, 1000]"),
    ("obs_delay_text", {"communication.obs_delay": "two"}, "communication.obs_delay", "integer"),
    ("delay_unknown_agent", {"communication.msg_delay": {"nobody": 1}}, "communication.msg_delay.nobody", "agent ids"),
    ("protocol_iterations_huge", {"protocol.iterations": 10**6}, "protocol.iterations", "[1, 1000]"),
    ("price_min_above_max", {"protocol.price_min": 10.0, "protocol.price_max": 5.0}, "protocol.price_max", "price_min"),
    ("version_negative", {"version": -1}, "version", "[0, 2147483647]"),
    ("ess_zero_capacity", {f"{D}.e_max_mwh": 0.0}, f"{D}.e_max_mwh", "> 0"),
    ("ess_negative_capacity", {f"{D}.e_max_mwh": -1.0}, f"{D}.e_max_mwh", "> 0"),
    ("ess_soc_above_1", {f"{D}.soc_init_min": 1.5, f"{D}.soc_init_max": 1.6}, f"{D}.soc_init_min", "[0, 1]"),
    ("ess_soc_negative", {f"{D}.soc_init_max": -0.1}, f"{D}.soc_init_max", "[0, 1]"),
    ("ess_soc_min_above_max", {f"{D}.soc_init_min": 0.9, f"{D}.soc_init_max": 0.2}, f"{D}.soc_init_max", "soc_init_min"),
    ("ess_efficiency_zero", {f"{D}.eta_discharge": 0.0}, f"{D}.eta_discharge", "(0, 1]"),
    ("ess_e_min_above_max", {f"{D}.e_min_mwh": 2.0}, f"{D}.e_max_mwh", "e_min_mwh"),
    ("ess_power_nan", {f"{D}.p_charge_max_mw": NAN}, f"{D}.p_charge_max_mw", "finite"),
    ("ess_degradation_negative", {f"{D}.degradation_cost_per_mwh": -5.0}, f"{D}.degradation_cost_per_mwh", ">= 0"),
    ("pv_negative_capacity", {f"{PV}.p_max_mw": -1.0}, f"{PV}.p_max_mw", ">= 0"),
    ("pv_rating_inf", {f"{PV}.s_max_mva": INF}, f"{PV}.s_max_mva", "finite"),
    ("pv_curtailment_cost_negative", {f"{PV}.curtailment_cost_per_mwh": -1.0}, f"{PV}.curtailment_cost_per_mwh", ">= 0"),
    ("pcc_discount_above_1", {f"{PCC}.sell_discount": 1.5}, f"{PCC}.sell_discount", "[0, 1]"),
    ("pcc_direction_2", {f"{PCC}.direction": 2.0}, f"{PCC}.direction", "+1 or -1"),
    ("pcc_import_limit_negative", {f"{PCC}.import_max_mw": -1.0}, f"{PCC}.import_max_mw", ">= 0"),
    ("gen_p_min_above_max", _device({**GEN, "p_min_mw": 2.0}), f"{NEW}.p_max_mw", "p_min_mw"),
    ("gen_q_min_above_max", _device({**GEN, "q_min_mvar": 1.0, "q_max_mvar": -1.0}), f"{NEW}.q_max_mvar", "q_min_mvar"),
    ("gen_ramp_negative", _device({**GEN, "ramp_up_mw_per_h": -1.0}), f"{NEW}.ramp_up_mw_per_h", ">= 0"),
    ("gen_p_above_rating", _device({**GEN, "s_max_mva": 0.5}), f"{NEW}.s_max_mva", "p_max_mw"),
    ("gen_cost_huge", _device({**GEN, "cost_b_per_mwh": 1e300}), f"{NEW}.cost_b_per_mwh", "magnitude"),
    ("shunt_steps_huge", _device({**SHUNT, "max_step": 10**9}), f"{NEW}.max_step", "[0, 1000]"),
    ("shunt_steps_wrap_int32", _device({**SHUNT, "initial_step": 2**40}), f"{NEW}.initial_step", "integer in"),
    ("shunt_initial_above_max", _device({**SHUNT, "initial_step": 9}), f"{NEW}.max_step", "initial_step"),
    ("tap_min_above_max", _device({**TAP, "tap_min": 5.0, "tap_max": -5.0}), f"{NEW}.tap_max", "tap_min"),
    ("tap_band_inverted", _device({**TAP, "v_low_pu": 1.05, "v_high_pu": 0.95}), f"{NEW}.v_high_pu", "v_low_pu"),
    ("tap_step_negative", _device({**TAP, "tap_step_percent": -1.0}), f"{NEW}.tap_step_percent", "[0, 50]"),
    ("curtail_max_above_1", _device({**CURT, "curtail_max": 2.0}), f"{NEW}.curtail_max", "[0, 1]"),
    ("shiftable_energy_negative", _device({**SHIFT, "e_daily_mwh": -1.0}), f"{NEW}.e_daily_mwh", ">= 0"),
]

CONTAINERS = [
    ("agents_mapping", {"agents": {"id": "A"}}, "agents", "list"),
    ("devices_string", {"agents[1].devices": "ess"}, "agents[1].devices", "list"),
    ("device_not_mapping", {"agents[1].devices[0]": ["storage"]}, D, "mapping"),
    ("device_without_type", {f"{D}.type": None}, f"{D}.type", "device types"),
    ("time_list", {"time": [1.0, 24]}, "time", "mapping"),
    ("profile_rules_mapping", {"profiles.loads": {"match": "*"}}, "profiles.loads", "list"),
    ("profile_rule_string", {"profiles.loads[0]": "load_SDGE-TAC"}, "profiles.loads[0]", "mapping"),
    ("bus_pattern_list", {"agents[1].buses[0]": [1, 2]}, "agents[1].buses[0]", "bus name pattern"),
    ("network_kwargs_list", {"network": {"builder": "case33bw", "kwargs": [1]}}, "network.kwargs", "mapping"),
    ("variants_list", {"variants": ["a"]}, "variants", "mapping"),
    ("variant_not_mapping", {"variants": {"fast": 3}}, "variants.fast", "mapping of overrides"),
    ("field_number_as_text", {f"{D}.e_max_mwh": "2 MWh"}, f"{D}.e_max_mwh", "number"),
    ("bool_as_number", {f"{D}.e_max_mwh": True}, f"{D}.e_max_mwh", "number"),
]


def _mutated(change) -> dict:
    raw = copy.deepcopy(GOOD)
    if callable(change):
        change(raw)
    else:
        for path, value in change.items():
            _set(raw, path, value)
    return raw


@pytest.mark.parametrize("change, path, expected", [c[1:] for c in RANGES + CONTAINERS],
                         ids=[c[0] for c in RANGES + CONTAINERS])
def test_malformed_scenario_file(tmp_path, change, path, expected):
    """Written to a YAML file and compiled: a `ScenarioError` naming the file, the key path
    and the value, with the allowed range (found before the network is loaded)."""
    raw = _mutated(change)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(str(file))
    at_path = [p for p in e.value.problems if p.path == path]
    assert at_path, f"{path} not among {[p.path for p in e.value.problems]}"
    (problem,) = [p for p in at_path if expected in p.expected] or [at_path[0]]
    assert expected in problem.expected
    message = str(e.value)
    assert f"{file}: {path}: expected" in message
    value = problem.actual
    if isinstance(value, float) and math.isnan(value):
        assert "got nan" in message
    elif not isinstance(value, (dict, list, str)) and value is not None:
        assert f"got {value!r}"[:60] in message


def test_many_problems_are_all_kept_and_the_message_stays_short():
    raw = _mutated({"agents[1].buses": [[k] for k in range(1000)]})
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(raw)
    assert len(e.value.problems) == 1000 and "agents[1].buses[999]" in e.value.problems[-1].path
    assert "has 1000 problem(s)" in str(e.value) and "and 950 more" in str(e.value) and len(str(e.value)) < 10_000


def test_huge_value_is_abbreviated_in_the_message():
    raw = _mutated({f"{D}.e_max_mwh": "x" * 100_000, "agents[1].buses": list(range(50_000)) + [[1]]})
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(raw)
    assert f"{D}.e_max_mwh" in str(e.value) and "chars" in str(e.value) and len(str(e.value)) < 3000


BUILDER_COUNTS = [0, -3, 10**9, 2.5, True, "12"]


@pytest.mark.parametrize("count", BUILDER_COUNTS, ids=[repr(c) for c in BUILDER_COUNTS])
def test_generated_scenario_with_a_bad_size(count):
    """A builder's size argument is bounded (10^9 microgrids would build a network of 10^10 buses)."""
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario("multi_microgrid_large", n_microgrids=count)
    assert "n_microgrids must be an integer in [1, 5000]" in str(e.value) and f"got {count!r}" in str(e.value)


FUZZ_VALUES = [None, True, 0, -1, 2**40, 0.5, 1e300, NAN, INF, "", "x", "*", [], [None], {}, {"a": 1},
               {"line": 999}, {"trafo": "nope"}, "x.csv", "case9"]


def _fuzzed(rng) -> dict:
    """GOOD with every device type and protocol options, one to three values replaced or deleted."""
    raw = copy.deepcopy(GOOD)
    raw["agents"][1]["devices"] += [copy.deepcopy(d) for d in (GEN, SHUNT, CURT, SHIFT)]
    raw["agents"][0]["devices"].append(copy.deepcopy(TAP))
    raw.update(protocol={"vertical": "price_signal", "horizontal": "consensus", "graph": "ring"},
               communication={"msg_delay": 1, "loss_prob": 0.1, "tick_interval": {"A": 2}})
    for _ in range(rng.randint(1, 3)):
        paths, stack = [], [((), raw)]
        while stack:
            path, node = stack.pop()
            children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in children:
                paths.append(path + (k,))
                stack.append((path + (k,), v))
        *parents, last = rng.choice(paths)
        node = raw
        for k in parents:
            node = node[k]
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[last]
        else:
            node[last] = copy.deepcopy(rng.choice(FUZZ_VALUES))
    return raw


def test_random_mutations_give_scenario_errors_only():
    """40 seeded random mutations (wrong types, NaN, huge ints, bad references, deleted keys):
    `validate` returns problems naming a key path and never raises (it found three crashes:
    an unhashable device type, an empty bus name, an external-grid index past int32)."""
    import random

    rng = random.Random(12)
    for _ in range(40):
        raw = _fuzzed(rng)
        for line in scenario.validate(raw):
            assert line.startswith("<dict>: ") and ": expected " in line


# ---------------------------------------------------------------------- hostile YAML files

BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]" for p, x in zip("abcdefgh", "bcdefghi")),
]) + "\n"
HOSTILE = [
    ("alias_bomb", BOMB.encode(), "<file>", "aliases expanded"),
    ("recursive_alias", b"name: &a [*a]\n", "<file>", "recursive alias"),
    ("binary_png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "<file>", "UTF-8"),
    ("latin1_text", "name: Übung\nnetwork: case33bw\n".encode("latin-1"), "<file>", "UTF-8"),
    ("nul_byte", b"name: x\x00\n", "<file>", "NUL"),
    ("deep_nesting", b"[" * 5000 + b"]" * 5000, "<file>", "nested"),
    ("syntax_error", b"name: [unclosed\ntime: {dt_h: 1\n", "<file>", "valid YAML"),
    ("root_is_a_list", b"- name: x\n", "<root>", "a mapping"),
    ("empty_file", b"", "<root>", "a mapping"),
]


@pytest.mark.parametrize("data, path, expected", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_yaml_file(tmp_path, data, path, expected):
    file = tmp_path / "hostile.yaml"
    file.write_bytes(data)
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(str(file))
    (problem,) = e.value.problems
    assert problem.path == path and expected in problem.format()
    assert str(file) in str(e.value) and len(str(e.value)) < 1000


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_scenario_path_that_is_not_a_file(tmp_path, where):
    target = tmp_path / "nothing.yaml"
    if where == "directory":
        target.mkdir()
    with pytest.raises(scenario.ScenarioError, match="existing YAML file") as e:
        scenario.compile_scenario(str(target))
    assert str(target) in str(e.value)


# ---------------------------------------------------------------------------- CSV profiles

HEADER = "time,load_a,solar_a"


def _rows(n=6, start=0, step_h=1):
    return [f"2023-01-01T{start + k * step_h:02d}:00:00,{0.5 + 0.01 * k},{0.1 * k}" for k in range(n)]


CSV = [  # (id, file text, from_csv kwargs, fragments of the message)
    ("nan_row", "\n".join([HEADER, *_rows(3), "2023-01-01T03:00:00,nan,0.3"]), {"time_column": "time"},
     ["'load_a'", "row 5", "not finite"]),
    ("nan_in_second_column", "\n".join([HEADER, *_rows(2), "2023-01-01T02:00:00,0.5,NaN"]), {"time_column": "time"},
     ["'solar_a'", "row 4", "not finite"]),
    ("inf_value", "\n".join([HEADER, *_rows(2), "2023-01-01T02:00:00,inf,0.2"]), {"time_column": "time"},
     ["'load_a'", "row 4", "not finite"]),
    ("not_a_number", "\n".join([HEADER, *_rows(2), "2023-01-01T02:00:00,high,0.2"]), {"time_column": "time"},
     ["'load_a'", "row 4", "'high' is not a number"]),
    ("missing_value", "\n".join([HEADER, *_rows(2), "2023-01-01T02:00:00,,0.2"]), {"time_column": "time"},
     ["'load_a'", "row 4", "missing value"]),
    ("all_nan_row", "\n".join([HEADER, *_rows(3), "2023-01-01T03:00:00,NaN,NaN", *_rows(2, start=4)]),
     {"time_column": "time"}, ["'load_a'", "row 5", "not finite"]),
    ("trailing_row_of_empty_fields", "\n".join([HEADER, *_rows(3), ",,", ""]), {"time_column": "time"},
     ["row 5", "missing value"]),
    ("ragged_row", "\n".join([HEADER, *_rows(2), "2023-01-01T02:00:00,0.5"]), {"time_column": "time"},
     ["row 4", "2 fields", "header has 3"]),
    ("wrong_column_name", "\n".join([HEADER, *_rows(3)]), {"time_column": "time", "columns": ["load_b"]},
     ["['load_b'] not found"]),
    ("missing_time_column", "\n".join([HEADER, *_rows(3)]), {"time_column": "timestamp"},
     ["time column 'timestamp' not found"]),
    ("time_goes_back", "\n".join([HEADER, *_rows(3), "2023-01-01T01:30:00,0.5,0.2"]), {"time_column": "time"},
     ["'time'", "row 5", "must increase"]),
    ("irregular_step", "\n".join([HEADER, *_rows(3), "2023-01-01T05:00:00,0.5,0.2"]), {"time_column": "time"},
     ["'time'", "row 5", "uniform"]),
    ("bad_time_stamp", "\n".join([HEADER, *_rows(2), "tomorrow-ish,0.5,0.2"]), {"time_column": "time"},
     ["'time'", "row 4", "not a time stamp"]),
    ("one_row_no_step", "\n".join([HEADER, *_rows(1)]), {"time_column": "time"}, ["need two rows"]),
    ("header_only", HEADER + "\n", {"time_column": "time"}, ["no data rows"]),
    ("empty", "", {"dt_h": 1.0}, ["empty file"]),
    ("duplicate_columns", "t,a,a\n0,1,2\n", {"dt_h": 1.0}, ["duplicate column names ['a']"]),
    ("no_step_given", "\n".join(["load_a", "0.5", "0.6"]), {}, ["pass dt_h"]),
    ("zero_step", "\n".join(["load_a", "0.5", "0.6"]), {"dt_h": 0.0}, ["dt_h must be a finite step > 0"]),
]


@pytest.mark.parametrize("text, kwargs, fragments", [c[1:] for c in CSV], ids=[c[0] for c in CSV])
def test_malformed_csv_profile(tmp_path, text, kwargs, fragments):
    file = tmp_path / "profile.csv"
    file.write_text(text)
    with pytest.raises(DataError) as e:
        profiles.from_csv(file, **kwargs)
    assert str(file) in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_csv_that_is_not_text(tmp_path):
    file = tmp_path / "profile.csv"
    file.write_bytes(b"load_a\n\xff\xfe\x00\x01")
    with pytest.raises(DataError, match="not UTF-8") as e:
        profiles.from_csv(file, dt_h=1.0)
    assert str(file) in str(e.value)


def _csv_scenario(tmp_path, rows: int, extra_row: str | None = None, **profile_keys):
    """A scenario file whose profiles are a CSV file next to it (relative path), and its path."""
    lines = ["time,load_a,solar_a,price"]
    for k in range(rows):
        h = k % 24
        lines.append(f"2023-01-{1 + k // 24:02d}T{h:02d}:00:00,{0.6 + 0.2 * math.sin(h / 4):.4f},"
                     f"{max(0.0, math.sin((h - 6) / 12 * math.pi)):.4f},{30 + h}")
    if extra_row:
        lines.append(extra_row)
    (tmp_path / "prof.csv").write_text("\n".join(lines) + "\n")
    raw = copy.deepcopy(GOOD)
    raw["profiles"] = {"train": "prof.csv", "time_column": "time", "price": "price",
                       "loads": [{"match": "*", "series": "load_a"}], **profile_keys}
    raw["agents"][1]["devices"][1]["profile"] = "solar_a"
    file = tmp_path / "csv_scenario.yaml"
    file.write_text(yaml.safe_dump(raw))
    return file


@pytest.mark.parametrize("case", ["wrong_series", "too_few_rows", "nan_row", "missing_file"])
def test_scenario_with_a_bad_csv_profile(tmp_path, case):
    extra = {"nan_row": "2023-01-03T00:00:00,nan,0.0,30"}.get(case)
    rows = 12 if case == "too_few_rows" else 48
    keys = {"loads": [{"match": "*", "series": "load_b"}]} if case == "wrong_series" else {}
    if case == "missing_file":
        keys = {"train": "no_such.csv"}
    file = _csv_scenario(tmp_path, rows, extra, **keys)
    path, fragments = {"wrong_series": ("profiles.loads[0].series", ["load_b", "load_a"]),
                       "too_few_rows": ("time.episode_steps", ["at most 11 steps"]),
                       "nan_row": ("profiles.train", ["prof.csv", "'load_a'", "row 50", "not finite"]),
                       "missing_file": ("profiles.train", ["no_such.csv"])}[case]
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(str(file))
    found = {p.path: p for p in e.value.problems}
    assert path in found, list(found)
    text = found[path].format()
    for fragment in fragments:
        assert fragment in text


def test_validate_reads_the_test_split_too(tmp_path):
    """The episodes draw from `train`; `pgjax validate` also reads `test` (used by pgjax eval)."""
    (tmp_path / "test_year.csv").write_text("time,load_a,solar_a,price\n2024-01-01T00:00,0.5,0,1\n"
                                            "2024-01-01T01:00,0.5,inf,1\n")
    file = _csv_scenario(tmp_path, 48, test="test_year.csv")
    scenario.compile_scenario(str(file))  # the training data are fine
    code, out, _ = _cli(["validate", str(file)])
    assert code == 1 and "profiles.test: expected a readable CSV file" in out
    assert "test_year.csv: column 'solar_a', row 3: 'inf' is not finite" in out


# ------------------------------------------------------------------------ network files

def _net_file(tmp_path, edit=None, text=None, data=None):
    file = tmp_path / "net.json"
    if data is not None:
        file.write_bytes(data)
    elif text is not None:
        file.write_text(text)
    else:
        net = pn.case33bw()
        edit(net)
        pp.to_json(net, str(file))
    return file


def _good_json():
    return pp.to_json(pn.case33bw())


NETWORK_FILES = [
    ("truncated", lambda t: _net_file(t, text=_good_json()[:5000]), ["not valid JSON", "line", "column"]),
    ("not_json", lambda t: _net_file(t, text="bus,vn_kv\n0,12.66\n"), ["not valid JSON"]),
    ("json_not_a_net", lambda t: _net_file(t, text='{"buses": []}'), ["not a pandapower network"]),
    ("json_list", lambda t: _net_file(t, text="[1, 2, 3]"), ["not a pandapower network"]),
    ("binary", lambda t: _net_file(t, data=b"\x89PNG\r\n\x1a\n\xff\xfe"), ["not UTF-8"]),
    ("missing", lambda t: t / "nothing.json", ["no such network file"]),
]


@pytest.mark.parametrize("make, fragments", [c[1:] for c in NETWORK_FILES], ids=[c[0] for c in NETWORK_FILES])
def test_malformed_network_file(tmp_path, make, fragments):
    file = make(tmp_path)
    with pytest.raises(DataError) as e:
        networks.load(str(file))
    assert str(file) in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)


def _at(table, row, col, value):
    def edit(net):
        net[table].at[row, col] = value
    return edit


def _cast(table, col, dtype):
    def edit(net):
        net[table] = net[table].astype({col: dtype})
    return edit


NETWORK_TABLES = [  # (id, edit of case33bw, fragments)
    ("line_from_bus_not_a_bus", _at("line", 3, "from_bus", 99), ["net.line[3].from_bus=99", "not a bus", "0..32"]),
    ("line_to_bus_past_the_end", _at("line", 0, "to_bus", 33), ["net.line[0].to_bus=33", "not a bus"]),
    ("load_bus_not_a_bus", _at("load", 2, "bus", 1000), ["net.load[2].bus=1000", "not a bus"]),
    ("ext_grid_bus_not_a_bus", _at("ext_grid", 0, "bus", 77), ["net.ext_grid[0].bus=77", "not a bus"]),
    ("line_length_zero", _at("line", 5, "length_km", 0.0), ["net.line[5].length_km=0.0", "> 0 km"]),
    ("line_length_negative", _at("line", 6, "length_km", -2.0), ["net.line[6].length_km=-2.0", "> 0 km"]),
    ("line_length_nan", _at("line", 7, "length_km", float("nan")), ["net.line[7].length_km=nan", "finite"]),
    ("line_zero_impedance", lambda n: (_at("line", 8, "r_ohm_per_km", 0.0)(n), _at("line", 8, "x_ohm_per_km", 0.0)(n)),
     ["net.line[8]", "zero impedance"]),
    ("line_parallel_zero", _at("line", 9, "parallel", 0), ["net.line[9].parallel=0", ">= 1"]),
    ("bus_vn_zero", _at("bus", 4, "vn_kv", 0.0), ["net.bus[4].vn_kv=0.0", "> 0 kV"]),
    ("bus_vn_negative", _at("bus", 7, "vn_kv", -12.66), ["net.bus[7].vn_kv=-12.66", "> 0 kV"]),
    ("load_p_nan", _at("load", 1, "p_mw", float("nan")), ["net.load[1].p_mw=nan", "finite"]),
    ("line_derating_negative", _at("line", 2, "df", -1.0), ["net.line[2].df=-1.0", "> 0"]),
    ("bus_column_of_floats", _cast("load", "bus", float), ["net.load.bus", "integer bus indices", "float64"]),
    ("in_service_of_numbers", _cast("line", "in_service", float), ["net.line.in_service", "true/false", "float64"]),
    ("line_resistance_nan", _at("line", 4, "r_ohm_per_km", float("nan")), ["net.line[4].r_ohm_per_km=nan", "finite"]),
    ("line_capacitance_negative", _at("line", 3, "c_nf_per_km", -10.0), ["net.line[3].c_nf_per_km=-10.0", ">= 0 nF/km"]),
    ("line_capacitance_nan", _at("line", 1, "c_nf_per_km", float("nan")), ["net.line[1].c_nf_per_km=nan", "finite"]),
    ("line_conductance_negative", _at("line", 2, "g_us_per_km", -1.0), ["net.line[2].g_us_per_km=-1.0", ">= 0 uS/km"]),
    ("shunt_q_nan", lambda n: (pp.create_shunt(n, 5, q_mvar=-0.1), _at("shunt", 0, "q_mvar", float("nan"))(n)),
     ["net.shunt[0].q_mvar=nan", "finite"]),
    ("shunt_p_nan", lambda n: (pp.create_shunt(n, 5, q_mvar=-0.1), _at("shunt", 0, "p_mw", float("nan"))(n)),
     ["net.shunt[0].p_mw=nan", "finite"]),
    ("shunt_step_negative", lambda n: (pp.create_shunt(n, 5, q_mvar=-0.1), _at("shunt", 0, "step", -1)(n)),
     ["net.shunt[0].step=-1", ">= 0"]),
]


@pytest.mark.parametrize("obj", [None, "case33bw.json", {"bus": [], "line": []}, 33], ids=["none", "path", "dict", "int"])
def test_object_that_is_not_a_pandapower_net(obj):
    with pytest.raises(DataError) as e:
        from_pandapower(obj)
    assert "expected a pandapower net" in str(e.value) and type(obj).__name__ in str(e.value)


def _with_trafo(edit):
    def build():
        net = pn.example_simple()
        edit(net)
        return net
    return build


def _line_switch_to_nowhere(net):
    net.switch.at[net.switch.index[net.switch.et == "l"][0], "element"] = 999


TRAFO_TABLES = [
    ("trafo_rating_zero", _with_trafo(_at("trafo", 0, "sn_mva", 0.0)), ["net.trafo[0].sn_mva=0.0", "> 0 MVA"]),
    ("trafo_lv_voltage_zero", _with_trafo(_at("trafo", 0, "vn_lv_kv", 0.0)), ["net.trafo[0].vn_lv_kv=0.0", "> 0 kV"]),
    ("trafo_vkr_above_vk", _with_trafo(_at("trafo", 0, "vkr_percent", 50.0)), ["net.trafo[0].vkr_percent=50.0", "vk_percent"]),
    ("trafo_hv_bus_not_a_bus", _with_trafo(_at("trafo", 0, "hv_bus", 500)), ["net.trafo[0].hv_bus=500", "not a bus"]),
    ("switch_element_not_a_line", _with_trafo(_line_switch_to_nowhere), ["net.switch[", "element=999", "net.line"]),
    ("switch_closed_of_numbers", _with_trafo(_cast("switch", "closed", int)), ["net.switch.closed", "true/false"]),
    ("trafo_magnetizing_nan", _with_trafo(_at("trafo", 0, "i0_percent", float("nan"))), ["net.trafo[0].i0_percent=nan", "finite"]),
    ("trafo_derating_negative", _with_trafo(_at("trafo", 0, "df", -5.0)), ["net.trafo[0].df=-5.0", "> 0"]),
    ("trafo_zero_short_circuit_voltage", _with_trafo(_at("trafo", 0, "vk_percent", 0.0)),
     ["net.trafo[0].vk_percent=0.0", "zero impedance"]),
]


@pytest.mark.parametrize("edit, fragments", [c[1:] for c in NETWORK_TABLES], ids=[c[0] for c in NETWORK_TABLES])
def test_malformed_network_table(edit, fragments):
    net = pn.case33bw()
    edit(net)
    with pytest.raises(DataError) as e:
        from_pandapower(net)
    for fragment in fragments:
        assert fragment in str(e.value)


@pytest.mark.parametrize("build, fragments", [c[1:] for c in TRAFO_TABLES], ids=[c[0] for c in TRAFO_TABLES])
def test_malformed_transformer_and_switch_tables(build, fragments):
    with pytest.raises(DataError) as e:
        from_pandapower(build())
    for fragment in fragments:
        assert fragment in str(e.value)


def test_scenario_naming_a_bad_network_file(tmp_path):
    net_file = _net_file(tmp_path, _at("line", 3, "from_bus", 99))
    raw = copy.deepcopy(GOOD)
    raw["network"] = "net.json"  # relative to the scenario file
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(str(file))
    (problem,) = e.value.problems
    assert problem.path == "network" and "net.json" in str(problem.actual) and "net.line[3].from_bus=99" in str(e.value)
    assert net_file.exists()


# --------------------------------------------------------------------------- CLI commands

def _cli(argv):
    """`pgjax.cli.main(argv)` in this process: (exit code, stdout, stderr), or the exception raised."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


CLI = [  # (id, argv (with {tmp} for the test folder), exit code, fragments of stderr + stdout)
    ("unknown_command", ["colour"], 2, ["invalid choice: 'colour'"]),
    ("validate_without_file", ["validate"], 2, ["pgjax validate needs one scenario file"]),
    ("validate_missing_file", ["validate", "{tmp}/none.yaml"], 1, ["none.yaml: <file>: expected an existing YAML file"]),
    ("validate_unknown_name", ["validate", "no_such_scenario"], 1, ["no_such_scenario: <name>: expected a registered"]),
    ("validate_json_path", ["validate", "{tmp}/net.json"], 1, ["net.json: <name>: expected a registered", ".yaml"]),
    ("bench_without_kind", ["bench"], 2, ["pgjax bench needs one of", "'env'"]),
    ("bench_unknown_kind", ["bench", "gpu"], 2, ["pgjax bench needs one of"]),
    ("train_dtype", ["train", "--dtype", "float16", "--out", "{tmp}/r"], 2, ["argument --dtype", "'float16'"]),
    ("train_seeds_text", ["train", "--seeds", "zero", "--out", "{tmp}/r"], 2, ["argument --seeds", "'zero'"]),
    ("train_seeds_zero", ["train", "--seeds", "0", "--out", "{tmp}/r"], 2, ["--seeds"]),
    ("train_chunk_negative", ["train", "--chunk", "-1", "--out", "{tmp}/r"], 2, ["--chunk"]),
    ("train_override_without_value", ["train", "lr", "--out", "{tmp}/r"], 2, ["lr"]),
    ("train_unknown_override", ["train", "colour=red", "--out", "{tmp}/r"], 2, ["colour"]),
    ("eval_missing_run", ["eval", "{tmp}/none"], 2, ["none/config.yaml not found"]),
    ("eval_episodes_zero", ["eval", "{tmp}", "--episodes", "0"], 2, ["--episodes"]),
    ("compare_unknown_config", ["compare", "--configs", "colour", "--out", "{tmp}/c"], 2, ["--configs", "'colour'"]),
    ("compare_episodes_negative", ["compare", "--episodes", "-3", "--out", "{tmp}/c"], 2, ["--episodes"]),
    ("verify_unknown_network", ["verify", "--networks", "no_such_net", "--jobs", "0"], 2, ["no_such_net"]),
    ("verify_unknown_method", ["verify", "--methods", "magic"], 2, ["unknown methods ['magic']"]),
    ("verify_max_buses_text", ["verify", "--max-buses", "many"], 2, ["argument --max-buses", "'many'"]),
    ("bench_env_dtype", ["bench", "env", "--dtype", "float16"], 2, ["argument --dtype", "'float16'"]),
    ("bench_env_batch_zero", ["bench", "env", "--batches", "0"], 2, ["--batches: expected counts >= 1"]),
    ("bench_env_seconds_zero", ["bench", "env", "--seconds", "0"], 2, ["--seconds: expected a positive"]),
    ("bench_powerflow_batches_text", ["bench", "powerflow", "--batches", "abc"], 2, ["--batches", "'abc'"]),
    ("bench_powerflow_batch_zero", ["bench", "powerflow", "--batches", "0,1"], 2, ["--batches: expected counts"]),
    ("bench_train_devices_zero", ["bench", "train", "--scaling", "--devices", "0"], 2, ["--devices"]),
    ("bench_train_updates_zero", ["bench", "train", "--updates", "0"], 2, ["--updates", ">= 1"]),
    ("bench_train_unknown_preset", ["bench", "train", "--presets", "laptopp"], 2, ["--presets", "laptopp"]),
    ("train_devices_text", ["train", "--devices", "many", "--out", "{tmp}/r"], 2, ["--devices", "'many'"]),
    ("train_devices_more_than_there_are", ["train", "--devices", "64", "--out", "{tmp}/r"], 2,
     ["devices: expected 1..", "xla_force_host_platform_device_count"]),
    ("train_coordinator_without_distributed", ["train", "--coordinator", "h:1", "--out", "{tmp}/r"], 2,
     ["need --distributed"]),
    ("eval_set_without_value", ["eval", "{tmp}", "--set", "communication.msg_delay"], 2, ["expected KEY=VALUE"]),
    ("robustness_without_sweep", ["robustness", "{tmp}"], 2, ["--sweep"]),
    ("robustness_missing_run", ["robustness", "{tmp}/none", "--sweep", "msg_delay=1"], 2, ["none/config.yaml"]),
    ("robustness_sweep_not_yaml", ["robustness", "{tmp}", "--sweep", "msg_delay=[1,"], 2,
     ["pgjax robustness: error: --sweep msg_delay", "not a YAML sequence"]),
    ("robustness_devices_more_than_there_are", ["robustness", "{tmp}", "--sweep", "msg_delay=1", "--devices", "64"], 2,
     ["devices: expected 1.."]),
    ("splits_unknown_scenario", ["splits", "nowhere"], 2, ["'nowhere'", "scenarios with splits"]),
    ("eval_bad_name", ["eval", "{tmp}", "--name", "a/b"], 2, ["--name 'a/b'"]),
    ("eval_split_missing_run", ["eval", "{tmp}/none", "--split", "load_growth"], 2, ["none/config.yaml not found"]),
    ("benchmark_without_task", ["benchmark", "--out", "{tmp}/b"], 2, ["--spec file or at least one --task"]),
    ("benchmark_unknown_split", ["benchmark", "--task", "setpoint", "--split", "nope", "--out", "{tmp}/b"], 2,
     ["split 'nope'", "setpoint"]),
    ("benchmark_seeds_zero", ["benchmark", "--task", "setpoint", "--seeds", "0", "--out", "{tmp}/b"], 2,
     ["seeds: expected an int >= 1, got 0"]),
    ("benchmark_unknown_algorithm", ["benchmark", "--task", "setpoint", "--algorithm", "ppo2", "--out", "{tmp}/b"], 2,
     ["algorithm", "'ppo2'"]),
    ("benchmark_missing_spec", ["benchmark", "--spec", "{tmp}/none.yaml", "--out", "{tmp}/b"], 2,
     ["none.yaml", "not a readable YAML file"]),
    ("benchmark_max_units_negative", ["benchmark", "--task", "setpoint", "--max-units", "-1", "--out", "{tmp}/b"], 2,
     ["--max-units", "-1"]),
    ("export_without_arguments", ["export"], 2, ["required: run_dir, --out"]),
    ("export_missing_run", ["export", "{tmp}/none", "--out", "{tmp}/x"], 2, ["none/config.yaml: not found"]),
    ("deploy_without_arguments", ["deploy"], 2, ["required: export_dir"]),
    ("hil_without_scenario", ["hil"], 2, ["required: scenario"]),
]


@pytest.mark.parametrize("argv, code, fragments", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_malformed_command_line(tmp_path, argv, code, fragments):
    got, out, err = _cli([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert got == code, (out, err)
    for fragment in fragments:
        assert fragment in err + out


def test_cli_train_on_a_bad_scenario_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_mutated({"reward.penalty": -1.0})))
    with pytest.raises(scenario.ScenarioError) as e:
        _cli(["train", "--scenario", str(bad), "--out", str(tmp_path / "run")])
    assert f"{bad}: reward.penalty: expected a number >= 0, got -1.0" in str(e.value)
    assert not (tmp_path / "run" / "checkpoint.msgpack").exists()


def test_unknown_scenario_name_is_a_scenario_error_and_a_key_error():
    import pgjax

    with pytest.raises(scenario.ScenarioError) as e:
        pgjax.make("no_such_scenario")
    assert isinstance(e.value, KeyError) and "no_such_scenario: <name>: expected a registered scenario" in str(e.value)


def test_cli_bench_powerflow_unknown_network():
    with pytest.raises(DataError, match="network 'no_such_net' unknown"):
        _cli(["bench", "powerflow", "--networks", "no_such_net"])


def test_cli_validate_reports_structure_and_reference_problems_together(tmp_path):
    """Structure / range problems do not hide the reference problems of the other entries."""
    raw = _mutated({"reward.penalty": -1.0, f"{D}.e_max_mwh": 0.0, f"{PV}.bus": 400,
                    "profiles.loads[0].series": "load_XYZ", "agents[1].buses[2]": "Nowhere*"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    code, out, _ = _cli(["validate", str(bad)])
    assert code == 1
    for path in ("reward.penalty", f"{D}.e_max_mwh", f"{PV}.bus", "profiles.loads[0].series", "agents[1].buses[2]"):
        assert f"{bad}: {path}: expected" in out
    assert "5 problem(s)" in out


# ------------------------------------------------------------------------------ the corpus

def test_corpus_size():
    """This file's malformed inputs (the issue asks for >= 100 with the API-edge and run-folder corpora)."""
    n = (len(RANGES) + len(CONTAINERS) + 2 + len(BUILDER_COUNTS) + 40 + len(HOSTILE) + 2 + len(CSV) + 1 + 4 + len(NETWORK_FILES)
         + len(NETWORK_TABLES) + len(TRAFO_TABLES) + 1 + len(CLI) + 5 + 4)
    assert n >= 100

"""Scenario files: every problem reported with its key path, expected and actual value;
the registry and overrides. No power flow runs here (fast)."""

from __future__ import annotations

import copy

import pytest
import yaml

from pgjax import scenario
from pgjax.cli import main as cli_main

from conftest import SMALL_SCENARIO

GOOD = copy.deepcopy(SMALL_SCENARIO)


def problems_of(raw):
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.compile_scenario(raw)
    return {p.path: p for p in e.value.problems}, str(e.value)


def mutate(**changes):
    raw = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = raw
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return raw


DELETE = object()


def test_good_scenario_compiles():
    c = scenario.compile_scenario(GOOD)
    assert [g.type for g in c.groups] == ["storage", "pv", "pcc"]
    assert c.starts[0] == 0 and (c.starts[1:] - c.starts[:-1] == 24).all()
    assert c.series_names[c.price_col] == "price_0096WD_7_N001"


@pytest.mark.parametrize("changes, path, expected", [
    ({"time__episode_steps": DELETE}, "time.episode_steps", "required key missing"),
    ({"time__dt_h": "1h"}, "time.dt_h", "number"),
    ({"network": DELETE}, "network", "required key missing"),
    ({"agents__1__devices__0__type": "battery"}, "agents[1].devices[0].type", "device types"),
    ({"agents__1__devices__0__e_max_mwh": DELETE}, "agents[1].devices[0].e_max_mwh", "required key missing"),
    ({"agents__1__devices__0__eta_charge": 1.3}, "agents[1].devices[0].eta_charge", "efficiency"),
    ({"agents__1__devices__0__colour": "red"}, "agents[1].devices[0].colour", "one of the keys"),
    ({"agents__1__devices__0__bus": 400}, "agents[1].devices[0].bus", "bus index of the network"),
    ({"agents__1__devices__1__profile": "solar_MARS"}, "agents[1].devices[1].profile", "column of the profiles"),
    ({"profiles__loads__0__series": "load_XYZ"}, "profiles.loads[0].series", "column of the profiles"),
    ({"agents__1__parent": "nobody"}, "agents[1].parent", "agent ids"),
    ({"agents__1__level": "planet"}, "agents[1].level", "one of"),
    ({"reward": {"penalty": -1}}, "reward.penalty", ">= 0"),
    ({"limits": {"vm_min_pu": 1.1, "vm_max_pu": 1.0}}, "limits.vm_max_pu", "vm_min_pu"),
    ({"agents__0__devices__0__ext_grid": 5}, "agents[0].devices[0].ext_grid", "external-grid index"),
    ({"network": "no_such_network"}, "network", "loadable network"),
])
def test_malformed_scenarios_name_the_key_path(changes, path, expected):
    found, message = problems_of(mutate(**changes))
    assert path in found, f"{path} not among {list(found)}"
    assert expected in found[path].expected
    assert path in message


def test_every_problem_is_reported_not_just_the_first():
    raw = mutate(time__dt_h=-1, reward={"penalty": "high", "sharde": True},
                 agents__1__devices__0__type="battery", agents__1__parent="nobody")
    found, message = problems_of(raw)
    assert {"time.dt_h", "reward.penalty", "reward.sharde", "agents[1].devices[0].type", "agents[1].parent"} <= set(found)
    assert f"{len(found)} problem(s)" in message
    assert found["reward.penalty"].actual == "high"


def test_cli_validate_prints_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(agents__1__devices__0__bus=400, agents__1__devices__1__profile="x")))
    assert cli_main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.yaml: agents[1].devices[0].bus: expected" in out and "agents[1].devices[1].profile" in out
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert cli_main(["validate", str(good)]) == 0
    assert "OK" in capsys.readouterr().out


def test_registry_versions_and_overrides():
    assert {"multi_microgrid-v0", "multi_microgrid_15min-v0", "voltage_control_33bw-v0"} <= set(scenario.names())
    assert scenario.resolve_name("multi_microgrid") == "multi_microgrid-v0"
    with pytest.raises(KeyError, match="registered"):
        scenario.resolve_name("no_such_scenario")
    c = scenario.compile_scenario(GOOD, dt_h=0.25, episode_steps=96, split="test", centralized=True)
    assert c.dt_h == 0.25 and c.episode_steps == 96 and c.centralized
    assert c.profiles.shape[0] == 4 * 8784  # 2024 test year, resampled to 15 minutes
    with pytest.raises(TypeError, match="unknown override"):
        scenario.compile_scenario(GOOD, colour="red")


def test_compiled_sections_are_typed():
    raw = mutate(protocol={"vertical": "price_signal", "graph": "ring"},
                 communication={"msg_delay": {"A": 2}, "loss_prob": 0.1})
    c = scenario.compile_scenario(raw)
    assert c.protocol == scenario.ProtocolSpec("price_signal", "none", {"graph": "ring"})  # no defaults filled
    assert c.communication == scenario.CommunicationSpec(msg_delay={"A": 2}, loss_prob=0.1)
    assert c.communication.tick_interval == 1 and c.communication.jitter_kind == "uniform"
    spec = c.profile_spec
    assert (spec.train, spec.test, spec.split, spec.resample) == ("caiso_2023", "caiso_2024", "train", "repeat")
    assert spec.loads == (("*", "load_SDGE-TAC"),) and spec.price == "price_0096WD_7_N001"


def test_profile_start_hour():
    from pgjax.profiles import start_hour

    assert start_hour("2023-01-01T08:00:00+00:00") == 0.0  # CAISO: UTC stamps of local (PST) midnight
    assert start_hour("2016-01-01T06:30:00+01:00") == 6.5  # other stamps: as given
    assert start_hour("") == 0.0


def test_device_types_check_their_own_entries():
    """Type-specific checks come from the type's `validate` hook (no device type name in the validator)."""
    pcc = {"type": "pcc", "ext_grid": 0, "branch": {"line": 0}}
    found, _ = problems_of(mutate(agents__0__devices__0=pcc, agents__1__devices__0__e_min_mwh=2.0))
    assert "exactly one of 'branch' and 'ext_grid'" in found["agents[0].devices[0].branch"].expected
    assert found["agents[1].devices[0].e_max_mwh"].expected == "a number >= e_min_mwh (2.0)"


def test_scenario_with_a_csv_profile_compiles_and_steps(tmp_path):
    """A CSV file next to the scenario (time column, half-hour rows resampled to the scenario's
    hour): the compiled series are the hourly means of the file's rows, the first step's hour
    comes from the time stamp, and the environment steps on them with finite results."""
    import jax
    import numpy as np

    import pgjax

    half_hours = 4 * 48
    t = np.arange(half_hours) * 0.5  # hours since 2023-01-01 06:00
    load = 0.6 + 0.2 * np.sin(t / 3)
    solar = np.clip(np.sin(t / 12 * np.pi), 0, None).round(4)
    lines = ["time,load_a,solar_a,price"] + [
        f"{np.datetime64('2023-01-01T06:00') + np.timedelta64(30 * k, 'm')},{load[k]:.6f},{solar[k]},{40 + k % 7}"
        for k in range(half_hours)]
    (tmp_path / "prof.csv").write_text("\n".join(lines) + "\n")
    raw = mutate(profiles={"train": "prof.csv", "time_column": "time", "price": "price", "resample": "repeat",
                           "loads": [{"match": "*", "series": "load_a"}]},
                 agents__1__devices__1__profile="solar_a", time__start="any")
    file = tmp_path / "csv.yaml"
    file.write_text(yaml.safe_dump(raw))
    c = scenario.compile_scenario(str(file))
    assert c.series_names == ("price", "load_a", "solar_a") and float(c.hour0) == 6.0
    rows = np.loadtxt(tmp_path / "prof.csv", delimiter=",", skiprows=1, usecols=(3, 1, 2))
    np.testing.assert_allclose(c.profiles, rows.reshape(-1, 2, 3).mean(axis=1), rtol=1e-6)  # float32 data
    assert (c.load_series == c.series_names.index("load_a")).all()

    env = pgjax.make(str(file))
    obs, state = env.reset(jax.random.PRNGKey(0), env.default_params)
    acts = np.zeros((env.num_agents, env.act_dim))
    obs, state, reward, *_, info = env.step(jax.random.PRNGKey(1), state, acts, env.default_params)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert float(info["nonconverged"]) == 0.0

"""Fail-safes over real TCP on 127.0.0.1: the controller against a plant with injected faults.

In every test the plant refuses (and logs) any write outside the map or its [min, max], so
"no refused write in the plant's log" is the check that the controller never sent one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest

from pgjax.deploy import registers
from pgjax.deploy.device_map import WriteRefused, check_write, map_for_env, parse_map
from pgjax.deploy.plant import Fault, Plant
from deploy_fixtures import env, export_dir, loop, run_dir  # noqa: F401 (the deployment tests' fixtures)

STORAGE_P = "storage/mg1_ess/p_mw"
GEN_P = "generator/mg1_dg/p_mw"
SETTLED_S = 0.5  # after the controller's last write, past the maps' 0.2 s reversion timeout


def plant_events(tmp_path, kind=None) -> list[dict]:
    rows = [json.loads(x) for x in (tmp_path / "plant.jsonl").read_text().splitlines()]
    return [r for r in rows if "event" in r and (kind is None or r["event"] == kind)]


def test_nan_and_out_of_range_readings_give_the_safe_action(env, loop, tmp_path):
    faults = (Fault("bad_value", at_step=3, steps=2, unit="mg1_ess", point="W", value=math.nan),
              Fault("bad_value", at_step=6, steps=1, unit="mg1_ess", point="W", value=3.0))  # limits +-2 MW
    plant, ctl, summary = loop(9, faults=faults)
    modes = [r["modes"] for r in ctl.rows]
    bad = {3, 4, 6}
    for k, m in enumerate(modes):
        assert m["MG1"] == ("safe" if k in bad else "policy"), (k, m)
        assert m["MG2"] == m["MG3"] == "policy"
    implausible = [(r["k"], f["value"]) for r in ctl.rows for f in r["faults"] if f["kind"] == "implausible"]
    assert [k for k, _ in implausible] == [3, 4, 6]
    assert math.isnan(implausible[0][1]) and implausible[2][1] == pytest.approx(3.0, abs=1e-3)
    a = env.agents.index("MG1")
    p_col, g_col = env.layout.action.column(a, STORAGE_P), env.layout.action.column(a, GEN_P)
    for k in bad:  # plant step k applies the setpoints of period k: storage at its safe 0, the genset held
        assert plant.rows[k]["actions"][a][p_col] == 0.0
        assert plant.rows[k]["actions"][a][g_col] == plant.rows[k - 1 if k != 4 else 2]["actions"][a][g_col]
    assert plant_events(tmp_path, "refused") == []


def _bad_readings(dmap):
    """One measurement point per kind `(unit kind, point name)` (the first unit's that carries it) and,
    for each, the readings `(label, value)` to inject: below its minimum and above its maximum where the
    register can hold such a value (decoded outside the limits), and NaN. `Seq` and `Avail` are uint16
    with minimum 0: nothing below it can be published (the register holds no negative value)."""
    seen, out = set(), []
    for u in dmap.units:
        for m in u.measurements:
            kind = (u.kind, "V" if m.name.startswith("V_") else m.name)
            if kind in seen:
                continue
            seen.add(kind)
            lo, hi = registers.raw_range(m.dtype, m.sf)
            span = m.max - m.min
            below = m.min - 0.5 * min(span, m.min - lo)
            above = m.max + 0.5 * min(span, hi - m.max)
            for label, v in (("below_min", below), ("above_max", above), ("nan", math.nan)):
                if not math.isnan(v):
                    v = registers.decode(registers.encode(v, m.dtype, m.sf), m.dtype, m.sf)
                    if m.min <= v <= m.max:
                        continue  # not representable outside the limits
                out.append((u, m, label, v))
    return out


def test_every_measurement_kind_below_min_above_max_and_nan_gives_the_safe_action(env, loop, tmp_path):
    """Every measurement kind, one period each: below its minimum, above its maximum, NaN. The reading is
    logged as implausible and exactly the agents that observe it act safe (a role reading, sequence or
    availability, spoils its whole unit; a feature only itself); every other period and agent acts by policy."""
    from pgjax.deploy.device_map import map_for_env, parse_map

    dmap = parse_map(map_for_env(env, port=0))
    bad = _bad_readings(dmap)
    kinds = {(u.kind, m.name[:2] if m.name.startswith("V_") else m.name) for u, m, _, _ in bad}
    assert len(kinds) >= 18 and sum(label == "below_min" for *_, label, _ in bad) >= 14
    start, gap = 2, 2  # fault i at period start + gap * i: a clean period between faults
    faults = tuple(Fault("bad_value", at_step=start + gap * i, steps=1, unit=u.name, point=m.name, value=v)
                   for i, (u, m, _, v) in enumerate(bad))
    plant, ctl, summary = loop(start + gap * len(bad) + 1, dmap=dmap, faults=faults)
    features = {name: {f["key"] for f in feats} for name, _, feats, _ in ctl.agents}
    expected = {}  # period -> agents expected safe
    for i, (u, m, label, v) in enumerate(bad):
        spoiled = {m.feature} if m.feature is not None else {x.feature for x in u.measurements if x.feature}
        expected[start + gap * i] = {a for a, keys in features.items() if keys & spoiled}
        assert expected[start + gap * i], (u.name, m.name, "observed by no agent")
    for r in ctl.rows:
        safe = {a for a, mode in r["modes"].items() if mode == "safe"}
        assert safe == expected.get(r["k"], set()), (r["k"], bad[(r["k"] - start) // gap][:3] if r["k"] in expected
                                                     else None, r["modes"])
    implausible = [(r["k"], f["unit"], f["point"]) for r in ctl.rows for f in r["faults"] if f["kind"] == "implausible"]
    assert implausible == [(start + gap * i, u.name, m.name) for i, (u, m, _, _) in enumerate(bad)]
    assert plant_events(tmp_path, "refused") == []


def test_stale_measurements_give_the_safe_action(env, loop, tmp_path):
    """Measurements frozen after step 3 for 6 steps: the sequence counter stops; from the third
    unchanged reading on (`stale_periods=3`) every agent is safe, and acts again once it moves."""
    plant, ctl, summary = loop(14, faults=(Fault("freeze", at_step=3, steps=6),), stale_periods=3)
    stale = [r["k"] for r in ctl.rows if any(f["kind"] == "stale" for f in r["faults"])]
    # Seq reads 3 in periods 3..9 (published at step 3, frozen for steps 4..9): unchanged 1..6 times in 4..9
    assert stale == [6, 7, 8, 9]
    for r in ctl.rows:
        assert set(r["modes"].values()) == ({"safe"} if r["k"] in stale else {"policy"}), r["k"]
    assert plant_events(tmp_path, "refused") == []


def test_server_restart_mid_run(env, loop, tmp_path):
    """Plant on its own clock, down for 2 s after step 5: the controller survives, acts safe while it
    is down, reconnects and resumes; the devices revert by their reversion timeout meanwhile."""
    dmap = parse_map(map_for_env(env, port=0, reversion_s=0.2))
    plant, ctl, summary = loop(60, dmap=dmap, faults=(Fault("restart", at_step=5, seconds=2.0),), plant_period=0.05,
                               steps=400, backoff_s=0.05, backoff_max_s=0.2, read_timeout_s=0.3)
    down = [r["k"] for r in ctl.rows if any(f["kind"] == "connection" for f in r["faults"])]
    assert len(down) >= 2
    for r in ctl.rows:
        if r["k"] in down:
            assert set(r["modes"].values()) == {"safe"} and r["writes"] == 0
    after = [r for r in ctl.rows if r["k"] > max(down)]
    assert len(after) >= 5 and all(set(r["modes"].values()) == {"policy"} for r in after[1:])
    assert [e["event"] for e in plant_events(tmp_path) if e["event"].startswith("server")] == \
        ["server_up", "server_down", "server_up"]
    reverted = [r["t"] for r in plant.rows if r["reverted"]]
    assert reverted and min(reverted) >= 5  # only after the controller lost the plant
    assert plant_events(tmp_path, "refused") == []


def test_responses_slower_than_the_timeout(env, loop, tmp_path):
    plant, ctl, summary = loop(30, faults=(Fault("delay", at_step=6, steps=2, seconds=2.0),), plant_period=0.05,
                               steps=200, read_timeout_s=0.5)
    timed_out = [r["k"] for r in ctl.rows if any(f["kind"] == "timeout" for f in r["faults"])]
    assert timed_out
    for r in ctl.rows:
        if r["k"] in timed_out:
            assert set(r["modes"].values()) == {"safe"}
    assert all(set(r["modes"].values()) == {"policy"} for r in ctl.rows[max(timed_out) + 3:])
    assert plant_events(tmp_path, "refused") == []


def test_bounds_and_ramp_limits_hold(env, loop, tmp_path):
    """A map narrowing the storage setpoint to +-50 % with a 100 %/s ramp (5 % per 50 ms period)."""
    data = map_for_env(env, port=0)
    sp = next(s for s in data["devices"]["mg1_ess"]["setpoints"] if s["action"] == STORAGE_P)
    sp.update({"min": -50.0, "max": 50.0, "ramp_per_s": 100.0})
    plant, ctl, summary = loop(12, dmap=parse_map(data))
    a = env.agents.index("MG1")
    col = env.layout.action.column(a, STORAGE_P)
    applied = np.array([r["actions"][a][col] for r in plant.rows])
    wanted = np.array([r["actions"]["MG1"][col] for r in ctl.rows])
    assert np.abs(wanted).max() > 0.5  # the policy asks for more than the bounds allow
    assert np.abs(applied).max() <= 0.5
    assert np.all(np.abs(np.diff(applied)) <= 0.05 + 1e-12)
    assert plant_events(tmp_path, "refused") == []


def test_writes_outside_the_map_are_refused(env, export_dir, tmp_path):
    """The controller's guard refuses unmapped and out-of-bounds writes before sending; the plant
    refuses them too when a raw client sends them (ILLEGAL_ADDRESS / ILLEGAL_VALUE), registers unchanged."""
    from pymodbus.client import AsyncModbusTcpClient

    dmap = parse_map(map_for_env(env, port=0))
    unit = dmap.unit("mg1_ess")
    sp = unit.setpoints[0]
    with pytest.raises(WriteRefused, match="not a writable register"):
        check_write(dmap, unit.unit_id, 0, [0])  # a measurement register
    with pytest.raises(WriteRefused, match="outside"):
        check_write(dmap, unit.unit_id, sp.address, registers.encode(150.0, sp.dtype, sp.sf))

    async def main():
        plant = Plant(env, dmap, log_path=tmp_path / "plant.jsonl", steps=2)
        await plant.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.port, timeout=1.0, retries=0, reconnect_delay=0)
        await client.connect()
        try:
            before = (await client.read_holding_registers(0, count=3, device_id=unit.unit_id)).registers
            r1 = await client.write_registers(0, [1234], device_id=unit.unit_id)
            r2 = await client.write_registers(sp.address, registers.encode(150.0, sp.dtype, sp.sf),
                                              device_id=unit.unit_id)
            r3 = await client.write_registers(2000, [1], device_id=unit.unit_id)
            after = (await client.read_holding_registers(0, count=3, device_id=unit.unit_id)).registers
            spv = (await client.read_holding_registers(sp.address, count=1, device_id=unit.unit_id)).registers
        finally:
            client.close()
            await plant.stop()
        return before, (r1, r2, r3), after, spv

    before, responses, after, spv = asyncio.run(main())
    assert all(r.isError() for r in responses)
    assert [r.exception_code for r in responses] == [2, 3, 2]  # ILLEGAL_ADDRESS, ILLEGAL_VALUE, ILLEGAL_ADDRESS
    assert after == before and spv == [0]
    # address 2000 lies outside the unit's register block: pymodbus answers before the plant sees it
    assert [e["address"] for e in plant_events(tmp_path, "refused")] == [0, sp.address]


def test_shutdown_leaves_safe_values_and_devices_revert_without_controller(env, export_dir, tmp_path):
    """At the end of `run` every setpoint register holds its safe value (`default`: the device's safe
    action; `hold`: the last value written). Then, with no controller, the plant's clock steps revert
    every controlled unit once the 0.2 s reversion timeout has passed."""
    from pgjax.deploy.runtime import Controller

    dmap = parse_map(map_for_env(env, port=0, reversion_s=0.2))

    async def main():
        plant = Plant(env, dmap, period_s=0.05, log_path=tmp_path / "plant.jsonl", steps=200)
        await plant.start()
        ctl = Controller(export_dir, dmap, period_s=0.05, read_timeout_s=1.0, port=plant.port)
        await ctl.run(periods=8)
        held = {(u.name, s.name): plant.value(u.name, s.name) for u in dmap.units for s in u.setpoints}
        t_done = time.time()  # after the controller's last write
        deadline = time.monotonic() + 30.0  # generous: a loaded machine steps the plant late
        while (sum(r["wall_s"] > t_done + SETTLED_S for r in plant.rows) < 3
               and time.monotonic() < deadline and not plant.done):
            await asyncio.sleep(0.05)
        await plant.stop()
        return plant, ctl, held, t_done

    plant, ctl, held, t_done = asyncio.run(main())
    for u in dmap.units:
        for s in u.setpoints:
            expected = ctl.last[(u.unit_id, s.address)] if s.safe == "hold" else s.default * s.full_scale
            assert held[(u.name, s.name)] == pytest.approx(expected, abs=1e-9), (u.name, s.name)
    assert any(s.safe == "hold" for u in dmap.units for s in u.setpoints)
    controlled = sorted(u.name for u in dmap.units if u.setpoints)
    # plant steps logged 0.5 s after the last write, well past the 0.2 s reversion timeout (no sleep
    # margin: the loop above waits for three such steps however late they come)
    late = [r for r in plant.rows if r["wall_s"] > t_done + SETTLED_S]
    assert len(late) >= 3 and all(sorted(r["reverted"]) == controlled for r in late)
    # after the last write a unit once reverted stays reverted (before it, a loaded machine may stall the
    # controller past the timeout and its next write legitimately takes the unit back)
    reverted_sets = [set(r["reverted"]) for r in plant.rows if r["wall_s"] > t_done]
    assert all(a <= b for a, b in zip(reverted_sets, reverted_sets[1:]))
    assert all(r["actions"] == np.asarray(env.default_actions).tolist() for r in late)
    assert plant_events(tmp_path, "refused") == []

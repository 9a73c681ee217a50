"""The three commands in their own processes: `pgjax hil` serving, `pgjax deploy` controlling it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from deploy_fixtures import env, export_dir, loop, run_dir  # noqa: F401 (the deployment tests' fixtures)

PGJAX = [sys.executable, "-m", "pgjax.cli"]
SCENARIO = "multi_microgrid"


@pytest.mark.slow
def test_hil_and_deploy_processes(export_dir, tmp_path):
    out = subprocess.run(PGJAX + ["hil", SCENARIO, "--dtype", "float32", "--write-map", str(tmp_path / "map.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hil = subprocess.Popen(PGJAX + ["hil", SCENARIO, "--dtype", "float32", "--map", str(tmp_path / "map.yaml"),
                                    "--port", "0", "--steps", "6", "--linger", "1", "--lockstep",
                                    "--summary", str(tmp_path / "plant.json"), "--compare", str(export_dir),
                                    "--plot", str(tmp_path / "day.png")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = hil.stdout.readline()
        port = re.search(r"serving 127\.0\.0\.1:(\d+)", line)
        assert port, line + hil.stderr.read()
        dep = subprocess.run(PGJAX + ["deploy", str(export_dir), "--map", str(tmp_path / "map.yaml"), "--port",
                                      port.group(1), "--period", "0.1", "--periods", "6",
                                      "--summary", str(tmp_path / "deploy.json"), "--log", str(tmp_path / "d.jsonl")],
                             capture_output=True, text=True, timeout=300)
        assert dep.returncode == 0, dep.stderr
        rest, err = hil.communicate(timeout=300)
    finally:
        hil.kill()
    assert hil.returncode == 0, err
    deploy = json.loads((tmp_path / "deploy.json").read_text())
    assert deploy["periods"] == 6 and deploy["faults"] == {} and deploy["refused_writes"] == 0
    plant = json.loads((tmp_path / "plant.json").read_text())
    assert plant["steps"] == 6 and plant["metrics"]["cost"] > 0
    assert plant["compare"]["max_action_diff"] < 1e-2 and (tmp_path / "day.png").stat().st_size > 0
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 7  # 6 periods + the shutdown line


@pytest.mark.slow
def test_deploy_stops_on_ctrl_c_with_safe_values(export_dir, tmp_path):
    """Ctrl-C (SIGINT; SIGTERM takes the same handler): the controller finishes its period, writes every
    safe value, logs it and exits 0. Read back from the still-serving plant afterwards, every setpoint
    register holds its safe value: the device's safe action (`default * full_scale`) or, for `hold`, the
    value of the last period's row; at least one register then differs from that last period's value (so
    the check tells a safe write from none: heartbeat writes alone keep `writes > 0`)."""
    from pymodbus.client import ModbusTcpClient

    from pgjax.deploy import registers
    from pgjax.deploy.device_map import load_map

    out = subprocess.run(PGJAX + ["hil", SCENARIO, "--dtype", "float32", "--write-map", str(tmp_path / "map.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hil = subprocess.Popen(PGJAX + ["hil", SCENARIO, "--dtype", "float32", "--map", str(tmp_path / "map.yaml"),
                                    "--port", "0", "--period", "0.1", "--steps", "1000",
                                    "--log", str(tmp_path / "p.jsonl")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = re.search(r"serving 127\.0\.0\.1:(\d+)", hil.stdout.readline()).group(1)
        dep = subprocess.Popen(PGJAX + ["deploy", str(export_dir), "--map", str(tmp_path / "map.yaml"), "--port", port,
                                        "--period", "0.1", "--log", str(tmp_path / "d.jsonl")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log = tmp_path / "d.jsonl"
        for _ in range(600):  # until 5 periods are logged
            if log.exists() and len(log.read_text().splitlines()) >= 5:
                break
            time.sleep(0.1)
        dep.send_signal(signal.SIGINT)
        _, err = dep.communicate(timeout=60)
        dmap = load_map(tmp_path / "map.yaml")
        client = ModbusTcpClient("127.0.0.1", port=int(port))
        assert client.connect()
        held = {}
        for u in dmap.units:
            for sp in u.setpoints:
                rr = client.read_holding_registers(sp.address, count=sp.width, device_id=u.unit_id)
                assert not rr.isError(), (u.name, sp.name, rr)
                held[(u.unit_id, sp.address)] = (sp, registers.decode(rr.registers, sp.dtype, sp.sf))
        client.close()
        hil.send_signal(signal.SIGTERM)
        hil.communicate(timeout=60)
    finally:
        dep.kill()
        hil.kill()
    assert dep.returncode == 0, err
    assert "safe values written" in err
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["event"] == "shutdown" and last["writes"] > 0 and last["faults"] == []
    assert hil.returncode == 0
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    final = rows[-2]  # the last period before the shutdown line
    assert "k" in final and final["faults"] == [] and set(final["modes"].values()) == {"policy"}
    last_value = {(u, a): v for u, a, v in final["setpoints"]}
    assert held and set(held) == set(last_value)
    for key, (sp, value) in held.items():
        safe = last_value[key] if sp.safe == "hold" else sp.default * sp.full_scale
        assert value == pytest.approx(safe, abs=0.51 * 10.0 ** sp.sf), (key, sp.name, value, safe)
    assert any(abs(last_value[k] - sp.default * sp.full_scale) > 10.0 ** sp.sf
               for k, (sp, _) in held.items() if sp.safe != "hold")


def test_deploy_refuses_a_map_missing_features(export_dir, env, tmp_path):
    from pgjax.deploy.device_map import map_for_env, write_map

    data = map_for_env(env)
    del data["devices"]["mg2_ess"]
    write_map(tmp_path / "map.yaml", data)
    out = subprocess.run(PGJAX + ["deploy", str(export_dir), "--map", str(tmp_path / "map.yaml"), "--periods", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "feature storage/mg2_ess/e_mwh, observed by ['MG2']" in out.stderr

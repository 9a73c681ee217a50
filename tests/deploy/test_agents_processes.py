"""The message-exchanging deployment in its own processes: `pgjax deploy --write-acl` secures a real
Mosquitto, `pgjax hil` serves the `multi_microgrid_p2p` plant in lock-step, and three `pgjax deploy
--broker` processes, one per microgrid, each with its own credentials, trade over the broker while
they control the plant. The plant's day equals the simulated day through the registers (measured:
actions 1e-3 apart at most, voltages 1.2e-5 p.u., cost 656.752 $ deployed vs 656.753 $ simulated)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from pgjax.deploy.broker import Mosquitto, free_port
from pgjax.deploy.device_map import load_map
from pgjax.deploy.plant import simulate_day
from pgjax.deploy.policy import load_policy
from agents_fixtures import P2P, p2p_env, p2p_export  # noqa: F401 (fixtures)
from broker_fixtures import needs_mosquitto

PGJAX = [sys.executable, "-m", "pgjax.cli"]
STEPS = 6
pytestmark = [needs_mosquitto, pytest.mark.slow]


def test_three_agent_processes_trade_over_a_secured_broker(p2p_env, p2p_export, tmp_path):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    out = subprocess.run(PGJAX + ["deploy", str(p2p_export), "--write-acl", str(tmp_path / "broker"), "--broker", url],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "mosquitto -c" in out.stdout, out.stderr
    acl = (tmp_path / "broker" / "acl").read_text()
    site = p2p_env.name
    assert f"topic write pgjax/{site}/p2p_trading/MG1" in acl and f"topic read pgjax/{site}/p2p_trading/MG2" in acl
    broker = Mosquitto(tmp_path / "broker" / "mosquitto.conf", port, log_path=tmp_path / "mosquitto.log").start()
    mapfile = str(tmp_path / "map.yaml")
    assert subprocess.run(PGJAX + ["hil", P2P, "--dtype", "float32", "--write-map", mapfile], timeout=300).returncode == 0
    hil = subprocess.Popen(PGJAX + ["hil", P2P, "--dtype", "float32", "--map", mapfile, "--port", "0", "--steps",
                                    str(STEPS), "--linger", "3", "--lockstep", "--log", str(tmp_path / "plant.jsonl")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agents = []
    try:
        line = hil.stdout.readline()
        plant_port = re.search(r"serving 127\.0\.0\.1:(\d+)", line)
        assert plant_port, line + hil.stderr.read()
        for j, name in enumerate(p2p_env.agents):
            agents.append(subprocess.Popen(
                PGJAX + ["deploy", str(p2p_export), "--map", mapfile, "--port", plant_port.group(1), "--period", "0.01",
                         "--periods", str(STEPS), "--agents", name, "--broker", url, "--lockstep",
                         "--secret", str(tmp_path / "broker" / f"{name}.secret"), "--wait", "20",
                         "--bus-log", str(tmp_path / f"bus_{name}.jsonl"), "--summary", str(tmp_path / f"{name}.json")]
                + ([] if j == 0 else ["--no-heartbeat"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for a in agents:
            _, err = a.communicate(timeout=400)
            assert a.returncode == 0, err
        hil.communicate(timeout=120)
    finally:
        for proc in agents + [hil]:
            proc.kill()
        broker.stop()
    for name in p2p_env.agents:
        s = json.loads((tmp_path / f"{name}.json").read_text())
        assert s["periods"] == STEPS and s["faults"] == {} and s["agent_periods"] == {"policy": STEPS}, s
    rows = [json.loads(x) for x in (tmp_path / "plant.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "actions" in r]
    assert len(rows) == STEPS
    import pgjax

    policies = {a: load_policy(p2p_export, a) for a in p2p_env.agents}
    served = pgjax.make(P2P, dtype="float32", split="test")  # what `pgjax hil` serves by default
    quantized = simulate_day(served, policies, day=0, steps=STEPS, dmap=load_map(mapfile))
    np.testing.assert_allclose([r["actions"] for r in rows], [r["actions"] for r in quantized], atol=2e-3)
    np.testing.assert_allclose([r["vm_pu"] for r in rows], [r["vm_pu"] for r in quantized], atol=2e-4)
    assert sum(r["info"]["p2p_volume_mw"] for r in rows) > 0
    log = [json.loads(x) for a in p2p_env.agents for x in (tmp_path / f"bus_{a}.jsonl").read_text().splitlines()]
    assert not [e for e in log if e["event"] == "refused"]
    # every bid used in periods 1 .. STEPS - 1 arrived (those of the last period may come before the end)
    assert 3 * 2 * (STEPS - 1) <= sum(e["event"] == "received" and e.get("kind") == "bid" for e in log) <= 3 * 2 * STEPS

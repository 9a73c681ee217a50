"""Faults of the message bus while the agents control a lock-step plant (real Mosquitto, real Modbus):
a broker restart mid-day and a partitioned agent. Every agent keeps controlling its devices in every
period (policy mode, setpoints written, no device reverts), takes the protocol's safe behaviour while
messages are missing (no trade: its P2P features are zero when no peer's bid arrived), and trades
again once messages return."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents_fixtures import p2p_env, p2p_export, run_day  # noqa: F401 (fixtures)
from broker_fixtures import broker, needs_mosquitto  # noqa: F401 (fixtures)

pytestmark = needs_mosquitto
STEPS = 10
GROUPS = [["MG1"], ["MG2"], ["MG3"]]


async def after_rows(ctl, n):
    while len(ctl.rows) < n:
        await asyncio.sleep(0.01)


def kept_controlling(plant, ctls, summaries):
    assert len(plant.rows) == STEPS and not any(r["reverted"] for r in plant.rows)
    for c, s in zip(ctls, summaries):
        assert s["periods"] == STEPS and s["agent_periods"] == {"policy": STEPS}, s
        assert all(r["writes"] > 0 for r in c.rows)  # setpoints every period


def bids_received(ctl, name):
    """Per period: the peers whose bids reached `name` (from its receipts' view)."""
    return [sorted(s for s, x in enumerate(r["protocol"][name]["p2p_mw"]) if x != 0) for r in ctl.rows]


def test_broker_restart_mid_day(broker, p2p_env, p2p_export, tmp_path):
    started = broker()

    async def restart(plant, ctls):
        await after_rows(ctls[0], 3)
        await asyncio.to_thread(started.proc.restart, 1.0)

    plant, ctls, summaries = run_day(p2p_env, p2p_export, started.url, STEPS, tmp_path, GROUPS, during=restart,
                                     wait_s=0.4)
    kept_controlling(plant, ctls, summaries)
    log = [json.loads(x) for j in range(3) for x in (tmp_path / f"bus{j}.jsonl").read_text().splitlines()]
    down = [e for e in log if e["event"] == "disconnected"]
    assert len(down) >= 3  # every agent lost the broker ...
    assert sum(e["event"] == "connected" for e in log) >= 6  # ... and came back
    outage = [k for c in ctls for k, r in enumerate(c.rows) if r["faults"]]
    assert outage  # the periods without messages are logged as faults
    last = max(outage)
    assert last < STEPS - 2
    # after the outage every bid arrives again: each agent hears both peers in the last periods
    for c in ctls:
        name = c.agents[0][0]
        assert all(len(r["protocol"][name].get("p2p_mw", [])) == 3 for r in c.rows[last + 1:])
        assert all(not r["faults"] for r in c.rows[last + 1:])
    bids_after = [e for e in log if e["event"] == "received" and e.get("kind") == "bid" and e["period"] > last]
    assert len(bids_after) >= 6


@pytest.mark.slow  # ~35 s; the broker restart above covers losing and regaining the broker in the quick set
def test_partitioned_agent_trades_nothing_and_resumes(broker, p2p_env, p2p_export, tmp_path):
    started = broker()
    cut = {}

    async def partition(plant, ctls):
        bus = ctls[2].buses["MG3"]
        await after_rows(ctls[2], 3)
        cut["from"] = len(ctls[2].rows)
        bus.client.disconnect()  # MG3's link to the broker is cut ...
        bus.client.loop_stop()
        await after_rows(ctls[2], 6)
        cut["to"] = len(ctls[2].rows)
        bus.start()  # ... and restored

    plant, ctls, summaries = run_day(p2p_env, p2p_export, started.url, STEPS, tmp_path, GROUPS, during=partition,
                                     wait_s=0.4)
    kept_controlling(plant, ctls, summaries)
    mg3 = ctls[2].rows
    alone = [r for r in mg3[cut["from"] + 1:cut["to"]]]
    assert alone and all(r["protocol"]["MG3"]["features"] == [0.0, 0.0] for r in alone)  # no trade, no price
    assert all(any(f["kind"] == "messages" for f in r["faults"]) for r in alone)
    log = [json.loads(x) for x in (tmp_path / "bus2.jsonl").read_text().splitlines()]
    assert any(e["event"] == "dropped" and e.get("why") == "not connected" for e in log)
    resumed = [e for e in log if e["event"] == "received" and e.get("kind") == "bid" and e["period"] >= cut["to"] + 1]
    assert resumed  # MG3 hears its peers again
    assert not mg3[-1]["faults"]

"""Agents exchanging protocol messages over a real Mosquitto while controlling a lock-step Modbus plant
(`pgjax.deploy.agents`): the deployed day of `multi_microgrid_p2p` is the simulated one.

The plant (`pgjax.deploy.plant`) runs the compiled step, its own P2P market included, on the
registers the agents write; the agents clear the same market among themselves from the bids they
send each other over the broker, from their own Modbus readings. So the day can only match if
the transport delivers every bid in its period (the scenario's `msg_delay: 1`) and the host-side
clearing is the step's: trades and clearing prices agree with the plant's to the register
quantization of the imports the bids are made of (1e-3 MW), actions and voltages with the simulated
day's (`simulate_day` through the same registers). Measured on an 8-step day: actions 5e-4 apart
(a setpoint register step is 1e-4; the message features carry the import's 1e-3 MW step into the
policy), voltages 2.5e-5 p.u., cost 981.107 $ deployed vs 981.099 $ simulated, traded volume per
step 0.095 / 0.064 / 0.149 MW by the agents vs 0.0944 / 0.0634 / 0.1488 MW in the plant's market.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pgjax.deploy.plant import simulate_day
from pgjax.deploy.policy import load_policy
from agents_fixtures import p2p_env, p2p_export, run_day  # noqa: F401 (fixtures)
from broker_fixtures import broker, needs_mosquitto  # noqa: F401 (fixtures)

pytestmark = needs_mosquitto
STEPS = 8


def check_day(env, export, plant, ctls, dmap_steps):
    policies = {a: load_policy(export, a) for a in env.agents}
    from pgjax.deploy.device_map import map_for_env, parse_map

    quantized = simulate_day(env, policies, day=0, steps=dmap_steps, dmap=parse_map(map_for_env(env, port=0)))
    hil_actions = np.array([r["actions"] for r in plant.rows])
    np.testing.assert_allclose(hil_actions, [r["actions"] for r in quantized], atol=2e-3)
    np.testing.assert_allclose([r["vm_pu"] for r in plant.rows], [r["vm_pu"] for r in quantized], atol=2e-4)
    hil_cost = sum(r["info"]["cost_total"] for r in plant.rows)
    assert hil_cost == pytest.approx(sum(r["info"]["cost_total"] for r in quantized), rel=1e-4)
    # the agents' own clearing, period by period, against the plant's market (info p2p_volume_mw)
    for k, row in enumerate(plant.rows):
        volumes = [sum(max(x, 0.0) for x in r["protocol"][a]["p2p_mw"]) for c in ctls for r in c.rows[k:k + 1]
                   for a in r["protocol"]]
        assert volumes and all(v == pytest.approx(row["info"]["p2p_volume_mw"], abs=2e-3) for v in volumes), k
    return hil_actions


def test_p2p_day_over_the_broker_equals_the_simulated_day(broker, p2p_env, p2p_export, tmp_path):
    started = broker()
    plant, ctls, summaries = run_day(p2p_env, p2p_export, started.url, STEPS, tmp_path, [["MG1"], ["MG2"], ["MG3"]])
    assert all(s["faults"] == {} for s in summaries), summaries
    assert len(plant.rows) == STEPS
    assert sum(r["info"]["p2p_volume_mw"] for r in plant.rows) > 0  # they traded
    check_day(p2p_env, p2p_export, plant, ctls, STEPS)
    log = [json.loads(x) for j in range(3) for x in (tmp_path / f"bus{j}.jsonl").read_text().splitlines()]
    bids = [e for e in log if e.get("kind") == "bid" and e["event"] == "received"]
    assert len(bids) == 3 * 2 * (STEPS - 1) or len(bids) == 3 * 2 * STEPS


def test_p2p_day_with_delay_and_loss_equals_the_simulated_channel(broker, p2p_export, tmp_path):
    """`msg_delay: 1` and `loss_prob: 0.3` in the scenario; the simulated channel's losses of the day
    (`channel_losses`) injected on the receivers: the deployed day is the simulated day with those
    conditions (the receipts give every agent the simulated delivery, as the step's clearing sees it)."""
    import pgjax
    from pgjax.deploy.agents import channel_losses

    env = pgjax.make("multi_microgrid_p2p", dtype="float32", loss_prob=0.3)
    drop = channel_losses(env, STEPS)
    started = broker()
    # a dropped bid is waited for until `wait_s`, which must stay inside the plant's lock-step patience
    plant, ctls, summaries = run_day(env, p2p_export, started.url, STEPS, tmp_path, [["MG1"], ["MG2", "MG3"]],
                                     drop=drop, wait_s=2.0)
    assert len(plant.rows) == STEPS and all(s["agent_periods"] == {"policy": STEPS * len(c.agents)}
                                            for s, c in zip(summaries, ctls))
    check_day(env, p2p_export, plant, ctls, STEPS)
    log = [json.loads(x) for j in range(2) for x in (tmp_path / f"bus{j}.jsonl").read_text().splitlines()]
    dropped = sorted((e["agent"], e["period"], e["sender"]) for e in log
                     if e["event"] == "dropped" and e["period"] < STEPS - 1)  # the last period's may come late
    assert dropped == sorted((r, t, s) for r, lost in drop.items() for t, s in lost if t < STEPS - 1)
    assert len(dropped) >= 5  # the day had losses


def test_without_a_broker_the_controller_names_what_is_missing(p2p_env, p2p_export):
    """The device map takes the P2P scenario (message features come over the broker), and a Modbus-only
    controller of agents that observe messages is refused with the option that runs them."""
    from pgjax.deploy.device_map import map_for_env, parse_map
    from pgjax.deploy.runtime import Controller
    from pgjax.errors import DataError

    dmap = parse_map(map_for_env(p2p_env, port=0))
    assert not any(m.feature and m.feature.startswith("message/") for u in dmap.units for m in u.measurements)
    with pytest.raises(DataError, match=r"observe protocol messages .*message/MG1/clearing_price.*--broker mqtt://"):
        Controller(p2p_export, dmap)


def test_write_acl_command(p2p_env, p2p_export, tmp_path, capsys):
    import os
    import stat

    from pgjax.commands.deploy import main

    out = tmp_path / "broker"
    assert main([str(p2p_export), "--write-acl", str(out), "--broker", "mqtt://127.0.0.1:18830"]) == 0
    assert f"mosquitto -c {out / 'mosquitto.conf'}" in capsys.readouterr().out
    acl = (out / "acl").read_text()
    site = p2p_env.name
    for a in p2p_env.agents:  # writes only its own topics, reads its peers'
        block = acl.split(f"user {a}\n")[1].split("\n\n")[0]
        assert f"topic write pgjax/{site}/p2p_trading/{a}" in block
        assert sorted(x.rsplit("/", 1)[1] for x in block.splitlines() if x.startswith("topic read pgjax/{}/p2p".format(
            site))) == sorted(set(p2p_env.agents) - {a})
        assert stat.S_IMODE(os.stat(out / f"{a}.secret").st_mode) == 0o600
    conf = (out / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 18830 127.0.0.1" in conf
    assert main([str(p2p_export), "--write-acl", str(out), "--tls-cert", "c.pem", "k.pem"]) != 0
    assert "--tls-cert needs --tls-ca" in capsys.readouterr().err


@pytest.mark.slow  # ~55 s: its own export and four controllers (the P2P days above stay in the quick set)
def test_dso_day_with_the_operator_as_its_own_process(broker, tmp_path):
    """`multi_microgrid_dso`: the learned operator's process sends each microgrid its exchange setpoint
    over the broker (with the generated ACL and passwords); each microgrid's process writes it to its EMS
    register; the plant's microgrid controllers track it. The day equals the simulated day through the
    registers."""
    import pgjax
    from agents_fixtures import CONFIG_KW, DSO, export_for, run_dso_day

    env = pgjax.make(DSO, **CONFIG_KW["env_kwargs"])
    from pgjax.deploy.agents import acl_reads

    export = export_for(DSO, _Factory(tmp_path))
    protocol, reads = acl_reads(env)  # the ACL of `pgjax deploy --write-acl`: operator <-> each microgrid
    started = broker(reads=reads, site=env.name, protocol=protocol)
    plant, ctls, summaries = run_dso_day(env, export, started.url, STEPS, tmp_path,
                                         passwords={a: started.password(a) for a in reads})
    assert all(s["periods"] == STEPS and s["faults"] == {} for s in summaries), summaries
    policies = {a: load_policy(export, a) for a in env.agents}
    from pgjax.deploy.device_map import map_for_env, parse_map

    quantized = simulate_day(env, policies, day=0, steps=STEPS, dmap=parse_map(map_for_env(env, port=0)))
    hil = np.array([r["actions"] for r in plant.rows])
    sim = np.array([r["actions"] for r in quantized])
    assert np.abs(sim[:, 0, 4:]).max() > 0.1  # the operator sends non-trivial setpoints
    np.testing.assert_allclose(hil, sim, atol=2e-3)
    np.testing.assert_allclose([r["vm_pu"] for r in plant.rows], [r["vm_pu"] for r in quantized], atol=2e-4)
    hil_cost = sum(r["info"]["cost_total"] for r in plant.rows)
    assert hil_cost == pytest.approx(sum(r["info"]["cost_total"] for r in quantized), rel=1e-4)


class _Factory:
    """A `tmp_path_factory` stand-in for `export_for` inside one test."""

    def __init__(self, root):
        self.root, self.n = root, 0

    def mktemp(self, name):
        self.n += 1
        path = self.root / f"{name}{self.n}"
        path.mkdir()
        return path

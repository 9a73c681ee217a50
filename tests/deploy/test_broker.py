"""The MQTT transport (`pgjax.deploy.bus`) against a real Mosquitto on 127.0.0.1: authentication and
ACL (`pgjax deploy --write-acl`), TLS, refusals, the channel's delay, late, lost and duplicated messages,
and a broker restart."""

from __future__ import annotations

import asyncio
import json
import time

import paho.mqtt.client as mqtt
import pytest

from pgjax.deploy.bus import SCHEMA, Bus
from broker_fixtures import broker, needs_mosquitto  # noqa: F401 (the broker tests' fixtures)

pytestmark = needs_mosquitto
AGENTS = ("MG1", "MG2", "MG3")
PEERS = {a: [b for b in AGENTS if b != a] for a in AGENTS}


def bus(url, agent, tmp_path, started=None, **kw):
    kw.setdefault("reads", PEERS[agent])
    if started is not None and started.files is not None:
        kw.update(username=agent, password=started.password(agent))
    if started is not None and started.tls is not None:
        kw["tls"] = started.tls
    return Bus(url, "t", "p2p_trading", agent, AGENTS, log_path=tmp_path / f"{agent}.jsonl", **kw).start()


def events(tmp_path, agent):
    return [json.loads(x) for x in (tmp_path / f"{agent}.jsonl").read_text().splitlines()]


def raw_client(url, tls=None, **auth):
    host, port = url.split("://")[1].split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if auth:
        c.username_pw_set(auth["username"], auth["password"])
    if tls:
        c.tls_set(ca_certs=tls["cafile"])
    result = {}
    c.on_connect = lambda *a: result.setdefault("rc", a[3])
    c.connect(host, int(port))
    c.loop_start()
    deadline = time.monotonic() + 5
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.01)
    return c, result.get("rc")


def exchange(buses, kind, period, payloads, timeout_s=2.0):
    """Each bus publishes its payload for `period`, then collects the others'."""
    async def go():
        for b in buses:
            assert await b.wait_connected()
        for b, p in zip(buses, payloads):
            b.publish(kind, period, p)
        return [await b.collect(kind, period + 0, [o.agent for o in buses if o is not b and o.agent in b.reads],
                                timeout_s) for b in buses]
    return asyncio.run(go())


def test_an_agent_is_ready_only_once_the_broker_acknowledged_its_subscriptions(broker, tmp_path):
    """`connected` (what `wait_connected` and `publish` go by) turns true at the SUBACK, not at the
    CONNACK: a peer's message published in between would never reach the agent."""
    started = broker()
    b = Bus(started.url, "t", "p2p_trading", "MG1", AGENTS, reads=PEERS["MG1"], log_path=tmp_path / "MG1.jsonl")
    ready_at_connack = []

    def on_connect(*args):
        b._on_connect(*args)
        ready_at_connack.append(b.connected)

    b.client.on_connect = on_connect
    b.start()
    assert asyncio.run(b.wait_connected())
    assert ready_at_connack == [False]
    b.close()


def test_messages_flow_with_the_acl_and_each_agent_reads_what_it_may(broker, tmp_path):
    started = broker(reads={"MG1": ["MG2"], "MG2": ["MG1"], "MG3": ["MG1", "MG2"]})
    buses = [bus(started.url, a, tmp_path, started, reads=r) for a, r in
             (("MG1", ["MG2"]), ("MG2", ["MG1"]), ("MG3", ["MG1", "MG2"]))]
    got = exchange(buses, "bid", 0, [[1.0, 50.0], [-1.0, 60.0], [0.5, 40.0]])
    assert got == [{"MG2": [-1.0, 60.0]}, {"MG1": [1.0, 50.0]}, {"MG1": [1.0, 50.0], "MG2": [-1.0, 60.0]}]
    for b in buses:
        b.close()


def test_a_client_without_credentials_is_refused(broker, tmp_path):
    started = broker(reads=PEERS)
    c, rc = raw_client(started.url)
    assert rc is not None and rc.is_failure and "authorized" in str(rc).lower()
    c2, rc2 = raw_client(started.url, username="MG1", password="wrong")
    assert rc2.is_failure
    for cl in (c, c2):
        cl.loop_stop()


def test_publishing_on_another_agents_topic_is_refused_by_the_broker(broker, tmp_path):
    started = broker(reads=PEERS)
    mg1, mg2 = bus(started.url, "MG1", tmp_path, started), bus(started.url, "MG2", tmp_path, started)
    intruder, rc = raw_client(started.url, username="MG3", password=started.password("MG3"))
    assert not rc.is_failure
    acks = {}
    intruder.on_publish = lambda c, u, mid, reason, props: acks.setdefault(mid, reason)
    fake = {"schema": SCHEMA, "kind": "bid", "site": "t", "protocol": "p2p_trading", "sender": "MG1", "period": 0,
            "sent_s": time.time(), "payload": [9.0, 1.0]}
    info = intruder.publish("pgjax/t/p2p_trading/MG1", json.dumps(fake), qos=1)
    got = exchange([mg1, mg2], "bid", 0, [[1.0, 50.0], [-1.0, 60.0]])
    deadline = time.monotonic() + 3
    while info.mid not in acks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert acks[info.mid].is_failure and "authorized" in str(acks[info.mid]).lower()
    assert got[1] == {"MG1": [1.0, 50.0]}  # the forged bid never reached MG2
    intruder.loop_stop()
    mg1.close(), mg2.close()


def test_forged_and_unknown_senders_are_refused_and_logged(broker, tmp_path):
    """On a broker without an ACL, the receiving agent itself refuses what it must not act on."""
    started = broker()
    mg1 = bus(started.url, "MG1", tmp_path)
    rogue, _ = raw_client(started.url)
    base = {"schema": SCHEMA, "kind": "bid", "site": "t", "protocol": "p2p_trading", "period": 0,
            "sent_s": time.time(), "payload": [5.0, 1.0]}
    assert asyncio.run(mg1.wait_connected())
    time.sleep(0.2)  # subscriptions in place
    rogue.publish("pgjax/t/p2p_trading/MG9", json.dumps({**base, "sender": "MG9"}), qos=1).wait_for_publish(2)
    rogue.publish("pgjax/t/p2p_trading/MG2", json.dumps({**base, "sender": "MG9"}), qos=1).wait_for_publish(2)
    rogue.publish("pgjax/t/p2p_trading/MG2", json.dumps({**base, "sender": "MG3"}), qos=1).wait_for_publish(2)
    rogue.publish("pgjax/t/p2p_trading/MG2", b"not json", qos=1).wait_for_publish(2)
    rogue.publish("pgjax/t/p2p_trading/MG2", json.dumps({**base, "sender": "MG2"}), qos=1).wait_for_publish(2)
    got = asyncio.run(mg1.collect("bid", 0, ["MG2"], 2.0))
    assert got == {"MG2": [5.0, 1.0]}
    mg1.close()
    refused = [e["why"] for e in events(tmp_path, "MG1") if e["event"] == "refused"]
    assert len(refused) == 4
    assert sum("'MG9' is not an agent" in w for w in refused) == 2
    assert any("'MG3' on 'MG2'" in w for w in refused) and any("not JSON" in w for w in refused)
    rogue.loop_stop()


def test_delay_late_duplicate_and_injected_loss(broker, tmp_path):
    """A bid sent in period k with delay 1 is used in k + 1; after its period closed it is late; a second
    copy is a duplicate, before or after its period closed; an injected loss never arrives; each is logged."""
    started = broker()
    mg1 = bus(started.url, "MG1", tmp_path, delay={"MG2": 1, "MG3": 1}, drop=[(3, "MG3")])
    mg2, mg3 = bus(started.url, "MG2", tmp_path), bus(started.url, "MG3", tmp_path)

    async def go():
        for b in (mg1, mg2, mg3):
            assert await b.wait_connected()
        await asyncio.sleep(0.2)
        mg2.publish("bid", 0, [1.0, 1.0])
        mg2.publish("bid", 0, [1.0, 1.0])  # a duplicate
        first = await mg1.collect("bid", 1, ["MG2"], 2.0)
        mg2.publish("bid", 0, [1.0, 1.0])  # a duplicate after its period closed: not late
        nothing = await mg1.collect("bid", 2, ["MG2"], 0.2)  # MG2 sent nothing in period 1
        mg3.publish("bid", 1, [3.0, 3.0])  # for period 2, which MG1 closed already: late
        mg3.publish("bid", 3, [4.0, 4.0])  # lost (injected)
        mg2.publish("bid", 3, [5.0, 5.0])
        last = await mg1.collect("bid", 4, ["MG2", "MG3"], 1.0)
        return first, nothing, last

    first, nothing, last = asyncio.run(go())
    assert first == {"MG2": [1.0, 1.0]} and nothing == {} and last == {"MG2": [5.0, 5.0]}
    for b in (mg1, mg2, mg3):
        b.close()
    kinds = [e["event"] for e in events(tmp_path, "MG1") if e.get("kind") == "bid"]
    assert sorted(kinds) == ["dropped", "duplicate", "duplicate", "late", "received", "received"]
    assert mg1.counts["late"] == 1 and mg1.counts["dropped"] == 1


def test_tls_listener(broker, tmp_path):
    started = broker(reads=PEERS, tls=True)
    buses = [bus(started.url, a, tmp_path, started) for a in AGENTS]
    got = exchange(buses, "bid", 0, [[1.0], [2.0], [3.0]])
    assert got[0] == {"MG2": [2.0], "MG3": [3.0]}
    plain_url = started.url.replace("mqtts", "mqtt")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)  # no TLS: no MQTT session
    c.username_pw_set("MG1", started.password("MG1"))
    host, port = plain_url.split("://")[1].split(":")
    result = {}
    c.on_connect = lambda *a: result.setdefault("rc", a[3])
    try:
        c.connect(host, int(port))
        c.loop_start()
        time.sleep(1.0)
        c.loop_stop()
    except OSError:
        pass
    assert "rc" not in result or result["rc"].is_failure
    for b in buses:
        b.close()


def test_messages_resume_after_a_broker_restart(broker, tmp_path):
    started = broker(reads=PEERS)
    mg1, mg2 = bus(started.url, "MG1", tmp_path, started), bus(started.url, "MG2", tmp_path, started)
    assert exchange([mg1, mg2], "bid", 0, [[1.0], [2.0]]) == [{"MG2": [2.0]}, {"MG1": [1.0]}]
    started.proc.restart(down_s=0.5)
    assert exchange([mg1, mg2], "bid", 1, [[3.0], [4.0]], timeout_s=8.0) == [{"MG2": [4.0]}, {"MG1": [3.0]}]
    assert any(e["event"] == "disconnected" for e in events_after_close(mg1, tmp_path))
    mg2.close()


def events_after_close(b, tmp_path):
    b.close()
    return events(tmp_path, b.agent)


def test_reordered_messages_are_used_in_their_own_period(broker, tmp_path):
    started = broker()
    mg1, mg2 = bus(started.url, "MG1", tmp_path), bus(started.url, "MG2", tmp_path)

    async def go():
        for b in (mg1, mg2):
            assert await b.wait_connected()
        await asyncio.sleep(0.2)
        mg2.publish("bid", 2, [2.0])  # period 2's bid overtakes period 1's
        mg2.publish("bid", 1, [1.0])
        return await mg1.collect("bid", 1, ["MG2"], 2.0), await mg1.collect("bid", 2, ["MG2"], 2.0)

    assert asyncio.run(go()) == ({"MG2": [1.0]}, {"MG2": [2.0]})
    mg1.close(), mg2.close()


def test_agents_and_the_written_broker_conf_turn_nagle_off(broker, tmp_path):
    """A small message is sent at once, not held behind the last one's acknowledgement: the agent's socket
    has TCP_NODELAY (unless asked otherwise) and the broker's conf sets `set_tcp_nodelay`."""
    import socket

    from pgjax.deploy.broker import conf_text

    started = broker()
    fast, nagle = bus(started.url, "MG1", tmp_path), bus(started.url, "MG2", tmp_path, nodelay=False)
    assert asyncio.run(fast.wait_connected()) and asyncio.run(nagle.wait_connected())
    assert fast.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert nagle.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    fast.close(), nagle.close()
    assert "set_tcp_nodelay true" in conf_text(1883, None, None).splitlines()
    assert "set_tcp_nodelay true" not in conf_text(1883, None, None, nodelay=False).splitlines()

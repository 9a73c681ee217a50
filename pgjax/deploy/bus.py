"""Protocol messages between agent processes over MQTT (paho-mqtt, QoS 1): the simulated channel, for real.

    bus = Bus("mqtt://127.0.0.1:1883", site="mmg", protocol="p2p_trading", agent="MG1",
              agents=("MG1", "MG2", "MG3"), reads=("MG2", "MG3"), delay={"MG1": 1, ...})
    bus.start()
    bus.publish("bid", period=k, payload=[net_mw, offer])       # on pgjax/mmg/p2p_trading/MG1
    got = await bus.collect("bid", period=k, senders=("MG2", "MG3"), timeout_s=0.5)   # {sender: payload}
    bus.close()

Every message is one JSON object (`SCHEMA`, one per kind in `KINDS`): `schema`, `kind`,
`site`, `protocol`, `sender`, `period` (the control period it was sent in), `sent_s` (the
sender's wall clock) and `payload` (a list of numbers, or of `[sender, payload]` pairs for a
`receipt`). Protocol messages go on `pgjax/<site>/<protocol>/<sender>`, the site's control
messages (`ack`, `clock`) on `pgjax/<site>/ctl/<sender>`; setpoints are published retained
(a reconnecting child gets the last one at once).

Channel semantics, as `pgjax.protocols.channels`: a message sent in period `k` by a sender
with delay `d` (`communication.msg_delay`, periods) is used in period `k + d` and only then:
one that arrives after its receiver closed that period is *late* and dropped; one lost on
the way (the broker down, the agent partitioned, or a loss injected with `drop`) never
arrives. A second copy of a message (QoS 1 redelivery, a replay) is a *duplicate* and
ignored, also after its period closed (a copy is a duplicate, not late, for `SEEN_PERIODS`
periods); messages out of order are put in their period by their index.

Refused, never acted on (logged): a payload that is not the schema, a sender that is not an
agent of the scenario, a sender that is not the topic's agent (someone publishing on
another's topic), a topic this agent may not read, another site or protocol. With the ACL
of `pgjax deploy --write-acl` the broker refuses such publishes first (MQTT 5 PUBACK
"not authorized", logged by the publisher as `refused`).

The JSONL log (`log_path`) has one line per message `sent`, `received`, `late`, `dropped`,
`duplicate` or `refused`, and per connection event; lines are buffered and written by
`flush()` (once per control period) so logging does not pace the transport.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import defaultdict

from pgjax.deploy.broker import CONTROL, parse_url, topic
from pgjax.errors import DataError
from pgjax.runio import append_lines, json_line

SCHEMA = "pgjax-msg/1"
KINDS = {  # kind -> what its payload holds
    "bid": "p2p_trading: [net MW, offer $/MWh]",
    "value": "consensus: [import MW]",
    "report": "admm_dispatch: [cost_a, cost_b, p_min MW, p_max MW, need MW]",
    "setpoint": "vertical: [value per grid agent] (NaN: not a child of the sender)",
    "receipt": "the messages of a kind its sender received for a period: [[sender, payload], ...]",
    "ack": "lock-step: the sender wrote its setpoints of the period",
    "clock": "lock-step: the plant stepped; the period may start",
}
CONTROL_KINDS = ("ack", "clock")
SEEN_PERIODS = 64  # periods after its use for which a second copy of a message is logged a duplicate


def no_nagle(client, userdata, sock) -> None:
    """paho's `on_socket_open`: send each packet at once (TCP_NODELAY), not after the last one's ACK."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Bus:
    """One agent's connection to the broker (see the module docstring). `nodelay` (default): Nagle's
    algorithm off on its socket (TCP_NODELAY), so a small message is not held back behind the last
    one's acknowledgement (up to 40 ms a round)."""

    def __init__(self, url: str, site: str, protocol: str, agent: str, agents, reads=(), delay=None,
                 log_path=None, username: str | None = None, password: str | None = None, tls: dict | None = None,
                 drop=(), client_id: str | None = None, nodelay: bool = True):
        import paho.mqtt.client as mqtt

        self.host, self.port, tls_url = parse_url(url)
        self.site, self.protocol, self.agent = site, protocol, agent
        self.agents = tuple(agents)
        if agent not in self.agents:
            raise DataError(f"bus: agent {agent!r} is not one of the scenario's {list(self.agents)}")
        self.reads = set(reads)
        self.delay = {a: int((delay or {}).get(a, 0)) for a in self.agents}
        self.drop = {(int(k), str(s)) for k, s in drop}  # injected loss: (period sent, sender) not delivered here
        self.log_path = log_path
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.inbox = defaultdict(dict)  # (kind, period used) -> {sender: payload}
        self.seen = defaultdict(set)  # (kind, period used) -> senders received (duplicates), last SEEN_PERIODS
        self.closed = defaultdict(lambda: -(1 << 30))  # kind -> last period used (arrivals for it are late)
        self.counts = defaultdict(int)
        self.latency_s: list[float] = []
        self.connected = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pgjax-{site}-{agent}",
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls or tls_url:
            self.client.tls_set(ca_certs=(tls or {}).get("cafile"))
        self.client.reconnect_delay_set(0.05, 1.0)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message, self.client.on_publish = self._on_message, self._on_publish
        self.client.on_subscribe = self._on_subscribe
        if nodelay:
            self.client.on_socket_open = no_nagle
        self._subscribe_mid = None
        self._pending: dict[int, dict] = {}

    # ------------------------------------------------------------------ connection

    def start(self) -> Bus:
        """Connect in the background (paho's network thread; reconnects by itself)."""
        self.client.connect_async(self.host, self.port, keepalive=5)
        self.client.loop_start()
        return self

    async def wait_connected(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.connected

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.flush()

    def subscriptions(self) -> list[str]:
        """Every agent's topic of the protocol and the control topics (the broker's ACL filters what this
        agent may read; what it gets from others is refused here)."""
        return [topic(self.site, self.protocol, "+"), topic(self.site, CONTROL, "+")]

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._log({"event": "refused", "why": f"broker refused the connection: {reason_code}"})
            return
        self._subscribe_mid = client.subscribe([(t, 1) for t in self.subscriptions()])[1]
        self._log({"event": "connected", "host": self.host, "port": self.port})

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        """Ready (`connected`) once the broker acknowledged the subscriptions: a peer's message
        published earlier would not reach this agent."""
        if mid == self._subscribe_mid:
            self.connected = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self._log({"event": "disconnected", "why": str(reason_code)})

    # ------------------------------------------------------------------ sending

    def message(self, kind: str, period: int, payload) -> dict:
        return {"schema": SCHEMA, "kind": kind, "site": self.site, "protocol": self.protocol, "sender": self.agent,
                "period": int(period), "sent_s": time.time(), "payload": payload}

    def publish(self, kind: str, period: int, payload, retain: bool = False) -> bool:
        """Publish (QoS 1) on this agent's topic; False (logged `dropped`) when not connected."""
        msg = self.message(kind, period, payload)
        where = topic(self.site, CONTROL if kind in CONTROL_KINDS else self.protocol, self.agent)
        if not self.connected:
            self._log({"event": "dropped", "kind": kind, "period": period, "why": "not connected"})
            return False
        info = self.client.publish(where, json.dumps(msg, allow_nan=True), qos=1, retain=retain)
        with self._lock:
            self._pending[info.mid] = {"kind": kind, "period": period, "topic": where}
        self.counts["sent"] += 1
        self._log({"event": "sent", "kind": kind, "period": period, "topic": where})
        return True

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            what = self._pending.pop(mid, {})
        if reason_code.is_failure:
            self.counts["refused"] += 1
            self._log({"event": "refused", **what, "why": f"broker: {reason_code}"})

    # ------------------------------------------------------------------ receiving

    def _check(self, where: str, raw: bytes):
        """The message if it may be acted on, else the reason it is refused (a string)."""
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return f"not JSON ({e})"
        if not isinstance(msg, dict) or msg.get("schema") != SCHEMA or msg.get("kind") not in KINDS:
            return f"not a {SCHEMA} message"
        parts = where.split("/")
        sender = msg.get("sender")
        if len(parts) != 4 or parts[0] != "pgjax" or parts[1] != self.site or msg.get("site") != self.site:
            return f"another site's topic or message ({where})"
        if sender not in self.agents:
            return f"sender {sender!r} is not an agent of the scenario"
        if parts[3] != sender:
            return f"sender {sender!r} on {parts[3]!r}'s topic"
        control = parts[2] == CONTROL
        if control != (msg["kind"] in CONTROL_KINDS) or (not control and parts[2] != self.protocol):
            return f"kind {msg['kind']!r} on topic {where}"
        if not control and sender not in self.reads:
            return f"{self.agent} does not read {sender}'s messages"
        if not isinstance(msg.get("period"), int) or not isinstance(msg.get("payload"), (list, type(None))):
            return "period or payload of the wrong type"
        return msg

    def _on_message(self, client, userdata, m):
        msg = self._check(m.topic, m.payload)
        if isinstance(msg, str):
            self.counts["refused"] += 1
            self._log({"event": "refused", "topic": m.topic, "why": msg})
            return
        kind, sender, period = msg["kind"], msg["sender"], msg["period"]
        if sender == self.agent:
            return  # our own control messages
        use = period + (0 if kind in CONTROL_KINDS + ("receipt",) else self.delay[sender])
        entry = {"kind": kind, "sender": sender, "period": period, "use": use,
                 "latency_s": time.time() - float(msg.get("sent_s", math.nan))}
        with self._lock:
            if (period, sender) in self.drop and kind not in CONTROL_KINDS + ("receipt",):
                event = "dropped"
                entry["why"] = "injected loss"
            elif sender in self.seen.get((kind, use), ()):
                event = "duplicate"
            elif use <= self.closed[kind]:
                event = "late"
            else:
                event = "received"
                self.inbox[(kind, use)][sender] = msg["payload"]
                self.seen[(kind, use)].add(sender)
                self.latency_s.append(entry["latency_s"])
            self.counts[event] += 1
        self._log({"event": event, **entry})

    def take(self, kind: str, period: int) -> dict:
        """`{sender: payload}` of the `kind` messages for `period`; closes the period (later ones are late)."""
        with self._lock:
            self.closed[kind] = max(self.closed[kind], period)
            got = self.inbox.pop((kind, period), {})
            for key in [k for k in self.inbox if k[0] == kind and k[1] < period]:
                del self.inbox[key]
            for key in [k for k in self.seen if k[0] == kind and k[1] < period - SEEN_PERIODS]:
                del self.seen[key]
        return got

    def peek(self, kind: str, period: int) -> dict:
        with self._lock:
            return dict(self.inbox.get((kind, period), {}))

    async def collect(self, kind: str, period: int, senders, timeout_s: float) -> dict:
        """Wait up to `timeout_s` for `kind` messages for `period` from every one of `senders` (None: from
        anyone, one is enough); then `take`."""
        done = (lambda got: bool(got)) if senders is None else (lambda got, want=set(senders): want <= set(got))
        deadline = time.monotonic() + timeout_s
        while not done(self.peek(kind, period)) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return self.take(kind, period)

    # ------------------------------------------------------------------ log

    def _log(self, obj: dict) -> None:
        if self.log_path is None:
            return
        line = json_line({"wall_s": time.time(), "agent": self.agent, **obj})
        with self._lock:
            self._lines.append(line)

    def flush(self) -> None:
        """Append the buffered log lines (one write, fsynced)."""
        with self._lock:
            lines, self._lines = self._lines, []
        if lines and self.log_path is not None:
            append_lines(self.log_path, lines)

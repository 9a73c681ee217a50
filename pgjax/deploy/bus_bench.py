"""Message latency through the broker: N agents, each publishing one P2P bid per round to its peers.

    result = bench("mqtt://127.0.0.1:1883", n_agents=100, rounds=20, processes=2, graph="complete")

Every agent is a `pgjax.deploy.bus.Bus` (its own paho client and network thread, QoS 1, the
message schema of the deployment) subscribed to its peers' topics, which is what the broker
delivers to it under the ACL of `pgjax deploy --write-acl`. The agents are spread over
`processes` worker processes (spawned; each hosts its share of the clients), as deployed agents
run in processes of their own. On `graph="complete"` a bid goes to the N - 1 others, on
`"ring"` to the two neighbours.

A round: the coordinator (this process) notes the wall clock and tells every worker the period;
each worker publishes its agents' bids and waits until each of its agents holds a bid from
every peer, or until the round's timeout. The round ends when the last worker's last agent is
complete, so its time covers every delivery of the round; deliveries still missing at the
timeout are counted, never waited for again. Latency is a delivery's arrival minus its
`sent_s` (one machine, one clock). A control period must hold the slowest bid round (the
receipts round of `pgjax.deploy.agents` adds one more round whose messages grow with N).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from pgjax.deploy.broker import topic
from pgjax.deploy.bus import Bus

WARMUP_ROUNDS = 2
GRAPHS = {  # graph -> (agent index, number of agents) -> indices of its peers
    "complete": lambda i, n: [j for j in range(n) if j != i],
    "ring": lambda i, n: sorted({(i - 1) % n, (i + 1) % n} - {i}),
}


class PeerBus(Bus):
    """A `Bus` subscribed to its peers' topics only (what the broker's ACL lets it read)."""

    def subscriptions(self) -> list[str]:
        return [topic(self.site, self.protocol, a) for a in sorted(self.reads)]


def _worker(url: str, names: list[str], mine: list[int], graph: str, nodelay: bool, conn) -> None:
    """Host the agents `mine` (indices into `names`); answer the coordinator's commands on `conn`."""
    n = len(names)
    buses = [PeerBus(url, "bench", "p2p_trading", names[i], names, [names[j] for j in GRAPHS[graph](i, n)],
                     nodelay=nodelay) for i in mine]
    try:
        for b in buses:
            b.start()
        deadline = time.monotonic() + 60.0
        while not all(b.connected for b in buses) and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.send(sum(not b.connected for b in buses))
        while (cmd := conn.recv()) is not None:
            period, t0_s, timeout_s = cmd
            answer = _round(buses, period, t0_s + timeout_s)
            if period == WARMUP_ROUNDS - 1:  # before answering: no worker publishes a measured bid yet
                for b in buses:
                    b.latency_s.clear()
            conn.send(answer)
        conn.send(np.concatenate([np.asarray(b.latency_s, dtype=float) for b in buses]))
    finally:
        for b in buses:
            b.close()


def _round(buses: list[Bus], period: int, deadline_s: float) -> tuple[float, int]:
    """Publish every bid of `period`, wait for the peers' until `deadline_s` (wall clock); return the
    wall clock when the last agent was complete and the number of deliveries missing."""
    for b in buses:
        b.publish("bid", period, [1.0, 50.0])
    pending = list(buses)
    while True:  # len() of the inbox without its lock: a copy per poll (`peek`) would cost O(N) per agent
        pending = [b for b in pending if len(b.inbox.get(("bid", period), ())) < len(b.reads)]
        done_s = time.time()
        if not pending or done_s >= deadline_s:
            break
        time.sleep(0.001)
    return done_s, sum(len(b.reads) - len(b.take("bid", period)) for b in buses)


def bench(url: str, n_agents: int, rounds: int = 20, timeout_s: float = 30.0, processes: int | None = None,
          graph: str = "complete", nodelay: bool = True) -> dict:
    """Latency median / p99 (ms), round time median / max (ms) and missing deliveries of `n_agents`
    agents over `rounds` measured rounds (after `WARMUP_ROUNDS`), hosted by `processes` workers
    (default: one per core). `nodelay` (as deployed): the clients set TCP_NODELAY (`Bus`'s default; the
    broker's side is `set_tcp_nodelay` in `broker.conf_text`)."""
    names = [f"A{i}" for i in range(n_agents)]
    processes = max(1, min(processes or os.cpu_count() or 1, n_agents))
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    try:
        for w in range(processes):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(url, names, list(range(w, n_agents, processes)), graph,
                                                            nodelay, there),
                               daemon=True)
            proc.start()
            pipes.append(here)
            workers.append(proc)
        if sum(_answer(p, w, 120.0) for p, w in zip(pipes, workers)):
            raise RuntimeError(f"bench: agents not connected to {url}")
        time.sleep(0.5)  # subscriptions in place
        times_s, missing = [], 0
        for k in range(WARMUP_ROUNDS + rounds):
            t0_s = time.time()
            for p in pipes:
                p.send((k, t0_s, timeout_s))
            answers = [_answer(p, w, timeout_s + 30.0) for p, w in zip(pipes, workers)]
            if k >= WARMUP_ROUNDS:
                times_s.append(max(done_s for done_s, _ in answers) - t0_s)
                missing += sum(m for _, m in answers)
        for p in pipes:
            p.send(None)
        lat_ms = np.concatenate([_answer(p, w, 60.0) for p, w in zip(pipes, workers)]) * 1e3
    finally:
        for proc in workers:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
    per_round = sum(len(GRAPHS[graph](i, n_agents)) for i in range(n_agents))
    return {"agents": n_agents, "processes": processes, "graph": graph, "nodelay": nodelay, "rounds": rounds,
            "deliveries_per_round": per_round, "received": int(lat_ms.size), "missing": int(missing),
            "latency_median_ms": float(np.median(lat_ms)), "latency_p99_ms": float(np.percentile(lat_ms, 99)),
            "round_median_ms": float(np.median(times_s) * 1e3), "round_max_ms": float(np.max(times_s) * 1e3),
            "load_average_1min": os.getloadavg()[0]}


def _answer(conn, proc, timeout_s: float):
    """The next answer of worker `proc` on `conn`; RuntimeError when it died or is silent for `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll(1.0):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"bench: worker {proc.pid} {'died' if not proc.is_alive() else 'did not answer'}")
    return conn.recv()

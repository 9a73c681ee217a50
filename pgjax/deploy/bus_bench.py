"""Message latency through the broker: N agents, each publishing one P2P bid per round to all others.

    result = bench("mqtt://127.0.0.1:1883", n_agents=100, rounds=20)

Every agent is a `pgjax.deploy.bus.Bus` (its own paho client and network thread, QoS 1, a
complete graph: each bid fans out to the N - 1 peers); a round publishes every agent's bid
of that period and ends when every agent holds all N - 1 others. Latency is a message's
arrival minus its `sent_s` (one machine, one clock); a round's time bounds the control
period the size sustains (a period must hold the bid round; the receipts round of
`pgjax.deploy.agents` adds one more round whose messages grow with N).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from pgjax.deploy.bus import Bus


async def _rounds(buses, periods, timeout_s: float) -> list[float]:
    names = [b.agent for b in buses]
    times = []
    for k in periods:
        t0 = time.perf_counter()
        for b in buses:
            b.publish("bid", k, [1.0, 50.0])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(len(b.peek("bid", k)) == len(names) - 1 for b in buses):
            await asyncio.sleep(0.001)
        times.append(time.perf_counter() - t0)
        for b in buses:
            b.take("bid", k)
    return times


def bench(url: str, n_agents: int, rounds: int = 20, timeout_s: float = 30.0) -> dict:
    """Latency median / p99 (ms) and round time median / max (ms) of `n_agents` agents over `rounds` rounds."""
    names = [f"A{i}" for i in range(n_agents)]

    async def main():
        buses = [Bus(url, "bench", "p2p_trading", a, names, names) for a in names]
        for b in buses:
            b.start()
        for b in buses:
            if not await b.wait_connected(30.0):
                raise RuntimeError(f"{b.agent}: not connected to {url}")
        await asyncio.sleep(0.5)  # subscriptions in place
        try:
            await _rounds(buses, range(2), timeout_s)  # warm-up
            for b in buses:
                b.latency_s.clear()
            times = await _rounds(buses, range(2, 2 + rounds), timeout_s)
        finally:
            for b in buses:
                b.close()
        lat = np.concatenate([np.asarray(b.latency_s) for b in buses]) * 1e3
        lost = sum(n_agents - 1 for _ in range(rounds)) * n_agents - lat.size
        return {"agents": n_agents, "rounds": rounds, "messages": int(lat.size), "missing": int(lost),
                "latency_median_ms": float(np.median(lat)), "latency_p99_ms": float(np.percentile(lat, 99)),
                "round_median_ms": float(np.median(times) * 1e3), "round_max_ms": float(np.max(times) * 1e3)}

    return asyncio.run(main())

"""The broker latency bench (`pgjax.deploy.bus_bench`, `scripts/bench_broker.py`) on a real Mosquitto on
127.0.0.1: agents spread over worker processes, every delivery of every round accounted for."""

from __future__ import annotations

import numpy as np
import pytest

from pgjax.deploy.bus_bench import GRAPHS, bench
from broker_fixtures import broker, needs_mosquitto  # noqa: F401 (the broker tests' fixtures)

pytestmark = needs_mosquitto


@pytest.mark.parametrize("n_agents, graph, nodelay, per_round", [(4, "complete", False, 12), (5, "ring", True, 10)])
def test_bench_two_processes(broker, n_agents, graph, nodelay, per_round):  # noqa: F811
    started = broker()
    r = bench(started.url, n_agents, rounds=3, timeout_s=10.0, processes=2, graph=graph, nodelay=nodelay)
    assert (r["processes"], r["deliveries_per_round"], r["missing"]) == (2, per_round, 0)
    assert r["received"] == 3 * per_round  # the warm-up rounds' latencies are not counted
    assert 0 < r["latency_median_ms"] <= r["latency_p99_ms"] <= r["round_max_ms"] < 10_000
    assert r["round_median_ms"] <= r["round_max_ms"]


def test_graphs():
    assert GRAPHS["complete"](1, 4) == [0, 2, 3]
    assert GRAPHS["ring"](0, 5) == [1, 4]
    assert GRAPHS["ring"](0, 2) == [1]
    assert np.all([len(GRAPHS["ring"](i, 250)) == 2 for i in range(250)])

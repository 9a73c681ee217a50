"""Broker latency of the deployment's P2P message round at 10, 100 and 250 agents (docs/deployment.md).

    python scripts/bench_broker.py [--sizes 10 100 250] [--rounds 20] [--processes K] [--graph complete|ring]
                                   [--nagle] [--out /tmp/h25_broker.json]

Starts a Mosquitto (Debian package) on a free port of 127.0.0.1, runs `pgjax.deploy.bus_bench.bench`
per size (the agents' clients spread over K worker processes, default one per core) and prints one
markdown row per size: deliveries per round, latency median / p99, round time median / max and the
control period the size sustains (the slowest bid round rounded up to 10 ms; none when a delivery was
missing at a round's timeout).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from pgjax.deploy.broker import Mosquitto, conf_text, free_port
from pgjax.deploy.bus_bench import GRAPHS, bench
from pgjax.runio import write_atomic, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 250])
    parser.add_argument("--rounds", type=int, nargs="+", default=[20],
                        help="rounds per size (one number for all, or one per size)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a round may take (default 30)")
    parser.add_argument("--processes", type=int, help="worker processes hosting the agents (default: one per core)")
    parser.add_argument("--graph", choices=sorted(GRAPHS), default="complete", help="who reads whose bids")
    parser.add_argument("--nagle", action="store_true",
                        help="Nagle's algorithm on, on the broker and the clients (the deployment turns it off)")
    parser.add_argument("--out", help="JSON of the rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="h25_broker") as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        write_atomic(conf, conf_text(port, None, None, nodelay=not args.nagle))
        broker = Mosquitto(conf, port, log_path=Path(tmp) / "mosquitto.log").start()
        rows = []
        try:
            print("| agents | deliveries per round | latency median ms | latency p99 ms | round median ms "
                  "| round max ms | missing | period sustained | load average |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for i, n in enumerate(args.sizes):
                r = bench(f"mqtt://127.0.0.1:{port}", n, args.rounds[min(i, len(args.rounds) - 1)], args.timeout,
                          args.processes, args.graph, not args.nagle)
                r["period_s"] = None if r["missing"] else math.ceil(r["round_max_ms"] / 10) / 100
                rows.append(r)
                period = "none" if r["period_s"] is None else f"{r['period_s']:.2f} s"
                print(f"| {n} | {r['deliveries_per_round']:,} | {r['latency_median_ms']:.1f} | {r['latency_p99_ms']:.1f} "
                      f"| {r['round_median_ms']:.1f} | {r['round_max_ms']:.1f} | {r['missing']:,} | {period} "
                      f"| {r['load_average_1min']:.1f} |", flush=True)
        finally:
            broker.stop()
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()

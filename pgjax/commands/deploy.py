"""`pgjax deploy EXPORT_DIR --map MAP.yaml`: an exported policy controlling Modbus TCP devices.

    pgjax deploy export/mmg --map map.yaml --log deploy.jsonl          # the exported control period
    pgjax deploy export/mmg --map map.yaml --period 1.0 --log deploy.jsonl
    pgjax deploy export/mmg --map map.yaml --period 0.1 --periods 200 --summary timing.json
    pgjax deploy export/mmg --map map.yaml --agents MG1 &                # one process per agent
    pgjax deploy export/mmg --map map.yaml --agents MG2 MG3 --no-heartbeat

Every period: read the measurements, build each agent's observation by the exported
schema, run the numpy policy, write the setpoints (only mapped registers, within bounds,
ramp-limited), refresh the reversion timeouts and the heartbeat. Timeouts, connection loss
and implausible readings put the agents concerned in their safe action (logged);
Ctrl-C or SIGTERM writes the safe values and exits. Prints the summary: periods, modes, faults,
writes, and the loop timing (mean period, jitter). See `pgjax.deploy.runtime`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax deploy` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax deploy", description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="folder written by pgjax export")
    parser.add_argument("--map", required=True, metavar="MAP.yaml", help="device map (pgjax hil --write-map)")
    parser.add_argument("--host", help="override the map's host")
    parser.add_argument("--port", type=int, help="override the map's port")
    parser.add_argument("--period", type=float, help="control period in seconds (default: the exported control "
                        "period, control_period_h * 3600; hardware-in-the-loop runs use a shorter one)")
    parser.add_argument("--timeout", type=float, default=0.5, help="per-request timeout in seconds (default 0.5)")
    parser.add_argument("--periods", type=int, help="stop after this many periods (default: run until Ctrl-C)")
    parser.add_argument("--stale-periods", type=int, default=3, help="unchanged sequence counts before 'stale'")
    parser.add_argument("--agents", nargs="+", metavar="NAME", help="run only these exported agents (default: all)")
    parser.add_argument("--no-heartbeat", action="store_true",
                        help="do not write the site heartbeat (another controller process does)")
    parser.add_argument("--log", help="JSONL log, one line per period")
    parser.add_argument("--summary", help="JSON summary")
    return parser


def run(args) -> int:
    """Run the exported policy as `args` say (parsed by `build_parser`); the exit status."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # faults are logged by pgjax, as JSONL
    if (args.period is not None and not args.period > 0) or not args.timeout > 0:
        build_parser().error("--period and --timeout must be > 0")

    from pgjax.commands.common import error
    from pgjax.deploy.device_map import load_map
    from pgjax.deploy.policy import PolicyFileError, read_manifest
    from pgjax.deploy.runtime import Controller
    from pgjax.errors import PgjaxError

    try:
        period = args.period or read_manifest(args.export_dir)["control_period_h"] * 3600.0
        ctl = Controller(args.export_dir, load_map(args.map), period_s=period, read_timeout_s=args.timeout,
                         log_path=args.log, summary_path=args.summary, stale_periods=args.stale_periods,
                         host=args.host, port=args.port, agents=args.agents, heartbeat=not args.no_heartbeat)
    except (PgjaxError, PolicyFileError) as e:
        return error("pgjax deploy", e)
    print(f"pgjax deploy: {args.export_dir} -> {ctl.host}:{ctl.port}, period {period} s, "
          f"agents {[a[0] for a in ctl.agents]}", flush=True)
    asyncio.run(_run(ctl, args.periods))
    print(json.dumps(ctl.summary(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax deploy` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


async def _run(ctl, periods) -> None:
    """`ctl.run`, ended by SIGINT (Ctrl-C) or SIGTERM (a service manager) through `ctl.stop`: the period in
    progress completes, then the controller writes the safe values and closes."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ctl.stop)
    await ctl.run(periods)
    if periods is None or len(ctl.rows) < periods:
        print(f"pgjax deploy: stopped after {len(ctl.rows)} periods; safe values written", file=sys.stderr)

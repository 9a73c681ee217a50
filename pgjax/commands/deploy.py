"""`pgjax deploy EXPORT_DIR --map MAP.yaml`: an exported policy controlling Modbus TCP devices.

    pgjax deploy export/mmg --map map.yaml --log deploy.jsonl          # the exported control period
    pgjax deploy export/mmg --map map.yaml --period 1.0 --log deploy.jsonl
    pgjax deploy export/mmg --map map.yaml --period 0.1 --periods 200 --summary timing.json
    pgjax deploy export/mmg --map map.yaml --agents MG1 &                # one process per agent
    pgjax deploy export/mmg --map map.yaml --agents MG2 MG3 --no-heartbeat
    pgjax deploy export/p2p --write-acl broker/ --broker mqtt://127.0.0.1:1883  # ACL, passwords, mosquitto.conf
    pgjax deploy export/p2p --map map.yaml --broker mqtt://127.0.0.1:1883 --agents MG1 \
        --secret broker/MG1.secret --lockstep --bus-log bus.jsonl       # one process per agent, messages over MQTT

Every period: read the measurements, build each agent's observation by the exported
schema, run the numpy policy, write the setpoints (only mapped registers, within bounds,
ramp-limited), refresh the reversion timeouts and the heartbeat. Timeouts, connection loss
and implausible readings put the agents concerned in their safe action (logged);
Ctrl-C or SIGTERM writes the safe values and exits. Prints the summary: periods, modes, faults,
writes, and the loop timing (mean period, jitter). See `pgjax.deploy.runtime`.

With `--broker mqtt://HOST:PORT` (`mqtts://` for TLS, `--tls-ca`) the agents also exchange their
protocol's messages (P2P bids, consensus values, ADMM reports) with the other agents' processes
through the broker (`pgjax.deploy.agents`, `pgjax.deploy.bus`); `--lockstep` paces the periods of all
processes with a lock-step plant (`pgjax hil --lockstep`). `--write-acl DIR` writes the broker's ACL
(each agent publishes only under its own topic and reads only its peers'), a password file, one
`<agent>.secret` per agent and `mosquitto.conf`; start the broker with `mosquitto -c DIR/mosquitto.conf`.
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
    parser.add_argument("--map", metavar="MAP.yaml", help="device map (pgjax hil --write-map); required unless "
                        "--write-acl")
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
    bus = parser.add_argument_group("protocol messages over an MQTT broker")
    bus.add_argument("--broker", metavar="URL", help="mqtt://HOST:PORT (mqtts:// for TLS): exchange the protocol's "
                     "messages with the other agents' processes")
    bus.add_argument("--child", metavar="NAME", help="run grid agent NAME's process of a vertical protocol (e.g. "
                     "MG1 of multi_microgrid_dso): what its parent sends over the broker, written to its EMS unit")
    bus.add_argument("--secret", metavar="FILE", help="the agent's password file (written by --write-acl)")
    bus.add_argument("--tls-ca", metavar="CA.pem", help="CA certificate of the broker's TLS listener")
    bus.add_argument("--lockstep", action="store_true", help="pace the periods with the other processes and a "
                     "lock-step plant (acks and a clock over the broker)")
    bus.add_argument("--wait", type=float, default=2.0, help="seconds to wait for messages in a period (default 2)")
    bus.add_argument("--bus-log", help="JSONL log of every message sent, received, late, dropped or refused")
    bus.add_argument("--write-acl", metavar="DIR", help="write the broker's ACL, passwords, per-agent secrets and "
                     "mosquitto.conf (for --broker's port) into DIR, then exit")
    bus.add_argument("--tls-cert", nargs=2, metavar=("CERT.pem", "KEY.pem"), help="with --write-acl: the broker's "
                     "certificate and key (TLS listener; clients need --tls-ca)")
    return parser


def run(args) -> int:
    """Run the exported policy as `args` say (parsed by `build_parser`); the exit status."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # faults are logged by pgjax, as JSONL
    if (args.period is not None and not args.period > 0) or not args.timeout > 0:
        build_parser().error("--period and --timeout must be > 0")

    from pgjax.commands.common import error
    from pgjax.deploy.policy import PolicyFileError
    from pgjax.errors import PgjaxError

    if args.write_acl:
        return write_acl(args)
    if not args.map:
        build_parser().error("--map is required (unless --write-acl)")
    try:
        ctl, period = make_controller(args)
    except (PgjaxError, PolicyFileError, OSError) as e:
        return error("pgjax deploy", e)
    print(f"pgjax deploy: {args.export_dir} -> {ctl.host}:{ctl.port}, period {period} s, "
          f"agents {[a[0] for a in ctl.agents]}", flush=True)
    asyncio.run(_run(ctl, args.periods))
    print(json.dumps(ctl.summary(), indent=2))
    return 0


def make_controller(args):
    """`(controller, period_s)` as `args` say: a `Controller`, or with `--broker` a `MessagingController`."""
    from pgjax.deploy.device_map import load_map
    from pgjax.deploy.policy import read_manifest
    from pgjax.deploy.runtime import Controller

    period = args.period or read_manifest(args.export_dir)["control_period_h"] * 3600.0
    kw = dict(period_s=period, read_timeout_s=args.timeout, log_path=args.log, summary_path=args.summary,
              stale_periods=args.stale_periods, host=args.host, port=args.port, agents=args.agents,
              heartbeat=not args.no_heartbeat)
    if not args.broker:
        return Controller(args.export_dir, load_map(args.map), **kw), period
    from pgjax.deploy import agents

    me = args.child or (args.agents[0] if args.agents and len(args.agents) == 1 else None)
    if args.secret and me is None:
        raise OSError("--secret is one agent's password: name that agent with --agents NAME (or --child NAME)")
    credentials = {me: open(args.secret).read().strip()} if args.secret else {}
    common = dict(lockstep=args.lockstep, wait_s=args.wait, bus_log=args.bus_log, credentials=credentials,
                  tls={"cafile": args.tls_ca} if args.tls_ca else None)
    env = agents.scenario_env(read_manifest(args.export_dir))
    dmap = load_map(args.map)
    if args.child:
        kw.pop("agents")
        return agents.ChildRelay(args.export_dir, dmap, args.broker, args.child, env=env, **common, **kw), period
    vertical = env.coordinator.vertical.values is not None and env.coordinator.links.tracked.any()
    cls = agents.VerticalParent if vertical else agents.MessagingController
    return cls(args.export_dir, dmap, args.broker, env=env, **common, **kw), period


def write_acl(args) -> int:
    """`--write-acl DIR`: the broker's ACL, password file, per-agent secrets and mosquitto.conf."""
    from pgjax.commands.common import error
    from pgjax.deploy.agents import acl_reads, scenario_env
    from pgjax.deploy.broker import parse_url, write_security
    from pgjax.deploy.policy import PolicyFileError, read_manifest
    from pgjax.errors import PgjaxError
    try:
        host_, port, _ = parse_url(args.broker or "mqtt://127.0.0.1:1883")
        env = scenario_env(read_manifest(args.export_dir))
        protocol, reads = acl_reads(env)
        tls = dict(zip(("certfile", "keyfile"), args.tls_cert), cafile=args.tls_ca) if args.tls_cert else None
        if tls and not args.tls_ca:
            raise PolicyFileError("--tls-cert needs --tls-ca (the CA the clients check the certificate with)")
        files = write_security(args.write_acl, env.name, protocol, reads, port, host_, tls)
    except (PgjaxError, PolicyFileError, OSError, ValueError) as e:
        return error("pgjax deploy", e)
    print(f"pgjax deploy: wrote {files.acl}, {files.passwords}, {files.conf} and "
          f"{len(files.secrets)} agent secrets; start the broker with: mosquitto -c {files.conf}")
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

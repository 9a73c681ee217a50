"""`pgjax hil SCENARIO`: a scenario's plant behind Modbus TCP registers (hardware-in-the-loop).

    pgjax hil multi_microgrid --write-map map.yaml            # the device map, then exit
    pgjax hil multi_microgrid --map map.yaml --lockstep       # step on each controller heartbeat
    pgjax hil multi_microgrid --map map.yaml --period 1.0     # step every second (wall clock)
    pgjax hil multi_microgrid --map map.yaml --fault restart:6:1:2.0 --fault delay:10:2:1.5
    pgjax hil multi_microgrid --map map.yaml --bad-value mg1_ess:W:nan:4:2

Serves the map's host and port (`--port` overrides it), steps the environment on one day
of the chosen split (`--day`, `--split test`) and logs every step to `--log` (JSONL: the
actions the devices applied, reverted units, voltages, cost); at the end (`--steps`, default
one episode; or Ctrl-C) it prints and writes `--summary` with `pgjax eval`'s metrics, and with
`--compare EXPORT_DIR` the differences from the same day simulated with that policy
(`--plot PNG`: both days in one figure). Faults:
`--fault KIND:AT_STEP[:STEPS[:SECONDS]]` with KIND delay, drop, restart or freeze, and
`--bad-value DEVICE:POINT:VALUE:AT_STEP[:STEPS]` (VALUE nan: "not implemented").
See `pgjax.deploy.plant` and `pgjax.deploy.device_map`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys


def _fault(text: str):
    from pgjax.deploy.plant import Fault

    parts = text.split(":")
    if parts[0] not in ("delay", "drop", "restart", "freeze") or not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError("expected KIND:AT_STEP[:STEPS[:SECONDS]] with KIND delay, drop, restart "
                                         f"or freeze, got {text!r}")
    try:
        return Fault(parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 1,
                     float(parts[3]) if len(parts) > 3 else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers AT_STEP, STEPS and seconds, got {text!r}") from None


def _bad_value(text: str):
    from pgjax.deploy.plant import Fault

    parts = text.split(":")
    try:
        unit, point, value, at = parts[:4]
        return Fault("bad_value", int(at), int(parts[4]) if len(parts) > 4 else 1, unit=unit, point=point,
                     value=float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DEVICE:POINT:VALUE:AT_STEP[:STEPS], got {text!r}") from None


async def _serve(plant, linger_s: float) -> None:
    """Serve until the plant's steps are done (then `linger_s` more) or SIGINT / SIGTERM."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    await plant.start()
    print(f"pgjax hil: serving {plant.dmap.host}:{plant.port} ({len(plant.dmap.units)} units), "
          f"{'lock-step (heartbeat)' if plant.period_s is None else f'period {plant.period_s} s'}, "
          f"{plant.steps} steps", flush=True)
    try:
        while not plant.done:
            await asyncio.sleep(0.05)
        await asyncio.sleep(linger_s)  # the controller reads the last measurements
    except asyncio.CancelledError:
        print(f"pgjax hil: stopped after {plant.t} steps", file=sys.stderr)
    finally:
        await plant.stop()


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax hil` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax hil", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", help="registered scenario name or YAML path")
    parser.add_argument("--write-map", metavar="MAP.yaml", help="write the scenario's generated device map and exit")
    parser.add_argument("--map", metavar="MAP.yaml", help="device map to serve (default: the generated one)")
    parser.add_argument("--host", help="listen address (default: the map's, 127.0.0.1 for generated maps)")
    parser.add_argument("--port", type=int, help="TCP port (default: the map's, 5020 for generated maps)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="environment dtype (default: the scenario's)")
    parser.add_argument("--split", default="test", help="profile split of the day (default test)")
    parser.add_argument("--day", type=int, default=0, help="index of the day among the split's episode starts")
    parser.add_argument("--seed", type=int, default=0, help="key of the initial device states")
    parser.add_argument("--reversion-s", type=float, default=5.0, help="reversion timeout of generated maps (s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--period", type=float, help="step every PERIOD seconds of wall clock")
    mode.add_argument("--lockstep", action="store_true", help="step when the controller writes the heartbeat (default)")
    parser.add_argument("--steps", type=int, help="steps to run (default: one episode)")
    parser.add_argument("--linger", type=float, default=2.0, help="seconds to keep serving after the last step")
    parser.add_argument("--fault", type=_fault, action="append", default=[], help="KIND:AT_STEP[:STEPS[:SECONDS]]")
    parser.add_argument("--bad-value", type=_bad_value, action="append", default=[],
                        help="DEVICE:POINT:VALUE:AT_STEP[:STEPS]")
    parser.add_argument("--compare", metavar="EXPORT_DIR", help="after the run, simulate the same day with this "
                        "export's policy and print the differences")
    parser.add_argument("--plot", metavar="PNG", help="with --compare: the deployed day next to the simulated one")
    parser.add_argument("--log", help="JSONL log of every step and event")
    parser.add_argument("--summary", help="JSON summary (pgjax eval's metrics)")
    return parser


def run(args) -> int:
    """Serve the plant as `args` say (parsed by `build_parser`); the exit status."""
    parser = build_parser()  # usage errors found while running
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # faults are logged by pgjax, as JSONL
    if args.period is not None and not args.period > 0:
        parser.error("--period must be > 0")
    if args.plot and not args.compare:
        parser.error("--plot needs --compare EXPORT_DIR")
    from pgjax.commands.common import error
    from pgjax.errors import PgjaxError

    try:
        env, plant = make_plant(args)
    except (PgjaxError, ValueError) as e:
        return error("pgjax hil", e)
    if plant is None:
        return 0
    asyncio.run(_serve(plant, args.linger))
    report(args, env, plant)
    return 0


def make_plant(args):
    """`(env, Plant)` of the scenario and device map; with `--write-map`, the map is written and
    the plant is None. Raises `PgjaxError` / `ValueError` for bad input."""
    import pgjax
    from pgjax.deploy.device_map import load_map, map_for_env, parse_map, write_map
    from pgjax.deploy.plant import Plant

    env = pgjax.make(args.scenario, split=args.split, **({"dtype": args.dtype} if args.dtype else {}))
    if args.write_map:
        data = map_for_env(env, host=args.host or "127.0.0.1", port=5020 if args.port is None else args.port,
                           reversion_s=args.reversion_s)
        parse_map(data, args.write_map)
        write_map(args.write_map, data)
        print(f"pgjax hil: wrote {args.write_map} ({len(data['devices'])} units)")
        return env, None
    dmap = load_map(args.map) if args.map else parse_map(map_for_env(env, reversion_s=args.reversion_s))
    if args.host or args.port is not None:
        import dataclasses

        dmap = dataclasses.replace(dmap, host=args.host or dmap.host,
                                   port=dmap.port if args.port is None else args.port)
    return env, Plant(env, dmap, day=args.day, seed=args.seed, period_s=args.period, log_path=args.log,
                      faults=tuple(args.fault) + tuple(args.bad_value), steps=args.steps)


def report(args, env, plant) -> None:
    """The served day's metrics, the comparison with the simulated day (`--compare`, `--plot`), `--summary`."""
    from pgjax.commands.eval import summarize
    from pgjax.runio import write_json

    s = plant.summary()
    metrics = summarize(s["totals"], max(s["steps"], 1)) if s["steps"] else {}
    out = {"scenario": env.name, "day": args.day, "steps": s["steps"], "reverted_steps": s["reverted_steps"],
           "metrics": metrics}
    if args.compare and s["steps"]:
        from pgjax.deploy.plant import simulate_day
        from pgjax.deploy.plot import compare_rows, plot_day
        from pgjax.deploy.policy import load_policy, read_manifest

        policies = {a["name"]: load_policy(args.compare, a["name"]) for a in read_manifest(args.compare)["agents"]}
        sim = simulate_day(env, policies, day=args.day, seed=args.seed, steps=s["steps"])
        out["compare"] = compare_rows(env, plant.rows, sim)
        print(f"pgjax hil: against the simulated day: {out['compare']}")
        if args.plot:
            plot_day(env, plant.rows, sim, args.plot)
            print(f"pgjax hil: wrote {args.plot}")
    if args.summary:
        write_json(args.summary, out)
    cost = metrics.get("cost", math.nan)
    print(f"pgjax hil: {s['steps']} steps, cost {cost:,.2f} $, reverted units in {s['reverted_steps']} steps")


def main(argv: list[str] | None = None) -> int:
    """`pgjax hil` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))

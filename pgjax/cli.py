"""The `pgjax` command: `pgjax verify`, `pgjax bench powerflow`, `pgjax bench env`,
`pgjax validate FILE`, `pgjax train [...]`, `pgjax eval RUN_DIR [...]`, `pgjax splits`, `pgjax benchmark`, `pgjax compare [...]` (`pgjax train -h`,
`pgjax bench env -h` for the options).

Each subcommand is a module of `pgjax.commands` with `build_parser()`, `run(args)` and
`main(argv)`, shipped in the package (so the command works from an installed wheel);
`pgjax validate` is here (`build_validate_parser`, `run_validate`).

The command is a program, so it switches JAX's 64-bit mode on at start, for every
subcommand: `verify` and `bench powerflow` compute in float64, `train`, `eval`, `compare`
and `bench env` build float64 environments when the dtype chosen (or the scenario's own)
is float64, and float32 runs keep the integer and float defaults they were measured with.
Importing `pgjax` changes no setting (`pgjax.precision`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "verify": ("verify", "compare pgjax's power flow with pandapower on the network zoo"),
    "bench": (None, "benchmarks: 'pgjax bench powerflow', 'pgjax bench env' (env steps/s, JAX vs pandapower), "
                    "'pgjax bench train' (training over devices / processes, memory per env), "
                    "'pgjax bench threephase' (three-phase power flows/s against OpenDSS and power-grid-model)"),
    "validate": (None, "check a scenario YAML file (or registered name) and print every problem"),
    "train": ("train", "train MAPPO on a scenario into a run folder (progress, checkpoints, curves)"),
    "eval": ("eval", "evaluate a run on the test split against random, do-nothing, rule-based and oracle"),
    "splits": ("splits", "list the named evaluation splits of a scenario (train, test, stress splits)"),
    "benchmark": ("benchmark", "tasks x algorithms x seeds trained, every run and baseline evaluated on every split "
                               "(mean and 95 % CI over seeds; CSV, JSON, markdown, plots; resumable)"),
    "robustness": ("robustness", "a trained run and the baselines over a grid of conditions (delay, loss, jitter, ...)"),
    "compare": ("compare_protocols", "run a scenario under every protocol with the same policies and seeds"),
    "export": ("export", "export a run's actors: safetensors weights + manifest, runnable with numpy alone"),
    "hil": ("hil", "serve a scenario's plant over Modbus TCP (env physics behind registers); write its device map"),
    "deploy": ("deploy", "run an exported policy against Modbus devices (device map, fail-safes, JSONL log)"),
}
BENCHES = {"powerflow": "bench_powerflow", "env": "bench_env", "train": "bench_train", "threephase": "bench_threephase"}


def _run_command(module: str, argv: list[str], name: str) -> None:
    """`pgjax.commands.<module>.main(argv)` with `sys.argv[0]` the command's name; exits with
    its status (as the command run on its own does)."""
    sys.argv = [f"pgjax {name}", *argv]
    result = importlib.import_module(f"pgjax.commands.{module}").main(argv)
    sys.exit(result if isinstance(result, int) else 0)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax` parser: the command name alone (the command's own parser reads the rest)."""
    parser = argparse.ArgumentParser(prog="pgjax", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    """The `pgjax validate` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax validate", description=COMMANDS["validate"][1])
    parser.add_argument("scenario", help="scenario YAML file or registered scenario name")
    return parser


def run_validate(args) -> int:
    """Print every problem of `args.scenario`; 1 if there is one."""
    from pgjax.scenario import validate

    problems = validate(args.scenario)
    for p in problems:
        print(p)
    print(f"{args.scenario}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import jax

    jax.config.update("jax_enable_x64", True)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv[:1])
    rest = argv[1:]
    if args.command == "validate":
        if len(rest) != 1:
            parser.error("pgjax validate needs one scenario file (or registered scenario name)")
        return run_validate(build_validate_parser().parse_args(rest))
    if args.command == "bench":
        if not rest or rest[0] not in BENCHES:
            parser.error(f"pgjax bench needs one of {sorted(BENCHES)}")
        return _run_command(BENCHES[rest[0]], rest[1:], f"bench {rest[0]}")
    return _run_command(COMMANDS[args.command][0], rest, args.command)


if __name__ == "__main__":
    sys.exit(main())

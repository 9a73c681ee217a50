"""The `pgjax` command: `pgjax verify`, `pgjax bench powerflow`, `pgjax bench env`,
`pgjax validate FILE`, `pgjax train [...]`, `pgjax eval RUN_DIR [...]`, `pgjax compare [...]` (`pgjax train -h`,
`pgjax bench env -h` for the options).

Each subcommand runs a script in `scripts/` (shipped with the repository) so that what the
command prints is what the script computes.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
COMMANDS = {
    "verify": ("verify.py", "compare pgjax's power flow with pandapower on the network zoo"),
    "bench": (None, "benchmarks: 'pgjax bench powerflow', 'pgjax bench env' (env steps/s, JAX vs pandapower)"),
    "validate": (None, "check a scenario YAML file (or registered name) and print every problem"),
    "train": ("train.py", "train MAPPO on a scenario into a run folder (progress, checkpoints, curves)"),
    "eval": ("eval.py", "evaluate a run on the test split against random, do-nothing, rule-based and oracle"),
    "compare": ("compare_protocols.py", "run a scenario under every protocol with the same policies and seeds"),
}
BENCHES = {"powerflow": "bench_powerflow.py", "env": "bench_env.py"}


def _run_script(name: str, argv: list[str]) -> int:
    path = SCRIPTS / name
    if not path.exists():
        sys.exit(f"pgjax: {path} not found; run pgjax from a checkout of the repository")
    sys.argv = [str(path), *argv]
    runpy.run_path(str(path), run_name="__main__")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="pgjax", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    args, rest = parser.parse_known_args(argv[:1])
    rest = argv[1:]
    if args.command == "validate":
        if len(rest) != 1:
            parser.error("pgjax validate needs one scenario file (or registered scenario name)")
        from pgjax.scenario import validate

        problems = validate(rest[0])
        for p in problems:
            print(p)
        print(f"{rest[0]}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if args.command == "bench":
        if not rest or rest[0] not in BENCHES:
            parser.error(f"pgjax bench needs one of {sorted(BENCHES)}")
        return _run_script(BENCHES[rest[0]], rest[1:])
    return _run_script(COMMANDS[args.command][0], rest)


if __name__ == "__main__":
    sys.exit(main())

"""`pgjax splits [SCENARIO]`: the named evaluation splits of a scenario (or of every scenario).

    pgjax splits                      # every scenario with splits
    pgjax splits multi_microgrid      # train, test, load_growth, tight_voltage

Each line gives a split's name, what it changes (the `pgjax eval --set` keys it sets, with
units) and its description. Splits are defined in `pgjax/data/splits.yaml` (`pgjax.splits`);
evaluate one with `pgjax eval RUN --split NAME`, all of them with `pgjax benchmark`.
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax splits` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax splits", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("scenario", nargs="?", help="scenario name (default: all scenarios with splits)")
    return parser


def run(args) -> int:
    """Print the splits of `args.scenario` (or of every scenario); the exit status."""
    from pgjax.errors import InputError
    from pgjax.splits import SPLITS_FILE, scenarios, splits_for

    try:
        names = [args.scenario] if args.scenario else scenarios()
        tables = {name: splits_for(name) for name in names}
    except InputError as e:
        build_parser().error(str(e))
    print(f"splits of {SPLITS_FILE}: the test data, with the keys set on top")
    for name, splits in tables.items():
        print(f"\n{name}")
        width = max(len(s) for s in splits)
        for s in splits.values():
            print(f"  {s.name:<{width}}  {'; '.join(s.changes()) or '(nothing: the reference)'}")
            print(f"  {'':<{width}}  {s.describe}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax splits` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

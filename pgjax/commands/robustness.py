"""`pgjax robustness RUN_DIR --sweep KEY=V1,V2,...`: a trained policy and the baselines under degraded conditions.

    pgjax robustness runs/mm_p2p --sweep communication.msg_delay=0,1,2,4 --sweep communication.loss_prob=0,0.1,0.3
    pgjax robustness runs/mm_p2p --sweep communication.jitter=0,0.3 --sweep "communication.tick_interval=1,2"

Train centralized with ideal timing, test under real timing: every combination of the swept
values (the grid of conditions, each a set of `pgjax eval --set` keys: any scenario key by
its path, values as a YAML flow sequence, so `[1,2,1],[2,2,2]` sweeps per-agent lists) is
applied on top of the run's scenario, validated like the YAML, and checked to leave every
agent's observations and actions as trained (`pgjax.commands.eval.conditions_env`; all
conditions are checked before anything is compiled). In each, the trained policy (the
deterministic mean of every seed), `random`, `do_nothing` and the `rule_based` controller
run on the same test episodes (the same key: the same days and initial states everywhere),
all controllers of a condition in one compiled program. A condition of one value equals
`pgjax eval --set` of it (same episodes, same program).

Writes into `--out` (default RUN_DIR/robustness): `robustness.csv` (one row per condition and
controller: the swept values, cost, safety and the other `pgjax eval` metrics),
`robustness.json` (the same with the sweep, episodes and seed), and `robustness.png`: cost
and safety against each swept variable, the other variables at their first value, one line
per controller. Every file is written atomically.

One program per condition: delays change the channel's buffer shapes, and loss and jitter
probabilities are compiled into the channel (`pgjax.protocols.coordination.Links`), so conditions are
not batched into one vmapped program.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

from pgjax import watchdog

METRICS = ("cost", "safety", "return_per_episode", "voltage_violation_rate", "controllable", "import_mwh")


def parse_sweeps(items: list[str]) -> dict[str, list]:
    """`["KEY=V1,V2", ...]` -> `{KEY: [V1, V2]}` (the values a YAML flow sequence)."""
    import yaml

    from pgjax.errors import InputError

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise InputError(f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. communication.msg_delay=0,1,2,4")
        try:
            values = yaml.safe_load(f"[{text}]")
        except yaml.YAMLError as e:
            raise InputError(f"--sweep {key}: values {text!r} are not a YAML sequence ({str(e).splitlines()[0]})") \
                from None
        if key.strip() in out:
            raise InputError(f"--sweep {key}: given twice")
        out[key.strip()] = values
    return out


def grid(sweeps: dict[str, list]) -> list[dict]:
    """Every combination of the swept values, in the order given (the last key varies fastest)."""
    keys = list(sweeps)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweeps[k] for k in keys))]


def plot(rows: list[dict], sweeps: dict[str, list], png) -> None:
    """Cost and safety against each swept variable (the others at their first value), per controller."""
    from pgjax.commands.common import pyplot, save_figure

    keys = list(sweeps)
    controllers = list(dict.fromkeys(r["controller"] for r in rows))
    fig, axes = pyplot().subplots(2, len(keys), figsize=(4.2 * len(keys), 5.6), squeeze=False)
    for j, key in enumerate(keys):
        others = {k: sweeps[k][0] for k in keys if k != key}
        for name in controllers:
            pts = [(i, r) for i, v in enumerate(sweeps[key]) for r in rows
                   if r["controller"] == name and r[key] == v and all(r[k] == o for k, o in others.items())]
            for ax, metric in zip(axes[:, j], ("cost", "safety")):
                ax.plot([i for i, _ in pts], [r[metric] for _, r in pts], marker="o", label=name)
        for ax, metric in zip(axes[:, j], ("cost $ (total)", "safety (total)")):
            ax.set_xticks(range(len(sweeps[key])), [str(v) for v in sweeps[key]])
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[1, j].set_xlabel(key + (f"\n({', '.join(f'{k}={v}' for k, v in others.items())})" if others else ""))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, png)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax robustness` parser (no side effects)."""
    from pgjax.commands.common import add_devices_argument

    parser = argparse.ArgumentParser(prog="pgjax robustness", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run_dir", help="run folder written by `pgjax train`")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
                        help="a scenario key and the values to evaluate at (repeatable: every combination)")
    parser.add_argument("--episodes", type=int, default=16, help="test episodes per condition and controller")
    parser.add_argument("--seed", type=int, default=0, help="key of the episode draws (the same everywhere)")
    add_devices_argument(parser, "local devices to split the episodes over ('all' or a count)")
    parser.add_argument("--out", help="output folder (default RUN_DIR/robustness)")
    return parser


def run(args) -> int:
    """Sweep as `args` say (parsed by `build_parser`); the exit status."""
    import jax

    from pgjax.commands.common import batch_mesh, reported_errors
    from pgjax.commands.eval import LoadedRun, conditions_env

    parser = build_parser()  # usage errors found while running
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    with reported_errors("pgjax robustness", f"--sweep {' '.join(args.sweep)}", parser):
        mesh = batch_mesh(args.devices, args.episodes, "--episodes")
        sweeps = parse_sweeps(args.sweep)
        loaded = LoadedRun(args.run_dir)
        conditions = grid(sweeps)
        envs = [conditions_env(loaded.cfg, loaded.env, cond) for cond in conditions]  # every condition checked first
    out = Path(args.out) if args.out else loaded.run_dir / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(args.seed)
    print(f"pgjax robustness: {loaded.run_dir} ({loaded.cfg.env}, update {loaded.step}, {loaded.cfg.num_seeds} "
          f"seed(s)) on [{loaded.data}], {len(conditions)} condition(s) x {args.episodes} episodes")
    rows = evaluate_conditions(loaded, conditions, envs, args.episodes, key, mesh)
    write_results(out, loaded, rows, sweeps, args)
    return 0


def evaluate_conditions(run, conditions, envs, episodes: int, key, mesh) -> list[dict]:
    """Every controller under every condition: one row each (printed as a table as they come)."""
    from pgjax.commands.eval import controllers, evaluate_all

    rows = []
    head = f"{'condition':<44}{'controller':<12}" + "".join(f"{m:>14}" for m in ("cost $", "safety", "return/ep"))
    print(head)
    print("-" * len(head))
    for cond, env in zip(conditions, envs):
        t0 = time.perf_counter()
        names, ctrls = controllers(run, env)
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in cond.items())
        with watchdog.stage(f"evaluating the controllers under {label or 'the run’s own conditions'}"):
            results, _ = evaluate_all(run, env, names, ctrls, episodes, key, mesh)
        for name in names:
            m = results[name]
            rows.append({**cond, "controller": name, **{k: m[k] for k in METRICS if k in m},
                         **{k: v for k, v in m.items() if k not in METRICS and not isinstance(v, list)}})
            print(f"{label:<44}{name:<12}{m['cost']:>14,.0f}{m['safety']:>14,.2f}{m['return_per_episode']:>14.3f}")
        print(f"{'':<44}({time.perf_counter() - t0:.1f} s: compile and roll out)", flush=True)
    return rows


def write_results(out: Path, run, rows, sweeps, args) -> None:
    """`robustness.csv`, `robustness.json` and `robustness.png` in `out`."""
    from pgjax.runio import open_atomic, write_json

    keys = list(sweeps) + ["controller"] + [k for k in METRICS if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    with open_atomic(out / "robustness.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r.get(k, "") if not isinstance(r.get(k), (list, dict)) else str(r.get(k)) for k in keys])
    write_json(out / "robustness.json", {"run_dir": str(run.run_dir), "env": run.cfg.env, "update": run.step,
                                         "profiles": run.data, "episodes": args.episodes, "seed": args.seed,
                                         "sweeps": sweeps, "rows": rows})
    plot(rows, sweeps, out / "robustness.png")
    print(f"wrote {out / 'robustness.csv'}, {out / 'robustness.json'}, {out / 'robustness.png'}")


def main(argv: list[str] | None = None) -> int:
    """`pgjax robustness` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

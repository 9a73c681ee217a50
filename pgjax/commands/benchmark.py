"""`pgjax benchmark`: tasks x algorithms x seeds trained, every run and baseline evaluated on every split.

    pgjax benchmark --spec bench.yaml --out bench/              # the spec from a YAML file
    pgjax benchmark --task multi_microgrid --preset laptop --algorithm mappo --algorithm ippo \\
        --seeds 5 --split test --split load_growth --episodes 32 --out bench/
    pgjax benchmark --spec bench.yaml --out bench/              # again: reuses what is done

Spec (YAML, or the flags): `tasks` (scenario name -> `{preset, total_timesteps, config}`:
a `pgjax.baselines.config.PRESETS` name, the environment steps per seed, other `MAPPOConfig`
keys), `algorithms` (a list of `ALGORITHMS` names, or name -> extra config keys, e.g.
`mappo_lagrangian: {cost_budgets: {voltage: 0.5}}`), `seeds` (vmapped in one run per task
and algorithm), `splits` (names of `pgjax splits TASK`; default all of each task's), `episodes`
(per split and controller), `eval_seed` (key of the episode draws), `oracle` (the slow
perfect-foresight dispatch where it applies; default false).

Units of work, each reused when done: one training run per task and algorithm
(`pgjax.baselines.mappo.run` with `num_seeds` seeds into `OUT/<task>/<algorithm>/`; done when
its checkpoint is at `num_updates`, resumed with `resume=True` when interrupted), then one
evaluation per run and split (`pgjax.commands.eval.evaluate`: the trained seeds and the
baselines on the same episodes; `OUT/<task>/<algorithm>/eval_benchmark_<split>.json`, with
its `_meta.json` and `.csv`; reused when its meta matches). `--max-units N` stops after N
units of work (exit status 3; rerun to go on). A folder holding another spec is refused
unless `--force` (which removes the earlier benchmark's files first).

Results, per task, split and controller (learned: `<algorithm>`; baselines: `random`,
`do_nothing`, `rule_based`, `oracle`, and the frequency family's `no_control`, `droop`,
`agc`): the mean and a 95 % percentile-bootstrap confidence interval (`RESAMPLES` resamples
of the mean, numpy generator seeded `BOOTSTRAP_SEED`) of each metric of `METRICS`. Learned
controllers: over seeds (a seed's value is its mean over the evaluated episodes). Baselines
are deterministic policies (random draws the same actions for the same key), so they have
no seeds: their CI is over evaluation episodes, labelled `ci_over: episodes`. Metrics are
means per episode of each episode's value (`pgjax eval`'s `summarize` of that episode).

Writes into OUT, atomically (`pgjax.runio`): `spec.json`, `results.csv` (one row per task,
split, controller and metric), `results.json` (the spec and the rows), `results.md` (a
markdown table per task and split) and `<task>.png` (each metric per split and controller,
with the CI as error bars).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pgjax import watchdog

RESAMPLES, BOOTSTRAP_SEED, LEVEL = 10_000, 0, 0.95
EVAL_LABEL = "benchmark_{}"  # eval_benchmark_<split>.json in the run folder
# metric -> (label, unit, how it is read from a summarized episode); per task kind
POWER_FLOW = {
    "cost": ("cost", "$/episode", "cost_per_episode"),
    "safety": ("safety", "violation units/episode", "safety_per_episode"),
    "violation_rate": ("violation rate", "share of steps with any violation", ("1-", "controllable")),
    "controllable_ratio": ("CR", "share of steps", "controllable"),
    "reactive_mvarh": ("Q", "Mvarh/episode, inverter reactive energy", "reactive_mvarh"),
    "return": ("return", "per episode", "return_per_episode"),
}
FREQUENCY = {
    "cost": ("cost", "$/episode", "control_cost_per_episode"),
    "safety": ("safety", "bus-steps out of band/episode", "violations_per_episode"),
    "violation_rate": ("violation rate", "share of steps with any bus out of band", ("1-", "in_band_rate")),
    "in_band_rate": ("in band", "share of steps", "in_band_rate"),
    "nadir_hz": ("nadir", "Hz (episode minimum)", "nadir_hz"),
    "rocof_hz_s": ("RoCoF", "Hz/s (episode maximum)", "rocof_max_hz_s"),
    "return": ("return", "per episode", "return_per_episode"),
}
SPEC_KEYS = {"tasks", "algorithms", "seeds", "splits", "episodes", "eval_seed", "oracle"}
TASK_KEYS = {"preset", "total_timesteps", "config"}


def algorithm_config(name: str) -> dict[str, Any]:
    """The `MAPPOConfig` keys that select algorithm `name` (one of `ALGORITHMS`)."""
    from pgjax.baselines.config import ALGORITHMS
    from pgjax.errors import InputError

    if name not in ALGORITHMS:
        raise InputError(f"algorithm {name!r}: expected one of {list(ALGORITHMS)}")
    return {"algorithm": name}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A benchmark: what is trained (tasks x algorithms, `seeds` each) and how it is evaluated."""

    tasks: dict  # task -> {"preset": str | None, "total_timesteps": int | None, "config": dict}
    algorithms: dict  # algorithm -> extra MAPPOConfig keys
    seeds: int = 5
    splits: tuple = ()  # split names; empty: every split of each task
    episodes: int = 32  # evaluation episodes per split and controller
    eval_seed: int = 0  # key of the episode draws
    oracle: bool = False

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "splits": list(self.splits)}

    def config(self, task: str, algorithm: str):
        """The `MAPPOConfig` of one training run (validated: a bad key raises naming it)."""
        from pgjax.baselines.config import PRESETS, MAPPOConfig

        t = self.tasks[task]
        d = {**(PRESETS[t["preset"]] if t.get("preset") else {}), "env": task, **t.get("config", {}),
             **algorithm_config(algorithm), **self.algorithms[algorithm], "num_seeds": self.seeds}
        if t.get("total_timesteps"):
            d["total_timesteps"] = t["total_timesteps"]
        try:
            return MAPPOConfig.from_dict(d)
        except ValueError as e:
            raise _bad(f"tasks.{task} with algorithm {algorithm}: {e}") from None

    def task_splits(self, task: str) -> list[str]:
        """The splits evaluated for `task` (checked against `pgjax.splits`)."""
        from pgjax.splits import split, splits_for

        if not self.splits:
            return list(splits_for(task))
        return [split(task, name).name for name in self.splits]


def _bad(text: str):
    from pgjax.errors import InputError

    return InputError(f"benchmark spec: {text}")


def parse_spec(raw: Any, source: str = "spec") -> Spec:
    """A `Spec` from a mapping (YAML), every key and value checked; errors name `source` and the key."""
    from pgjax.baselines.config import PRESETS

    def need(cond, key, expected, value):
        if not cond:
            raise _bad(f"{source}: {key}: expected {expected}, got {value!r}")

    need(isinstance(raw, dict), "<root>", "a mapping", raw)
    unknown = sorted(set(raw) - SPEC_KEYS)
    need(not unknown, ", ".join(unknown), f"keys of {sorted(SPEC_KEYS)}", "unknown keys")
    tasks = raw.get("tasks")
    if isinstance(tasks, list):
        tasks = {t: {} for t in tasks}
    need(isinstance(tasks, dict) and tasks, "tasks", "a non-empty list or mapping of task names", tasks)
    out_tasks = {}
    for name, t in tasks.items():
        t = {} if t is None else t
        need(isinstance(t, dict) and not set(t) - TASK_KEYS, f"tasks.{name}", f"a mapping of {sorted(TASK_KEYS)}", t)
        preset, steps, cfg = t.get("preset"), t.get("total_timesteps"), t.get("config", {})
        need(preset is None or preset in PRESETS, f"tasks.{name}.preset", f"one of {sorted(PRESETS)}", preset)
        need(steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1),
             f"tasks.{name}.total_timesteps", "an int >= 1 (env steps per seed)", steps)
        need(isinstance(cfg, dict), f"tasks.{name}.config", "a mapping of MAPPOConfig keys", cfg)
        out_tasks[str(name)] = {"preset": preset, "total_timesteps": steps, "config": dict(cfg)}
    algs = raw.get("algorithms", ["mappo"])
    if isinstance(algs, list):
        algs = {a: {} for a in algs}
    need(isinstance(algs, dict) and algs and all(isinstance(v, dict) or v is None for v in algs.values()),
         "algorithms", "a non-empty list of names or a mapping name -> config keys", algs)
    seeds, episodes = raw.get("seeds", 5), raw.get("episodes", 32)
    for key, v in (("seeds", seeds), ("episodes", episodes), ("eval_seed", raw.get("eval_seed", 0))):
        need(isinstance(v, int) and not isinstance(v, bool) and v >= (0 if key == "eval_seed" else 1), key,
             "an int >= 0" if key == "eval_seed" else "an int >= 1", v)
    splits = raw.get("splits") or []
    need(isinstance(splits, list) and all(isinstance(s, str) for s in splits), "splits", "a list of split names",
         splits)
    need(isinstance(raw.get("oracle", False), bool), "oracle", "true or false", raw.get("oracle"))
    spec = Spec(out_tasks, {str(a): dict(v or {}) for a, v in algs.items()}, seeds, tuple(splits), episodes,
                raw.get("eval_seed", 0), raw.get("oracle", False))
    for task in spec.tasks:  # every config and split checked before anything runs
        spec.task_splits(task)
        for alg in spec.algorithms:
            spec.config(task, alg)
    return spec


# ----------------------------------------------------------------------------- statistics

def bootstrap_ci(values, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = BOOTSTRAP_SEED):
    """`(mean, low, high)` of `values` `[n]`: the mean and its percentile-bootstrap interval
    (`resamples` means of `n` values drawn with replacement by `np.random.default_rng(seed)`).
    One value gives `(v, v, v)`; any NaN gives NaN bounds."""
    x = np.asarray(values, np.float64)
    mean = float(np.mean(x))
    if x.size < 2 or not np.isfinite(x).all():
        return mean, (mean if x.size == 1 else float("nan")), (mean if x.size == 1 else float("nan"))
    idx = np.random.default_rng(seed).integers(0, x.size, (resamples, x.size))
    lo, hi = np.percentile(x[idx].mean(axis=1), [50 * (1 - level), 50 * (1 + level)])
    return mean, float(lo), float(hi)


def metric_values(per_episode: dict, source) -> np.ndarray:
    """`[episodes]` values of one metric from `per_episode` (metric -> list; `("1-", k)`: one minus
    k); NaN where the task has no such metric."""
    key = source[1] if isinstance(source, tuple) else source
    if key not in per_episode:
        return np.full(1, np.nan)
    v = np.asarray([np.nan if x is None else x for x in per_episode[key]], np.float64)
    return 1.0 - v if isinstance(source, tuple) else v


def rows_of(task: str, split: str, algorithm: str, results: dict, baselines: bool) -> list[dict]:
    """Result rows of one evaluation file: the learned run over seeds (`algorithm`), and, if
    `baselines`, every baseline over episodes; metrics the task does not report are left out."""
    metrics = FREQUENCY if "in_band_rate" in results["mappo"] else POWER_FLOW
    have = results["mappo"]["per_seed"][0]
    metrics = {k: v for k, v in metrics.items() if (v[2][1] if isinstance(v[2], tuple) else v[2]) in have}
    out = []
    for name, (label, unit, src) in metrics.items():
        per_seed = [float(np.mean(metric_values(s, src))) for s in results["mappo"]["per_seed"]]
        out.append(_row(task, split, algorithm, "learned", name, label, unit, "seeds", per_seed))
    if baselines:
        for ctrl, m in results.items():
            if ctrl == "mappo":
                continue
            for name, (label, unit, src) in metrics.items():
                out.append(_row(task, split, ctrl, "baseline", name, label, unit, "episodes",
                                metric_values(m["per_episode"], src)))
    return out


def budget_rows(task: str, split: str, algorithm: str, results: dict, loaded) -> list[dict]:
    """For a run with `cost_budgets` (mappo_lagrangian): per budgeted signal, its cost per episode
    over seeds (a seed's value: its mean over the evaluated episodes) with the budget and how many
    seeds stay within it (`budget`, `seeds_within_budget`)."""
    signals, out = loaded.train.env.cost_signals, []
    for signal, budget in loaded.cfg.cost_budgets.items():
        key = signals[signal].info_key
        per_seed = [float(np.mean(metric_values(s, key))) for s in results["mappo"]["per_seed"]]
        row = _row(task, split, algorithm, "learned", f"budget_{signal}", f"{signal} cost, budget {budget:g}",
                   f"{signals[signal].unit} per episode", "seeds", per_seed)
        out.append({**row, "budget": float(budget),
                    "seeds_within_budget": int(sum(v <= budget for v in per_seed))})
    return out


def _row(task, split, controller, kind, metric, label, unit, over, values) -> dict:
    mean, lo, hi = bootstrap_ci(values)
    return {"task": task, "split": split, "controller": controller, "kind": kind, "metric": metric, "label": label,
            "unit": unit, "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(values), "ci_over": over,
            "values": [float(v) for v in values]}


# ----------------------------------------------------------------------------- units of work

class Stop(Exception):
    """`--max-units` reached: what is done is saved, a rerun goes on."""


class Units:
    """Counts the units of work done in this call (not the reused ones); `Stop` past `limit`."""

    def __init__(self, limit: int | None):
        self.limit, self.done = limit, 0

    def start(self) -> None:
        if self.limit is not None and self.done >= self.limit:
            raise Stop
        self.done += 1


def trained_run(spec: Spec, task: str, algorithm: str, out: Path, units: Units, log=print):
    """The `LoadedRun` of `OUT/<task>/<algorithm>/`, trained (or resumed) first unless its checkpoint
    is at `num_updates`."""
    from pgjax.baselines.mappo import CONFIG, run
    from pgjax.commands.eval import LoadedRun

    cfg, folder = spec.config(task, algorithm), out / task / algorithm
    if (folder / CONFIG).exists():
        try:
            loaded = LoadedRun(folder)
            if loaded.step >= cfg.num_updates:
                log(f"{task}/{algorithm}: trained ({loaded.step} updates), reused")
                return loaded
        except FileNotFoundError:  # stopped before its first checkpoint
            pass
        units.start()
        log(f"{task}/{algorithm}: resuming the interrupted training run")
        resume = True
    else:
        units.start()
        log(f"{task}/{algorithm}: training {cfg.num_seeds} seed(s), {cfg.total_timesteps:,} env steps each")
        resume = False
    with watchdog.stage(f"training {task}/{algorithm} (each finished chunk is progress)"):
        run(cfg, folder, resume=resume, force=not resume, log=lambda m: log(f"  {m}"),
            on_chunk=lambda *_: watchdog.beat())
    return LoadedRun(folder)


def evaluated(spec: Spec, task: str, algorithm: str, split_name: str, loaded, units: Units, log=print) -> dict:
    """The detailed evaluation of one run on one split (`eval_benchmark_<split>.json`), computed
    unless a file of the same run update, split, episodes, key and oracle setting is there."""
    import json

    from pgjax.commands.eval import conditions_env, evaluate, output_names, write_results
    from pgjax.splits import split

    label = EVAL_LABEL.format(split_name)
    names = output_names(label)
    sets = split(task, split_name).sets
    meta = {"split": split_name, "overrides": sets, "update": loaded.step, "episodes": spec.episodes,
            "seed": spec.eval_seed, "oracle": spec.oracle, "num_seeds": loaded.cfg.num_seeds}
    try:
        saved = json.loads((loaded.run_dir / names["meta"]).read_text())
        if {k: saved.get(k) for k in meta} == meta:
            return json.loads((loaded.run_dir / names["json"]).read_text())
    except (OSError, ValueError):
        pass
    units.start()
    log(f"{task}/{algorithm}: evaluating on {split_name} ({spec.episodes} episodes)")
    env = conditions_env(loaded.cfg, loaded.env, sets) if sets else loaded.env
    with watchdog.stage(f"evaluating {task}/{algorithm} on {split_name}"):
        results, _, notes = evaluate(loaded, env, spec.episodes, spec.eval_seed, oracle=spec.oracle, detail=True,
                                     log=lambda m: log(f"  {m}"))
    for line in notes.splitlines():
        log(f"  {line}")
    write_results(loaded.run_dir, results, {**meta, "env": loaded.cfg.env}, label)
    return results


# ----------------------------------------------------------------------------- outputs

def fmt(row: dict) -> str:
    """`mean [low, high]` with digits for the metric's size."""
    vals = [row["mean"], row["ci_low"], row["ci_high"]]
    if not np.isfinite(row["mean"]):
        return "n/a"
    big = max(abs(v) for v in vals if np.isfinite(v))
    f = "{:,.0f}" if big >= 1000 else "{:.1f}" if big >= 10 else "{:.3f}" if big >= 0.01 else "{:.2e}"
    return f"{f.format(vals[0])} [{f.format(vals[1])}, {f.format(vals[2])}]"


def cell(row: dict) -> str:
    """`fmt(row)`, and for a budgeted signal how many seeds stay within the budget."""
    if "budget" not in row:
        return fmt(row)
    return f"{fmt(row)}, {row['seeds_within_budget']}/{row['n']} seeds within"


def markdown(rows: list[dict], spec: Spec) -> str:
    """A markdown table per task and split: controllers as rows, metrics (with units) as columns."""
    lines = [f"# pgjax benchmark\n\n{spec.seeds} seed(s) per learned controller, {spec.episodes} evaluation "
             f"episodes per split and controller. Cells: mean [95 % bootstrap CI]; learned controllers: CI over "
             f"seeds; baselines (†): deterministic, CI over evaluation episodes.\n"]
    for task in dict.fromkeys(r["task"] for r in rows):
        for split_name in dict.fromkeys(r["split"] for r in rows if r["task"] == task):
            part = [r for r in rows if r["task"] == task and r["split"] == split_name]
            metrics = list(dict.fromkeys((r["metric"], r["label"], r["unit"]) for r in part))
            lines.append(f"## {task}: {split_name}\n")
            lines.append("| controller | " + " | ".join(f"{lab} ({unit})" for _, lab, unit in metrics) + " |")
            lines.append("|---" * (len(metrics) + 1) + "|")
            for ctrl in dict.fromkeys(r["controller"] for r in part):
                cells = {r["metric"]: r for r in part if r["controller"] == ctrl}
                mark = " †" if next(iter(cells.values()))["kind"] == "baseline" else ""
                lines.append(f"| {ctrl}{mark} | " + " | ".join(cell(cells[m]) if m in cells else "" for m, _, _ in metrics)
                             + " |")
            lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], task: str, png: Path) -> None:
    """Each metric of `task` per split (x) and controller (bars), the CI as error bars."""
    from pgjax.commands.common import pyplot, save_figure

    part = [r for r in rows if r["task"] == task]
    metrics = list(dict.fromkeys((r["metric"], r["label"], r["unit"]) for r in part))
    splits = list(dict.fromkeys(r["split"] for r in part))
    ctrls = list(dict.fromkeys(r["controller"] for r in part))
    fig, axes = pyplot().subplots(len(metrics), 1, figsize=(max(6.0, 1.2 * len(splits) * len(ctrls) / 2), 2.4 * len(metrics)),
                             squeeze=False)
    width = 0.8 / len(ctrls)
    for ax, (metric, label, unit) in zip(axes[:, 0], metrics):
        for i, ctrl in enumerate(ctrls):
            pts = [(j, r) for j, s in enumerate(splits) for r in part
                   if r["split"] == s and r["controller"] == ctrl and r["metric"] == metric]
            x = np.asarray([j for j, _ in pts], float) + (i - (len(ctrls) - 1) / 2) * width
            mean = np.asarray([r["mean"] for _, r in pts], float)
            err = np.abs(np.asarray([[r["ci_low"], r["ci_high"]] for _, r in pts], float).T - mean) if pts else None
            ax.bar(x, mean, width, yerr=np.nan_to_num(err) if pts else None, capsize=2, label=ctrl)
        ax.set_xticks(range(len(splits)), splits)
        ax.set_ylabel(f"{label}\n{unit}", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7, ncol=min(len(ctrls), 4))
    axes[0, 0].set_title(f"{task}: mean and 95 % CI (learned: over seeds; baselines: over episodes)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png, dpi=100)


def write_outputs(out: Path, spec: Spec, rows: list[dict]) -> list[Path]:
    """`results.csv`, `results.json`, `results.md` and a PNG per task, each written atomically."""
    from pgjax.runio import open_atomic, write_atomic, write_json

    keys = ["task", "split", "controller", "kind", "metric", "label", "unit", "mean", "ci_low", "ci_high", "n",
            "ci_over", "budget", "seeds_within_budget"]
    with open_atomic(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r.get(k, "") for k in keys])
    write_json(out / "results.json", {"spec": spec.to_dict(), "confidence": LEVEL, "resamples": RESAMPLES,
                                      "bootstrap_seed": BOOTSTRAP_SEED, "rows": rows})
    write_atomic(out / "results.md", markdown(rows, spec))
    pngs = [out / f"{task}.png" for task in spec.tasks]
    for task, png in zip(spec.tasks, pngs):
        plot(rows, task, png)
    return [out / "results.csv", out / "results.json", out / "results.md", *pngs]


# ----------------------------------------------------------------------------- command

def prepare(out: Path, spec: Spec, force: bool) -> None:
    """Refuse `out` if it holds another spec's benchmark (unless `force`: then its files are removed)."""
    import json

    from pgjax.errors import RunFolderError
    from pgjax.runio import write_json

    path = out / "spec.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != json.loads(json.dumps(spec.to_dict())):
            if not force:
                raise RunFolderError(f"{path}: holds a benchmark of another spec; use another --out, or --force "
                                     f"to remove it and start this one")
            for task in (old or {}).get("tasks", {}):
                shutil.rmtree(out / task, ignore_errors=True)
                (out / f"{task}.png").unlink(missing_ok=True)
            for name in ("results.csv", "results.json", "results.md"):
                (out / name).unlink(missing_ok=True)
    write_json(path, spec.to_dict())


def spec_from_args(args) -> dict:
    """The spec mapping of `--spec FILE` or of the flags."""
    import yaml

    if args.spec:
        try:
            with open(args.spec) as f:
                raw = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise _bad(f"{args.spec}: not a readable YAML file ({str(e).splitlines()[0]})") from None
        return raw
    task = {"preset": args.preset, "total_timesteps": args.total_timesteps, "config": {}}
    return {"tasks": {t: dict(task) for t in args.task}, "algorithms": args.algorithm or ["mappo"],
            "seeds": args.seeds, "splits": args.split, "episodes": args.episodes, "eval_seed": args.eval_seed,
            "oracle": args.oracle}


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax benchmark` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax benchmark", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--spec", help="benchmark spec (YAML); otherwise the flags below")
    parser.add_argument("--task", action="append", default=[], help="scenario to train and evaluate (repeatable)")
    parser.add_argument("--algorithm", action="append", default=[], help="mappo, ippo, mappo_lagrangian (repeatable)")
    parser.add_argument("--preset", help="MAPPOConfig preset of every task (pgjax.baselines.config.PRESETS)")
    parser.add_argument("--total-timesteps", type=int, help="environment steps per seed")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per task and algorithm (vmapped; default 5)")
    parser.add_argument("--split", action="append", default=[], help="split to evaluate (repeatable; default all)")
    parser.add_argument("--episodes", type=int, default=32, help="evaluation episodes per split and controller")
    parser.add_argument("--eval-seed", type=int, default=0, help="key of the evaluation episode draws")
    parser.add_argument("--oracle", action="store_true", help="evaluate the perfect-foresight oracle too (slow)")
    parser.add_argument("--out", required=True, help="benchmark folder")
    parser.add_argument("--force", action="store_true", help="replace a benchmark of another spec in --out")
    parser.add_argument("--max-units", type=int, help="stop after this many units of work (training runs, "
                                                      "evaluations); a rerun goes on")
    return parser


def run(args) -> int:
    """Train and evaluate as `args` say (parsed by `build_parser`); 3 when stopped by `--max-units`."""
    parser = build_parser()  # usage errors found while running
    if args.spec and args.task:
        parser.error("give the tasks either in --spec or by --task, not both")
    if not args.spec and not args.task:
        parser.error("give a --spec file or at least one --task")
    if args.max_units is not None and args.max_units < 0:
        parser.error(f"--max-units: expected an int >= 0, got {args.max_units}")

    from pgjax.commands.common import reported_errors

    out = Path(args.out)
    with reported_errors("pgjax benchmark", "split", parser):
        spec = parse_spec(spec_from_args(args), args.spec or "flags")
        prepare(out, spec, args.force)
    units, rows = Units(args.max_units), []
    try:
        with reported_errors("pgjax benchmark", "split", parser):
            for task in spec.tasks:
                for i, algorithm in enumerate(spec.algorithms):
                    loaded = trained_run(spec, task, algorithm, out, units)
                    for split_name in spec.task_splits(task):
                        results = evaluated(spec, task, algorithm, split_name, loaded, units)
                        rows += rows_of(task, split_name, algorithm, results, baselines=i == 0)
                        rows += budget_rows(task, split_name, algorithm, results, loaded)
    except Stop:
        print(f"pgjax benchmark: stopped after {units.done} unit(s) of work (--max-units); rerun the same command "
              f"to go on", file=sys.stderr)
        return 3
    rows.sort(key=lambda r: (list(spec.tasks).index(r["task"]), r["split"] != "test", r["split"],
                             r["kind"] != "learned"))
    paths = write_outputs(out, spec, rows)
    print(markdown(rows, spec))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax benchmark` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

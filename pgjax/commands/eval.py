"""`pgjax eval RUN_DIR`: a trained MAPPO run against random, do-nothing and rule-based on the test split.

    pgjax eval runs/multi_microgrid                    # 32 test episodes (days) per controller
    pgjax eval runs/multi_microgrid --episodes 64 --seed 1
    pgjax eval runs/mm_p2p --set communication.msg_delay=2 --set communication.loss_prob=0.2
    pgjax eval runs/multi_microgrid --split load_growth  # a named split (`pgjax splits multi_microgrid`)

Conditions (`--set KEY=VALUE`, repeatable): any scenario key by its path (or a flat
`pgjax.make` name such as `msg_delay`), value as YAML, set on top of the run's scenario for the
evaluation only, validated like the YAML (an unknown key or a value out of range is an
error naming its path) and recorded in `eval_meta.json` (`overrides`). The trained policy
runs only where every agent observes and controls the same things as in training
(`pgjax.env.layout.policy_differences`): a key that changes them (e.g. a protocol whose
messages the policy never saw) is refused with the features that differ. `pgjax
robustness` sweeps such conditions. `--split NAME` applies a named evaluation split of the
run's scenario (`pgjax.splits`, `pgjax/data/splits.yaml`: `train`, `load_growth`,
`tight_voltage`, ...), `--set` keys on top. For env families (`frequency_68bus`) and toy envs
the keys are the env's constructor arguments (`scada_delay=4`, `plant_config.max_trip_mw=1000`).

Loads `RUN_DIR/config.yaml` and `checkpoint.msgpack`, builds the scenario with
`split="test"` (CAISO 2024 for `multi_microgrid`) in the dtype the run was trained with
(its `env_kwargs: {dtype: ...}`, float32 for runs of `pgjax train` unless `--dtype float64`;
the scenario's own dtype for runs without one), and rolls out every controller on the
same episodes (same days and initial states: the same key for all, one compiled program
for all controllers): `mappo` (the deterministic mean action of each trained seed; metrics
are the mean over seeds, per-seed costs listed), `random`, `do_nothing` and `rule_based`
(`pgjax.baselines.rule_based`; pgjax scenarios only, skipped on the toy envs of
`pgjax.baselines.toy_env`), and, where it applies (`multi_microgrid`, `multi_microgrid_15min`),
`oracle`: the perfect-foresight dispatch of `pgjax.baselines.oracle` (one MILP per day with a
linear voltage model, rolled out in the environment), a cost reference from above; it plans
the drawn days first (~10-20 s per day on a laptop core, `--no-oracle` skips it).

Writes into RUN_DIR (the names below are those of the test split as trained; an evaluation
under a split or `--set` conditions writes `eval_<label>.json`, `eval_<label>.csv`,
`eval_<label>_meta.json`, `eval_<label>_day.png`, the label being `--name`, else the split's
name and `set_<key>-<value>...` of the `--set` keys, so it never overwrites the test year's files):
- `eval.json`: controller -> metrics. `cost` and `safety` are totals over all evaluated
  episodes; `*_per_episode` are means per episode; `losses_mw`, `voltage_violation_rate`,
  `controllable`, `vm_min_pu`, `vm_max_pu` (and other MW / price metrics) are means per
  step; energy metrics
  (`curtailment_mwh`, `import_mwh`, `export_mwh`, ...) are means per episode.
- `eval.csv`: the same, one row per controller; `eval_meta.json`: split, data, episodes, seed.
- every file is written atomically, JSON with null for NaN (`pgjax.runio`); a damaged
  checkpoint or config is refused with an error naming the file;
- `eval_day.png`: one test day (the first episode) under the trained policy: price, device
  dispatch per type and grid import, storage SOC, min / max bus voltage with the limits
  (and inverter reactive power when the scenario has PV / wind).
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from pathlib import Path

import numpy as np

from pgjax import watchdog
from pgjax.baselines import families
from pgjax.commands.common import reported_errors

PER_STEP = ("losses_mw", "voltage_violation_rate", "controllable", "vm_min_pu", "vm_max_pu", "price", "nonconverged",
            "p_injected_mw", "slack_p_mw", "net_load_variance_mw2")
TABLE = [("cost", "cost $", "{:,.0f}"), ("safety", "safety", "{:,.2f}"), ("return_per_episode", "return/ep", "{:.3f}"),
         ("losses_mw", "losses MW", "{:.3f}"), ("voltage_violation_rate", "V viol rate", "{:.4f}"),
         ("controllable", "controllable", "{:.3f}"), ("curtailment_mwh", "curtail MWh/ep", "{:.3f}"),
         ("reactive_mvarh", "inverter Q Mvarh/ep", "{:.3f}"),
         ("import_mwh", "import MWh/ep", "{:.2f}"), ("export_mwh", "export MWh/ep", "{:.2f}")]
BASELINES = ("random", "do_nothing", "rule_based")


def summarize(totals: dict, steps: int) -> dict:
    """Per-episode totals `[n]` -> the metrics of `eval.json` (see the module docstring)."""
    n = len(totals["cost"]) if "cost" in totals else len(totals["return"])
    out = {"episodes": n, "cost": float(np.sum(totals.get("cost", np.nan))),
           "safety": float(np.sum(totals.get("safety", np.nan)))}
    for k, v in totals.items():
        v = np.asarray(v, np.float64)
        if k in PER_STEP:
            out[k] = float(np.mean(v) / steps)
        elif k in ("cost", "safety", "return", "cost_total"):
            out[f"{k}_per_episode"] = float(np.mean(v))
        else:
            out[k] = float(np.mean(v))
    return out


def nested(sets: dict) -> dict:
    """`{"a.b": 1, "c": 2}` -> `{"a": {"b": 1}, "c": 2}`: dotted keys as nested keyword arguments."""
    from pgjax.errors import InputError

    out: dict = {}
    for key, value in sets.items():
        *head, last = key.split(".")
        node = out
        for i, part in enumerate(head):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {key}: {'.'.join(head[:i + 1])} is also set to a value, not a mapping")
        node[last] = value
    return out


def test_env(cfg, sets: dict | None = None):
    """The run's environment on its test split and training dtype (`env_kwargs`), with `sets`
    on top: scenario keys (`pgjax.scenario.keypaths`) for pgjax scenarios, constructor keyword
    arguments (dotted keys nested, `plant_config.max_trip_mw`) for env families
    (`pgjax.env.core.ENV_FAMILIES`) and toy envs (`pgjax.baselines.toy_env`): `(env, data)`."""
    from pgjax.baselines.common import make_env
    from pgjax.baselines.toy_env import TOY_ENVS
    from pgjax.env.core import ENV_FAMILIES
    from pgjax.errors import InputError

    if cfg.env in TOY_ENVS or cfg.env in ENV_FAMILIES:
        kwargs = {**cfg.env_kwargs, **({} if cfg.env in TOY_ENVS else {"split": "test"})}
        for key, value in nested(sets or {}).items():
            kwargs[key] = {**kwargs[key], **value} if isinstance(value, dict) and isinstance(kwargs.get(key), dict) \
                else value
        try:
            env = make_env(cfg.env, **kwargs)
        except TypeError as e:
            raise InputError(f"--set {', '.join(sets or {})}: not keyword arguments of {cfg.env} ({e})") from None
        return env, getattr(env, "test_data", "n/a")
    kwargs = {**cfg.env_kwargs, "split": "test"}
    if sets:
        from pgjax.scenario.keypaths import key_path_overrides

        kwargs.update(key_path_overrides(cfg.env, kwargs, sets))
    env = make_env(cfg.env, **kwargs)
    pr = env.scenario.profile_spec
    data = pr.test or f"{pr.train} (no test profiles: the training data)"
    return env, data


def conditions_env(cfg, trained_env, sets: dict):
    """`test_env(cfg, sets)`, refused with an `InputError` when the trained policy cannot act
    there (`pgjax.env.layout.policy_differences`: other agents, observations or actions; for
    envs without a layout: other observation or action sizes)."""
    from pgjax.env.layout import policy_differences
    from pgjax.errors import InputError

    env, _ = test_env(cfg, sets)
    if hasattr(trained_env, "layout") and hasattr(env, "layout"):
        diffs = policy_differences(trained_env.layout, env.layout)
    else:
        diffs = [f"{name} {getattr(env, name)} instead of the trained {getattr(trained_env, name)}"
                 for name in ("agents", "obs_sizes", "act_sizes") if getattr(env, name) != getattr(trained_env, name)]
    if diffs:
        given = ", ".join(f"{k}={v}" for k, v in sets.items())
        raise InputError(f"--set {given}: the trained policy cannot run there: " + "; ".join(diffs))
    return env


class LoadedRun:
    """A run folder read for evaluation: config, trained env (test split), trainer and seed states."""

    def __init__(self, run_dir):
        import jax

        from pgjax.baselines.mappo import CHECKPOINT, CONFIG, load_checkpoint, make_train, read_run_config

        self.run_dir = Path(run_dir)
        for f in (CONFIG, CHECKPOINT):
            if not (self.run_dir / f).exists():
                raise FileNotFoundError(f"{self.run_dir / f} not found (train first: pgjax train --out {self.run_dir})")
        self.cfg = read_run_config(self.run_dir / CONFIG)
        self.env, self.data = test_env(self.cfg)
        self.train = make_train(self.cfg, self.env)
        template = self.train.seed_init(jax.random.PRNGKey(self.cfg.seed))
        self.states, self.step = load_checkpoint(self.run_dir / CHECKPOINT, template)

    def seed_state(self, i: int):
        import jax

        return jax.tree.map(lambda x: x[i], self.states)


def controllers(run: LoadedRun, env):
    """`(names, controllers)`: the trained policy and the baselines (rule_based on pgjax scenarios) on `env`."""
    from pgjax.baselines.rule_based import controller

    baselines = [n for n in BASELINES if n != "rule_based" or hasattr(env, "layout")]
    return ["mappo", *baselines], [mappo_controller(run.train)] + [controller(n, env) for n in baselines]


def evaluate_all(run: LoadedRun, env, names, ctrls, episodes: int, key, mesh=None, trace: bool = False,
                 state_fn=None, detail: bool = False) -> tuple[dict, dict | None]:
    """Every controller on the same `episodes` of `env` (one compiled rollout): `(results, trace of seed 0)`.

    `results[name]` is `summarize`d; mappo's are the means over the run's seeds (per-seed
    costs and safeties listed). `detail`: each baseline also lists every episode's metrics
    (`per_episode`: metric -> `[episodes]` values, each `summarize`d over that episode alone)
    and mappo the same for every seed (`per_seed`: a list of such mappings)."""
    from pgjax.baselines.rule_based import make_rollout

    steps = int(env.episode_steps)
    roll = make_rollout(env, ctrls, episodes, trace=trace, state_fn=state_fn, mesh=mesh)
    per_seed, seed_totals, first_trace = [], [], None
    for i in range(run.cfg.num_seeds):
        totals, tr = roll(key, 0, run.seed_state(i))
        per_seed.append(summarize(totals, steps))
        seed_totals.append(totals)
        first_trace = tr if i == 0 else first_trace
    mappo = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    mappo.update(episodes=episodes, cost_per_seed=[m["cost"] for m in per_seed],
                 safety_per_seed=[m["safety"] for m in per_seed])
    if detail:
        mappo["per_seed"] = [per_episode(t, lambda x: summarize(x, steps)) for t in seed_totals]
    results = {"mappo": mappo}
    for idx, name in enumerate(names[1:], start=1):
        totals, _ = roll(key, idx, run.seed_state(0))
        if name == "oracle" and np.sum(totals.get("nan_actions", 0)) > 0:
            raise RuntimeError("oracle: an evaluated episode is not one it planned (NaN actions)")
        results[name] = summarize(totals, steps)
        if detail:
            results[name]["per_episode"] = per_episode(totals, lambda t: summarize(t, steps))
    return results, first_trace


def per_episode(totals: dict, summary) -> dict[str, list]:
    """metric -> `[episodes]` values: `summary` (totals -> metrics) of each episode's totals alone."""
    n = len(next(iter(totals.values())))
    rows = [summary({k: np.asarray(v)[j:j + 1] for k, v in totals.items()}) for j in range(n)]
    return {k: [r[k] for r in rows] for k in rows[0] if not isinstance(rows[0][k], list)}


OUTPUTS = {"json": "eval{}.json", "csv": "eval{}.csv", "meta": "eval{}_meta.json", "png": "eval{}_day.png"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def output_names(label: str | None = None) -> dict[str, str]:
    """The files an evaluation writes: `eval.json` ... for the test split as trained (`label`
    None), `eval_<label>.json`, `eval_<label>.csv`, `eval_<label>_meta.json`, `eval_<label>_day.png` otherwise."""
    return {k: v.format("" if label is None else f"_{label}") for k, v in OUTPUTS.items()}


def condition_label(split: str | None, sets: dict, name: str | None = None) -> str | None:
    """The label of an evaluation's files: `name` if given (checked), else the split's name
    (`test`: None, the run's own `eval.json`) followed by `set_<key>-<value>...` for `--set` keys;
    None for the test split as trained."""
    from pgjax.errors import InputError

    if name is not None:
        if not LABEL.match(name) or len(name) > 100:
            raise InputError(f"--name {name!r}: expected letters, digits, '_', '.', '+' or '-' (a file name part), "
                             f"at most 100 characters")
        return name
    parts = [] if split in (None, "test") else [split]
    if sets:
        text = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in sets.items())
        parts.append("set_" + re.sub(r"[^A-Za-z0-9_.+-]", "", text.replace(" ", ""))[:80])
    return "+".join(parts) or None


def write_results(run_dir, results: dict, meta: dict, label: str | None = None) -> dict[str, Path]:
    """`eval.json`, `eval_meta.json` and `eval.csv` (one row per controller; under `label`'s names,
    `output_names`), each written atomically; returns the paths by kind (json, csv, meta, png)."""
    from pgjax.runio import open_atomic, write_json

    paths = {k: Path(run_dir) / v for k, v in output_names(label).items()}
    write_json(paths["json"], results)
    write_json(paths["meta"], meta)
    keys = sorted({k for m in results.values() for k, v in m.items() if not isinstance(v, (list, dict))})
    with open_atomic(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["controller", *keys])
        for name, m in results.items():
            w.writerow([name, *(m.get(k, "") for k in keys)])
    return paths


def evaluate(run: LoadedRun, env, episodes: int, seed: int, oracle: bool = True, mesh=None, trace: bool = False,
             detail: bool = False, log=print) -> tuple[dict, dict | None, str]:
    """The trained run and every baseline on `episodes` episodes of `env` drawn by key `seed`:
    `(results, trace of seed 0 or None, notes)`. Env families run their own baselines and
    metrics (`pgjax.baselines.families.evaluator`); pgjax scenarios `random`, `do_nothing`, `rule_based`
    and, where it applies and `oracle`, the perfect-foresight `oracle` (planned first, slow).
    `detail`: per-seed and per-episode metrics too (`evaluate_all`). `notes` says what was skipped."""
    import jax

    from pgjax.baselines.oracle import applies, oracle_controller

    key = jax.random.PRNGKey(seed)
    family_eval = families.evaluator(env)
    if family_eval is not None:  # an env family with its own baselines and metrics (`pgjax.frequency`)
        results, text = family_eval(env, mappo_controller(run.train), run.states, run.cfg.num_seeds, key,
                                    episodes, detail=detail)
        return results, None, text
    names, ctrls = controllers(run, env)
    notes = [] if "rule_based" in names else ["rule_based: skipped (not a pgjax scenario)"]
    skip_oracle = "--no-oracle" if not oracle else applies(env)
    if skip_oracle is None:
        t_plan = time.perf_counter()
        limit_s = max(watchdog.DEFAULT_TIMEOUT_S, 120 * episodes)  # one MILP per day, no progress in between
        with watchdog.stage(f"planning the oracle ({episodes} episodes)", timeout_s=limit_s):
            ctrls.append(oracle_controller(env, key, episodes))
        names.append("oracle")
        log(f"oracle: planned {episodes} episodes in {time.perf_counter() - t_plan:.1f} s")
    else:
        notes.append(f"oracle: skipped ({skip_oracle})")
    state_fn = state_features(env) if trace else None
    results, tr = evaluate_all(run, env, names, ctrls, episodes, key, mesh, trace=trace and state_fn is not None,
                               state_fn=state_fn, detail=detail)
    return results, tr, "\n".join(notes)


def mappo_controller(train):
    import jax.numpy as jnp

    from pgjax.baselines.rule_based import Controller

    return Controller(lambda: jnp.zeros((), jnp.float32),
                      lambda carry, key, obs, ts: (train.act(ts, key, obs, deterministic=True), carry))


def plot_day(env, trace, png_path, title: str) -> None:
    """One episode of a traced rollout: price, dispatch, SOC, voltages (what the env exposes)."""
    from pgjax.commands.common import pyplot, save_figure

    plt = pyplot()

    info, st = trace["info"], trace["state"]
    dt = float(env.scenario.dt_h) if hasattr(env, "scenario") else 1.0
    steps = np.asarray(info["price"]).shape[-1] if "price" in info else np.asarray(info["cost"]).shape[-1]
    hours = np.arange(steps) * dt
    panels = ["price", "dispatch", "soc", "voltage"] + (["q"] if st.get("q") else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.3 * len(panels)), sharex=True)
    for ax, panel in zip(axes, panels):
        if panel == "price":
            ax.step(hours, info["price"][0], where="post", color="k")
            ax.set_ylabel("price $/MWh")
        elif panel == "dispatch":
            for name, p in st["p"].items():
                ax.step(hours, np.asarray(p[0]).sum(-1), where="post", label=f"{name} (sum)")
            if "slack_p_mw" in info:
                ax.step(hours, info["slack_p_mw"][0], where="post", color="k", ls="--", label="grid import (slack)")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_ylabel("injection MW")
            ax.legend(fontsize=7, ncol=3, loc="upper left")
        elif panel == "soc":
            if st.get("soc"):
                for name, soc in st["soc"].items():
                    soc = np.asarray(soc[0])
                    for k in range(soc.shape[-1]):
                        ax.plot(hours, soc[:, k], label=f"{name} {k}")
                ax.set_ylim(0, 1)
                ax.legend(fontsize=7, ncol=3, loc="upper left")
            ax.set_ylabel("SOC")
        elif panel == "voltage":
            ax.plot(hours, info["vm_min_pu"][0], label="min V")
            ax.plot(hours, info["vm_max_pu"][0], label="max V")
            if hasattr(env, "scenario"):
                for lim in (env.scenario.vm_min_pu, env.scenario.vm_max_pu):
                    ax.axhline(lim, color="r", ls=":", lw=1)
            ax.set_ylabel("bus voltage pu")
            ax.legend(fontsize=7, loc="upper left")
        elif panel == "q":
            for name, q in st["q"].items():
                q = np.asarray(q[0])
                for k in range(q.shape[-1]):
                    ax.step(hours, q[:, k], where="post", label=f"{name} {k}")
            ax.set_ylabel("Q Mvar")
            ax.legend(fontsize=7, ncol=3, loc="upper left")
    axes[-1].set_xlabel("hour of the episode")
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, png_path)


def state_features(env):
    """`state_fn` for the trace: per device type, p_mw (and q_mvar of PV / wind) and storage SOC."""
    if not hasattr(env, "layout"):
        return None
    e_max = {g.type: np.asarray(env.default_params.devices[g.type].e_max_mwh) for g in env.layout.groups
             if g.type == "storage"}

    def fn(state):
        p, soc, q = {}, {}, {}
        for t, s in state.devices.items():
            if hasattr(s, "p_mw"):
                p[t] = s.p_mw
            if t in ("pv", "wind"):
                q[t] = s.q_mvar
            if t in e_max:
                soc[t] = s.e_mwh / e_max[t]
        return {"p": p, "soc": soc, "q": q}

    return fn


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax eval` parser (no side effects)."""
    from pgjax.commands.common import add_devices_argument

    parser = argparse.ArgumentParser(prog="pgjax eval", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run_dir", help="run folder written by `pgjax train`")
    parser.add_argument("--episodes", type=int, default=32, help="test episodes per controller (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="key of the episode draws (the same for all controllers)")
    parser.add_argument("--no-plot", action="store_true", help="skip eval_day.png")
    parser.add_argument("--no-oracle", action="store_true", help="skip the perfect-foresight oracle")
    add_devices_argument(parser, "local devices to split the episodes over: a count or 'all' (--episodes a multiple)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="scenario key set for the evaluation (repeatable), e.g. communication.msg_delay=2, "
                             "communication.loss_prob=0.2, protocol.horizontal=none (recorded in the meta file)")
    parser.add_argument("--split", metavar="NAME",
                        help="a named evaluation split of the run's scenario (`pgjax splits SCENARIO`); --set keys "
                             "apply on top. Writes eval_<NAME>.json ... (the test split: eval.json)")
    parser.add_argument("--name", help="label of the files written (eval_<NAME>.json ...; default: the split's "
                                       "name and the --set keys)")
    return parser


def load_conditions(args, parser):
    """`(LoadedRun, env, sets, label)`: the run, its env under `--split` / `--set` and the label of
    the files written. Errors reported as `reported_errors` says (exit status 2)."""
    from pgjax.scenario.keypaths import parse_sets
    from pgjax.splits import split as named_split

    with reported_errors("pgjax eval", f"--split {args.split} --set {' '.join(args.set)}" if args.split
                         else f"--set {' '.join(args.set)}", parser):
        given = parse_sets(args.set)
        label = condition_label(args.split, given, args.name)
        with watchdog.stage("loading the run (config, env, initial state, checkpoint)"):
            run = LoadedRun(args.run_dir)
        split_sets = named_split(run.cfg.env, args.split).sets if args.split else {}
        sets = {**split_sets, **given}
        env = conditions_env(run.cfg, run.env, sets) if sets else run.env
    return run, env, sets, label


def print_table(results: dict, notes: str, episodes: int, num_seeds: int, seconds: float) -> None:
    """The controllers' metrics (`TABLE`), the oracle's notes and MAPPO's cost per seed."""
    if notes.startswith("rule_based"):
        print(notes.splitlines()[0])
    head = f"{'controller':<12}" + "".join(f"{lab:>16}" for _, lab, _ in TABLE)
    print(head)
    print("-" * len(head))
    for name, m in results.items():
        print(f"{name:<12}" + "".join(f"{fmt.format(m[k]) if k in m else 'n/a':>16}" for k, _, fmt in TABLE))
    print(f"cost, safety: totals over {episodes} episodes; losses, V viol rate, controllable: means per step; "
          f"MWh: means per episode. ({seconds:.1f} s)")
    for line in notes.splitlines():
        if line.startswith("oracle"):
            print(line)
    if num_seeds > 1:
        print("mappo cost per seed: " + ", ".join(f"{c:,.0f}" for c in results["mappo"]["cost_per_seed"]))


def run(args) -> int:
    """Evaluate as `args` say (parsed by `build_parser`); the exit status."""
    from pgjax.commands.common import batch_mesh

    parser = build_parser()  # usage errors found while running
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    try:
        mesh = batch_mesh(args.devices, args.episodes, "--episodes")
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    loaded, env, sets, label = load_conditions(args, parser)
    cfg, run_dir, data, step = loaded.cfg, loaded.run_dir, loaded.data, loaded.step
    steps = int(env.episode_steps)
    dtype = str(np.dtype(env.dtype)) if hasattr(env, "dtype") else "n/a"
    split_name = args.split or "test"
    print(f"pgjax eval: {run_dir} ({cfg.env}, {dtype}, update {step}, {cfg.num_seeds} seed(s)) on the {split_name} "
          f"split [{data}], {args.episodes} episodes x {steps} steps per controller"
          + (f"; conditions {', '.join(f'{k}={v}' for k, v in sets.items())}" if sets else ""))
    meta = {"run_dir": str(run_dir), "env": cfg.env, "dtype": dtype, "split": split_name, "profiles": data,
            "update": step, "episodes": args.episodes, "episode_steps": steps, "seed": args.seed,
            "num_seeds": cfg.num_seeds, "overrides": sets}
    with watchdog.stage("evaluating the controllers (compiling and running the rollouts)"):
        results, trace, notes = evaluate(loaded, env, args.episodes, args.seed, oracle=not args.no_oracle, mesh=mesh,
                                         trace=not args.no_plot)
    seconds = time.perf_counter() - t0
    if families.evaluator(env) is not None:
        print(f"{notes}\n({seconds:.1f} s)")
        paths = write_results(run_dir, results, meta, label)
        print(f"wrote {paths['json']}, {paths['csv']}")
        return 0
    print_table(results, notes, args.episodes, cfg.num_seeds, seconds)
    paths = write_results(run_dir, results, meta, label)
    if trace is not None:
        plot_day(env, trace, paths["png"],
                 f"{cfg.env}: trained MAPPO (seed 0) on {split_name} episode 0 [{data}]")
    print(f"wrote {paths['json']}, {paths['csv']}" + ("" if trace is None else f", {paths['png']}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax eval` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

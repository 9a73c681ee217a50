"""`pgjax compare`: one scenario under every coordination protocol, same policies, same episodes.

    pgjax compare                                   # multi_microgrid, 8 test days, rule-based agents
    pgjax compare --episodes 16 --policy random --out runs/compare_random
    pgjax compare --configs none,p2p,p2p_delay_loss --split train
    pgjax compare --checkpoint runs/multi_microgrid  # a trained MAPPO run where its agent layout fits

Configurations (`CONFIGS`, `pgjax.make` overrides; protocols in `pgjax.protocols.coordination`):

    none            no protocol (grid agents learned)
    setpoint_sys    vertical setpoint, learned system operator (DSO), tracking microgrids
    price_sys       vertical price_signal, learned system operator, price-responding microgrids
    consensus       horizontal consensus among the grid agents
    p2p             horizontal p2p_trading among the grid agents
    p2p_delay_loss  p2p_trading with msg_delay=1 and loss_prob=0.2
    admm            horizontal admm_dispatch: the microgrids' generators dispatched jointly

Policies (`--policy`, applied to whoever is learned in the configuration):
- grid-level agents (microgrid controllers): `pgjax.baselines.rule_based` (`random`, `do_nothing`,
  `rule_based`);
- the system operator (`learned: system`, one action column per microgrid plus its own tap
  changers and shunts): `random`; `do_nothing` = zeros (mid setpoint 0 MW, mid price
  100 $/MWh; own devices hold); `rule_based` = `dso_controller` below:
  * setpoint: each microgrid's setpoint is its uncontrolled net load measured at the
    previous step (its import plus its storage and generator injections, i.e. load minus
    renewables: "buy what you need"), plus storage arbitrage on the price against the
    rolling 24 h median (as `pgjax.baselines.rule_based`): `+ charge_frac * p_charge_max` when
    the price is below the median by `band`, `- p_discharge_max` (at most down to zero
    import, no export) when above, nothing in between, each within what the storage can
    take or give from its observed state of charge. The microgrid's tracker
    (`pgjax.protocols.dispatch.track`) then charges / discharges its storage (fuel units only as
    its fallback);
  * price_signal: forwards the market price (clipped to [price_min, price_max]); the
    microgrids' devices maximize their profit at it (`pgjax.protocols.dispatch.respond`).
- `--checkpoint RUN_DIR`: the trained MAPPO run (seed 0, deterministic) for every
  configuration whose agents, observation and action sizes match the run's environment;
  the others fall back to `--policy` (said so in the output and in the `policy` column).

Every configuration is rolled out with the same key (`--seed`): the same days and initial
states (`pgjax.baselines.rule_based.make_rollout`: one jitted program per configuration,
`vmap` over `--episodes` episodes). The `price` column (mean market price per step) is
identical across rows when they saw the same days. The time is compilation (~20-45 s per
configuration on a 2-core machine, depending on load); the rollouts take well under a second.
The grid agents' controllers do not read the message features, so `none`, `consensus` and
`p2p*` differ only by the messages and the p2p settlement (cost) under `rule_based`.

Writes to `--out` (default `runs/compare`): `compare.csv` (one row per configuration) and
`compare.png` (one bar panel per metric). Metrics: `voltage_violation_rate` (share of
energized buses out of band, mean per step), `safety` (voltage / loading / device excess,
summed over agents, per episode), `safety_voltage` (voltage excess in pu summed over buses,
per episode), `net_load_variance_mw2` (variance of the grid agents' net loads, mean per
step), `curtailment_mwh`, `cost_total` ($, all devices and p2p settlement),
`messages_sent`, `p2p_volume_mwh` (energy bought peer to peer), `import_mwh` (per
episode), `controllable` (share of steps with no violation).
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pgjax import watchdog

CONFIGS = {
    "none": ({}, "no protocol, grid agents learned"),
    "setpoint_sys": ({"vertical": "setpoint", "learned": "system"}, "vertical setpoint, learned DSO"),
    "price_sys": ({"vertical": "price_signal", "learned": "system"}, "vertical price_signal, learned DSO"),
    "consensus": ({"horizontal": "consensus"}, "horizontal consensus"),
    "p2p": ({"horizontal": "p2p_trading"}, "horizontal p2p_trading"),
    "p2p_delay_loss": ({"horizontal": "p2p_trading", "msg_delay": 1, "loss_prob": 0.2},
                       "p2p_trading, msg_delay=1, loss_prob=0.2"),
    "admm": ({"horizontal": "admm_dispatch"}, "horizontal admm_dispatch (joint generator dispatch)"),
}
POLICIES = ("random", "do_nothing", "rule_based")
# (column, label, format, per): per "step" = mean per step, "episode" = mean per-episode total
METRICS = [
    ("voltage_violation_rate", "V viol rate", "{:.4f}", "step"),
    ("safety", "safety/ep", "{:.3f}", "episode"),
    ("safety_voltage", "V excess pu/ep", "{:.3f}", "episode"),
    ("net_load_variance_mw2", "net-load var MW2", "{:.4f}", "step"),
    ("curtailment_mwh", "curtail MWh/ep", "{:.3f}", "episode"),
    ("cost_total", "cost $/ep", "{:,.0f}", "episode"),
    ("messages_sent", "messages/ep", "{:.1f}", "episode"),
    ("p2p_volume_mwh", "p2p MWh/ep", "{:.3f}", "episode"),
    ("import_mwh", "import MWh/ep", "{:.2f}", "episode"),
    ("controllable", "controllable", "{:.3f}", "step"),
    ("price", "price $/MWh", "{:.2f}", "step"),
]
PLOTTED = ("voltage_violation_rate", "safety", "net_load_variance_mw2", "curtailment_mwh", "cost_total",
           "messages_sent", "p2p_volume_mwh", "import_mwh")


def observed_terms(env, a0: int, prm):
    """Per microgrid (a list per grid row): `terms`, `(obs position, MW per observed unit)` of its
    import and its storage and generator injections, and `stores`, `(position of the stored
    energy, storage limits with e_max_mwh the MWh per observed unit)` of its storage, as the
    system-operator agent `a0` observes them."""
    from pgjax import devices as dev

    links, schema = env.coordinator.links, env.layout.observation
    terms, stores = [[] for _ in range(links.n_grid)], [[] for _ in range(links.n_grid)]
    for g in env.layout.groups:
        t, grid_of = dev.get(g.type), links.tracked_of[g.type]
        for k in np.flatnonzero(grid_of >= 0):
            i, name = int(grid_of[k]), g.names[k]
            if t.grid_connection is not None:
                key = f"{g.type}/{name}/import_mw"
            elif g.type in ("storage", "generator"):
                key = f"{g.type}/{name}/p_mw"
            else:
                continue
            terms[i].append((schema.local(a0, key), schema.feature(key).scale))
            if g.type == "storage":
                f = {n: float(np.asarray(getattr(prm["storage"], n))[k]) for n in (
                    "e_min_mwh", "p_charge_max_mw", "p_discharge_max_mw", "eta_charge", "eta_discharge")}
                key = f"storage/{name}/e_mwh"
                stores[i].append((schema.local(a0, key), {**f, "e_max_mwh": schema.feature(key).scale}))
    return terms, stores


def storage_room(o, stores, dt_h: float, charge_frac: float):
    """(charge MW, discharge MW) the storage `stores` of one microgrid (`observed_terms`) can take /
    give this step, from the observation `o`; charging at most `charge_frac` of its rating."""
    import jax.numpy as jnp

    charge, discharge = 0.0, 0.0
    for pos, f in stores:
        e_mwh = o[pos] * f["e_max_mwh"]
        charge += jnp.clip((f["e_max_mwh"] - e_mwh) / (f["eta_charge"] * dt_h), 0.0,
                           charge_frac * f["p_charge_max_mw"])
        discharge += jnp.clip((e_mwh - f["e_min_mwh"]) * f["eta_discharge"] / dt_h, 0.0, f["p_discharge_max_mw"])
    return charge, discharge


def dso_controller(env, band: float = 0.1, charge_frac: float = 0.3):
    """The fixed system-operator policy of `learned: system` (module docstring) as a `Controller`."""
    import jax.numpy as jnp

    from pgjax.baselines.common import MARLEnv
    from pgjax.baselines.rule_based import Controller, training_price_by_slot

    menv = MARLEnv.wrap(env)
    links, schema = env.coordinator.links, env.layout.observation
    if not is_system(env):
        raise ValueError("dso_controller: needs a vertical protocol with a learned system operator")
    setpoint = env.scenario.protocol.vertical == "setpoint"
    prm = menv.params.devices
    dt_h = float(env.scenario.dt_h)
    n_slots = max(round(24 / dt_h), 1)
    rows = np.flatnonzero(links.tracked)  # tracked microgrids
    a0 = int(links.parent_agent[rows[0]])
    price_pos, sin_pos, cos_pos = (schema.local(a0, f"time//{n}") for n in ("price", "sin_hour", "cos_hour"))
    terms, stores = observed_terms(env, a0, prm)
    positions = [price_pos, sin_pos, cos_pos] + ([p for i in rows for p, _ in terms[i]] +
                                                 [p for i in rows for p, _ in stores[i]] if setpoint else [])
    if min(positions) < 0:
        raise ValueError("dso_controller: the system operator does not observe the price or its microgrids' devices")
    agent, col = links.parent_agent[rows], links.parent_col[rows]
    imax, emax = links.import_max_mw[rows], links.export_max_mw[rows]
    price_min, price_max = (float(links.options.get(k, d)) for k, d in (("price_min", 0.0), ("price_max", 200.0)))
    default = jnp.asarray(menv.default_actions, jnp.float32)
    mask = jnp.asarray(menv.action_mask, jnp.float32)
    prior = jnp.asarray(training_price_by_slot(env), jnp.float32)

    def act(history, key, obs, aux=None):
        o = obs[a0]
        price = o[price_pos] * 100.0
        hour = jnp.mod(jnp.arctan2(o[sin_pos], o[cos_pos]) * 24 / (2 * jnp.pi), 24.0)
        history = history.at[jnp.mod(jnp.round(hour / dt_h).astype(jnp.int32), n_slots)].set(price.astype(history.dtype))
        if setpoint:
            median = jnp.median(history)
            cheap, dear = price < median - band * jnp.abs(median), price > median + band * jnp.abs(median)
            setpoints = []
            for i in rows:
                base = sum(o[p] * s for p, s in terms[i])  # MW: load - renewables, measured last step
                charge, discharge = storage_room(o, stores[i], dt_h, charge_frac)
                delta = jnp.where(cheap, charge, jnp.where(dear, -jnp.minimum(discharge, jnp.maximum(base, 0.0)), 0.0))
                setpoints.append(base + delta)
            a = 2.0 * (jnp.clip(jnp.stack(setpoints), -emax, imax) + emax) / (imax + emax) - 1.0
        else:
            a = jnp.full(len(rows), 2.0 * (price - price_min) / (price_max - price_min) - 1.0)
        actions = default.at[agent, col].set(jnp.clip(a, -1.0, 1.0).astype(jnp.float32))
        return actions * mask, history

    return Controller(lambda: prior, act)


def is_system(env) -> bool:
    """True when the learned agent is the system operator sending setpoints / prices to fixed microgrids."""
    links = getattr(getattr(env, "coordinator", None), "links", None)
    return links is not None and bool(np.any(links.tracked))


def policy_for(name: str, env):
    """`(Controller, label)` for `--policy name` on `env` (the DSO rule for system-level configurations)."""
    from pgjax.baselines.rule_based import controller

    if is_system(env) and name == "rule_based":
        return dso_controller(env), "dso_rule"
    return controller(name, env), name + ("_dso" if is_system(env) else "")


def load_run(run_dir: Path):
    """`(MAPPO, seed-0 TrainState, MAPPOConfig)` of a `pgjax train` run folder."""
    import jax

    from pgjax.baselines.common import make_env
    from pgjax.baselines.mappo import CHECKPOINT, CONFIG, load_checkpoint, make_train, read_run_config
    from pgjax.errors import RunFolderError

    for f in (CONFIG, CHECKPOINT):
        if not (run_dir / f).exists():
            raise SystemExit(f"pgjax compare: {run_dir / f} not found (train first: pgjax train --out {run_dir})")
    try:
        cfg = read_run_config(run_dir / CONFIG)
        train = make_train(cfg, make_env(cfg.env, **cfg.env_kwargs))
        states, _ = load_checkpoint(run_dir / CHECKPOINT, train.seed_init(jax.random.PRNGKey(cfg.seed)))
    except RunFolderError as e:
        raise SystemExit(f"pgjax compare: {e}") from None
    return train, jax.tree.map(lambda x: x[0], states), cfg


def summarize(totals: dict, steps: int, dt_h: float) -> dict:
    """Per-episode totals `[n]` -> the `METRICS` (means per step or per episode)."""
    out = {}
    for key, _, _, per in METRICS:
        src = "p2p_volume_mw" if key == "p2p_volume_mwh" else key
        v = np.asarray(totals.get(src, np.zeros(1)), np.float64) * (dt_h if key == "p2p_volume_mwh" else 1.0)
        out[key] = float(np.mean(v) / (steps if per == "step" else 1))
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    """One bar panel per plotted metric, one bar per configuration."""
    from pgjax.commands.common import pyplot, save_figure

    plt = pyplot()
    labels = {k: lab for k, lab, _, _ in METRICS}
    names = [r["config"] for r in rows]
    n_col = 4
    n_row = -(-len(PLOTTED) // n_col)
    fig, axes = plt.subplots(n_row, n_col, figsize=(4.2 * n_col, 3.2 * n_row))
    colors = plt.cm.tab10(np.arange(len(rows)) % 10)
    for ax, key in zip(axes.reshape(-1), PLOTTED):
        ax.bar(np.arange(len(rows)), [r[key] for r in rows], color=colors)
        ax.set_xticks(np.arange(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(labels[key], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.reshape(-1)[len(PLOTTED):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax compare` parser (no side effects)."""
    from pgjax.commands.common import add_devices_argument

    parser = argparse.ArgumentParser(prog="pgjax compare", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scenario", default="multi_microgrid", help="scenario name or YAML (default multi_microgrid)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--policy", choices=POLICIES, default="rule_based", help="policy of the learned agents")
    parser.add_argument("--checkpoint", metavar="RUN_DIR", help="a `pgjax train` run used where its agent layout fits")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per configuration (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="key of the episode draws (the same for all)")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="profile year (default test)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="configurations compiled at once, in threads (default 1; 2 helps on an idle machine)")
    add_devices_argument(parser, "local devices to split each configuration's episodes over: a count or 'all'")
    parser.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    return parser


def checked_names(args, parser) -> list[str]:
    """The `--configs` names; usage errors (unknown names, counts < 1) through `parser`."""
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        parser.error(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    if args.episodes < 1 or args.jobs < 1:
        parser.error("--episodes and --jobs must be >= 1")
    return names


def trained_policy(checkpoint):
    """`(scenario, env kwargs, (Controller, MARLEnv) or None)` of `--checkpoint` (None: no checkpoint)."""
    import jax

    from pgjax.baselines.rule_based import Controller

    if not checkpoint:
        return None, {}, None
    train, ts, cfg = load_run(Path(checkpoint))
    base_kwargs = {k: v for k, v in cfg.env_kwargs.items()
                   if k not in ("split", "vertical", "horizontal", "learned", "msg_delay", "loss_prob")}
    return cfg.env, base_kwargs, (Controller(lambda: jax.numpy.zeros(()),
                                             lambda c, k, obs, aux: (train.act(ts, k, obs, deterministic=True), c)),
                                  train.env)


def build_jobs(names, scenario, base_kwargs, mappo, args) -> list[tuple]:
    """`(name, description, env, controller, policy label)` per configuration that builds, one after the other."""
    import pgjax
    from pgjax.baselines.common import MARLEnv

    jobs = []
    for name in names:
        overrides, description = CONFIGS[name]
        try:
            env = pgjax.make(scenario, **{**base_kwargs, **overrides, "split": args.split})
        except (ValueError, KeyError) as e:
            print(f"{name}: skipped ({type(e).__name__}: {e})")
            continue
        ctrl, label = policy_for(args.policy, env)
        if mappo is not None:
            trained_ctrl, trained = mappo
            menv = MARLEnv.wrap(env)
            if (trained.agents, trained.obs_dim, trained.act_dim) == (menv.agents, menv.obs_dim, menv.act_dim):
                ctrl, label = trained_ctrl, "mappo"
            else:
                print(f"{name}: checkpoint does not fit (trained agents {list(trained.agents)}, obs {trained.obs_dim}, "
                      f"act {trained.act_dim}; here {list(menv.agents)}, obs {menv.obs_dim}, act {menv.act_dim}): "
                      f"using --policy {args.policy}")
        jobs.append((name, description, env, ctrl, label))
    return jobs


def roll_out(job, episodes: int, key, mesh) -> dict:
    """One configuration's row: its `METRICS` over `episodes` episodes drawn by `key`."""
    from pgjax.baselines.rule_based import make_rollout

    name, description, env, ctrl, label = job
    t_cfg = time.perf_counter()
    steps = int(env.episode_steps)
    totals, _ = make_rollout(env, [ctrl], episodes, mesh=mesh)(key)
    row = {"config": name, "description": description, "policy": label, "agents": " ".join(env.agents),
           "episodes": episodes, **summarize(totals, steps, float(env.scenario.dt_h)),
           "seconds": round(time.perf_counter() - t_cfg, 1)}
    print(f"{name}: {label}, {row['seconds']:.1f} s (compile, {episodes} x {steps} steps)", flush=True)
    watchdog.beat()
    return row


def report(rows, args, scenario, out: Path, seconds: float) -> None:
    """The table, `compare.csv` and `compare.png`."""
    from pgjax.runio import open_atomic

    head = f"{'config':<16}{'policy':<14}" + "".join(f"{lab:>17}" for _, lab, _, _ in METRICS)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['config']:<16}{r['policy']:<14}" + "".join(f"{fmt.format(r[k]):>17}" for k, _, fmt, _ in METRICS))
    print(f"per step: V viol rate, net-load var, controllable, price; others: means per episode over "
          f"{args.episodes} episodes. Total {seconds:.1f} s.")
    if len({round(r["price"], 6) for r in rows}) > 1:
        print("warning: the configurations did not see the same prices (different days drawn?)")
    with open_atomic(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "compare.png", f"{scenario} ({args.split}), {args.episodes} episodes, policy {args.policy}")
    print(f"wrote {out / 'compare.csv'}, {out / 'compare.png'}")


def compare(args) -> list[dict]:
    """Every configuration rolled out as `args` say (parsed by `build_parser`): one row each."""
    import jax

    from pgjax.commands.common import batch_mesh

    parser = build_parser()  # usage errors found while running
    names = checked_names(args, parser)
    try:
        mesh = batch_mesh(args.devices, args.episodes, "--episodes")
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    scenario, base_kwargs, mappo = trained_policy(args.checkpoint)
    scenario = scenario or args.scenario
    key = jax.random.PRNGKey(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"pgjax compare: {scenario} ({args.split} split), {args.episodes} episodes per configuration, "
          f"seed {args.seed}, policy {args.policy}" + (f", checkpoint {args.checkpoint}" if mappo else ""))
    jobs = build_jobs(names, scenario, base_kwargs, mappo, args)
    if not jobs:
        raise SystemExit("pgjax compare: no configuration could be built")
    print(f"built {len(jobs)} configurations in {time.perf_counter() - t0:.1f} s; compiling and rolling out "
          f"({args.jobs} at a time)")
    with watchdog.stage(f"compiling and rolling out {len(jobs)} configurations (each finished one is progress)"), \
            ThreadPoolExecutor(max_workers=args.jobs) as pool:  # XLA compiles outside the GIL
        rows = list(pool.map(lambda job: roll_out(job, args.episodes, key, mesh), jobs))
    report(rows, args, scenario, out, time.perf_counter() - t0)
    return rows


def run(args) -> int:
    """`compare(args)`; the exit status."""
    compare(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax compare` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

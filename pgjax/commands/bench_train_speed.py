"""Training speed against the environment's own speed, per preset: `pgjax bench train`.

    pgjax bench train                                   # every preset of pgjax.baselines.config.PRESETS
    pgjax bench train --presets laptop frequency_68bus --repeats 5 --updates 4
    pgjax bench train --presets laptop num_envs=256 num_minibatches=8   # a candidate batch / minibatching
    pgjax bench train --clock cpu                       # CPU seconds: steadier on a shared machine

For each preset (its `MAPPOConfig`, with the given overrides, the env in `--dtype`), in one
process and on the same cores:
- training: MAPPO's compiled chunk of `--updates` updates (rollout with the policy, GAE,
  `update_epochs` x `num_minibatches` gradient steps; the program `pgjax train` runs) on the
  preset's `num_seeds` x `num_envs` environments; its compile time is printed (the
  training program's, the init excluded);
- env only: `pgjax bench env`'s scanned step (`jax.lax.scan` of `num_steps` steps of
  `jit(vmap(env.step))`, fixed random actions, no policy) at the same batch
  (`num_seeds x num_envs` environments) and dtype.
The two are timed alternately `--repeats` times, so machine load hits both alike; the table
gives the medians in env steps per second (every environment and seed counts) and the
median of the per-repeat ratios, training / env only (1.0: training at the environment's
speed). Results go to `--out` as JSON (`bench_train_speed.json`, written atomically).
`pgjax bench train --scaling ...` is the device / process comparison (`pgjax.commands.bench_train`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pgjax import watchdog

from pgjax.runio import write_json

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def preset_config(name: str, dtype: str, overrides: list[str]):
    """The `MAPPOConfig` of preset `name` with `key=value` overrides and the env dtype (toy envs: none)."""
    import yaml

    from pgjax.baselines.config import PRESETS, MAPPOConfig
    from pgjax.baselines.toy_env import TOY_ENVS

    d = dict(PRESETS[name])
    for item in overrides:
        key, _, value = item.partition("=")
        d[key] = yaml.safe_load(value)
    if str(d["env"]) not in TOY_ENVS:
        d["env_kwargs"] = {**dict(d.get("env_kwargs") or {}), "dtype": dtype}
    return MAPPOConfig.from_dict(d)


def env_only_program(train, batch: int, steps: int):
    """`run(state) -> state`: `steps` scanned `vmap(env.step)` of `batch` envs, fixed random actions
    (the env's own step, as `pgjax bench env` times it), and its initial state."""
    import jax

    env, params = train.env.env, train.env.params
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.PRNGKey(1), batch), params)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (batch, train.env.num_agents, train.env.act_dim),
                                 minval=-1, maxval=1)

    @jax.jit
    def run(state, key):
        def body(state, k):
            return vstep(jax.random.split(k, batch), state, actions, params)[1], None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    return run, state


def measure(name: str, cfg, updates: int, repeats: int, clock) -> dict:
    """Training and env-only env steps/s of one preset (see the module docstring)."""
    import jax

    from pgjax.baselines.mappo import make_train

    train = make_train(cfg)
    state = jax.block_until_ready(train.seed_init(jax.random.PRNGKey(cfg.seed)))
    t0 = time.perf_counter()
    train.compile_chunk(state, updates)
    compile_s = time.perf_counter() - t0
    batch = cfg.num_envs * cfg.num_seeds
    steps = updates * cfg.num_steps
    env_run, env_state = env_only_program(train, batch, steps)
    key = jax.random.PRNGKey(3)
    jax.block_until_ready(env_run(env_state, key))  # compile
    jax.block_until_ready(train.seed_chunk(state, updates))  # first run (allocation, caches)
    train_rates, env_rates = [], []
    for _ in range(repeats):
        t = clock()
        env_state = jax.block_until_ready(env_run(env_state, key))
        env_rates.append(batch * steps / (clock() - t))
        t = clock()
        state = jax.block_until_ready(train.seed_chunk(state, updates)[0])
        train_rates.append(batch * steps / (clock() - t))
    ratios = np.asarray(train_rates) / np.asarray(env_rates)
    return {"preset": name, "env": cfg.env, "dtype": cfg.env_kwargs.get("dtype", "float32"),
            "num_seeds": cfg.num_seeds, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
            "update_epochs": cfg.update_epochs, "num_minibatches": cfg.num_minibatches, "batch_envs": batch,
            "compile_s": round(compile_s, 2), "train_env_steps_per_s": float(np.median(train_rates)),
            "env_only_steps_per_s": float(np.median(env_rates)), "ratio": float(np.median(ratios)),
            "train_rates": [round(r, 1) for r in train_rates], "env_rates": [round(r, 1) for r in env_rates]}


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax bench train` (training speed) parser (no side effects)."""
    from pgjax.baselines.config import PRESETS

    ap = argparse.ArgumentParser(prog="pgjax bench train", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=list(PRESETS), help="presets to time")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="environment dtype")
    ap.add_argument("--updates", type=int, default=4, help="updates per timed training chunk")
    ap.add_argument("--repeats", type=int, default=5, help="alternating timings of each program (median)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: seconds waited; cpu: this process's CPU seconds, all threads")
    ap.add_argument("--out", default="runs/bench_train", help="folder of bench_train_speed.json")
    ap.add_argument("overrides", nargs="*", help="MAPPOConfig overrides key=value, for every preset")
    return ap


def run(args) -> int:
    """Time the presets as `args` say (parsed by `build_parser`); the exit status."""
    ap = build_parser()  # usage errors found while running
    if args.updates < 1 or args.repeats < 1:
        ap.error(f"--updates and --repeats must be >= 1, got {args.updates} and {args.repeats}")
    configs = {}
    for name in args.presets:
        try:
            configs[name] = preset_config(name, args.dtype, args.overrides)
        except ValueError as e:
            ap.error(f"preset {name}: {e}")
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); clock {args.clock}; "
          f"{args.updates} updates per timed chunk, {args.repeats} alternating repeats, medians")
    header = (f"{'preset':<17}{'env':<17}{'envs':>6}{'steps':>6}{'ep x mb':>8}{'compile s':>10}"
              f"{'train steps/s':>15}{'env-only steps/s':>18}{'ratio':>7}")
    rows = []
    for name, cfg in configs.items():
        print(f"{name}: compiling and timing ...", flush=True)
        with watchdog.stage(f"compiling and timing preset {name}"):
            rows.append(measure(name, cfg, args.updates, args.repeats, CLOCKS[args.clock]))
    print(header)
    for r in rows:
        epochs = f"{r['update_epochs']}x{r['num_minibatches']}"
        print(f"{r['preset']:<17}{r['env']:<17}{r['batch_envs']:>6}{r['num_steps']:>6}{epochs:>8}{r['compile_s']:>10.1f}"
              f"{r['train_env_steps_per_s']:>15,.0f}{r['env_only_steps_per_s']:>18,.0f}{r['ratio']:>7.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench_train_speed.json", {"clock": args.clock, "updates": args.updates,
                                                "repeats": args.repeats, "overrides": args.overrides, "rows": rows})
    print(f"wrote {out / 'bench_train_speed.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax bench train` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))

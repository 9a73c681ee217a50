"""`pgjax train`: MAPPO on a pgjax scenario, with progress, checkpoints and learning curves.

    pgjax train                                        # laptop preset on multi_microgrid -> runs/multi_microgrid
    pgjax train --scenario voltage_control_33bw --seeds 3 --out runs/vc
    pgjax train --preset gpu --out runs/mm_gpu         # large batches for an accelerator
    pgjax train --preset frequency_68bus --seeds 3     # the 68-bus frequency task (pgjax.frequency)
    pgjax train --config my.yaml num_envs=32 lr_actor=1e-3
    pgjax train --scenario ieee123_der param_sharing=type     # one actor / critic per agent type
    pgjax train --out runs/mm --resume total_timesteps=800000   # continue a run (Ctrl-C saves)
    pgjax train --out runs/mm --force                  # start over in a folder that holds a run
    pgjax train --dtype float64                        # the env in float64 (default: float32)
    pgjax train --devices all num_envs=64              # environments split over every local device
    pgjax train --distributed --coordinator HOST:PORT --num-processes 2 --process-id 0   # one per host

Scaling out: `--devices N|all` splits the environment batch over N local devices (networks
replicated, the same arithmetic as one device up to reduction order; `num_envs` a multiple
of N). `--distributed` joins several processes into one program (`pgjax.distributed`:
coordinator, process count and id from the flags, else `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, else JAX's cluster detection): the batch splits over
every process's devices, every process holds the same parameters after each update, and
process 0 alone writes the run folder (a folder every process can read, for `--resume`).

Config precedence: preset < --config FILE < --scenario / --seeds < key=value overrides. On
`--resume` the run folder's `config.yaml` is the base instead (only `total_timesteps` may
change). The environment runs in float32 unless `--dtype float64` (or an `env_kwargs`
`dtype` from the config file or overrides) says otherwise; the dtype is stored as
`env_kwargs: {dtype: ...}` in the run's `config.yaml`, so `--resume` and `pgjax eval` use
the dtype the run was trained with (toy envs have no dtype and get none). The float32 env
matches float64 to 1e-4 p.u. over whole episodes (tests/test_float32.py) and steps several
times faster; verification (`pgjax verify`) stays float64. Training runs `pgjax.baselines.mappo.run` in jitted chunks; the chunk programs are
compiled ahead of time so the compile time is printed apart from the training speed
(env steps/s count every environment of the batch and every seed). Writes into the run
folder: `config.yaml`, `metrics.jsonl` (one JSON line per update and seed, null where a
value is NaN, e.g. the return of an update in which no episode ended), `checkpoint.msgpack`
(after every chunk, once its metrics rows are written; it records how many rows it
covers), `curves.png` (return and cost per step vs env steps, one line per seed) and
`train_summary.json` (compile time, wall time, steps/s of this invocation); every file but
the appended metrics is written atomically (`pgjax.runio`). A folder that holds a run is
refused without `--resume` (continue it) or `--force` (replace it). `--resume` after a
crash drops the metrics rows written after the last checkpoint (and a cut-off last line)
and says so; a damaged checkpoint or config is refused with an error naming the file.
Set `JAX_COMPILATION_CACHE_DIR` to reuse compiled programs across invocations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from pgjax import watchdog
from pgjax.baselines import config as config_presets

CHUNK_UPDATES = {"laptop": 10, "gpu": 10, "frequency_68bus": 10}  # updates per compiled chunk
PRESETS = config_presets.PRESETS  # laptop, gpu, frequency_68bus (pgjax.baselines.config)
DTYPES = ("float32", "float64")
DEFAULT_DTYPE = "float32"  # the training path; pass --dtype float64 for the scenario's exact dtype


def build_config(args, parser):
    """The `MAPPOConfig` from preset, file, flags and overrides (see the module docstring)."""
    from pgjax.baselines.config import MAPPOConfig
    from pgjax.commands.common import parse_overrides

    base = base_config(args, parser)
    changes = {}
    if args.scenario is not None:
        changes["env"] = args.scenario
    if args.seeds is not None:
        changes["num_seeds"] = args.seeds
    try:  # numeric strings ("1e-3"): MAPPOConfig parses them
        changes.update(parse_overrides(args.overrides, "override {item!r} is not key=value"))
    except ValueError as e:
        parser.error(str(e))
    merged = {**base, **changes}
    if args.resume and set(changes) - {"total_timesteps"}:
        parser.error(f"--resume: only total_timesteps may change, got {sorted(set(changes) - {'total_timesteps'})}")
    merged = with_dtype(merged, args.dtype, resume=args.resume, parser=parser)
    try:
        return MAPPOConfig.from_dict(merged)
    except ValueError as e:
        parser.error(str(e))


def base_config(args, parser) -> dict:
    """The keys under the flags: a resumed run's `config.yaml`, else the preset updated by
    `--config FILE`. A file that is not YAML or holds no mapping is a usage error naming it."""
    from pgjax.baselines.mappo import CONFIG, read_run_config
    from pgjax.commands.common import read_yaml_mapping
    from pgjax.errors import RunFolderError

    out = Path(args.out)
    if args.resume and (out / CONFIG).exists():
        if args.config:
            print(f"--resume: using {out / CONFIG}, ignoring --config {args.config}")
        try:
            read_yaml_mapping(out / CONFIG, "--resume:")  # not YAML, or not a mapping: said plainly
            return read_run_config(out / CONFIG).to_dict()
        except (ValueError, RunFolderError) as e:
            parser.error(str(e))
    if args.resume:
        parser.error(f"--resume: {out / CONFIG} not found")
    base = dict(PRESETS[args.preset])
    if args.config:
        try:
            base.update(read_yaml_mapping(args.config, "--config"))
        except ValueError as e:
            parser.error(str(e))
    return base


def with_dtype(merged: dict, dtype: str | None, resume: bool, parser) -> dict:
    """`merged` with the env dtype in `env_kwargs`: `dtype` (the --dtype flag) if given, else the
    one already there (config file, overrides, a resumed run's config.yaml), else float32.
    Toy envs (`pgjax.baselines.toy_env`) take no dtype; a resumed run keeps its own."""
    from pgjax.baselines.toy_env import TOY_ENVS

    kwargs = dict(merged.get("env_kwargs") or {})
    if resume:
        if dtype is not None and dtype != kwargs.get("dtype"):
            parser.error(f"--resume: the run was trained with dtype {kwargs.get('dtype', 'of its scenario')}, "
                         f"got --dtype {dtype}")
        return merged
    if str(merged.get("env", "")) in TOY_ENVS:
        if dtype is not None:
            parser.error(f"--dtype: the toy env {merged['env']!r} has no dtype")
        return merged
    if dtype is not None:
        kwargs["dtype"] = dtype
    kwargs.setdefault("dtype", DEFAULT_DTYPE)
    return {**merged, "env_kwargs": kwargs}


def plot_curves(metrics_path, png_path) -> None:
    """`curves.png`: episode return and cost per step vs env steps, one line per seed."""
    from matplotlib.ticker import EngFormatter

    from pgjax.commands.common import pyplot, save_figure

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        return
    seeds = sorted({r["seed"] for r in rows})
    panels = [("episode_return", "episode return (mean over agents)"), ("info/cost", "cost per step ($, all agents)"),
              ("info/safety", "safety violation per step")]
    panels = [(k, label) for k, label in panels if k in rows[0]]
    fig, axes = pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for s in seeds:
            pts = [(r["env_steps"], r[key]) for r in rows
                   if r["seed"] == s and r.get(key) is not None and math.isfinite(r[key])]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=f"seed {s}", lw=1.2)
        ax.set_xlabel("env steps per seed")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, png_path)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax train` parser (no side effects)."""
    from pgjax.commands.common import add_devices_argument

    parser = argparse.ArgumentParser(prog="pgjax train", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scenario", help="scenario name or YAML path (sets `env`; default: the preset's)")
    parser.add_argument("--config", help="YAML file of MAPPOConfig keys (on top of the preset)")
    parser.add_argument("--seeds", type=int, help="independent runs trained at once (num_seeds)")
    parser.add_argument("--out", help="run folder (default: runs/<scenario>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--force", action="store_true", help="replace the run in --out (its run files are deleted)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="laptop", help="base config (default: laptop)")
    parser.add_argument("--chunk", type=int, help="updates per jitted chunk, progress line and checkpoint")
    parser.add_argument("--dtype", choices=DTYPES,
                        help=f"environment float dtype (default: {DEFAULT_DTYPE}; a resumed run keeps its own)")
    add_devices_argument(parser, "local devices to split the environments over: a count or 'all' (default 1; on CPU "
                                 "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices)")
    parser.add_argument("--distributed", action="store_true",
                        help="one program over several processes / hosts (jax.distributed; see the docstring)")
    parser.add_argument("--coordinator", help="with --distributed: HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, help="with --distributed: how many processes take part")
    parser.add_argument("--process-id", type=int, help="with --distributed: this process's id, 0..N-1")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (YAML values)")
    return parser


def prepare(args, parser):
    """Check the flags, join the distributed program (`--distributed`) and build the config:
    `(cfg, chunk, writer)`. Usage errors go through `parser`; `args.out` gets its default."""
    from pgjax import distributed
    from pgjax.baselines.mappo import existing_run_files

    if args.out is None:
        if args.resume:
            parser.error("--resume needs --out")
        scenario = args.scenario or PRESETS[args.preset]["env"]
        args.out = str(Path("runs") / Path(scenario).stem)
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other (continue the run, or replace it)")
    if args.distributed:
        try:
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        except (ValueError, RuntimeError) as e:
            parser.error(f"--distributed: {e}")
    elif any(v is not None for v in (args.coordinator, args.num_processes, args.process_id)):
        parser.error("--coordinator / --num-processes / --process-id need --distributed")
    writer = distributed.is_writer()
    found = [] if args.resume or args.force or not writer else existing_run_files(args.out)
    if found:
        parser.error(f"{args.out}: holds a run ({', '.join(found)}); --resume continues it, --force replaces it")
    cfg = build_config(args, parser)
    chunk = args.chunk or CHUNK_UPDATES[args.preset]
    if chunk < 1:
        parser.error("--chunk must be >= 1")
    return cfg, chunk, writer


def compile_ahead(train, cfg, out: Path, resume: bool, chunk: int, mesh) -> list[int]:
    """Compile the init and the chunk programs (full chunks and the remainder) before training,
    so that the compile time is apart from the training speed; returns the chunk sizes."""
    import jax

    from pgjax import distributed
    from pgjax.baselines.mappo import CHECKPOINT, read_checkpoint, shardings

    with watchdog.stage("initializing the training state"):
        state = train.seed_init(jax.random.PRNGKey(cfg.seed))
        jax.block_until_ready(state)
    done = 0
    if resume and (out / CHECKPOINT).exists():
        state, done, _ = read_checkpoint(out / CHECKPOINT, state)
    left = max(cfg.num_updates - done, 0)
    sizes = sorted({n for n in (min(chunk, left), left % chunk) if n > 0})
    if mesh is not None:
        state = distributed.global_arrays(state, shardings(state, mesh))
    for n in sizes:
        with watchdog.stage(f"compiling the training program (chunk of {n} updates)"):
            train.compile_chunk(state, n, mesh)  # `run` uses it as is
    return sizes


def progress_printer(cfg, t_start: float, timing: dict):
    """The `on_chunk` callback of `mappo.run`: a progress line per chunk; adds the chunk's
    seconds, env steps and rate to `timing` (`last`, `train_s`, `steps`, `chunk_rates`)."""
    import numpy as np

    def on_progress(step: int, metrics: dict) -> None:
        watchdog.beat()
        now = time.perf_counter()
        n_new = np.asarray(metrics["update_step"]).shape[-1]
        env_steps = n_new * cfg.batch_size * cfg.num_seeds
        seconds = now - timing["last"]
        timing["last"] = now
        timing["train_s"] += seconds
        timing["steps"] += env_steps
        timing["chunk_rates"].append(round(env_steps / seconds, 1))
        rets = np.asarray(metrics["episode_return"], float)
        ret = float(np.nanmean(rets)) if np.isfinite(rets).any() else float("nan")
        cost = float(np.mean(metrics["info/cost"])) if "info/cost" in metrics else float("nan")
        elapsed = now - t_start
        print(f"[{step:>5}/{cfg.num_updates}] {100 * step / cfg.num_updates:5.1f}%  "
              f"env steps {step * cfg.batch_size:>11,}/seed  {env_steps / seconds:>9,.0f} steps/s  "
              f"elapsed {int(elapsed // 60)}:{int(elapsed % 60):02d}  return {ret:8.3f}  cost/step {cost:8.2f}",
              flush=True)

    return on_progress


def log_line(line: str) -> None:
    """`mappo.run`'s log: its own per-update progress line is left to `progress_printer`."""
    if not line.startswith("update "):
        print(line, flush=True)


def finish(cfg, out: Path, final: int, mesh, seconds: dict, timing: dict, argv) -> None:
    """`curves.png`, `train_summary.json` and the closing line (process 0 only)."""
    import jax

    from pgjax.baselines.mappo import METRICS
    from pgjax.runio import write_json

    rate = timing["steps"] / timing["train_s"] if timing["train_s"] > 0 else float("nan")
    plot_curves(out / METRICS, out / "curves.png")
    devices = mesh.devices.ravel() if mesh else jax.devices()[:1]
    summary = {"env": cfg.env, "dtype": cfg.env_kwargs.get("dtype"), "num_seeds": cfg.num_seeds,
               "num_envs": cfg.num_envs, "updates_done": final, "env_steps_per_seed": final * cfg.batch_size,
               "compile_s": round(seconds["compile"], 2), "train_s": round(timing["train_s"], 2),
               "wall_s": round(seconds["wall"], 2), "env_steps_per_s": round(rate, 1),
               "chunk_env_steps_per_s": timing["chunk_rates"], "devices": [str(d) for d in devices],
               "processes": jax.process_count(), "argv": list(argv)}
    write_json(out / "train_summary.json", summary)
    print(f"done: {final}/{cfg.num_updates} updates in {seconds['wall']:.1f} s wall ({seconds['compile']:.1f} s "
          f"compile, {timing['train_s']:.1f} s training at {rate:,.0f} env steps/s); run folder {out} "
          f"(curves.png, metrics.jsonl, checkpoint.msgpack)")


def run(args) -> int:
    """Train as `args` say (parsed by `build_parser`); the exit status."""
    from pgjax.commands.common import error

    parser = build_parser()  # usage errors found while running
    cfg, chunk, writer = prepare(args, parser)

    import jax
    import numpy as np

    from pgjax.baselines.mappo import TrainingDiverged, make_train
    from pgjax.baselines.mappo import run as train_run
    from pgjax.commands.common import batch_mesh
    from pgjax.distributed import parse_devices
    from pgjax.errors import RunFolderError

    out = Path(args.out)
    t_start = time.perf_counter()
    dtype = cfg.env_kwargs.get("dtype", "the scenario's dtype")
    print(f"pgjax train: {cfg.env} ({dtype}), {cfg.num_seeds} seed(s) x {cfg.num_envs} envs x {cfg.num_steps} steps per "
          f"update, {cfg.num_updates} updates ({cfg.total_timesteps:,} env steps per seed) -> {out}")
    try:
        devices = parse_devices(args.devices)
        mesh = batch_mesh(args.devices, cfg.num_envs, "num_envs")
    except ValueError as e:
        parser.error(str(e))
    print(f"devices: {jax.devices()}" + (f"; environments split over {mesh.size}" if mesh is not None else ""))
    train = make_train(cfg)
    t0 = time.perf_counter()
    try:
        sizes = compile_ahead(train, cfg, out, args.resume, chunk, mesh)
    except KeyboardInterrupt:
        print("interrupted while compiling: nothing trained, nothing saved")
        return 130
    except RunFolderError as e:
        return error("pgjax train", e)
    seconds = {"compile": time.perf_counter() - t0}
    print(f"compiled in {seconds['compile']:.1f} s (init and chunk(s) of {sizes} updates)", flush=True)
    timing = {"last": time.perf_counter(), "train_s": 0.0, "steps": 0, "chunk_rates": []}
    try:
        with watchdog.stage(f"training (chunks of {chunk} updates; each finished chunk is progress)"):
            state = train_run(cfg, out, resume=args.resume, chunk_updates=chunk, log=log_line, train=train,
                              force=args.force, on_chunk=progress_printer(cfg, t_start, timing), devices=devices)
    except RunFolderError as e:
        return error("pgjax train", e)
    except TrainingDiverged as e:
        return error("pgjax train", e, status=1)
    seconds["wall"] = time.perf_counter() - t_start
    final = int(np.asarray(state.update_step).reshape(-1)[0])
    if not writer:
        print(f"process {jax.process_index()}: done, {final}/{cfg.num_updates} updates (process 0 writes {out})")
        return 0
    finish(cfg, out, final, mesh, seconds, timing, getattr(args, "argv", sys.argv[1:]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax train` with `argv` (default: the process's arguments); the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in train_summary.json
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput over devices and processes, and memory per environment: `pgjax bench train --scaling`.

    pgjax bench train --scaling [--scenario multi_microgrid] [--devices 1 2 4] [--processes 2] [--updates 12]
                      [--chunk 2] [--out runs/bench_train] [key=value ...]
    pgjax bench train --scaling --memory-only --scenario NAME

(`pgjax bench train` without `--scaling`: training speed against the env's speed, per preset,
`pgjax.commands.bench_train_speed`.)

Runs `pgjax train` (the laptop preset, `--updates` updates in chunks of `--chunk`, the given
MAPPOConfig overrides) once per device count, each in its own process with
`XLA_FLAGS=--xla_force_host_platform_device_count=<max>` (JAX fixes its device count at
start-up; on a machine with accelerators the real devices are used and the flag is left
out), then with `--processes N` as N processes joined by `pgjax train --distributed` on
127.0.0.1 (one device each). Every run trains the same configuration from the same seed, so
their learning curves (`curves_overlay.png`) must lie on top of each other (the runs differ
only in the order of floating-point reductions); the table gives env steps/s of training
(compile excluded: the median over the chunks after the first of `train_summary.json`'s
per-chunk rates, which a shared machine disturbs less than a mean), the ratio to one
device and the largest difference of the per-update mean reward from the one-device run.

Memory per environment: the bytes of one environment's state (`env.reset`), of its
observations and world state, and of its share of one training batch (the rollout's
`Transition`s: `num_steps` steps of observations, world state, actions, log-probabilities,
values, rewards in float32 and done flags), counted from the arrays' shapes (`jax.eval_shape`
of the env, MAPPO's `Transition` of those shapes), so `num_envs x` these is what a batch needs on a device, before XLA's
temporaries. On a CPU the forced devices share the same cores: more devices there show the
sharding works and costs little, not a speed-up; on several accelerators (or hosts) each
device steps its own slice.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pgjax.runio import write_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(scenario: str, out: Path, updates: int, chunk: int, overrides: list[str],
                flags: list[str]) -> list[str]:
    """`pgjax train` of `updates` updates in chunks of `chunk` (laptop preset + `overrides`), with `flags`."""
    import yaml

    from pgjax.baselines.config import PRESETS

    cfg = dict(PRESETS["laptop"])
    for item in overrides:
        key, _, value = item.partition("=")
        cfg[key] = yaml.safe_load(value)
    batch = int(cfg["num_envs"]) * int(cfg["num_steps"])
    return [sys.executable, "-m", "pgjax.cli", "train", *flags, "--scenario", scenario, "--out", str(out), "--force",
            "--chunk", str(chunk), *overrides, f"total_timesteps={batch * updates}"]


def _run(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    f = open(log, "w")  # noqa: SIM115 (closed by the caller's wait)
    return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait(procs, logs, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p, log in zip(procs, logs):
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"pgjax bench train: a run took longer than {timeout_s:.0f} s (log {log})") from None
        if p.returncode != 0:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"pgjax bench train: a run failed (exit {p.returncode}, log {log}):\n{tail}")


def _metrics(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["reward"] for r in rows]


def memory_per_env(scenario: str, overrides: list[str]) -> dict:
    """Bytes per environment of its state, observation + world state, and its share of a training batch."""
    import jax

    import pgjax
    from pgjax.baselines.config import PRESETS

    num_steps = PRESETS["laptop"]["num_steps"]
    for o in overrides:
        if o.startswith("num_steps="):
            num_steps = int(o.split("=", 1)[1])
    env = pgjax.make(scenario, dtype="float32")
    obs, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), env.default_params)
    ws = jax.eval_shape(env.world_state, state, env.default_params)
    nbytes = lambda tree: int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize  # noqa: E731
                                  for x in jax.tree.leaves(tree)))
    from pgjax.baselines.mappo import Transition

    n, f32 = env.num_agents, (lambda *shape: jax.ShapeDtypeStruct(shape, np.float32))  # noqa: E731
    step = Transition(obs=f32(n, env.obs_dim), ws=f32(ws.shape[0]), action=f32(n, env.act_dim), log_prob=f32(n),
                      value=f32(n), reward=f32(n), done=jax.ShapeDtypeStruct((), np.bool_), cost=f32(0),
                      cost_value=f32(0))  # no budgeted costs (algorithm: mappo)
    per_step = nbytes(step)
    return {"state_bytes": nbytes(state), "obs_and_world_state_bytes": nbytes((obs, ws)),
            "batch_bytes": per_step * num_steps, "num_steps": num_steps}


def _print_memory(scenario: str, mem: dict) -> None:
    print(f"\nmemory per environment ({scenario}, float32): state {mem['state_bytes']:,} B, observations + "
          f"world state {mem['obs_and_world_state_bytes']:,} B, training batch {mem['batch_bytes']:,} B "
          f"({mem['num_steps']} steps)")


def plot_overlay(curves: dict, png: Path) -> None:
    """The per-update mean reward of every configuration, overlaid (one line style each)."""
    from pgjax.commands.common import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    for (label, ys), style in zip(curves.items(), ("-", "--", ":", "-.", (0, (1, 3)))):
        ax.plot(np.arange(1, len(ys) + 1), ys, linestyle=style, lw=2, label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("mean reward per agent step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, png)


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax bench train --scaling` parser (no side effects; without `--scaling` the command
    is `pgjax.commands.bench_train_speed`)."""
    ap = argparse.ArgumentParser(prog="pgjax bench train --scaling", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scaling", action="store_true", help="this comparison (without it: the training speed bench)")
    ap.add_argument("--scenario", default="multi_microgrid")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4], help="device counts, one run each")
    ap.add_argument("--processes", type=int, default=2, help="processes of the distributed run (0: none)")
    ap.add_argument("--updates", type=int, default=12, help="updates per run")
    ap.add_argument("--chunk", type=int, default=2, help="updates per compiled chunk (one rate each)")
    ap.add_argument("--out", default="runs/bench_train", help="folder of the runs, logs and the overlay plot")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--memory-only", action="store_true", help="print the memory per environment and stop")
    ap.add_argument("overrides", nargs="*", help="MAPPOConfig overrides key=value for every run")
    return ap


def run(args) -> int:
    """The scaling comparison as `args` say (parsed by `build_parser`); the exit status."""
    if args.memory_only:
        _print_memory(args.scenario, memory_per_env(args.scenario, args.overrides))
        return 0
    if min(args.devices) < 1 or args.updates < 1 or args.chunk < 1 or args.processes < 0:
        build_parser().error("--devices, --updates, --chunk must be >= 1 and --processes >= 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = train_runs(args, out)
    table, curves = compare_runs(args, rows)
    plot_overlay(curves, out / "curves_overlay.png")
    write_json(out / "bench_train.json", {"scenario": args.scenario, "updates": args.updates, "chunk": args.chunk,
                                          "overrides": args.overrides, "runs": table})
    from pgjax.baselines.toy_env import TOY_ENVS

    if args.scenario in TOY_ENVS:
        print(f"\nmemory per environment: n/a ({args.scenario} is a toy env)")
        return 0
    _print_memory(args.scenario, memory_per_env(args.scenario, args.overrides))
    print(f"wrote {out / 'curves_overlay.png'}, {out / 'bench_train.json'}")
    return 0


def train_runs(args, out: Path) -> list[tuple]:
    """One `pgjax train` per device count, then the distributed run: `(label, run folder)` each."""
    base_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    has_accelerator = _has_accelerator()
    rows = []
    for n in args.devices:
        env = dict(base_env)
        if not has_accelerator:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(args.devices)}"
        run_dir, log = out / f"devices_{n}", out / f"devices_{n}.log"
        print(f"training on {n} device(s) -> {run_dir}", flush=True)
        argv_n = _train_argv(args.scenario, run_dir, args.updates, args.chunk, args.overrides, ["--devices", str(n)])
        _wait([_run(argv_n, env, log)], [log], args.timeout)
        rows.append((f"{n} device(s), 1 process", run_dir))
    if args.processes > 1:
        env = {**base_env, "JAX_PLATFORMS": base_env.get("JAX_PLATFORMS", "cpu")}
        coordinator = f"127.0.0.1:{_free_port()}"
        run_dir = out / f"processes_{args.processes}"
        print(f"training on {args.processes} processes ({coordinator}) -> {run_dir}", flush=True)
        logs = [out / f"processes_{args.processes}_{i}.log" for i in range(args.processes)]
        procs = [_run(_train_argv(args.scenario, run_dir, args.updates, args.chunk, args.overrides,
                                  ["--distributed", "--coordinator", coordinator, "--num-processes",
                                   str(args.processes), "--process-id", str(i)]), env, log)
                 for i, log in enumerate(logs)]
        _wait(procs, logs, args.timeout)
        rows.append((f"{args.processes} processes x 1 device", run_dir))
    return rows


def compare_runs(args, rows) -> tuple[list[dict], dict]:
    """The rate and reward curve of each run against the first, printed: `(table rows, curves)`."""
    base_rate = ref = None
    print(f"\n{args.scenario}: pgjax train, {args.updates} updates per run in chunks of {args.chunk} "
          f"(env steps/s: median over the chunks after the first; compile excluded)")
    print(f"{'configuration':<28}{'env steps/s':>14}{'x 1 device':>12}{'max |d reward|':>16}")
    table, curves = [], {}
    for label, run_dir in rows:
        summary = json.loads((run_dir / "train_summary.json").read_text())
        chunks = summary.get("chunk_env_steps_per_s") or [summary["env_steps_per_s"]]
        rate = float(np.median(chunks[1:] if len(chunks) > 1 else chunks))
        rewards = _metrics(run_dir)
        base_rate = rate if base_rate is None else base_rate
        ref = rewards if ref is None else ref
        diff = float(np.max(np.abs(np.asarray(rewards) - np.asarray(ref))))
        curves[label] = rewards
        table.append({"configuration": label, "env_steps_per_s": rate, "ratio": rate / base_rate, "max_reward_diff": diff,
                      "devices": summary.get("devices"), "processes": summary.get("processes", 1)})
        print(f"{label:<28}{rate:>14,.0f}{rate / base_rate:>12.2f}{diff:>16.2e}")
    return table, curves


def main(argv: list[str] | None = None) -> int:
    """`pgjax bench train`: with `--scaling` this comparison, else `pgjax.commands.bench_train_speed`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scaling" not in argv:
        from pgjax.commands import bench_train_speed

        return bench_train_speed.main(argv)
    return run(build_parser().parse_args(argv))


def _has_accelerator() -> bool:
    """Whether JAX finds a GPU / TPU here (asked in a child process: this one's device count stays unset)."""
    code = "import jax; print(jax.default_backend())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] != ["cpu"]

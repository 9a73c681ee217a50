"""`pgjax train` / `pgjax eval` end to end on multi_microgrid with a tiny config, plus the rule-based baseline.

One module-scoped run (2 envs x 8 steps, 2 updates in chunks of 1, then resumed to 3
updates) and one `pgjax eval` over 4 test days; a persistent compilation cache in a temp
folder lets the resumed run reuse the first run's compiled chunk. Ctrl-C: `pgjax train` on
the toy env in a subprocess, interrupted by SIGINT after its first chunks.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import jax
import pytest

from pgjax.cli import main

TINY = ["num_envs=2", "num_steps=8", "num_minibatches=2", "update_epochs=1", "actor_hidden=[16]",
        "critic_hidden=[16]", "lr_actor=1e-3"]


def cli(*argv):
    """`pgjax.cli.main(argv)` as the command line runs it: returns the exit code."""
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code or 0


def read_metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    out = tmp_path_factory.mktemp("run") / "mm"
    try:
        assert cli("train", "--scenario", "multi_microgrid", "--out", str(out), "--chunk", "1",
                   *TINY, "total_timesteps=32") == 0
        first = read_metrics(out / "metrics.jsonl")
        assert cli("train", "--out", str(out), "--resume", "--chunk", "1", "total_timesteps=48") == 0
        assert cli("eval", str(out), "--episodes", "4") == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", old[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    return out, first


def test_train_writes_the_run_folder(run_dir):
    out, first = run_dir
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.msgpack", "curves.png", "train_summary.json"):
        assert (out / name).is_file(), name
    assert [r["update_step"] for r in first] == [1.0, 2.0]
    steps = [r["env_steps"] for r in first]
    assert steps == sorted(steps) and steps[0] == 16 and steps[1] == 32  # 2 envs x 8 steps per update
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["env_steps_per_s"] > 0 and summary["compile_s"] > 0


def test_resume_continues_the_step_counter(run_dir):
    out, first = run_dir
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[:2] == first  # kept, not rewritten
    assert [r["update_step"] for r in rows] == [1.0, 2.0, 3.0]
    assert [r["env_steps"] for r in rows] == [16.0, 32.0, 48.0]


def test_eval_writes_every_controller_with_finite_cost_and_safety(run_dir):
    out, _ = run_dir
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == {"mappo", "random", "do_nothing", "rule_based", "oracle"}
    for name, m in results.items():
        assert math.isfinite(m["cost"]) and math.isfinite(m["safety"]), name
        assert m["episodes"] == 4
    assert (out / "eval.csv").read_text().count("\n") == 6  # header + 5 controllers
    assert (out / "eval_day.png").stat().st_size > 0


def test_rule_based_beats_random_and_do_nothing_on_test_cost(run_dir):
    """Same 4 test days (CAISO 2024) for all controllers: arbitrage and merit order pay."""
    out, _ = run_dir
    results = json.loads((out / "eval.json").read_text())
    assert results["rule_based"]["cost"] < 0.8 * results["random"]["cost"]
    assert results["rule_based"]["cost"] < 0.8 * results["do_nothing"]["cost"]


def test_bad_override_is_a_usage_error(tmp_path):
    assert cli("train", "--out", str(tmp_path / "x"), "no_such_key=1") == 2
    assert cli("train", "--out", str(tmp_path / "y"), "--resume") == 2  # nothing to resume


@pytest.mark.parametrize("text, found", [
    ("a: [\n", "not valid YAML at line 2"),          # a parse error
    ("- 1\n- 2\n", "found a list"),                  # YAML, but a list
    ("42\n", "found a number"),                       # YAML, but a scalar
    ("just words\n", "found a string"),
])
def test_config_file_that_is_not_a_mapping_is_a_usage_error(tmp_path, capsys, text, found):
    """`pgjax train --config FILE`: a file that is not YAML, or YAML that is not a mapping, is a
    usage error (exit 2) naming the file and what was found; nothing is trained."""
    path = tmp_path / "my.yaml"
    path.write_text(text)
    assert cli("train", "--config", str(path), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: " in err and found in err, err
    assert not (tmp_path / "run").exists()
    assert cli("train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")) == 2
    assert f"--config {tmp_path / 'missing.yaml'}: not found" in capsys.readouterr().err


@pytest.mark.parametrize("text, found", [("a: [\n", "not valid YAML"), ("- a\n", "found a list"),
                                         ("7\n", "found a number")])
def test_resume_with_a_broken_config_yaml_is_a_usage_error(tmp_path, capsys, text, found):
    """`pgjax train --resume` on a run folder whose config.yaml is not YAML or not a mapping."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    assert cli("train", "--out", str(out), "--resume") == 2
    err = capsys.readouterr().err
    assert f"--resume: {out / 'config.yaml'}: " in err and found in err, err


def test_train_parser_is_pure_and_run_takes_its_args():
    """`build_parser()` builds the parser alone; `main(argv)` is `run(build_parser().parse_args(argv))`."""
    from pgjax.commands import train

    args = train.build_parser().parse_args(["--scenario", "setpoint", "--seeds", "2", "num_envs=4"])
    assert (args.scenario, args.seeds, args.overrides, args.devices) == ("setpoint", 2, ["num_envs=4"], "1")


def test_the_env_trains_and_evaluates_in_float32_by_default(run_dir):
    """`pgjax train` defaults to the float32 env, records it in config.yaml; eval and resume use it."""
    import yaml

    out, _ = run_dir
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["env_kwargs"] == {"dtype": "float32"}
    assert json.loads((out / "train_summary.json").read_text())["dtype"] == "float32"
    assert json.loads((out / "eval_meta.json").read_text())["dtype"] == "float32"
    assert cli("train", "--out", str(out), "--resume", "--dtype", "float64", "total_timesteps=64") == 2


def test_dtype_flag_sets_env_kwargs():
    import argparse

    from pgjax.commands import train
    parser = argparse.ArgumentParser()

    def dtype(flag, resume=False, **cfg):
        merged = train.with_dtype({"env": "multi_microgrid", **cfg}, flag, resume, parser)
        return merged.get("env_kwargs", {}).get("dtype")

    assert dtype(None) == "float32" and dtype("float64") == "float64"
    assert dtype(None, env_kwargs={"dtype": "float64", "dt_h": 0.5}) == "float64"  # config file / override
    assert dtype("float32", env_kwargs={"dtype": "float64"}) == "float32"  # the flag wins
    assert dtype(None, resume=True) is None  # a run folder from before the flag: its scenario's dtype
    assert dtype(None, env="setpoint") is None  # toy envs take no dtype


TOY = ["--scenario", "setpoint", "num_envs=2", "num_steps=4", "num_minibatches=1", "update_epochs=1",
       "actor_hidden=[8]", "critic_hidden=[8]"]
TOY_BATCH = 8  # env steps per update: 2 envs x 4 steps


def test_ctrl_c_saves_a_complete_checkpoint_that_resume_continues(tmp_path, capsys):
    """SIGINT while `pgjax train` trains (after its first chunk): exit 0, a checkpoint of the
    last completed update that loads into the run's structure, each completed update in
    `metrics.jsonl` once, and `--resume` continues from that update."""
    from pgjax.baselines.mappo import MAPPOConfig, load_checkpoint, make_train

    out, log = tmp_path / "toy", tmp_path / "train.log"
    # `pgjax train ...` with Python's Ctrl-C handler, which Python leaves out when the parent ignores
    # SIGINT (as a shell does for its background jobs, and so for a test run started in one)
    argv = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('pgjax.cli', run_name='__main__', alter_sys=True)",
            "train", "--out", str(out), "--chunk", "1", *TOY, f"total_timesteps={TOY_BATCH * 10**7}"]  # runs on
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not ((out / "checkpoint.msgpack").exists() and len(read_metrics(out / "metrics.jsonl")) >= 2):
                assert proc.poll() is None, f"pgjax train ended before the interrupt:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no chunk completed in 300 s:\n{log.read_text()}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert rc == 0, output
    assert "interrupted: checkpoint of update" in output and "Traceback" not in output, output

    cfg = MAPPOConfig.from_yaml(out / "config.yaml")
    state, step = load_checkpoint(out / "checkpoint.msgpack", make_train(cfg).seed_init(jax.random.PRNGKey(cfg.seed)))
    assert f"interrupted: checkpoint of update {step} saved" in output
    assert 2 <= step < cfg.num_updates and int(state.update_step[0]) == step
    assert int(state.actor.step[0]) == step  # one minibatch step per update: the optimizer state is the saved one
    logged = [int(r["update_step"]) for r in read_metrics(out / "metrics.jsonl")]
    # each completed update once; `run` counts an update before appending its row, so an interrupt
    # landing between the two (microseconds of each chunk) saves one update more than it logged
    assert logged == list(range(1, step + 1)) or logged == list(range(1, step)), (step, logged[-3:])

    capsys.readouterr()
    assert cli("train", "--out", str(out), "--resume", "--chunk", "1", f"total_timesteps={TOY_BATCH * (step + 2)}") == 0
    assert f"resumed {out} at update {step}" in capsys.readouterr().out
    rows = read_metrics(out / "metrics.jsonl")
    assert [int(r["update_step"]) for r in rows] == logged + [step + 1, step + 2]
    assert [r["env_steps"] for r in rows] == [TOY_BATCH * r["update_step"] for r in rows]

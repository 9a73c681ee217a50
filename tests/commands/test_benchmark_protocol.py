"""`pgjax benchmark`, `pgjax eval --split` and the evaluation splits (`pgjax.splits`).

A tiny benchmark on the toy env `setpoint` (3 seeds of 2,048 env steps, two splits, 8
episodes) is run once per module; the tests read its files: the confidence intervals equal
a bootstrap computed here on the same numbers, seeds are independent, a benchmark resumes
from what is on disk to the same table, a folder of another spec is refused. Every shipped
split is built and compared with its scenario's test split through the compiled env.
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
import yaml

from pgjax.commands import benchmark
from pgjax.splits import splits_for

SPEC = {"tasks": {"setpoint": {"total_timesteps": 2048, "config": {
    "num_envs": 8, "num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "actor_hidden": [16],
    "critic_hidden": [16]}}}, "algorithms": ["mappo"], "seeds": 3, "episodes": 8}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """`(spec file, benchmark folder)` of the tiny benchmark, run once."""
    root = tmp_path_factory.mktemp("bench")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert benchmark.main(["--spec", str(spec), "--out", str(root / "out")]) == 0
    return spec, root / "out"


def rows(out):
    return json.loads((out / "results.json").read_text())["rows"]


def test_confidence_intervals_equal_a_reference_bootstrap(bench):
    _, out = bench
    evals = json.loads((out / "setpoint" / "mappo" / "eval_benchmark_test.json").read_text())
    for r in rows(out):
        x = np.asarray(r["values"], np.float64)
        if r["kind"] == "learned" and r["split"] == "test" and r["metric"] == "return":
            want = [np.mean(s["return_per_episode"]) for s in evals["mappo"]["per_seed"]]
            np.testing.assert_allclose(x, want)  # the numbers bootstrapped are the per-seed evaluations
            assert r["n"] == 3 and r["ci_over"] == "seeds"
        if r["kind"] == "baseline":
            assert r["n"] == 8 and r["ci_over"] == "episodes"
        if not np.isfinite(x).all():
            continue
        rng = np.random.default_rng(0)
        means = np.array([rng.choice(x, x.size, replace=True).mean() for _ in range(10_000)])
        # the same generator draws, so the same resamples: equal up to float summation order
        ref = benchmark.bootstrap_ci(x)
        assert r["mean"] == pytest.approx(x.mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(ref[1:])
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        lo, hi = np.percentile(means, [2.5, 97.5])  # an independent reference (other draws): close
        spread = max(x.max() - x.min(), 1e-12)
        assert abs(r["ci_low"] - lo) < 0.2 * spread and abs(r["ci_high"] - hi) < 0.2 * spread


def test_reference_bootstrap_by_hand():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    idx = np.random.default_rng(0).integers(0, 4, (10_000, 4))
    lo, hi = np.percentile(x[idx].mean(1), [2.5, 97.5])
    assert benchmark.bootstrap_ci(x) == pytest.approx((3.75, lo, hi))
    assert benchmark.bootstrap_ci([5.0]) == (5.0, 5.0, 5.0)


def test_seeds_are_independent(bench):
    """Different seeds train different weights and score differently; seed k of a run of n
    seeds starts from the same state whatever n (`jax.random.split` with partitionable
    threefry), and trains to the same weights up to float rounding of the vmapped program."""
    from pgjax.baselines.config import MAPPOConfig
    from pgjax.baselines.mappo import make_train
    from pgjax.commands.eval import LoadedRun

    _, out = bench
    run = LoadedRun(out / "setpoint" / "mappo")
    w = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(run.seed_state(i).actor)]) for i in range(3)]
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
    learned = [r for r in rows(out) if r["kind"] == "learned" and r["metric"] == "return"]
    assert all(len(set(r["values"])) == 3 for r in learned)

    cfg = MAPPOConfig.from_dict({**SPEC["tasks"]["setpoint"]["config"], "env": "setpoint", "total_timesteps": 256})
    states = {}
    for n in (2, 3):
        train = make_train(cfg.replace(num_seeds=n))
        s0 = train.seed_init(jax.random.PRNGKey(0))
        states[n] = (s0, train.seed_chunk(s0, 2)[0])
    for i in range(2):
        for init_or_trained in (0, 1):
            a, b = (jax.tree.map(lambda x: np.asarray(x[i]), states[n][init_or_trained].actor) for n in (2, 3))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                if init_or_trained == 0:
                    np.testing.assert_array_equal(x, y)
                else:
                    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_resumes_to_the_same_table(bench, tmp_path):
    spec, out = bench
    again = tmp_path / "again"
    shutil.copytree(out, again)
    for name in ("results.json", "results.md", "results.csv", "setpoint.png"):
        (again / name).unlink()
    run_dir = again / "setpoint" / "mappo"
    for f in run_dir.glob("eval_benchmark_short_episodes*"):  # the last evaluation, as if cut off
        f.unlink()
    # one unit of work (the missing evaluation), then stop: status 3, no results yet
    assert benchmark.main(["--spec", str(spec), "--out", str(again), "--max-units", "0"]) == 3
    assert not (again / "results.json").exists()
    assert benchmark.main(["--spec", str(spec), "--out", str(again)]) == 0
    assert rows(again) == rows(out)
    assert (again / "results.md").read_text() == (out / "results.md").read_text()


def test_interrupted_training_resumes(bench, tmp_path):
    """A run cut off mid-training (its checkpoint before num_updates) is resumed, not restarted."""
    from pgjax.baselines.mappo import run

    spec, out = bench
    again = tmp_path / "cut"
    again.mkdir()
    shutil.copy(out / "spec.json", again / "spec.json")
    cfg = benchmark.parse_spec(SPEC).config("setpoint", "mappo")
    run(cfg, again / "setpoint" / "mappo", until_update=8, chunk_updates=8)
    assert benchmark.main(["--spec", str(spec), "--out", str(again), "--max-units", "1"]) == 3
    lines = (again / "setpoint" / "mappo" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == cfg.num_updates * cfg.num_seeds  # 8 updates kept, 8 more appended
    assert json.loads(lines[0]) == json.loads((out / "setpoint" / "mappo" / "metrics.jsonl").read_text()
                                              .splitlines()[0])


def test_refuses_another_spec_unless_forced(bench, tmp_path, capsys):
    spec, out = bench
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPEC, "episodes": 4}))
    again = tmp_path / "b"
    shutil.copytree(out, again)
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--spec", str(other), "--out", str(again), "--max-units", "0"])
    assert e.value.code == 2 and "another spec" in capsys.readouterr().err
    assert benchmark.main(["--spec", str(other), "--out", str(again), "--max-units", "0", "--force"]) == 3
    assert not (again / "setpoint").exists() and not (again / "results.json").exists()


@pytest.mark.parametrize("raw, words", [
    ({"tasks": {"setpoint": {}}, "seeds": 0}, ["seeds", "0"]),
    ({"tasks": {"setpoint": {}}, "splits": ["nope"]}, ["nope", "setpoint"]),
    ({"tasks": {"setpoint": {"preset": "huge"}}}, ["preset", "huge"]),
    ({"tasks": {"setpoint": {"config": {"num_envz": 3}}}}, ["num_envz"]),
    ({"tasks": {"nowhere": {}}}, ["nowhere"]),
    ({"tasks": ["setpoint"], "episods": 3}, ["episods"]),
])
def test_bad_specs_name_the_key(raw, words):
    with pytest.raises(ValueError) as e:
        benchmark.parse_spec(raw, "bench.yaml")
    assert all(w in str(e.value) for w in words), str(e.value)


# ----------------------------------------------------------------------------- splits

def _leaves(env) -> dict[str, np.ndarray]:
    """Named numeric leaves of what an env computes with: its params, its compiled scenario's
    scalars and arrays (pgjax scenarios), its plain attributes (env families)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(env, "default_params", None))[0]:
        out["params" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    if hasattr(env, "scenario"):
        for k, v in vars(env.scenario).items():
            if isinstance(v, (int, float, np.ndarray)) and not isinstance(v, bool):
                out[f"scenario.{k}"] = np.asarray(v)
        comm = getattr(env.scenario, "communication", None)
        for k, v in (vars(comm).items() if comm is not None and hasattr(comm, "__dict__") else ()):
            out[f"communication.{k}"] = np.asarray(v, dtype=object)
    for k in ("scada_delay", "episode_steps", "split"):  # env families: the key stream of `split`
        if hasattr(env, k):
            out[f"env.{k}"] = np.asarray(getattr(env, k))
    return out


def _differs(a, b) -> set[str]:
    la, lb = _leaves(a), _leaves(b)
    return {k for k in la.keys() | lb.keys() if k not in la or k not in lb or la[k].shape != lb[k].shape
            or not np.array_equal(la[k], lb[k])}


# what each split must change in the built env (by leaf name), and nothing named elsewhere
EXPECT = {
    "train": ("profiles", "starts", "hour0", "split"),  # the other year's data
    "load_growth": ("load_scale",),
    "tight_voltage": ("vm_min_pu", "vm_max_pu"),
    "degraded_comms": ("communication", "scada_delay", "obs_buf"),
    "larger_trips": ("topo_", "table", "n_branch_trips"),
    "weak_governors": ("inv_r_pu", "table"),
    "low_damping": ("load_damping_pu", "table"),
    "short_episodes": ("episode_steps",),
}


@pytest.mark.parametrize("scenario", ["setpoint", "frequency_68bus", "voltage_control_33bw", "multi_microgrid_p2p"])
def test_every_split_differs_from_test_in_what_it_names(scenario):
    from pgjax.baselines.config import MAPPOConfig
    from pgjax.commands.eval import test_env

    splits = splits_for(scenario)
    assert "test" in splits and not splits["test"].sets
    cfg = MAPPOConfig(env=scenario, env_kwargs={} if scenario == "setpoint" else {"dtype": "float32"})
    ref, _ = test_env(cfg)
    for name, s in splits.items():
        if name == "test":
            continue
        env, _ = test_env(cfg, s.sets)
        diff = _differs(ref, env)
        assert diff, f"{scenario}/{name}: the built env equals the test split's"
        assert any(any(word in d for word in EXPECT[name]) for d in diff), f"{scenario}/{name}: {sorted(diff)}"
        unrelated = {d for d in diff if not any(word in d for word in sum(EXPECT.values(), ()))}
        assert not unrelated, f"{scenario}/{name} changes more than it names: {sorted(unrelated)}"


def test_splits_file_errors_name_file_and_key(tmp_path):
    from pgjax.errors import InputError

    bad = tmp_path / "splits.yaml"
    t = "test: {describe: ref, set: {}}"
    for text, words in [(f"a: {{{t}, x: {{describe: x, set: {{}}}}}}", ["a.x.set", "empty"]),
                        ("a: {train: {describe: t, set: {split: train}}}", ["a", "'test'"]),
                        (f"a: {{{t}, Bad-Name: {{describe: b, set: {{k: 1}}}}}}", ["Bad-Name"]),
                        (f"a: {{inherit: b, {t}}}", ["a.inherit", "'b'"]),
                        (f"a: {{{t}, x: {{describe: '', set: {{k: 1}}}}}}", ["a.x.describe"])]:
        bad.write_text(text)
        with pytest.raises(InputError) as e:
            splits_for("a", bad)
        assert str(bad) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    with pytest.raises(InputError, match="nowhere.*scenarios with splits"):
        splits_for("nowhere")


def test_eval_split_writes_its_own_files(bench, tmp_path, capsys):
    from pgjax.commands import eval as ev

    _, out = bench
    run_dir = tmp_path / "run"
    shutil.copytree(out / "setpoint" / "mappo", run_dir)
    assert ev.main([str(run_dir), "--episodes", "4", "--no-plot"]) == 0
    before = (run_dir / "eval.json").read_bytes()
    assert ev.main([str(run_dir), "--split", "short_episodes", "--episodes", "4", "--no-plot"]) == 0
    assert ev.main([str(run_dir), "--set", "episode_steps=2", "--episodes", "4", "--no-plot"]) == 0
    assert (run_dir / "eval.json").read_bytes() == before
    meta = json.loads((run_dir / "eval_short_episodes_meta.json").read_text())
    assert meta["split"] == "short_episodes" and meta["overrides"] == {"episode_steps": 4}
    assert json.loads((run_dir / "eval_set_episode_steps-2_meta.json").read_text())["overrides"] == \
        {"episode_steps": 2}
    assert (run_dir / "eval_short_episodes.csv").exists()
    with pytest.raises(SystemExit):
        ev.main([str(run_dir), "--split", "nope", "--episodes", "4"])
    assert "'nope'" in capsys.readouterr().err


def test_lagrangian_runs_report_their_budgets_per_seed(tmp_path):
    """A `mappo_lagrangian` run's budgeted signal: its cost per episode over seeds equals the mean of
    the evaluated episodes' `overshoot` of each seed, and the count of seeds within the budget
    equals a count on those per-seed values."""
    spec = {**SPEC, "algorithms": {"mappo_lagrangian": {"cost_budgets": {"overshoot": 0.5}}}, "seeds": 2,
            "splits": ["test"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert benchmark.main(["--spec", str(path), "--out", str(tmp_path / "out")]) == 0
    (row,) = [r for r in rows(tmp_path / "out") if r["metric"] == "budget_overshoot"]
    evaluation = json.loads((tmp_path / "out" / "setpoint" / "mappo_lagrangian" /
                             "eval_benchmark_test.json").read_text())
    per_seed = [np.mean(s["overshoot"]) for s in evaluation["mappo"]["per_seed"]]
    np.testing.assert_allclose(row["values"], per_seed, rtol=1e-6)
    assert row["budget"] == 0.5 and row["seeds_within_budget"] == sum(v <= 0.5 for v in per_seed)
    assert f"{row['seeds_within_budget']}/2 seeds within" in (tmp_path / "out" / "results.md").read_text()

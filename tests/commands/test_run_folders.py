"""Run folders of `pgjax train` survive crashes and refuse damage: atomic files, strict JSON,
checkpoints that say how many metrics rows they cover, resume that repairs or refuses,
no silent overwrite, `pgjax eval` on a toy-environment run.

One module-scoped trainer on the toy `setpoint` env (2 seeds, 2 envs x 4 steps, 3 updates
in chunks of 1): its chunk compiles once and every run below reuses it.
"""

from __future__ import annotations

import json
import shutil

import jax
import msgpack
import numpy as np
import pytest
from flax import serialization

from pgjax.baselines import mappo
from pgjax.baselines.config import MAPPOConfig
from pgjax.baselines.mappo import (CHECKPOINT, CONFIG, METRICS, make_train, read_checkpoint, read_run_config,
                                   restore_run, run, save_checkpoint)
from pgjax.cli import main
from pgjax.errors import RunFolderError
from pgjax.runio import to_json, write_json

CFG = MAPPOConfig(env="setpoint", num_envs=2, num_steps=4, num_minibatches=1, update_epochs=1, actor_hidden=(8,),
                  critic_hidden=(8,), num_seeds=2, total_timesteps=3 * 8)  # 3 updates; 8-step episodes


def cli(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code or 0


def strict(text: str):
    """`json.loads` that refuses NaN / Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def rows_of(folder):
    return [strict(line) for line in (folder / METRICS).read_text().splitlines()]


@pytest.fixture(scope="module")
def train():
    return make_train(CFG)


@pytest.fixture(scope="module")
def template(train):
    return train.seed_init(jax.random.PRNGKey(CFG.seed))


@pytest.fixture(scope="module")
def reference(train, tmp_path_factory):
    """An uninterrupted run of 3 updates."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run(CFG, out, chunk_updates=1, train=train, log=lambda _: None)
    return out


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the reference folder to damage."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def assert_same_rows(got, want):
    assert [(r["update_step"], r["seed"]) for r in got] == [(r["update_step"], r["seed"]) for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for k in a:
            x, y = (np.nan if v is None else v for v in (a[k], b[k]))
            np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=k)


# ------------------------------------------------------------------------------ files

def test_every_written_json_parses_strictly_with_null_for_nan(reference, template):
    rows = rows_of(reference)
    assert [(r["update_step"], r["seed"]) for r in rows] == [(u, s) for u in (1, 2, 3) for s in (0, 1)]
    assert rows[0]["episode_return"] is None  # no episode ends in the first 4 steps: NaN is written as null
    assert rows[2]["episode_return"] is not None
    assert read_run_config(reference / CONFIG) == CFG
    assert sorted(p.name for p in reference.iterdir()) == [CHECKPOINT, CONFIG, METRICS]  # no temp files left
    assert read_checkpoint(reference / CHECKPOINT, template)[1:] == (3, 6)  # update 3, covering 6 rows


def test_runio_writes_null_for_non_finite_values(tmp_path):
    obj = {"a": float("nan"), "b": [np.float32(np.inf), 1.5, np.int64(3)], "c": np.array([np.nan, 2.0])}
    write_json(tmp_path / "x.json", obj)
    assert strict((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.5, 3], "c": [None, 2.0]}
    assert strict(to_json(float("-inf"))) is None
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ------------------------------------------------------------------------ checkpoints

def _msgpack(obj) -> bytes:
    return msgpack.packb(obj)


def _with_step(good: bytes, change) -> bytes:
    payload = serialization.msgpack_restore(good)
    return serialization.msgpack_serialize({**payload, "step": change(payload["step"])})


DAMAGED = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "not a checkpoint (text)": lambda good: b"this is not a checkpoint\n",
    "not a checkpoint (PNG)": lambda good: b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "wrong structure (list)": lambda good: _msgpack([1, 2, 3]),
    "wrong structure (no state)": lambda good: _msgpack({"step": 3, "weights": {}}),
    "wrong state": lambda good: _msgpack({"step": 3, "state": {"actor": {"x": 1}}}),
    "bad step": lambda good: _with_step(good, lambda step: -1),
    "step disagrees": lambda good: _with_step(good, lambda step: step + 1),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_checkpoint_is_refused_naming_the_file(case, copy, template):
    path = copy / CHECKPOINT
    path.write_bytes(DAMAGED[case](path.read_bytes()))
    with pytest.raises(RunFolderError, match="checkpoint|step") as e:
        read_checkpoint(path, template)
    assert str(path) in str(e.value)


def test_checkpoint_of_nan_weights_is_refused(copy, template):
    state, step = mappo.load_checkpoint(copy / CHECKPOINT, template)
    kernel = state.actor.params["params"]
    first = next(iter(kernel))
    bad = jax.tree.map(lambda x: x * np.nan, kernel[first])
    state = state.replace(actor=state.actor.replace(params={"params": {**kernel, first: bad}}))
    save_checkpoint(copy / CHECKPOINT, state, step, metrics_rows=6)
    with pytest.raises(RunFolderError, match=r"non-finite weights.*actor/params/params") as e:
        read_checkpoint(copy / CHECKPOINT, template)
    assert str(copy / CHECKPOINT) in str(e.value)


def test_damaged_config_is_refused_naming_the_file(copy):
    (copy / CONFIG).write_bytes(b"\xff\xfe\x00 binary")
    with pytest.raises(RunFolderError) as e:
        read_run_config(copy / CONFIG)
    assert str(copy / CONFIG) in str(e.value)
    (copy / CONFIG).write_text("num_envs: [unclosed\n")
    with pytest.raises(RunFolderError, match="not a readable config") as e:
        read_run_config(copy / CONFIG)
    assert str(copy / CONFIG) in str(e.value)


# ---------------------------------------------------------------------------- metrics

def test_cut_off_metrics_line_is_dropped_on_resume(copy, reference, template):
    with open(copy / METRICS, "a") as f:
        f.write('{"seed": 0, "actor_loss": 0.1, "upd')
    logs = []
    state, step, rows = restore_run(copy, template, CFG.num_seeds, logs.append)
    assert (step, rows) == (3, 6)
    assert (copy / METRICS).read_bytes() == (reference / METRICS).read_bytes()
    assert any(str(copy / METRICS) in line and "cut-off last line" in line for line in logs), logs


def test_extra_metrics_rows_after_the_checkpoint_are_dropped(copy, reference, template):
    lines = (copy / METRICS).read_text().splitlines(keepends=True)
    with open(copy / METRICS, "a") as f:  # the rows of a 4th update whose checkpoint was never written
        f.writelines(lines[-2:])
    logs = []
    restore_run(copy, template, CFG.num_seeds, logs.append)
    assert (copy / METRICS).read_bytes() == (reference / METRICS).read_bytes()
    assert any("dropped 2 row(s)" in line for line in logs), logs


def test_metrics_with_fewer_rows_than_the_checkpoint_are_refused(copy, template):
    lines = (copy / METRICS).read_text().splitlines(keepends=True)
    (copy / METRICS).write_text("".join(lines[:4]))
    with pytest.raises(RunFolderError, match="4 complete row") as e:
        restore_run(copy, template, CFG.num_seeds, lambda _: None)
    assert str(copy / METRICS) in str(e.value)
    (copy / METRICS).write_text("".join(lines[:2]) + "not json\n" + "".join(lines[3:]))
    with pytest.raises(RunFolderError, match="line 3 is not JSON") as e:
        restore_run(copy, template, CFG.num_seeds, lambda _: None)
    assert str(copy / METRICS) in str(e.value)
    (copy / METRICS).write_text("".join(lines[:2] + lines[3:4] + lines[2:3] + lines[4:]))  # seeds swapped
    with pytest.raises(RunFolderError, match="line 3: expected the row of update 2, seed 0"):
        restore_run(copy, template, CFG.num_seeds, lambda _: None)


# ------------------------------------------------------------------- crash and resume

def test_crash_between_metrics_and_checkpoint_resumes_to_the_same_metrics(train, reference, tmp_path, monkeypatch):
    """The process dies after the metrics rows of update 2 are written, before its checkpoint."""
    out = tmp_path / "run"
    calls = []
    real = mappo.save_checkpoint

    def crash_on_second(path, state, step, metrics_rows=None):
        calls.append(step)
        if len(calls) == 2:
            raise SystemExit("killed between the metrics write and the checkpoint write")
        real(path, state, step, metrics_rows)

    monkeypatch.setattr(mappo, "save_checkpoint", crash_on_second)
    with pytest.raises(SystemExit, match="killed"):
        run(CFG, out, chunk_updates=1, train=train, log=lambda _: None)
    monkeypatch.setattr(mappo, "save_checkpoint", real)
    assert len(rows_of(out)) == 4  # update 2's rows written, its checkpoint not
    logs = []
    run(CFG, out, resume=True, chunk_updates=1, train=train, log=logs.append)
    assert any("dropped 2 row(s)" in line for line in logs), logs
    assert any("resumed" in line and "update 1" in line for line in logs), logs
    assert_same_rows(rows_of(out), rows_of(reference))


def test_ctrl_c_during_the_metrics_write_leaves_a_consistent_folder(train, template, reference, tmp_path,
                                                                   monkeypatch):
    """Ctrl-C in the middle of appending update 2's rows: the cut-off append is dropped and the
    checkpoint of update 1 kept; resume then reproduces the uninterrupted run."""
    out = tmp_path / "run"
    real = mappo.append_lines
    calls = []

    def interrupted_append(path, lines):
        calls.append(1)
        if len(calls) == 2:
            with open(path, "a") as f:
                f.write(lines[0][:20])
            raise KeyboardInterrupt
        return real(path, lines)

    monkeypatch.setattr(mappo, "append_lines", interrupted_append)
    run(CFG, out, chunk_updates=1, train=train, log=lambda _: None)
    monkeypatch.setattr(mappo, "append_lines", real)
    assert len(rows_of(out)) == 2 and (out / METRICS).read_text().endswith("\n")
    assert read_checkpoint(out / CHECKPOINT, template)[1:] == (1, 2)
    run(CFG, out, resume=True, chunk_updates=1, train=train, log=lambda _: None)
    assert_same_rows(rows_of(out), rows_of(reference))


def test_crash_before_the_first_checkpoint_resumes_from_update_0(train, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def crash(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(mappo, "save_checkpoint", crash)
    with pytest.raises(SystemExit):
        run(CFG, out, chunk_updates=1, train=train, log=lambda _: None)
    monkeypatch.undo()
    logs = []
    run(CFG, out, resume=True, chunk_updates=1, train=train, log=logs.append)
    assert any("starting at update 0" in line for line in logs), logs
    assert_same_rows(rows_of(out), rows_of(reference))


def test_diverged_networks_stop_training_and_keep_the_last_finite_checkpoint(train, template, tmp_path,
                                                                            monkeypatch):
    """Update 2 turns the actor NaN: nothing of it is written, the checkpoint of update 1 stays."""
    out = tmp_path / "run"
    real = train.seed_chunk

    def nan_on_second(state, n, mesh=None):
        new, metrics = real(state, n, mesh)
        if int(np.asarray(new.update_step)[0]) == 2:
            new = new.replace(actor=new.actor.replace(params=jax.tree.map(lambda x: x * np.nan, new.actor.params)))
        return new, metrics

    monkeypatch.setattr(train, "seed_chunk", nan_on_second)
    with pytest.raises(mappo.TrainingDiverged, match=r"updates 2-2: actor/params/.*update 1 is kept"):
        run(CFG, out, chunk_updates=1, train=train, log=lambda _: None)
    assert len(rows_of(out)) == 2
    assert read_checkpoint(out / CHECKPOINT, template)[1:] == (1, 2)


# ------------------------------------------------------------------------- overwrite

def test_a_new_run_refuses_a_folder_that_holds_one(train, copy, capsys):
    before = (copy / METRICS).read_bytes()
    with pytest.raises(RunFolderError, match="holds a run") as e:
        run(CFG, copy, chunk_updates=1, train=train, log=lambda _: None)
    assert str(copy) in str(e.value)
    assert cli("train", "--out", str(copy), "env=setpoint") == 2
    assert "holds a run" in capsys.readouterr().err
    assert cli("train", "--out", str(copy), "--resume", "--force") == 2
    assert (copy / METRICS).read_bytes() == before  # nothing touched
    (copy / "notes.txt").write_text("mine")
    (copy / "eval_load_growth.json").write_text("{}")  # an evaluation of the old run, under its own name
    run(CFG.replace(total_timesteps=8), copy, chunk_updates=1, train=train, log=lambda _: None, force=True)
    assert len(rows_of(copy)) == 2 and (copy / "notes.txt").read_text() == "mine"
    assert not (copy / "eval_load_growth.json").exists()


# ------------------------------------------------------------------------------- CLI

def test_cli_refuses_a_damaged_checkpoint_naming_it(copy, capsys):
    (copy / CHECKPOINT).write_bytes(b"")
    assert cli("eval", str(copy), "--episodes", "1") == 2
    assert f"{copy / CHECKPOINT}: empty file" in capsys.readouterr().err
    assert cli("train", "--out", str(copy), "--resume", "--chunk", "1") == 2
    assert f"{copy / CHECKPOINT}: empty file" in capsys.readouterr().err


def test_eval_works_on_a_toy_env_run(copy):
    assert cli("eval", str(copy), "--episodes", "2", "--no-plot") == 0
    results = strict((copy / "eval.json").read_text())
    assert set(results) == {"mappo", "random", "do_nothing"}  # rule_based and oracle need a pgjax scenario
    assert all(np.isfinite(m["cost"]) and m["episodes"] == 2 for m in results.values())
    assert strict((copy / "eval_meta.json").read_text())["update"] == 3
    assert (copy / "eval.csv").read_text().count("\n") == 4

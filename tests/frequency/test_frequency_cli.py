"""`pgjax train --scenario frequency_68bus` then `pgjax eval`: the run folder and the metrics table."""

from __future__ import annotations

import json

import pytest

from pgjax.cli import main


def cli(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code or 0


@pytest.mark.slow
def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "freq"
    tiny = ["num_envs=2", "num_steps=120", "total_timesteps=240", "update_epochs=1", "num_minibatches=1",
            "actor_hidden=[16]", "critic_hidden=[16]"]
    assert cli("train", "--scenario", "frequency_68bus", "--out", str(out), "--chunk", "1", *tiny) == 0
    assert cli("eval", str(out), "--episodes", "2") == 0
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == {"mappo", "no_control", "droop", "agc", "random"}
    for m in results.values():
        assert 0.0 <= m["in_band_rate"] <= 1.0 and m["nadir_hz"] <= m["zenith_hz"]
    assert json.loads((out / "eval_meta.json").read_text())["env"] == "frequency_68bus"
    assert "mappo" in (out / "eval.csv").read_text()
    assert "in band" in capsys.readouterr().out

"""The configuration that hung `pgjax eval` (issue 21 item 5) trains and evaluates to completion.

`pgjax train --preset frequency_68bus num_envs=64 num_steps=64 update_epochs=4 num_minibatches=4`
then `pgjax eval` hung in MAPPO.seed_init on jax/jaxlib 0.10.x (docs/xla_cpu_lapack_deadlock.md).
Both commands run in subprocesses with a time limit and a tight stall watchdog, so a regression
fails with the stalled stage's name instead of stalling CI.
"""

import os
import subprocess
import sys

import pytest

TRAIN = ["--preset", "frequency_68bus", "num_envs=64", "num_steps=64", "update_epochs=4", "num_minibatches=4",
         "total_timesteps=4096"]  # one update


def _pgjax(args, timeout_s):
    env = {**os.environ, "PGJAX_STALL_TIMEOUT_S": "240"}
    r = subprocess.run([sys.executable, "-m", "pgjax.cli", *args], capture_output=True, text=True,
                       timeout=timeout_s, env=env)
    assert r.returncode == 0, f"pgjax {' '.join(args)}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_frequency_preset_small_batch_trains_and_evaluates(tmp_path):
    run = tmp_path / "run"
    _pgjax(["train", *TRAIN, "--out", str(run)], timeout_s=480)
    r = _pgjax(["eval", str(run), "--no-oracle", "--episodes", "2", "--no-plot"], timeout_s=480)
    assert (run / "eval.json").exists() or "wrote" in r.stdout

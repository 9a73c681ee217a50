"""The environment reproduces its recorded trajectories (every registered scenario, fixed keys).

`tests/data/trajectories_v0.npz` was recorded by `scripts/record_trajectories.py` from the
environment before it was split into `pgjax/env/` (commit 2724080): observations, rewards,
costs and power-flow voltages of a reset and six steps with random actions. A refactoring
that changes behaviour shows up here, to the power-flow tolerance.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import pgjax
from pgjax import scenario

ROOT = Path(__file__).resolve().parents[2]
RECORDED = np.load(ROOT / "tests" / "data" / "trajectories_v0.npz")
SPEC = importlib.util.spec_from_file_location("record_trajectories", ROOT / "scripts" / "record_trajectories.py")
record = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(record)


@pytest.mark.parametrize("name", scenario.names())
def test_trajectory_matches_the_recorded_one(name):
    got = record.rollout(pgjax.make(name, dtype="float64"), n_steps=RECORDED[f"{name}/reward"].shape[0])
    for key, value in got.items():
        want = RECORDED[f"{name}/{key}"]
        assert value.shape == want.shape, (name, key)
        np.testing.assert_allclose(value, want, rtol=1e-7, atol=1e-7, err_msg=f"{name}: {key}")

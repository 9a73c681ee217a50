"""The curated mutation list (`tests/mutations.yaml`) and its runner (`scripts/mutation_test.py`).

The full mutation run is not part of CI (a pytest run per entry); this checks that the list
stays applicable to the current sources (every `original` snippet occurs exactly once in its
module, every named test file exists, ids unique) and runs the runner end to end on one
mutation that must be killed and one harmless edit that must survive.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("mutation_test", ROOT / "scripts" / "mutation_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
ENTRIES = RUNNER.load()


def test_list_covers_the_bugs_of_issue_26():
    ids = {e["id"] for e in ENTRIES}
    assert {"obs-delay-one-short", "converged-10x-tol", "anderson-mixing-coefficient", "gae-lambda-one",
            "no-advantage-normalisation", "no-value-clipping", "plausibility-no-lower-limit",
            "governor-droop-default"} <= ids


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_every_snippet_exists_once_in_its_module(entry):
    assert RUNNER.problems(entry) == []


def test_runner_kills_a_caught_mutation_and_reports_a_harmless_one_as_survivor():
    caught = next(e for e in ENTRIES if e["id"] == "anderson-mixing-coefficient")
    result = RUNNER.run(caught, timeout_s=300, pytest_args=[])
    assert result["outcome"] == "killed", result
    harmless = {**caught, "id": "harmless", "mutated": caught["original"] + "  # harmless"}
    result = RUNNER.run(harmless, timeout_s=300, pytest_args=["-k", "solve_small_spd"])
    assert result["outcome"] == "survived", result
    stale = {**caught, "id": "stale", "original": "no such line"}
    assert RUNNER.run(stale, timeout_s=300, pytest_args=[])["outcome"] == "stale"
    # the copy imports its own pgjax.baselines (mapped from baselines/ by pyproject.toml)
    gae = next(e for e in ENTRIES if e["id"] == "gae-lambda-one")
    probe = {**gae, "id": "probe", "mutated": gae["original"] + "; raise RuntimeError('mutant imported')"}
    result = RUNNER.run(probe, timeout_s=300, pytest_args=["-k", "numpy_gae_of_its_rollout"])
    assert result["outcome"] == "killed", result
    # the working tree is untouched
    assert (ROOT / caught["module"]).read_text().count(caught["original"]) == 1

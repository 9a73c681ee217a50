"""The `pgjax` command and the README's set-up commands."""

import re
from pathlib import Path

import pytest

from pgjax.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_verify_quick_passes_against_pandapower():
    """`pgjax verify --quick` solves its networks with pgjax and pandapower and exits 0 only
    when every newton/fixed_point row is within the accuracy targets."""
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--quick"])
    assert exit_info.value.code == 0


def test_unknown_bench_is_rejected():
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "no_such_bench"])
    assert exit_info.value.code == 2


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command in ci.splitlines()

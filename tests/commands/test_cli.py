"""The `pgjax` command and the README's set-up commands."""

import functools
import re
import time
from pathlib import Path

import numpy as np
import pytest

from pgjax import networks
from pgjax.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _verify(*argv):
    """`pgjax verify ARGV`: its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *argv])
    return exit_info.value.code


def test_verify_quick_passes_against_pandapower(capsys):
    """`pgjax verify --quick` solves its networks with pgjax and pandapower and exits 0 only
    when every newton/fixed_point row is within the accuracy targets: each network it
    names has a PASS newton row, and none was skipped or not run."""
    from pgjax.commands.verify import COLUMNS, QUICK

    code = _verify("--quick")
    out = capsys.readouterr().out
    assert code == 0, out
    width = COLUMNS[0][1]
    for name in QUICK:
        rows = [ln[width:].split() for ln in out.splitlines() if ln[:width].strip() in (name, f"pgjax {name}")]
        # cells after the name: buses, branches, method, ..., result
        assert any(r[2] == "newton" and r[-1] == "PASS" for r in rows if len(r) > 3), f"{name}: no PASS row\n{out}"
    assert "; 0 skipped" in out and "NOT RUN" not in out, out


def test_verify_rejects_an_unknown_network_name(capsys):
    assert _verify("--networks", "case9,no_such_network") == 2
    assert "no_such_network" in capsys.readouterr().err


def _no_such_networks():
    """The quick zoo's entries for two names that build nothing (as a typo in `QUICK` would)."""
    return [(f"pgjax {name}", functools.partial(networks.load, name), None, True)
            for name in ("no_such_network_a", "no_such_network_b")], []


def _slow_build():
    time.sleep(10)


def test_verify_fails_when_a_named_network_does_not_run(monkeypatch, capsys):
    """Named networks whose build fails or times out are failures (exit 1, each named), not skips."""
    from pgjax.commands import verify

    monkeypatch.setattr(verify, "quick_zoo", _no_such_networks)
    assert _verify("--quick", "--jobs", "0") == 1
    out = capsys.readouterr().out
    assert "no_such_network_a" in out and "no_such_network_b" in out and "2 NOT RUN" in out, out

    monkeypatch.setattr(verify, "quick_zoo", lambda: ([("slow_network", _slow_build, None, True)], []))
    monkeypatch.setattr(verify, "TIMEOUT_S", 0.2)
    assert _verify("--quick", "--jobs", "0") == 1
    out = capsys.readouterr().out
    assert "slow_network: build timed out" in out, out


def test_unknown_bench_is_rejected():
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "no_such_bench"])
    assert exit_info.value.code == 2


def test_bench_env_cpu_clock_times_pgjax_next_to_pandapower(capsys):
    """`pgjax bench env --clock cpu` (the figure closing notes compare versions with) prints
    steps per CPU-second for the reference and the JAX rows, with ratios to pandapower."""
    from pgjax.commands import bench_env

    table = bench_env.measure(bench_env.build_parser().parse_args(
        ["--clock", "cpu", "--batches", "2", "--scan", "2", "--seconds", "0.05", "--reference-steps", "1",
         "--skip-shim", "--flops", "none", "--peak-n", "64"]))
    out = capsys.readouterr().out
    assert "env steps per CPU-second" in out, out
    assert set(table) == {"reference: pandapower (1)", "jit(vmap(step)) (2)", "scan 2 x vmap (2)"}
    assert all(np.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0 for r in table.values())


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command in ci.splitlines()


@pytest.mark.slow
def test_bench_train_runs_devices_and_processes_on_the_same_curve(tmp_path, capsys):
    """`pgjax bench train`: one run per device count (forced CPU devices) and a 2-process run, the
    same learning curve in every one (per-update mean reward within float32 reduction order)."""
    import json

    from pgjax.commands import bench_train

    out = tmp_path / "bt"
    assert bench_train.main(["--scaling", "--scenario", "setpoint", "--devices", "1", "2", "--processes", "2", "--updates", "3",
                             "--chunk", "1", "--out", str(out), "num_envs=4", "num_steps=8", "num_minibatches=1",
                             "update_epochs=1", "actor_hidden=[8]", "critic_hidden=[8]"]) == 0
    runs = json.loads((out / "bench_train.json").read_text())["runs"]
    assert [r["configuration"] for r in runs] == ["1 device(s), 1 process", "2 device(s), 1 process",
                                                  "2 processes x 1 device"]
    assert [r["processes"] for r in runs] == [1, 1, 2] and [len(r["devices"]) for r in runs] == [1, 2, 2]
    assert all(r["max_reward_diff"] < 1e-5 and r["env_steps_per_s"] > 0 for r in runs), runs
    assert (out / "curves_overlay.png").stat().st_size > 0
    assert "2 processes x 1 device" in capsys.readouterr().out

"""The built wheel works on its own: `pgjax validate`, a tiny `pgjax train` and `pgjax eval`.

The wheel is built (from a copy of the packaged files so that the checkout gets no `build/`
folder; without build isolation when this environment's setuptools is recent enough) and installed into a fresh virtual environment outside
the checkout. That environment gets this one's dependencies through a `.pth` file naming
this environment's site-packages; `.pth` files inside that folder are not processed, so
the checkout's editable install is not visible, which the test asserts (`pgjax`,
`pgjax.converters` and `pgjax.baselines` import from the new environment). The commands then run
from a folder outside the checkout with the installed `pgjax` script.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the wheel is built from (pyproject's packages and readme).
SOURCES = ("pyproject.toml", "README.md", "pgjax", "converters", "baselines")
TINY = ["num_envs=2", "num_steps=8", "num_minibatches=2", "update_epochs=1", "actor_hidden=[16]",
        "critic_hidden=[16]", "total_timesteps=16"]  # one update of 16 env steps


def _build_isolation() -> list[str]:
    """pip's option to build with this environment's setuptools if it meets pyproject's >= 68."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 68 else []


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(venv, work dir, env)`: the wheel installed into a fresh venv outside the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *_build_isolation(), "-w", tmp / "dist", src],
        tmp, env)
    (wheel,) = (tmp / "dist").glob("pgjax-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    (site,) = (venv / "lib").glob("python*/site-packages")
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_this_env_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    # --ignore-installed: the checkout's editable pgjax in those folders is neither seen nor removed
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
         "--no-index", "--ignore-installed", wheel], tmp, env)
    work = tmp / "work"
    work.mkdir()
    return venv, work, env


def test_the_wheel_is_what_runs(installed):
    venv, work, env = installed
    out = run([venv / "bin" / "python", "-c",
               "import pgjax, pgjax.baselines as b, pgjax.converters as c; print(pgjax.__file__, b.__file__, c.__file__)"],
              work, env)
    for path in out.split():
        assert Path(path).resolve().is_relative_to(venv.resolve()), out
        assert not Path(path).resolve().is_relative_to(ROOT), out
    # the top-level folders install inside pgjax, not as top-level names that could collide
    missing = run([venv / "bin" / "python", "-c", "import importlib.util as u; "
                   "print(u.find_spec('baselines') is None and u.find_spec('converters') is None)"], work, env)
    assert missing.strip() == "True", missing


@pytest.mark.slow
def test_validate_train_eval_from_the_wheel(installed):
    venv, work, env = installed
    pgjax = venv / "bin" / "pgjax"
    assert "OK" in run([pgjax, "validate", "multi_microgrid"], work, env)
    run([pgjax, "train", "--scenario", "multi_microgrid", "--out", "run", "--chunk", "1", *TINY], work, env)
    out = work / "run"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.msgpack", "curves.png", "train_summary.json"):
        assert (out / name).is_file(), name
    run([pgjax, "eval", "run", "--episodes", "1", "--no-oracle"], work, env)
    for name in ("eval.json", "eval.csv", "eval_day.png"):
        assert (out / name).is_file(), name

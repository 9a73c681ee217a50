"""Mutation testing over a curated list: plant each listed bug in a copy, run its tests, list survivors.

Usage (from the repository root, in the project's virtual environment):

    python scripts/mutation_test.py                       # every entry of tests/mutations.yaml
    python scripts/mutation_test.py --only converged-10x-tol --only gae-lambda-one
    python scripts/mutation_test.py --module pgjax/powerflow   # entries whose module lies under a path
    python scripts/mutation_test.py --list                # the entries, nothing run
    python scripts/mutation_test.py --report report.json  # also write the outcome as JSON

Each entry of `tests/mutations.yaml` names a module, an `original` snippet that occurs exactly
once in it, its `mutated` replacement and the tests that must fail with it. For each entry the
repository (without `.venv`, `.git`, `build` and caches) is copied into a temporary folder, the
snippet replaced there, and `python -m pytest <tests>` run in the copy with `PYTHONPATH`
pointing at it, so the copy's `pgjax` is imported and subprocesses started by the tests
(`python -m pgjax.cli ...`) get it too; the packages `pyproject.toml` maps from other folders
(`pgjax.baselines` from `baselines/`, `pgjax.converters`) are linked into the copy's `pgjax/`,
or the editable install would import them from the working tree. The working tree is never
touched. A
mutation whose tests all pass is a survivor: a bug the suite does not notice. The exit status is
1 when there is a survivor (or an entry no longer applies), else 0.

Run it before resolving an issue that touches a listed module, and add an entry for each bug
that an issue shows slipped through. It is not part of CI (each entry costs a pytest run, 10 s
to a minute); `tests/test_mutations.py`, which is, checks that every snippet still exists, so
the list cannot silently drift from the code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tests" / "mutations.yaml"
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info", ".pytest_cache",
                                "site", ".mypy_cache", ".ruff_cache")


def load(path: Path = LIST) -> list[dict]:
    """The entries of the mutation list, each checked for its fields."""
    entries = yaml.safe_load(path.read_text())["mutations"]
    for e in entries:
        missing = {"id", "module", "original", "mutated", "tests"} - set(e)
        if missing:
            raise ValueError(f"{path}: entry {e.get('id', '?')} lacks {sorted(missing)}")
        if e["original"] == e["mutated"]:
            raise ValueError(f"{path}: entry {e['id']}: mutated equals original")
    ids = [e["id"] for e in entries]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: duplicate ids")
    return entries


def problems(entry: dict, root: Path = ROOT) -> list[str]:
    """Why `entry` cannot be applied to the sources under `root` (empty when it can)."""
    module = root / entry["module"]
    if not module.is_file():
        return [f"{entry['module']}: no such file"]
    count = module.read_text().count(entry["original"])
    out = [] if count == 1 else [f"{entry['module']}: original snippet found {count} times (must be once)"]
    for test in entry["tests"]:
        if not (root / test.split("::")[0]).is_file():
            out.append(f"test {test}: no such file")
    return out


def link_mapped_packages(root: Path) -> None:
    """Make the copy's packages that `pyproject.toml` maps from other folders (`pgjax.baselines` =
    `baselines/`) importable from the copy: a link `pgjax/baselines -> ../baselines`. Without it the
    editable install's finder would import them from the working tree, unmutated."""
    import tomllib

    mapping = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {}).get(
        "package-dir", {})
    for package, folder in mapping.items():
        if not package:
            continue
        target = root.joinpath(*package.split("."))
        if not target.exists():
            target.symlink_to(os.path.relpath(root / folder, target.parent), target_is_directory=True)


def apply(entry: dict, root: Path) -> None:
    """Replace the entry's snippet in the copy under `root`."""
    module = root / entry["module"]
    text = module.read_text()
    module.write_text(text.replace(entry["original"], entry["mutated"], 1))


def run(entry: dict, timeout_s: float, pytest_args: list[str]) -> dict:
    """Plant `entry` in a fresh copy and run its tests there; `{id, outcome, seconds, tail}`."""
    bad = problems(entry)
    if bad:
        return {"id": entry["id"], "outcome": "stale", "seconds": 0.0, "tail": "; ".join(bad)}
    with tempfile.TemporaryDirectory(prefix=f"pgjax-mutant-{entry['id']}-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE, symlinks=True)
        link_mapped_packages(copy)
        apply(entry, copy)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args, *entry["tests"]]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = None, f"timed out after {timeout_s} s\n{e.stdout or ''}"
        seconds = time.perf_counter() - t0
    # pytest: 0 all passed (survivor), 1 some failed (killed); others (2-5) are errors to look at
    outcome = {0: "survived", 1: "killed"}.get(rc, "error")
    return {"id": entry["id"], "outcome": outcome, "seconds": round(seconds, 1),
            "tail": "\n".join(out.strip().splitlines()[-3:])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mutation_test.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="entry id (repeatable)")
    parser.add_argument("--module", action="append", default=[], help="entries whose module lies under this path")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per entry")
    parser.add_argument("--report", type=Path, help="write the outcome as JSON")
    parser.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    args = parser.parse_args(argv)
    entries = load()
    if args.only:
        entries = [e for e in entries if e["id"] in args.only]
    if args.module:
        entries = [e for e in entries if any(e["module"].startswith(m.rstrip("/")) for m in args.module)]
    if args.list:
        for e in entries:
            print(f"{e['id']:32s} {e['module']:36s} {e.get('about', '')}")
        return 0
    results = []
    for e in entries:
        r = run(e, args.timeout, args.pytest_arg)
        results.append(r)
        print(f"{r['outcome']:9s} {r['id']:32s} {r['seconds']:7.1f} s", flush=True)
        if r["outcome"] != "killed":
            print("          " + r["tail"].replace("\n", "\n          "), flush=True)
    survivors = [r["id"] for r in results if r["outcome"] != "killed"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutations killed; "
          f"survivors / errors: {survivors or 'none'}")
    if args.report:
        args.report.write_text(json.dumps({"results": results, "survivors": survivors}, indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())

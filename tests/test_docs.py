"""The documentation site is built and every code block on it is checked.

- `mkdocs build --strict` into a temporary folder: a broken link, a missing page or an API
  reference (`::: module`) that cannot be collected fails it.
- Python blocks (```python) of each page (docs/**/*.md and README.md) run in order in one
  fresh interpreter, like a notebook, with JAX's 64-bit mode off unless a block switches it
  on; a failing block is named by its page and line.
- Shell blocks (```bash): every `pgjax ...` command is either run for real (the cheap ones,
  `RUN_FOR_REAL`) or parsed by the command's own argparse parser (the one its `main` builds),
  so a renamed or removed option fails the test; the set-up commands around them are checked
  for what can be checked without installing anything (`pip install -e '.[extra]'`: the
  extra exists; `python scripts/x.py`: the script exists).
- Output blocks (```text), YAML (```yaml, parsed) and other languages are not executed.
  A block preceded by `<!-- docs-test: skip REASON -->` is not run (the reason is required).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")) + ["README.md"]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
NOT_RUN_LANGS = {"text", "yaml", "json", "toml", "csv", "ini"}
FENCE = re.compile(r"^(\s*)(`{3,})([^`]*)$")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(\S.*?)\s*-->")
PAGE_TIMEOUT_S = 900
# `pgjax` commands cheap enough to run for real (seconds); every other one is parsed only.
RUN_FOR_REAL = {"splits", "validate"}
# Set-up commands that shell blocks may contain around the `pgjax` ones (not run).
SETUP = {"python3", ".", "source", "cd", "export", "mkdocs", "mkdir", "cp"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # line of the first code line (1-based)
    lang: str
    code: str
    skip: str | None  # reason, from a `docs-test: skip` comment right above the fence


def blocks_of(page: str) -> list[Block]:
    """The fenced code blocks of a page (top-level ``` fences), with their language."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])  # CommonMark: a backtick fence's info string has no backtick
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), (m.group(3).split() or [""])[0].lower()
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(prev)
        start = i + 1
        i = start
        while i < len(lines) and not re.fullmatch(rf"\s*{fence}`*\s*", lines[i]):
            i += 1
        assert i < len(lines), f"{page}:{start}: code block never closed"
        code = textwrap.dedent("\n".join(l[len(indent):] if l.startswith(indent) else l for l in lines[start:i]))
        out.append(Block(page, start + 1, lang, code, skip.group(1) if skip else None))
        i += 1
    return out


ALL_BLOCKS = [b for p in PAGES for b in blocks_of(p)]


def test_every_block_names_a_language():
    """A fence without a language would be neither run nor marked as output."""
    known = PYTHON_LANGS | SHELL_LANGS | NOT_RUN_LANGS
    bad = [f"{b.page}:{b.line - 1} ```{b.lang}" for b in ALL_BLOCKS if b.lang not in known]
    assert not bad, f"code blocks need one of {sorted(known)} (```text for output): {bad}"


def test_yaml_blocks_parse():
    for b in ALL_BLOCKS:
        if b.lang == "yaml" and not b.skip:
            yaml.safe_load(b.code)


def test_readme_test_command_is_the_ci_command():
    """`.ci/run` runs exactly the README's test command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "pip install -e '.[test]' && python -m pytest -q -n 2 --dist loadfile"
    assert f"```bash\n{command}\n```" in readme
    assert command in ci.splitlines()


# ---------------------------------------------------------------------------- the site


def heading_ids(page: Path) -> set[str]:
    """The anchors of a page's headings as the site's `toc` extension makes them."""
    ids, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            text = re.sub(r"[`*]", "", m.group(1)).lower()
            ids.add(re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-"))
    return ids


def test_readme_links_resolve():
    """README.md is outside the site, so mkdocs does not check its links: every relative link
    names an existing file and, with `#anchor`, one of that page's headings."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, frag = target.partition("#")
        if not (ROOT / path).exists():
            bad.append(target)
        elif frag and path.endswith(".md") and frag not in heading_ids(ROOT / path):
            bad.append(target)
    assert not bad, f"README links that do not resolve: {bad}"


def test_mkdocs_build_strict(tmp_path):
    """The site builds with warnings as errors (links, anchors, nav, API references)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "env" / "index.html").exists()


# ---------------------------------------------------------------------------- python blocks

RUNNER = """
import sys, traceback
ns = {"__name__": "__main__"}
for page, line, code in BLOCKS:
    print(f"--- {page}:{line}", flush=True)
    try:
        exec(compile("\\n" * (line - 1) + code, page, "exec"), ns)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the python block at {page}:{line}", file=sys.stderr, flush=True)
        sys.exit(1)
"""


# Pages whose blocks took over 60 s on the shared 2-core CPU (building frequency_68bus's
# sub-step maps; three compiled programs of multi_microgrid): marked slow, still run in CI.
SLOW_PAGES = {"docs/scenarios/frequency-68bus.md", "docs/getting-started.md"}


@pytest.mark.parametrize("page", [pytest.param(p, marks=[pytest.mark.slow] if p in SLOW_PAGES else [])
                                  for p in PAGES if any(b.lang in PYTHON_LANGS and not b.skip
                                                        for b in ALL_BLOCKS if b.page == p)])
def test_python_blocks_run(page, tmp_path):
    """A page's python blocks, in order, in one interpreter (cwd: a temporary folder)."""
    blocks = [(b.page, b.line, b.code) for b in ALL_BLOCKS if b.page == page and b.lang in PYTHON_LANGS and not b.skip]
    script = f"BLOCKS = {blocks!r}\n{RUNNER}"
    env = {**os.environ, "JAX_ENABLE_X64": "0", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]


# ---------------------------------------------------------------------------- shell blocks


class _Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def parse_pgjax(words: list[str], monkeypatch) -> argparse.Namespace:
    """`pgjax WORDS` parsed by the parser the command's `main` builds (`build_parser()`; nothing
    is run: the first `parse_args` call returns through an exception, so a command that
    dispatches, such as `bench train [--scaling]`, is parsed by the parser it would use).
    `pgjax train`'s `key=value` overrides are also checked against `MAPPOConfig`.
    `pgjax validate` has no module (it is run for real)."""
    from pgjax import cli

    cmd, rest = words[0], words[1:]
    assert cmd in cli.COMMANDS, f"no command pgjax {cmd}"
    if cmd == "bench":
        assert rest and rest[0] in cli.BENCHES, f"no command pgjax bench {rest[:1]}"
        module, rest = cli.BENCHES[rest[0]], rest[1:]
    else:
        module = cli.COMMANDS[cmd][0]
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    mod = importlib.import_module(f"pgjax.commands.{module}")
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        try:
            mod.main(list(rest))
        except _Parsed as parsed:
            namespace = parsed.namespace
        except SystemExit as e:
            raise AssertionError(f"pgjax {' '.join(words)}: the parser refused it (exit {e.code})") from None
        else:
            raise AssertionError(f"pgjax {' '.join(words)}: main returned without parsing its arguments")
    if cmd == "train" and not namespace.config and hasattr(mod, "build_config"):
        # the key=value overrides against MAPPOConfig (a --config file of the docs is not on disk)
        check = argparse.Namespace(**{**vars(namespace), "out": namespace.out or "runs/docs", "resume": False})
        try:
            mod.build_config(check, mod.build_parser())
        except SystemExit as e:
            raise AssertionError(f"pgjax {' '.join(words)}: the configuration is refused (exit {e.code})") from None
    return namespace


def commands_of(code: str) -> list[list[str]]:
    """Each simple command of a shell block: continuation lines joined, comments dropped,
    split on `&&`, `||`, `;` and `|`, leading `VAR=value` assignments removed."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w in {"&&", "||", ";", "|"}:
                while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
                    cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def check_setup_command(words: list[str]) -> None:
    """What a set-up command refers to exists (extras, scripts, modules)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    head = words[0]
    if head == "pip":
        for w in words[1:]:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", w)
            if m:
                missing = [e for e in m.group(1).split(",") if e not in extras]
                assert not missing, f"pip install: no extra {missing} in pyproject.toml"
        return
    if head in {"python", "python3"} and len(words) > 1:
        if words[1] == "-m":
            assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
        elif words[1].endswith(".py"):
            assert (ROOT / words[1]).exists(), f"no script {words[1]}"
        return
    assert head in SETUP, f"a shell command the docs test does not know how to check: {' '.join(words)}"


def run_pgjax(words: list[str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys; from pgjax.cli import main; sys.exit(main())", *words],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, f"pgjax {' '.join(words)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang in SHELL_LANGS for b in ALL_BLOCKS if b.page == p)])
def test_shell_blocks(page, monkeypatch):
    """Cheap `pgjax` commands run, the others parse with the command's own parser."""
    checked = 0
    for b in ALL_BLOCKS:
        if b.page != page or b.lang not in SHELL_LANGS or b.skip:
            continue
        for words in commands_of(b.code):
            where = f"{b.page}:{b.line}: {' '.join(words)}"
            try:
                if words[0] == "pgjax":
                    if words[1] in RUN_FOR_REAL:
                        run_pgjax(words[1:], ROOT)
                    else:
                        parse_pgjax(words[1:], monkeypatch)
                else:
                    check_setup_command(words)
            except AssertionError as e:
                raise AssertionError(f"{where}\n{e}") from None
            checked += 1
    assert checked


def test_skips_give_a_reason():
    for b in ALL_BLOCKS:
        if b.skip is not None:
            assert len(b.skip) > 10, f"{b.page}:{b.line}: say why the block is not run"

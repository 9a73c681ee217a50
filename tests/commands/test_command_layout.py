"""Every `pgjax` command module has the same shape: `build_parser()` (the parser alone),
`run(args) -> int` and `main(argv)`; no function in `pgjax/commands/` is over 60 lines."""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import pytest

from pgjax.cli import BENCHES, COMMANDS, build_validate_parser

COMMANDS_DIR = Path(__file__).resolve().parents[2] / "pgjax" / "commands"
MODULES = sorted({m for m, _ in COMMANDS.values() if m} | set(BENCHES.values()) | {"bench_train_speed"})
MAX_LINES = 60


@pytest.mark.parametrize("name", MODULES)
def test_command_module_has_build_parser_run_and_main(name):
    mod = importlib.import_module(f"pgjax.commands.{name}")
    assert callable(mod.run) and callable(mod.main)
    parser = mod.build_parser()
    assert isinstance(parser, argparse.ArgumentParser) and parser.prog.startswith("pgjax ")
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--help"])
    assert e.value.code == 0


def test_validate_parser_lives_in_the_cli():
    assert build_validate_parser().parse_args(["multi_microgrid"]).scenario == "multi_microgrid"


def test_no_command_function_is_over_60_lines():
    long = []
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long

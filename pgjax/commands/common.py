"""Blocks the `pgjax` commands share: the `--devices` flag and its mesh, figure saving,
YAML files that must hold a mapping, `key=value` overrides, error lines and the errors of
reading a run folder (`reported_errors`).

Every command module has the same three functions: `build_parser()` (pure: builds the
`argparse` parser, imports nothing heavy), `run(args) -> int` (does the work; the exit
status) and `main(argv=None) -> int` (`run(build_parser().parse_args(argv))`). A usage error
found while running is reported through `build_parser().error(...)` (usage line, message,
exit status 2), as if the parser had found it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def add_devices_argument(parser, help_text: str) -> None:
    """`--devices N|all` (default 1): local devices to split a batch over."""
    parser.add_argument("--devices", default="1", help=help_text)


def batch_mesh(devices: str, size: int, name: str):
    """The mesh that splits a batch of `size` (the flag or key `name`) over the `--devices` value
    (`pgjax.distributed.parse_devices`), or None for one device. Raises `ValueError` (a usage
    error) for a bad count or a batch that does not divide."""
    from pgjax import distributed

    return distributed.batch_mesh(distributed.parse_devices(devices), size, name)


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (commands only write files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> None:
    """Write `fig` as a PNG to `path` atomically (`pgjax.runio.open_atomic`) and close it."""
    from pgjax.runio import open_atomic

    with open_atomic(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)


def error(prog: str, message, status: int = 2) -> int:
    """Print `<prog>: error: <message>` to stderr; returns `status` (the command's exit status)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


@contextlib.contextmanager
def reported_errors(prog: str, conditions: str, parser):
    """Errors of reading a run and its conditions as a command reports them (exit status 2):
    a missing file or a bad argument through `parser`, a damaged run folder or bad input with
    its message, a scenario problem with the `conditions` that caused it (`--set ...`)."""
    from pgjax.errors import InputError, RunFolderError
    from pgjax.scenario import ScenarioError

    try:
        yield
    except (RunFolderError, InputError) as e:
        raise SystemExit(error(prog, e)) from None
    except ScenarioError as e:
        raise SystemExit(error(prog, f"{conditions}: {e}")) from None
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))


def parse_overrides(items, message: str = "{item!r} is not key=value") -> dict:
    """`{key: value}` of `key=value` items, each value parsed as YAML. Raises `ValueError` with
    `message` (formatted with the `item`) when one is not `key=value`."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(message.format(item=item))
        out[key] = yaml.safe_load(value)
    return out


KINDS = {"list": "a list", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}


def read_yaml_mapping(path, what: str) -> dict:
    """The mapping a YAML file holds (an empty file: `{}`). Raises `ValueError` naming the file
    and `what` it should be when the file cannot be read, is not YAML, or holds something other
    than a mapping (a list, a scalar)."""
    import yaml

    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path}: cannot be read ({e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{what} {path}: not valid YAML{at} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = KINDS.get(type(data).__name__, type(data).__name__)
        raise ValueError(f"{what} {path}: expected a mapping of keys to values, found {kind} ({str(data)[:60]})")
    return data

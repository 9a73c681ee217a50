"""The error family of pgjax: every bad input raises one of these, naming what is wrong.

All are `ValueError`s (so existing `except ValueError` keeps working) with a message that
names the offending item (file, key path or table / index, what was expected, what was
given). Subclasses say where the input entered:

- `InputError`: an array or object handed to a public function (`powerflow.solve`,
  `Env.step` / `reset`, the PettingZoo shim): argument name, expected and actual shape /
  dtype / value;
- `DataError`: a file of data (network JSON, CSV profile): file, table or row, column;
- `RunFolderError`: a run folder of `pgjax train` (checkpoint, metrics, config): file and
  what is damaged or why it is refused;
- `pgjax.scenario.ScenarioError` (a `PgjaxError` too): a scenario's problems with key paths.
"""

from __future__ import annotations


class PgjaxError(ValueError):
    """Base of every pgjax input error."""


class InputError(PgjaxError):
    """A bad array or object passed to a public function."""


class DataError(PgjaxError):
    """A bad data file (network, profile)."""


class RunFolderError(PgjaxError):
    """A damaged run folder, or one that would be overwritten without being asked."""


def brief(value, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters (error texts never embed huge values)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 15] + f"... ({len(text)} chars)"

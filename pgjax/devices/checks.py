"""Helpers for a device type's `validate` hook: checks of one raw YAML entry.

A hook returns `(path, expected, actual)` triples; the scenario validator reports them with
the entry's other problems. Non-numbers and non-finite numbers are left to the field-type
and finiteness checks of the validator (they read as the default here), so a hook only
states the physical range of each field (`ranges`) and the pairs that must be ordered
(`ordered`).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval of allowed values; `lo_open` / `hi_open` exclude the bound itself; `what`
    names the kind of value in messages."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    what: str = "a number"

    def __contains__(self, v) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def describe(self, what: str | None = None) -> str:
        """`'a number >= 0'`, `'an efficiency in (0, 1]'`, ... (`what` overrides `self.what`)."""
        what = what or self.what
        lo, hi = _text(self.lo), _text(self.hi)
        if math.isinf(self.hi):
            return f"{what} {'>' if self.lo_open else '>='} {lo}"
        if math.isinf(self.lo):
            return f"{what} {'<' if self.hi_open else '<='} {hi}"
        return f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


def _text(x: float) -> str:
    """A bound as written: `0`, `1000000`, `2147483647`, `0.5`."""
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


NONNEGATIVE = Range(0.0)
POSITIVE = Range(0.0, lo_open=True)
FRACTION = Range(0.0, 1.0, what="a fraction")
EFFICIENCY = Range(0.0, 1.0, lo_open=True, what="an efficiency")
VOLTAGE_PU = Range(0.0, 2.0, lo_open=True, what="a voltage (pu)")


def number(entry: dict, key: str, default=None):
    """`entry[key]` if it is a finite number (not a bool), else `default`."""
    v = entry.get(key, default)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return v if ok else default


def ranges(entry: dict, path: str, bounds: dict) -> list[tuple]:
    """Problems where a field given in `entry` lies outside its `Range` (`bounds`: field -> Range)."""
    problems = []
    for key, allowed in bounds.items():
        v = number(entry, key)
        if v is not None and v not in allowed:
            problems.append((f"{path}.{key}", allowed.describe(), v))
    return problems


def ordered(entry: dict, path: str, pairs, defaults: dict | None = None) -> list[tuple]:
    """Problems where a `(lo, hi)` pair of fields has `lo > hi`.

    A missing field reads as its value in `defaults` (the type's field defaults), else as
    0 for `lo`; a pair with a missing `hi` and no default (or a default of None) is not
    checked.
    """
    defaults = defaults or {}
    problems = []
    for lo, hi in pairs:
        a, b = number(entry, lo, defaults.get(lo, 0.0)), number(entry, hi, defaults.get(hi))
        if a is not None and b is not None and a > b:
            problems.append((f"{path}.{hi}", f"a number >= {lo} ({a})", b))
    return problems


def defaults(fields: dict, keys=None) -> dict:
    """The numeric defaults of a type's `fields` (`keys`: only those), for `ordered`."""
    return {k: f.default for k, f in fields.items() if (keys is None or k in keys)
            and isinstance(f.default, (int, float)) and not isinstance(f.default, bool)}

"""Helpers for a device type's `validate` hook: checks of one raw YAML entry.

A hook returns `(path, expected, actual)` triples; the scenario validator reports them with
the entry's other problems. Non-numbers are left to the field-type checks (they read as
the default here).
"""

from __future__ import annotations


def number(entry: dict, key: str, default=None):
    """`entry[key]` if it is a number (not a bool), else `default`."""
    v = entry.get(key, default)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def ordered(entry: dict, path: str, pairs) -> list[tuple]:
    """Problems where a `(lo, hi)` pair of fields has `lo > hi` (a missing `lo` counts as 0)."""
    problems = []
    for lo, hi in pairs:
        a, b = number(entry, lo, 0.0), number(entry, hi)
        if b is not None and a > b:
            problems.append((f"{path}.{hi}", f"a number >= {lo} ({a})", b))
    return problems

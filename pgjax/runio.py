"""Crash-safe files of run folders: atomic writes and strict JSON.

    write_atomic(path, text_or_bytes)      # temp file in the same folder, fsync, os.replace
    with open_atomic(path, newline="") as f:  # the same for writers that stream (csv)
        csv.writer(f).writerows(rows)
    write_json(path, obj)                  # JSON with null for NaN / inf (never bare NaN tokens)
    line = json_line(row)                  # one JSON line (metrics.jsonl), same rule
    append_lines(path, lines)              # append, flush, fsync

A reader never sees a half-written file: `os.replace` swaps the whole file in or leaves the
old one; a crash leaves at most a `.tmp-*` file next to it (`remove_temp_files`). Non-finite
floats become `null`, so every file parses with a strict JSON parser (one that refuses
`NaN`); readers take `null` as "no value" (e.g. an update in which no episode ended).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

TEMP_PREFIX = ".tmp-"

__all__ = ["append_lines", "finite_or_none", "json_line", "open_atomic", "remove_temp_files", "to_json",
           "write_atomic", "write_json"]


@contextlib.contextmanager
def open_atomic(path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """A file object for `path` that appears there whole when the block ends, or not at all on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)


def write_atomic(path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically (temp file in the same folder, fsync, `os.replace`)."""
    with open_atomic(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def finite_or_none(obj: Any) -> Any:
    """`obj` with NaN / inf floats (Python or numpy, nested in dicts, lists, tuples, arrays) as None."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def to_json(obj: Any, **kwargs) -> str:
    """`json.dumps` of `obj` with non-finite floats as null (`allow_nan=False` guards the rest)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def json_line(obj: Any) -> str:
    """One line of a `.jsonl` file, newline included."""
    return to_json(obj) + "\n"


def write_json(path, obj: Any) -> None:
    """`obj` as indented strict JSON, atomically."""
    write_atomic(path, to_json(obj, indent=2) + "\n")


def append_lines(path, lines: Iterable[str]) -> int:
    """Append `lines` to `path` in one write, then flush and fsync (durable before what comes next);
    returns the file's new size in bytes."""
    data = "".join(lines).encode()
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def remove_temp_files(folder, stem: str = "") -> list[Path]:
    """Delete the temp files an interrupted atomic write left in `folder` (of `stem` only if given)."""
    left = sorted(Path(folder).glob(f"{TEMP_PREFIX}{stem}*"))
    for p in left:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return left

"""Write the fingerprint of the CAISO source CSVs that CI checks the shipped profiles against.

The CSVs (`shared/data/caiso/caiso_2023_train_hourly.csv`, `caiso_2024_test_hourly.csv`)
live beside the checkout, not in it, so `tests/test_profiles.py` cannot read them in CI.
This script reads them and writes `tests/data/caiso_fingerprint.json`, which the tests
compare with `pgjax/data/profiles/caiso_*.npz`:
- per source file: its SHA-256, row count and first time stamp (UTC);
- per column that the shipped data keeps (the cleaning of `scripts/extract_profiles.py`:
  all-zero columns dropped, negative `load_*` values clipped to 0), the SHA-256 of its
  float32 little-endian values after that cleaning, and their sum, minimum and maximum
  (to say how a mismatch differs);
- an extract: every column's cleaned values at `EXTRACT_ROWS` evenly spaced rows.

    python scripts/fingerprint_profiles.py [DATA_DIR]

DATA_DIR holds `caiso/` (default: `../shared/data` relative to the repo root). With the
source present, the tests also check that the stored fingerprint equals a fresh one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "caiso_fingerprint.json"
SOURCES = {"caiso_2023": "caiso_2023_train_hourly.csv", "caiso_2024": "caiso_2024_test_hourly.csv"}
EXTRACT_ROWS = 12


def column_sha256(values) -> str:
    """SHA-256 of `values` as float32 little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def _short(values) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    return [float(str(x)) for x in np.asarray(values, np.float32)]


def cleaned_columns(path: Path) -> tuple[dict, list, list]:
    """`({column: float32 values}, dropped columns, time stamps)` of one source CSV, cleaned
    as `scripts/extract_profiles.py` does."""
    import pandas as pd

    df = pd.read_csv(path, index_col=0)
    columns, dropped = {}, []
    for col in df.columns:
        v = df[col].to_numpy(np.float64)
        if np.all(v == 0):
            dropped.append(col)
            continue
        if col.startswith("load_"):
            v = np.maximum(v, 0.0)
        columns[col] = v.astype(np.float32)
    return columns, dropped, list(df.index)


def fingerprint(data_dir: Path) -> dict:
    """The fingerprint (see the module docstring) of the CSVs under `data_dir / "caiso"`."""
    out = {"about": "CAISO OASIS hourly series (shared/data/caiso, see pgjax/data/profiles/README.md); "
                    "written by scripts/fingerprint_profiles.py; column hashes: SHA-256 of float32 "
                    "little-endian values after extract_profiles.py's cleaning",
           "datasets": {}}
    for name, file in SOURCES.items():
        path = data_dir / "caiso" / file
        columns, dropped, stamps = cleaned_columns(path)
        n = len(stamps)
        rows = np.linspace(0, n - 1, EXTRACT_ROWS).round().astype(int).tolist()
        out["datasets"][name] = {
            "file": f"caiso/{file}",
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "rows": n,
            "first_utc": str(stamps[0]),
            "dropped": dropped,
            "columns": {c: {"sha256": column_sha256(v), "sum": round(float(np.sum(v, dtype=np.float64)), 6),
                            "min": _short([v.min()])[0], "max": _short([v.max()])[0]} for c, v in columns.items()},
            "extract_rows": rows,
            "extract": {c: _short(v[rows]) for c, v in columns.items()},
        }
    return out


def dumps(fp: dict) -> str:
    """JSON text with one line per column (diffable, compact)."""
    lines = ["{", f' "about": {json.dumps(fp["about"])},', ' "datasets": {']
    for i, (name, d) in enumerate(fp["datasets"].items()):
        lines.append(f"  {json.dumps(name)}: {{")
        for key in ("file", "file_sha256", "rows", "first_utc", "dropped", "extract_rows"):
            lines.append(f"   {json.dumps(key)}: {json.dumps(d[key])},")
        for key in ("columns", "extract"):
            lines.append(f"   {json.dumps(key)}: {{")
            items = [f"    {json.dumps(c)}: {json.dumps(v)}" for c, v in d[key].items()]
            lines.append(",\n".join(items))
            lines.append("   }" + ("," if key == "columns" else ""))
        lines.append("  }" + ("," if i < len(fp["datasets"]) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    fp = fingerprint(args.data_dir)
    text = dumps(fp)
    assert json.loads(text) == fp
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()

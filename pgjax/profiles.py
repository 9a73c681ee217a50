"""Real time series shipped with pgjax (load, renewables, prices) and a loader for your own.

Shipped datasets (`pgjax/data/profiles/`, sources, licences and cleaning in its README.md;
nothing is downloaded at run time):

| dataset | steps | series | units |
| --- | --- | --- | --- |
| `caiso_2023` (train) | 8760 x 1 h from 2023-01-01 08:00 UTC | 34 CAISO load areas `load_*`, solar / wind at NP15, SP15, ZP26 `solar_*`, `wind_*`, day-ahead LMP `price_0096WD_7_N001` | loads: per unit of the area's 2023-2024 maximum; solar / wind: per unit of the hub's 2023-2024 maximum output, in [0, 1]; price: $/MWh |
| `caiso_2024` (test) | 8784 x 1 h from 2024-01-01 08:00 UTC | same as 2023 | same |
| `smard_2018` | 8760 x 1 h from 2018-01-01 00:00 CET | day-ahead prices `price_DE_LU`, `price_AT`, `price_FR`, ... | EUR/MWh |
| `simbench_2016` | 35136 x 15 min from 2016-01-01 00:00 CET | SimBench standard load profiles `load_H0-A`, `load_G1-A`, ..., PV `solar_PV*`, wind `wind_WP*` | loads: per unit of their annual maximum (max 1); PV / wind: per unit of installed power (capacity factor), in [0, 1] |

Known flaws kept in the CAISO data (see the README): `wind_ZP26` is constant in 2023 and in
the first 913 h of 2024; `load_EPE`, `load_WALC`, `load_WALCAEPCO`, `load_WALCDSW` are
constant for the first 2099 h of 2023. Drop them with `select` where that matters.

Every step is an interval average starting at its time stamp (`start + k * dt_h`).

    >>> from pgjax import profiles
    >>> p = profiles.load("caiso_2023")
    >>> pv = profiles.select(p, ["solar_SP15", "load_CA ISO-TAC"])
    >>> q = profiles.resample(pv, 0.25)          # 15-min steps (step-hold)
    >>> x = profiles.to_jax(q)                   # jnp array [35040, 2]
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pgjax.errors import DataError, brief

DATA = Path(__file__).resolve().parent / "data" / "profiles"

DATASETS = {
    "caiso_2023": "caiso_2023.npz",
    "caiso_2024": "caiso_2024.npz",
    "smard_2018": "smard_2018.npz",
    "simbench_2016": "simbench_profiles.npz",
}

_META = ("_names", "_units", "_start", "_dt_h", "_source", "_cleaning")


@dataclasses.dataclass(frozen=True, eq=False)
class Profiles:
    """Time series on a uniform grid.

    Attributes:
        values: `[n_steps, n_series]` array (float32 for shipped data); row `k` is the
            average over `[start + k * dt_h, start + (k + 1) * dt_h)`.
        names: series names, one per column of `values`.
        dt_h: step length in hours (1.0 hourly, 0.25 for 15 min).
        start: ISO 8601 time of the first step (UTC offset included when known, empty if
            unknown).
        units: series name -> unit, e.g. `"pu ..."` (per-unit multiplier of a reference
            power), `"$/MWh"`, `"EUR/MWh"`.
        source: where the data come from (with licence for shipped data).
    """

    values: np.ndarray
    names: tuple[str, ...]
    dt_h: float
    start: str = ""
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        v = self.values
        if v.ndim != 2 or v.shape[1] != len(self.names):
            raise ValueError(f"values has shape {v.shape}, expected [n_steps, {len(self.names)}]")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate series names in {self.names}")
        if not (self.dt_h > 0):
            raise ValueError(f"dt_h must be positive, got {self.dt_h}")

    @property
    def n_steps(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, name: str) -> np.ndarray:
        """The column of one series, `[n_steps]`."""
        return self.values[:, self.index(name)]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no series {name!r}; available: {', '.join(self.names)}") from None


def datasets() -> list[str]:
    """Names of the shipped datasets."""
    return sorted(DATASETS)


def load(dataset: str) -> Profiles:
    """A shipped dataset (see the module docstring for names, units and steps).

    Values are float32. The `.npz` files are built by `scripts/extract_profiles.py`.
    """
    if dataset not in DATASETS:
        raise KeyError(f"unknown dataset {dataset!r}; shipped: {', '.join(datasets())}")
    path = DATA / DATASETS[dataset]
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(n) for n in z["_names"])
        values = np.stack([z[n].astype(np.float32) for n in names], axis=1)
        return Profiles(values=values, names=names, dt_h=float(z["_dt_h"]), start=str(z["_start"]),
                        units=json.loads(str(z["_units"])), source=str(z["_source"]))


def cleaning(dataset: str) -> dict:
    """What `scripts/extract_profiles.py` changed or flagged in a shipped dataset."""
    if dataset not in DATASETS:
        raise KeyError(f"unknown dataset {dataset!r}; shipped: {', '.join(datasets())}")
    with np.load(DATA / DATASETS[dataset], allow_pickle=False) as z:
        return json.loads(str(z["_cleaning"]))


def start_hour(start: str) -> float:
    """Local hour of day, in [0, 24), of a first step stamped `start` (a `Profiles.start`).

    The shipped CAISO series are stamped in UTC and start at local (PST, UTC-8) midnight:
    a UTC stamp at 08:00 reads as 0. Other stamps count as given (their own local time);
    an empty or unparsable stamp as 0.
    """
    try:
        t = datetime.datetime.fromisoformat(start)
    except (ValueError, TypeError):
        return 0.0
    if t.utcoffset() is not None and t.utcoffset().total_seconds() == 0 and t.hour == 8:
        return 0.0
    return t.hour + t.minute / 60


def select(profiles: Profiles, names: Sequence[str] | str) -> Profiles:
    """The series `names` (in that order) of `profiles`; a single name is allowed too."""
    if isinstance(names, str):
        names = [names]
    cols = [profiles.index(n) for n in names]
    return dataclasses.replace(profiles, values=profiles.values[:, cols], names=tuple(names),
                               units={n: profiles.units[n] for n in names if n in profiles.units})


def _ratio(a: float, b: float) -> int | None:
    r = a / b
    k = round(r)
    return k if k >= 1 and math.isclose(r, k, rel_tol=1e-9) else None


def resample(profiles: Profiles, dt_h: float, method: str = "repeat") -> Profiles:
    """Change the step to `dt_h` hours (an integer multiple or fraction of the current step).

    Coarsening averages each block of `k = dt_h / profiles.dt_h` steps (interval means, so
    energy is conserved); `n_steps` must be a multiple of `k` (trim with
    `dataclasses.replace(p, values=p.values[:m])` otherwise).

    Refining splits each step into `k = profiles.dt_h / dt_h` sub-steps:
      - `method="repeat"` (default): each sub-step holds the step's value (step-hold). The
        mean over each original step is unchanged, so refine-then-coarsen gives the input
        back exactly.
      - `method="linear"`: linear interpolation between step centres (values held flat
        before the first and after the last centre). Smoother, but block means differ
        slightly from the input.
    """
    k_coarse = _ratio(dt_h, profiles.dt_h)
    k_fine = _ratio(profiles.dt_h, dt_h)
    v = profiles.values
    if k_coarse == 1:
        return profiles
    if k_coarse is not None:
        n = v.shape[0]
        if n % k_coarse:
            raise ValueError(f"cannot average {n} steps of {profiles.dt_h} h into blocks of "
                             f"{k_coarse} ({dt_h} h): {n} is not a multiple of {k_coarse}")
        out = v.reshape(n // k_coarse, k_coarse, -1).mean(axis=1, dtype=np.float64).astype(v.dtype)
    elif k_fine is not None:
        if method == "repeat":
            out = np.repeat(v, k_fine, axis=0)
        elif method == "linear":
            n = v.shape[0]
            centres = np.arange(n) + 0.5  # in old steps
            fine = (np.arange(n * k_fine) + 0.5) / k_fine
            out = np.stack([np.interp(fine, centres, v[:, j]) for j in range(v.shape[1])],
                           axis=1).astype(v.dtype)
        else:
            raise ValueError(f"unknown method {method!r}: use 'repeat' or 'linear'")
    else:
        raise ValueError(f"dt_h {dt_h} h is neither an integer multiple nor an integer fraction "
                         f"of the current step {profiles.dt_h} h")
    return dataclasses.replace(profiles, values=out, dt_h=float(dt_h))


def to_jax(profiles: Profiles, dtype=None):
    """`profiles.values` as a `jnp` array `[n_steps, n_series]` (default dtype float32)."""
    import jax.numpy as jnp

    return jnp.asarray(profiles.values, dtype=jnp.float32 if dtype is None else dtype)


def from_csv(path: str | Path, time_column: str | None = None, dt_h: float | None = None,
             columns: Sequence[str] | None = None, units: dict[str, str] | None = None,
             delimiter: str = ",", dtype=np.float32) -> Profiles:
    """Read your own time series: one header row, one row per step, one column per series.

    Args:
        path: CSV file.
        time_column: name of a time-stamp column (any format `numpy.datetime64` or pandas
            parses); used for `start` and, when `dt_h` is not given, to infer the step,
            which must then be uniform. Not part of `values`.
        dt_h: step in hours. Required when there is no `time_column`.
        columns: series to read (default: every column except `time_column`).
        units: series name -> unit, stored in `Profiles.units` (not interpreted).
        delimiter: field separator.
        dtype: dtype of `values`.

    Raises:
        `pgjax.errors.DataError` (a `ValueError`) naming the file, column and row (1-based
        file line, header = line 1) of the first missing, non-numeric or non-finite value,
        a ragged row, a missing column, a time stamp that does not increase or a
        non-uniform time step; or naming the file that is not UTF-8 text / not CSV.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte offset {e.start}); expected a CSV file") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    while body and len(body[-1]) <= 1 and not any(c.strip() for c in body[-1]):
        body.pop()  # trailing blank lines (a row of empty fields, ",,", is a row of missing values)
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dup}")
    if time_column is not None and time_column not in header:
        raise DataError(f"{path}: time column {time_column!r} not found; columns: {brief(header, 200)}")
    if columns is None:
        columns = [h for h in header if h != time_column]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; columns: {brief(header, 200)}")
    if not columns:
        raise DataError(f"{path}: no value columns")
    idx = [header.index(c) for c in columns]

    values = np.empty((len(body), len(columns)), dtype=np.float64)
    for r, row in enumerate(body):
        line = r + 2
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} fields, the header has {len(header)}")
        for j, (c, i) in enumerate(zip(columns, idx)):
            cell = row[i].strip()
            if cell == "":
                raise DataError(f"{path}: column {c!r}, row {line}: missing value")
            try:
                x = float(cell)
            except ValueError:
                raise DataError(f"{path}: column {c!r}, row {line}: {brief(cell)} is not a number") from None
            if not math.isfinite(x):
                raise DataError(f"{path}: column {c!r}, row {line}: {cell!r} is not finite")
            values[r, j] = x

    start = ""
    if time_column is not None:
        start, inferred = _time_axis(path, [row[header.index(time_column)].strip() for row in body],
                                     time_column)
        if dt_h is None:
            if inferred is None:
                raise DataError(f"{path}: column {time_column!r}: need two rows to infer dt_h; pass dt_h")
            dt_h = inferred
    if dt_h is None:
        raise DataError(f"{path}: pass dt_h (step in hours) or a time_column to infer it from")
    if not (math.isfinite(dt_h) and dt_h > 0):
        raise DataError(f"{path}: dt_h must be a finite step > 0 hours, got {dt_h!r}")
    return Profiles(values=values.astype(dtype), names=tuple(columns), dt_h=float(dt_h), start=start,
                    units=dict(units or {}), source=str(path))


def _time_axis(path: Path, stamps: list[str], col: str) -> tuple[str, float | None]:
    import pandas as pd

    t = []
    for r, s in enumerate(stamps):
        try:
            t.append(pd.Timestamp(s))
        except (ValueError, TypeError):
            raise DataError(f"{path}: column {col!r}, row {r + 2}: {brief(s)} is not a time stamp") from None
        if t[-1] is pd.NaT:
            raise DataError(f"{path}: column {col!r}, row {r + 2}: missing time stamp")
    if len(t) < 2:
        return t[0].isoformat(), None
    try:
        steps = [(b - a) / pd.Timedelta(hours=1) for a, b in itertools.pairwise(t)]
    except TypeError:
        raise DataError(f"{path}: column {col!r}: mixes time stamps with and without time zone") from None
    for r, s in enumerate(steps):
        if s <= 0:
            raise DataError(f"{path}: column {col!r}, row {r + 3}: time stamp {brief(stamps[r + 1])} does not come "
                            f"after {brief(stamps[r])} (time stamps must increase)")
        if not math.isclose(s, steps[0], rel_tol=1e-9):
            raise DataError(f"{path}: column {col!r}, row {r + 3}: step {s} h differs from the first "
                            f"step {steps[0]} h (time steps must be uniform)")
    return t[0].isoformat(), steps[0]

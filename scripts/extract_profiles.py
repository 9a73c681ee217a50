"""Build the compact time-series files shipped in `pgjax/data/profiles/` (developer tool).

Not used at run time: `pgjax.profiles.load` only reads the `.npz` files written here.

    python scripts/extract_profiles.py [DATA_DIR]

DATA_DIR holds `caiso/` and `prices/` (default: `../shared/data` relative to the repo root).
SimBench profiles come from the installed `simbench` package. Each `.npz` holds one array
per series (keyed by its name) plus the metadata keys `_names` (column order), `_units`
(JSON name -> unit), `_start` (ISO 8601 time of the first step), `_dt_h` (step in hours)
and `_source`. Every cleaning step is printed and summarised in `_cleaning` (JSON), which
`pgjax/data/profiles/README.md` reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "pgjax" / "data" / "profiles"

# SimBench series shipped (active power only). Loads are SimBench's elementary standard
# load profiles (H0 households, G commercial, L agricultural); renewables are PV and wind
# park profiles from different locations.
SIMBENCH_CODE = "1-complete_data-mixed-all-0-sw"
SIMBENCH_LOADS = ["H0-A", "H0-B", "H0-C", "G0-A", "G1-A", "G4-A", "L0-A", "L2-A"]
SIMBENCH_PV = ["PV1", "PV3", "PV5", "PV8"]
SIMBENCH_WIND = ["WP1", "WP4", "WP7", "WP10"]

# SMARD column -> shipped name. DE_LU and AT are spliced (see smard()).
SMARD_ZONES = {
    "France": "FR", "Netherlands": "NL", "Denmark 1": "DK1", "Denmark 2": "DK2",
    "Northern Italy": "IT_NORD", "Switzerland": "CH", "Czech Republic": "CZ",
    "Hungary": "HU", "Slovenia": "SI", "Sweden 4": "SE4",
}


def _save(name: str, series: dict[str, np.ndarray], units: dict[str, str], start: str,
          dt_h: float, source: str, cleaning: dict, dtype=np.float32) -> Path:
    names = list(series)
    n = {len(v) for v in series.values()}
    assert len(n) == 1, f"{name}: series lengths differ {n}"
    for k, v in series.items():
        assert np.all(np.isfinite(v)), f"{name}: {k} has non-finite values"
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in series.items()}
    meta = {
        "_names": np.array(names),
        "_units": np.array(json.dumps(units)),
        "_start": np.array(start),
        "_dt_h": np.array(dt_h, dtype=np.float64),
        "_source": np.array(source),
        "_cleaning": np.array(json.dumps(cleaning)),
    }
    path = OUT / f"{name}.npz"
    np.savez_compressed(path, **arrays, **meta)
    print(f"wrote {path.relative_to(REPO)}: {len(names)} series x {n.pop()} steps "
          f"({np.dtype(dtype).name}), {path.stat().st_size / 1e6:.2f} MB")
    return path


def _utc_start(index: pd.DatetimeIndex, dt_h: float, what: str) -> str:
    steps = index.to_series().diff().dropna().unique()
    if len(steps) != 1 or steps[0] != pd.Timedelta(hours=dt_h):
        raise ValueError(f"{what}: time steps are not a uniform {dt_h} h: {steps}")
    return index[0].tz_convert("UTC").isoformat()


def caiso(data: Path, year: int) -> None:
    split = {2023: "train", 2024: "test"}[year]
    path = data / "caiso" / f"caiso_{year}_{split}_hourly.csv"
    df = pd.read_csv(path, index_col=0)
    df.index = pd.to_datetime(df.index, utc=True)
    if df.isna().any().any():
        raise ValueError(f"{path}: unexpected missing values {df.isna().sum()[df.isna().sum() > 0]}")
    start = _utc_start(df.index, 1.0, str(path))
    cleaning: dict = {"source_rows": len(df), "dropped_columns": {}, "clipped_negative_to_zero": {},
                      "flagged_not_cleaned": {}}
    series: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for col in df.columns:
        v = df[col].to_numpy(dtype=np.float64)
        if np.all(v == 0):
            cleaning["dropped_columns"][col] = "all zero"
            print(f"  {year}: drop {col} (all zero)")
            continue
        if col.startswith("load_"):
            neg = int(np.sum(v < 0))
            if neg:
                cleaning["clipped_negative_to_zero"][col] = {"count": neg, "min": float(v.min())}
                print(f"  {year}: clip {neg} negative values of {col} (min {v.min():.4f}) to 0")
                v = np.maximum(v, 0.0)
            units[col] = "pu (load / 2023-2024 max load of the area)"
        elif col.startswith(("solar_", "wind_")):
            assert v.min() >= 0 and v.max() <= 1, col
            units[col] = "pu (output / 2023-2024 max output of the hub), in [0, 1]"
        elif col.startswith("price_"):
            units[col] = "$/MWh"
        else:
            raise ValueError(f"{path}: unknown column kind {col!r}")
        # long constant stretches are back-filled source gaps: flag, keep
        change = np.flatnonzero(np.diff(v) != 0)
        run_starts = np.r_[0, change + 1]
        runs = np.diff(np.r_[run_starts, len(v)])
        i = int(runs.argmax())
        if runs[i] >= 48:
            cleaning["flagged_not_cleaned"][col] = {
                "constant_hours": int(runs[i]), "from": df.index[run_starts[i]].isoformat(),
                "value": float(v[run_starts[i]])}
            print(f"  {year}: flag {col}: constant for {runs[i]} h from {df.index[run_starts[i]]}")
        series[col] = v
    _save(f"caiso_{year}", series, units, start, 1.0,
          "CAISO OASIS public market data (SLD_FCST actual load, SLD_REN_FCST actual renewables, "
          "PRC_LMP day-ahead LMP at node 0096WD_7_N001), hourly, UTC", cleaning)


def smard(data: Path) -> None:
    path = data / "prices" / "smard_day_ahead_2018.csv"
    df = pd.read_csv(path, sep=";", na_values="-", encoding="utf-8-sig")
    df.columns = [c.replace("[€/MWh]", "").strip() for c in df.columns]
    local = pd.to_datetime(df["Date"] + " " + df["Time of day"], format="%b %d, %Y %I:%M %p")
    # SMARD labels are local time (Europe/Berlin); the duplicated 02:00 of 2018-10-28 is DST then CET
    index = pd.DatetimeIndex(local).tz_localize("Europe/Berlin", ambiguous="infer")
    start = _utc_start(index, 1.0, str(path))
    df.index = index
    split = pd.Timestamp("2018-10-01", tz="Europe/Berlin")
    before = df.index < split
    cleaning: dict = {"source_rows": len(df), "interpolated_missing": {},
                      "spliced": {}, "dropped_columns": {}}
    series: dict[str, pd.Series] = {}

    def splice(name, old, new):
        s = df[old].where(before, df[new])
        cleaning["spliced"][name] = f"'{old}' until 2018-09-30 23:00 local, '{new}' from 2018-10-01"
        return s

    series["price_DE_LU"] = splice("price_DE_LU", "Germany/Austria/Luxembourg", "Germany/Luxembourg")
    series["price_AT"] = splice("price_AT", "Germany/Austria/Luxembourg", "Austria")
    for col, short in SMARD_ZONES.items():
        series[f"price_{short}"] = df[col]
    for col in df.columns[2:]:
        if df[col].isna().all():
            cleaning["dropped_columns"][col] = "no values in 2018"
    out = {}
    for name, s in series.items():
        n_missing = int(s.isna().sum())
        if n_missing:
            s = s.interpolate(method="time", limit_direction="both")
        cleaning["interpolated_missing"][name] = n_missing
        print(f"  smard: {name}: {n_missing} missing values time-interpolated")
        out[name] = s.to_numpy(dtype=np.float64)
    units = {k: "EUR/MWh" for k in out}
    _save("smard_2018", out, units, start, 1.0,
          "Bundesnetzagentur | SMARD.de (CC BY 4.0), day-ahead prices 2018, hourly", cleaning)


def simbench_profiles() -> None:
    import simbench

    net = simbench.get_simbench_net(SIMBENCH_CODE)
    load = net.profiles["load"]
    res = net.profiles["renewables"]
    time = pd.to_datetime(load["time"], format="%d.%m.%Y %H:%M")
    assert (pd.to_datetime(res["time"], format="%d.%m.%Y %H:%M").values == time.values).all()
    # SimBench stamps are German local time: 02:00-02:45 missing on 2016-03-27, repeated on
    # 2016-10-30, so the 35136 rows are consecutive quarter hours.
    index = pd.DatetimeIndex(time).tz_localize("Europe/Berlin", ambiguous="infer")
    start = _utc_start(index, 0.25, "simbench")
    cleaning: dict = {"normalised_to_max_1": {}, "clipped_negative_to_zero": {}}
    series: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for p in SIMBENCH_LOADS:
        v = load[f"{p}_pload"].to_numpy(dtype=np.float64)
        assert v.min() >= 0, p
        if v.max() != 1.0:
            cleaning["normalised_to_max_1"][p] = float(v.max())
        series[f"load_{p}"] = v / v.max()
        units[f"load_{p}"] = "pu (active power / annual max), max 1"
    for kind, names in (("solar", SIMBENCH_PV), ("wind", SIMBENCH_WIND)):
        for p in names:
            v = res[p].to_numpy(dtype=np.float64)
            neg = int(np.sum(v < 0))
            if neg:
                cleaning["clipped_negative_to_zero"][p] = {"count": neg, "min": float(v.min())}
                v = np.maximum(v, 0.0)
            assert v.max() <= 1.0, p
            series[f"{kind}_{p}"] = v
            units[f"{kind}_{p}"] = "pu of installed power (capacity factor), in [0, 1]"
    print(f"  simbench: {cleaning}")
    # float32 (1.1 MB compressed) keeps the total well under the 5 MB budget; float16 would
    # halve it at ~3 significant digits if more series are ever added.
    _save("simbench_profiles", series, units, start, 0.25,
          f"SimBench {simbench.__version__} dataset {SIMBENCH_CODE} (ODbL 1.0 / DbCL 1.0), "
          "15-min profiles 2016", cleaning, dtype=np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data"),
                    help="folder with caiso/ and prices/ (default: ../shared/data)")
    ap.add_argument("--skip-simbench", action="store_true")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "caiso").is_dir():
        ap.error(f"{data}/caiso not found")
    OUT.mkdir(parents=True, exist_ok=True)
    caiso(data, 2023)
    caiso(data, 2024)
    smard(data)
    if not args.skip_simbench:
        simbench_profiles()
    total = sum(p.stat().st_size for p in OUT.glob("*.npz"))
    print(f"total {total / 1e6:.2f} MB in {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

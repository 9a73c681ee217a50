"""Shipped time-series data (`pgjax/data/profiles`) and the `pgjax.profiles` API."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pgjax import profiles as P
from pgjax.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Fingerprint of the CAISO source CSVs (hashes, statistics, an extract), written from SHARED by
# scripts/fingerprint_profiles.py, so that CI (without SHARED) checks the shipped data too.
FINGERPRINT = Path(__file__).resolve().parent / "data" / "caiso_fingerprint.json"
_spec = importlib.util.spec_from_file_location(
    "fingerprint_profiles", Path(__file__).resolve().parents[1] / "scripts" / "fingerprint_profiles.py")
fingerprint_profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fingerprint_profiles)

# (n_steps, dt_h, start, n_series); CAISO hours are counted from the CSVs (2024 is a leap year)
EXPECTED = {
    "caiso_2023": (8760, 1.0, "2023-01-01T08:00:00+00:00", 41),
    "caiso_2024": (8784, 1.0, "2024-01-01T08:00:00+00:00", 41),
    "smard_2018": (8760, 1.0, "2017-12-31T23:00:00+00:00", 12),
    "simbench_2016": (35136, 0.25, "2015-12-31T23:00:00+00:00", 16),
}


@pytest.fixture(scope="module")
def data():
    return {d: P.load(d) for d in P.datasets()}


def test_datasets_listed():
    assert P.datasets() == sorted(EXPECTED)
    with pytest.raises(KeyError, match="caiso_2023"):
        P.load("caiso_2025")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_shapes_and_values(data, name):
    p = data[name]
    n, dt_h, start, n_series = EXPECTED[name]
    assert p.values.shape == (n, n_series)
    assert p.values.dtype == np.float32
    assert p.dt_h == dt_h and p.start == start
    assert np.all(np.isfinite(p.values))
    assert set(p.units) == set(p.names)
    for i, s in enumerate(p.names):
        col = p.values[:, i]
        if s.startswith(("solar_", "wind_")):
            assert col.min() >= 0.0 and col.max() <= 1.0, s
        elif s.startswith("load_"):
            assert col.min() >= 0.0, s
            assert col.max() <= 1.0 + 1e-6, s
        else:
            assert s.startswith("price_"), s
        assert np.ptp(col) > 0 or s == "wind_ZP26", f"{s} is constant"


def test_caiso_cleaning(data):
    for year in (2023, 2024):
        p = data[f"caiso_{year}"]
        assert "load_AVRN" not in p.names  # all zero in the source: dropped
        assert data["caiso_2023"].names == p.names  # train and test share columns
        assert P.cleaning(f"caiso_{year}")["dropped_columns"] == {"load_AVRN": "all zero"}
    clipped = P.cleaning("caiso_2023")["clipped_negative_to_zero"]
    assert {k: v["count"] for k, v in clipped.items()} == {"load_AZPS": 2, "load_VEA-TAC": 13}
    clipped = P.cleaning("caiso_2024")["clipped_negative_to_zero"]
    assert {k: v["count"] for k, v in clipped.items()} == {
        "load_AZPS": 1, "load_VEA-TAC": 1, "load_WALCDSW": 5}
    assert np.ptp(data["caiso_2023"]["wind_ZP26"]) == 0  # known source flaw, kept and flagged
    assert "wind_ZP26" in P.cleaning("caiso_2023")["flagged_not_cleaned"]


def test_price_statistics(data):
    """Annual means and extremes that the source CSVs give (checked when the files were built)."""
    c23 = data["caiso_2023"]["price_0096WD_7_N001"].astype(np.float64)
    c24 = data["caiso_2024"]["price_0096WD_7_N001"].astype(np.float64)
    assert c23.mean() == pytest.approx(56.354766, abs=1e-4)
    assert c24.mean() == pytest.approx(33.275185, abs=1e-4)
    assert c23.min() == pytest.approx(-24.123, abs=1e-3) and c23.max() == pytest.approx(1099.76, abs=1e-2)
    assert data["caiso_2023"].units["price_0096WD_7_N001"] == "$/MWh"
    de = data["smard_2018"]["price_DE_LU"].astype(np.float64)
    assert 30 < de.mean() < 60  # EUR/MWh
    assert de.mean() == pytest.approx((41.728414 * 6551 + 52.596152 * 2209) / 8760, abs=1e-4)
    assert data["smard_2018"].units["price_DE_LU"] == "EUR/MWh"


def test_simbench_profiles(data):
    p = data["simbench_2016"]
    loads = [n for n in p.names if n.startswith("load_")]
    assert {"load_H0-A", "load_G1-A", "load_L0-A"} <= set(loads)
    assert np.allclose(p.values[:, [p.index(n) for n in loads]].max(axis=0), 1.0)
    assert 0.5 < p["solar_PV1"].max() < 0.7  # capacity factor, not rescaled to 1
    assert p["solar_PV1"][:20].max() == 0  # night at the start of the year


@pytest.mark.parametrize("name", ["caiso_2023", "caiso_2024"])
def test_caiso_matches_source_fingerprint(data, name):
    """The shipped CAISO data against the fingerprint of its source CSVs: same columns in the
    same order (the all-zero one dropped), rows, start, every column's hash of the cleaned
    float32 values, and the extract's values."""
    fp = json.loads(FINGERPRINT.read_text())["datasets"][name]
    p = data[name]
    assert p.names == tuple(fp["columns"]) and not set(fp["dropped"]) & set(p.names)
    assert p.values.shape[0] == fp["rows"]
    assert p.start == fp["first_utc"].replace(" ", "T")
    wrong = {}
    for n in p.names:
        col, ref = p[n], fp["columns"][n]
        if fingerprint_profiles.column_sha256(col) != ref["sha256"]:
            wrong[n] = {"shipped": {"sum": float(col.sum(dtype=np.float64)), "min": float(col.min()),
                                    "max": float(col.max())}, "source": ref}
    assert not wrong, f"{name}: shipped columns differ from the source fingerprint: {wrong}"
    rows = fp["extract_rows"]
    for n, values in fp["extract"].items():
        np.testing.assert_array_equal(p[n][rows], np.asarray(values, np.float32), err_msg=n)


@pytest.mark.skipif(not (SHARED / "caiso").is_dir(), reason="source CSVs only on the build machine")
def test_caiso_matches_source_csv(data):
    """With the source at hand: the full comparison, and the stored fingerprint is the source's."""
    import pandas as pd

    for year, split in ((2023, "train"), (2024, "test")):
        df = pd.read_csv(SHARED / "caiso" / f"caiso_{year}_{split}_hourly.csv", index_col=0)
        p = data[f"caiso_{year}"]
        for n in p.names:
            src = df[n].to_numpy(np.float32)
            if n.startswith("load_"):
                src = np.maximum(src, 0)
            np.testing.assert_array_equal(p[n], src, err_msg=n)
    assert fingerprint_profiles.fingerprint(SHARED) == json.loads(FINGERPRINT.read_text()), \
        "tests/data/caiso_fingerprint.json is stale: run scripts/fingerprint_profiles.py"


def test_select(data):
    p = P.select(data["caiso_2023"], ["solar_SP15", "load_PGE"])
    assert p.names == ("solar_SP15", "load_PGE") and p.values.shape == (8760, 2)
    np.testing.assert_array_equal(p.values[:, 1], data["caiso_2023"]["load_PGE"])
    assert set(p.units) == set(p.names)
    with pytest.raises(KeyError, match="no series 'nope'"):
        P.select(p, ["nope"])


def test_resample_round_trip(data):
    p = P.select(data["caiso_2023"], ["solar_SP15", "price_0096WD_7_N001"])
    q = P.resample(p, 0.25)
    assert q.dt_h == 0.25 and q.values.shape == (4 * 8760, 2)
    back = P.resample(q, 1.0)
    np.testing.assert_array_equal(back.values, p.values)
    lin = P.resample(p, 0.25, method="linear")
    assert lin.values.shape == q.values.shape
    np.testing.assert_allclose(P.resample(lin, 1.0).values.mean(0), p.values.mean(0), rtol=1e-3)
    daily = P.resample(p, 24.0)
    assert daily.values.shape == (365, 2)
    np.testing.assert_allclose(daily.values[0], p.values[:24].mean(0), rtol=1e-6)
    s = P.resample(data["simbench_2016"], 1.0)
    assert s.values.shape == (8784, 16)
    with pytest.raises(ValueError, match="not a multiple"):
        P.resample(dataclasses.replace(p, values=p.values[:10]), 4.0)
    with pytest.raises(ValueError, match="neither"):
        P.resample(p, 0.4)


def test_to_jax(data):
    import jax.numpy as jnp

    p = P.select(data["smard_2018"], ["price_DE_LU"])
    x = P.to_jax(p)
    assert x.shape == (8760, 1) and x.dtype == jnp.float32
    assert P.to_jax(p, jnp.float64).dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(x), p.values)


def test_from_csv_round_trip(tmp_path):
    vals = np.array([[0.1, 2.5, -3.0], [1e-7, 0.0, 123.456], [0.3333333333333333, 7.0, 1.0]])
    path = tmp_path / "mine.csv"
    rows = ["time,load_a,pv,price"] + [
        f"2024-06-01 0{i}:00,{v[0]!r},{v[1]!r},{v[2]!r}" for i, v in enumerate(vals.tolist())]
    path.write_text("\n".join(rows) + "\n")
    p = P.from_csv(path, time_column="time", dtype=np.float64, units={"price": "EUR/MWh"})
    assert p.names == ("load_a", "pv", "price")
    np.testing.assert_array_equal(p.values, vals)
    assert p.dt_h == 1.0 and p.start == "2024-06-01T00:00:00" and p.units == {"price": "EUR/MWh"}
    p32 = P.from_csv(path, time_column="time", columns=["pv", "load_a"])
    assert p32.values.dtype == np.float32 and p32.names == ("pv", "load_a")
    np.testing.assert_array_equal(p32.values, vals[:, [1, 0]].astype(np.float32))
    # without a time column the step must be given
    nt = tmp_path / "nt.csv"
    nt.write_text("a;b\n1;2\n3;4\n")
    q = P.from_csv(nt, delimiter=";", dt_h=0.25)
    np.testing.assert_array_equal(q.values, [[1, 2], [3, 4]])
    with pytest.raises(DataError, match="pass dt_h"):
        P.from_csv(nt, delimiter=";")


@pytest.mark.parametrize("body, col, row, what", [
    ("t,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,1,x\n", "b", 3, "'x' is not a number"),
    ("t,a,b\n2024-01-01 00:00,,2\n2024-01-01 01:00,1,2\n", "a", 2, "missing value"),
    ("t,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,nan,2\n", "a", 3, "not finite"),
    ("t,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,1,2\n2024-01-01 03:00,1,2\n", "t", 4, "uniform"),
    ("t,a,b\n2024-01-01 00:00,1,2\nyesterday,1,2\n", "t", 3, "not a time stamp"),
    ("t,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,1,2\n2024-01-01 00:30,1,2\n", "t", 4, "must increase"),
])
def test_from_csv_errors_name_file_column_row(tmp_path, body, col, row, what):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError) as e:
        P.from_csv(path, time_column="t")
    msg = str(e.value)
    assert str(path) in msg and f"column {col!r}" in msg and f"row {row}" in msg and what in msg, msg


def test_from_csv_structure_errors(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"ragged.csv: row 3 has 1 fields, the header has 2"):
        P.from_csv(path, dt_h=1)
    with pytest.raises(DataError, match=r"ragged.csv: column\(s\) \['c'\] not found"):
        P.from_csv(path, dt_h=1, columns=["c"])
    with pytest.raises(DataError, match="time column 'time' not found"):
        P.from_csv(path, time_column="time")

"""pandapower's `runpp_3ph` (sequence networks) on the European LV feeder equals OpenDSS and
pgjax once its source is a stiff ext_grid behind the source impedance and the transformer
has no zero-sequence magnetizing branch (`pgjax.verification3ph_pandapower`)."""

from __future__ import annotations

import pytest

pytest.importorskip("opendssdirect")
pytest.importorskip("power_grid_model")

from pgjax import verification3ph_pandapower as VPP  # noqa: E402


def test_runpp_3ph_equals_opendss_and_pgjax_on_the_european_lv_feeder():
    row = VPP.compare("european_lv")
    assert row["converged"], row
    assert row["dvm_pu_opendss"] <= 1e-6 and row["dvm_pu_pgjax"] <= 1e-6, row
    assert row["dva_deg_opendss"] <= 1e-4 and row["dva_deg_pgjax"] <= 1e-4, row

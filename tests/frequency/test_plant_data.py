"""The 68-bus plant's droop, governor, inertia, damping and load relief against numbers written here.

Derived by hand from the shipped data (`pgjax/data/ieee68/generators.csv`, the `ieee68`
network) and the assumptions documented in `pgjax.frequency.ieee68`: a 5 % governor droop
on each machine's own base and a 5 s governor lag for every machine, load relief 1.5 pu
power per pu frequency, system base 100 MVA, 60 Hz. Machines 13 and 16 are rated 200 MVA,
the other fourteen 100 MVA, so on the system base (x S_rated / S_base):
- 1/R = 1 / 0.05 x 1 = 20 pu (x 2 = 40 pu for machines 13 and 16);
- M = 2H as in the CSV (x 2 for machines 13 and 16: 496 -> 992 s, 450 -> 900 s);
- D = 10 pu (x 2 = 20 pu for machines 13 and 16);
- load relief: 1.5 x 17,620.7 MW (the network's in-service load) / 100 MVA = 264.3105 pu.
A changed default (droop 0.04, say) or a base conversion dropped fails here even though
the plant stays self-consistent.
"""

from __future__ import annotations

import numpy as np
import pytest

from pgjax.frequency import ieee68


@pytest.fixture(scope="module")
def system():
    return ieee68.build()


def test_governor_droop_and_lag(system):
    want = np.full(16, 20.0)
    want[[12, 15]] = 40.0
    np.testing.assert_array_equal(np.asarray(system.plant.inv_r_pu), want)
    np.testing.assert_array_equal(np.asarray(system.plant.t_gov_s), np.full(16, 5.0))


def test_inertia_and_damping_on_the_system_base(system):
    m = [84.0, 60.4, 71.6, 57.2, 52.0, 69.6, 52.8, 48.6, 69.0, 62.0, 56.4, 184.6, 992.0, 600.0, 600.0, 900.0]
    np.testing.assert_allclose(np.asarray(system.plant.m_s), m, rtol=1e-12)
    d = np.full(16, 10.0)
    d[[12, 15]] = 20.0
    np.testing.assert_array_equal(np.asarray(system.plant.d_pu), d)


def test_load_relief_base_and_frequency(system):
    assert system.s_base_mva == 100.0 and float(system.plant.f0_hz) == 60.0
    np.testing.assert_allclose(float(np.sum(system.plant.load_damping_pu)), 1.5 * 17620.7 / 100.0, rtol=1e-9)
    assert np.all(np.asarray(system.plant.load_damping_pu) >= 0)


def test_documented_defaults():
    assert ieee68.PlantConfig() == ieee68.PlantConfig(governor_droop=0.05, governor_t_s=5.0, load_damping=1.5,
                                                      max_trip_mw=550.0)

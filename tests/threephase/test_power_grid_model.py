"""power-grid-model's asymmetric power flow (the peer of `pgjax bench threephase`) against
pgjax on the feeder it can represent exactly (the European LV test feeder), and the elements
of the IEEE feeders it cannot represent named with the reason."""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("opendssdirect")
pytest.importorskip("power_grid_model")

from power_grid_model import PowerGridModel  # noqa: E402

from pgjax import verification3ph as V  # noqa: E402
from pgjax.converters import opendss  # noqa: E402
from pgjax.converters import power_grid_model as pgm  # noqa: E402
from pgjax.errors import InputError  # noqa: E402
from pgjax.powerflow import threephase  # noqa: E402


def test_pgm_voltages_equal_pgjax_on_the_european_lv_feeder():
    """Three operating points (each load scaled by its own factor in [0.5, 1.5]): PGM's
    batch voltages equal pgjax's (float64) within 1e-6 p.u. at every node and phase."""
    grid, netmap, _ = V.reference("european_lv")
    feeder = pgm.from_engine(opendss.engine())
    kw = np.array([2.0 * (1 + k % 5) for k in range(len(feeder.load_names))])  # 2-10 kW: well off OpenDSS's 1 kW
    factors = np.random.default_rng(1).uniform(0.5, 1.5, (3, len(kw)))
    p_elem, q_elem = kw * factors, 0.3 * kw * factors
    out = PowerGridModel(feeder.input_data).calculate_power_flow(
        symmetric=False, update_data=pgm.load_update(feeder, p_elem, q_elem), error_tolerance=1e-10, max_iterations=50)
    col = np.array([feeder.load_names.index(n.split(".", 1)[1]) for n in netmap.load_names])
    solve = jax.jit(jax.vmap(lambda p, q: threephase.solve(grid, p, q, max_iter=100)))
    res = solve(p_elem[:, col], q_elem[:, col])  # single-phase loads: one branch per element
    assert bool(res.converged.all())
    vb = np.asarray(grid.node.vbase_kv) * 1e3
    v_pgjax = (np.asarray(res.v_re_pu) + 1j * np.asarray(res.v_im_pu)) * vb
    v_pgm = pgm.node_voltages(feeder, out, netmap.node_names)
    assert np.max(np.abs(v_pgm - v_pgjax) / vb) <= 1e-6
    assert np.min(np.asarray(res.vm_pu)[:, vb < 1e3]) < 0.99  # the points load the feeder visibly


@pytest.mark.parametrize("name, elements", [("ieee13", ["Transformer.reg1", "Load.671", "Line.684611"]),
                                            ("ieee123", ["Transformer.reg2a", "Load.s35a", "Line.l1"])])
def test_elements_pgm_cannot_represent_are_named(name, elements):
    dss = opendss.compile_file(V.DATA / V.FEEDERS[name])
    with pytest.raises(InputError) as err:
        pgm.from_engine(dss)
    for reason in ("single-phase regulators", "delta or phase-to-phase loads", "1-phase lines"):
        assert reason in str(err.value)
    for element in elements:
        assert element in str(err.value)

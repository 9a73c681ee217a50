"""`solve` called eagerly (concrete grid, injections and options) runs one compiled program per grid.

Op by op, every eager call retraced and recompiled the solver's loops (case118: 31 s for the
first call, 7 s for each later one); now the first call compiles the solve with the grid
closed over (its host plans still apply) and later calls with the same grid and options reuse
it. The cache is keyed by the grid's values, not its identity: a changed grid is solved anew.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

import pgjax.networks
from pgjax.converters.pandapower import from_pandapower
from pgjax.errors import InputError
from pgjax.powerflow import bus_injections, solve


@pytest.fixture(scope="module")
def case30():
    return from_pandapower(pgjax.networks.load("case30"))[0]


def traces(caplog, fn):
    """The number of programs `fn()` traces for `jit` (jax's own compile log; a hit of the suite's
    persistent compilation cache still traces, so this counts new programs either way)."""
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        jax.block_until_ready(fn())
    return sum(r.getMessage().startswith("Finished tracing") for r in caplog.records)


def test_a_second_eager_solve_traces_nothing_and_equals_the_jitted_solve(case30, caplog):
    p, q = (1.2 * x for x in bus_injections(case30))
    first = solve(case30, p, q)
    assert traces(caplog, lambda: solve(case30, p, q)) == 0
    again = solve(case30, p * 1.01, q)  # new injections, same program
    jitted = jax.jit(lambda p, q: solve(case30, p, q))(p, q)
    assert bool(first.converged) and bool(again.converged)
    np.testing.assert_allclose(first.vm_pu, jitted.vm_pu, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(again.vm_pu) - np.asarray(first.vm_pu)).max() > 1e-6
    assert traces(caplog, lambda: solve(case30, p, q, max_iter=7)) > 0  # other options: their own program


def test_a_changed_grid_is_solved_anew(case30):
    heavier = case30.replace(load=case30.load.replace(p_mw=np.asarray(case30.load.p_mw) * 1.3))
    base, changed = solve(case30), solve(heavier)
    reference = jax.jit(lambda: solve(heavier))()
    np.testing.assert_allclose(changed.vm_pu, reference.vm_pu, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(changed.vm_pu) - np.asarray(base.vm_pu)).max() > 1e-4


def test_eager_errors_still_name_the_input(case30):
    p, q = bus_injections(case30)
    with pytest.raises(InputError, match="p_mw"):
        solve(case30, np.where(np.arange(case30.n_bus) == 3, np.nan, p), q)

"""Padding and stacking: padded entries change no result on real entries."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SOLVE, bucket
from pgjax.grid import NONE, astype, pad, shape_of, stack
from pgjax.powerflow import solve

STACKED = ("case9", "case30", "case33bw")

BUS_FIELDS = ("vm_pu", "va_deg")
BRANCH_FIELDS = ("p_from_mw", "q_from_mvar", "p_to_mw", "q_to_mvar", "loading_percent")


@functools.lru_cache(maxsize=None)
def _unpadded(name):
    from conftest import _case

    net, grid, netmap, ref = _case(name)
    return SOLVE(grid)


def _assert_same(single, other, grid, index=()):
    """`other` (padded, possibly batched at `index`) equals `single` on the real entries."""
    n_bus, n_branch = grid.n_bus, grid.n_branch
    for f in BUS_FIELDS:
        np.testing.assert_allclose(np.asarray(getattr(other, f))[index][:n_bus], getattr(single, f),
                                   rtol=0, atol=1e-9, err_msg=f)
    for f in BRANCH_FIELDS:
        np.testing.assert_allclose(np.asarray(getattr(other, f))[index][:n_branch], getattr(single, f),
                                   rtol=0, atol=1e-7, err_msg=f)
    n_eg, n_gen = shape_of(grid)["ext_grid"], shape_of(grid)["gen"]
    np.testing.assert_allclose(np.asarray(other.slack_p_mw)[index][:n_eg], single.slack_p_mw, atol=1e-7)
    np.testing.assert_allclose(np.asarray(other.slack_q_mvar)[index][:n_eg], single.slack_q_mvar, atol=1e-7)
    np.testing.assert_allclose(np.asarray(other.gen_q_mvar)[index][:n_gen], single.gen_q_mvar, atol=1e-7)
    np.testing.assert_allclose(np.asarray(other.p_loss_mw)[index], single.p_loss_mw, atol=1e-7)
    # padded rows: not energized, no flow, no slack power
    assert not np.any(np.asarray(other.energized)[index][n_bus:])
    assert np.all(np.asarray(other.p_from_mw)[index][n_branch:] == 0)
    assert np.all(np.asarray(other.slack_p_mw)[index][n_eg:] == 0)
    assert bool(np.asarray(other.converged)[index])


@pytest.mark.parametrize("name", STACKED)
def test_padded_grid_gives_same_results(name, case, solved):
    net, grid, netmap, _ = case(name)
    single = _unpadded(name)
    assert bool(single.converged)
    padded = bucket(grid)
    assert padded.n_bus > grid.n_bus and padded.n_branch > grid.n_branch
    assert np.all(np.asarray(padded.bus.bus_type)[grid.n_bus:] == NONE)
    _assert_same(single, solved(name), grid)


def test_stacked_grids_vmap_equals_individual_solves(case):
    grids = [case(name)[1] for name in STACKED]
    batch = stack(grids)
    assert np.asarray(batch.bus.vn_kv).shape == (3, max(g.n_bus for g in grids))
    results = jax.jit(jax.vmap(solve))(batch)
    for i, (name, grid) in enumerate(zip(STACKED, grids)):
        _assert_same(_unpadded(name), results, grid, index=i)


def test_pad_rejects_shrinking_and_unknown_tables(case):
    net, grid, netmap, _ = case("case9")
    with pytest.raises(ValueError, match="bus"):
        pad(grid, n_bus=3)
    with pytest.raises(ValueError, match="n_nodes"):
        pad(grid, n_nodes=20)
    with pytest.raises(ValueError):
        stack([])


def test_astype_casts_floats_only(case):
    net, grid, netmap, _ = case("case9")
    g32 = astype(grid, jnp.float32)
    assert g32.branch.r_pu.dtype == jnp.float32 and g32.bus.vn_kv.dtype == jnp.float32
    assert jnp.issubdtype(g32.branch.from_bus.dtype, jnp.integer)
    assert g32.bus.mask.dtype == jnp.bool_
    np.testing.assert_allclose(g32.branch.x_pu, grid.branch.x_pu, rtol=1e-6)

"""Reference mode (`method="pandapower"`): pandapower's `runpp` inside jit / vmap.

A direct solve on converted pandapower networks agrees with pgjax's own solvers and with
`runpp` on the original net; whole episodes stepped with the JAX method and with
pandapower (same keys, same random actions, batch of 2 under `jit(vmap)` in one `scan`)
agree in voltages, rewards, cost and safety.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_parity

import pgjax
from pgjax import scenario
from pgjax.grid import Grid
from pgjax.powerflow import METHODS, check_method, solve

N_ENVS = 2


@pytest.mark.parametrize("name", ["case9", "phase_shifter", "ieee34_3x_ieee13"])
def test_solve_matches_pgjax_and_runpp(name, case):
    """PV buses (case9), taps and phase shifts (phase_shifter: trafo elements), the feeder."""
    _, grid, netmap, ref_net = case(name)
    ours = solve(grid, method="newton")
    theirs = solve(grid, method="pandapower")
    assert bool(theirs.converged) and int(theirs.iterations) > 0
    assert float(theirs.max_mismatch) <= 1e-9
    for field in ("vm_pu", "va_deg", "p_from_mw", "q_to_mvar", "loading_percent", "slack_p_mw", "gen_q_mvar"):
        a, b = np.asarray(getattr(ours, field)), np.asarray(getattr(theirs, field))
        assert a.dtype == b.dtype and a.shape == b.shape
        tol = {"vm_pu": 1e-8, "va_deg": 1e-6}.get(field, 1e-6)
        assert np.max(np.abs(a - b), initial=0.0) <= tol, field
    assert_parity(theirs, netmap, ref_net)


def test_nonconvergence_is_reported_finite(case):
    _, grid, _, _ = case("case33bw")
    heavy = grid.replace(load=grid.load.replace(p_mw=grid.load.p_mw * 30, q_mvar=grid.load.q_mvar * 30))
    res = solve(heavy, method="pandapower", max_iter=5)
    assert not bool(res.converged) and int(res.iterations) == 5
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_check_method_accepts_every_scenario_and_names_unrepresentable_branches(case):
    assert "pandapower" in METHODS
    for name in scenario.names():
        grid = scenario.compile_scenario(name).grid
        if isinstance(grid, Grid):  # three-phase scenarios (ieee123_3ph) have no pandapower reference
            check_method(grid, "pandapower")
    _, grid, _, _ = case("taps")
    br = grid.branch
    tapped = int(np.flatnonzero(np.asarray(br.tap) != 1)[0])
    r_asym = np.array(br.r_asym_pu)
    r_asym[tapped] = 1e-3
    bad = grid.replace(branch=br.replace(r_asym_pu=r_asym))
    with pytest.raises(ValueError, match=f"branch {tapped} .*asymmetric series impedance"):
        check_method(bad, "pandapower")
    with pytest.raises(ValueError, match=f"branch {tapped} "):
        solve(bad, method="pandapower")


def _episode(env):
    """One full episode of `N_ENVS` environments under `jit(vmap(step))` inside a `scan`."""
    params, steps = env.default_params, env.episode_steps

    @jax.jit
    def run(key):
        k_reset, k_act, k_step = jax.random.split(key, 3)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, N_ENVS), params)
        actions = jax.random.uniform(k_act, (steps, N_ENVS, env.num_agents, env.act_dim), minval=-1, maxval=1)
        keys = jax.random.split(k_step, steps * N_ENVS).reshape(steps, N_ENVS, -1)

        def body(state, xs):
            key, action = xs
            vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
            _, state, reward, _, truncated, info = vstep(key, state, action, params)
            return state, (state.vm_pu, info["final_observation"], reward, info["cost"], info["safety"],
                           info["nonconverged"], truncated)

        return jax.lax.scan(body, state, (keys, actions))[1]

    return [np.asarray(x) for x in run(jax.random.PRNGKey(7))]


@pytest.mark.parametrize("name", ["multi_microgrid", "ieee123_der"])
def test_episode_matches_pandapower(name):
    native = pgjax.make(name, dtype="float64")
    reference = pgjax.make(name, method="pandapower", dtype="float64")
    assert native.method != "pandapower" and reference.method == "pandapower"
    vm_a, obs_a, rew_a, cost_a, safe_a, nonconv_a, trunc = _episode(native)
    vm_b, obs_b, rew_b, cost_b, safe_b, nonconv_b, _ = _episode(reference)
    steps = native.episode_steps
    assert vm_a.shape[:2] == (steps, N_ENVS) and trunc[-1].all() and not trunc[:-1].any()
    assert not nonconv_a.any() and not nonconv_b.any()
    # states before the auto-reset of the last step, and every step's final observation
    assert np.max(np.abs(vm_a[:-1] - vm_b[:-1])) <= 1e-6
    np.testing.assert_allclose(obs_b, obs_a, rtol=0, atol=1e-6 / 0.05)  # voltages enter as (vm - 1) / 0.05
    for a, b in ((rew_a, rew_b), (cost_a, cost_b), (safe_a, safe_b)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)

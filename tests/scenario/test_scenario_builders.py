"""`multi_microgrid_large`: the generated network against pandapower, and the scenario's layout."""

import jax
import numpy as np
import pandapower as pp
import pytest

import pgjax
from pgjax.converters.pandapower import from_pandapower
from pgjax import networks, powerflow
from pgjax.scenario import ScenarioError
from pgjax.scenario.builders import multi_microgrid_network

from conftest import assert_parity


def test_generated_feeder_keeps_the_total_load_and_solves_like_pandapower():
    base = networks.load("ieee34_3x_ieee13")
    net = multi_microgrid_network(7)
    assert len(net.bus) == len(base.bus) + 4 * 13
    np.testing.assert_allclose(net.load.p_mw.sum(), base.load.p_mw.sum(), rtol=1e-12)
    assert sorted({n.split()[0] for n in net.bus.name}) == sorted({"DSO"} | {f"MG{k}" for k in range(1, 8)})
    pp.runpp(net, tolerance_mva=1e-10, calculate_voltage_angles=True)
    grid, netmap = from_pandapower(net)
    res = jax.jit(lambda g: powerflow.solve(g, method="distflow", max_iter=60))(grid)
    assert bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.vm_pu)[netmap.bus_lookup], net.res_bus.vm_pu.values, atol=1e-8)


def test_large_scenario_has_one_agent_per_microgrid_and_steps():
    env = pgjax.make("multi_microgrid_large", n_microgrids=5)
    assert env.agents == tuple(f"MG{k}" for k in range(1, 6))
    # microgrid 4 copies microgrid 1's devices, scaled by 3/5
    ess = env.default_params.devices["storage"]
    np.testing.assert_allclose(np.asarray(ess.e_max_mwh), 2.0 * 3 / 5)
    obs, state = env.reset(jax.random.PRNGKey(0))
    acts = jax.random.uniform(jax.random.PRNGKey(1), (env.num_agents, env.act_dim), minval=-1, maxval=1)
    obs, state, reward, _, _, info = jax.jit(env.step)(jax.random.PRNGKey(2), state, acts)
    assert reward.shape == (5,) and bool(np.isfinite(obs).all()) and float(info["nonconverged"]) == 0.0


def test_bad_microgrid_count_is_reported():
    with pytest.raises(ScenarioError, match="n_microgrids"):
        pgjax.make("multi_microgrid_large", n_microgrids=0)


def test_scale_scenario_has_1000_plus_buses_250_agents_equals_pandapower_and_steps():
    """`multi_microgrid_xl` (issue 10, item 8): 3,283 buses and 250 learned agents; its network
    solved by pgjax (DistFlow, float64) equals pandapower's `runpp` to 1e-8 p.u., and one
    jitted env step is finite and converged."""
    import copy
    import warnings

    import jax.numpy as jnp

    from pgjax import scenario

    assert "multi_microgrid_xl-v0" in scenario.names(large=True)
    assert "multi_microgrid_xl-v0" not in scenario.names()  # not in the every-scenario soak tests
    env = pgjax.make("multi_microgrid_xl", dtype="float64")
    c = env.scenario
    assert env.dtype == jnp.float64 and c.method == "distflow"
    assert c.grid.n_bus >= 1000 and len(c.net.bus) == 33 + 250 * 13
    assert env.num_agents >= 250 and env.agents == tuple(f"MG{k}" for k in range(1, 251))

    net = copy.deepcopy(c.net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, max_iteration=50, calculate_voltage_angles=True)
    res = powerflow.solve(c.grid, method="distflow", max_iter=c.max_iter)
    assert bool(res.converged)
    assert_parity(res, c.netmap, net)  # vm 1e-8 pu, va 1e-6 degree, flows 1e-6 MW / Mvar

    obs, state = env.reset(jax.random.PRNGKey(0))
    acts = jax.random.uniform(jax.random.PRNGKey(1), (env.num_agents, env.act_dim), minval=-1, maxval=1)
    obs, state, reward, _, _, info = jax.jit(env.step)(jax.random.PRNGKey(2), state, acts)
    assert reward.shape == (env.num_agents,) and obs.shape == (env.num_agents, env.obs_dim)
    assert bool(np.isfinite(obs).all()) and bool(np.isfinite(reward).all())
    assert float(info["nonconverged"]) == 0.0
    assert bool(np.isfinite(np.asarray(state.vm_pu)).all())

"""The `ieee123_3ph` scenario: the unbalanced IEEE 123 feeder as a MARL environment.

Its power flow equals OpenDSS itself on the scenario's network (the same taps, loads scaled
as the profiles scale them, the devices' injections as OpenDSS loads on their nodes) and the
float32 env stays within 1e-4 p.u. of it; the voltage-unbalance factor equals numpy's
sequence components of the returned phase voltages and its excess over the limit is the
`unbalance` safety cost; the env steps finite under `jit` + `vmap`; a short `pgjax train` +
`pgjax eval` runs end to end. (PettingZoo's `parallel_api_test` runs on it with every
registered scenario: `tests/wrappers/test_pettingzoo.py::test_parallel_api_every_scenario`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("opendssdirect")

import pgjax  # noqa: E402
from pgjax.powerflow import unbalance  # noqa: E402

NAME = "ieee123_3ph"
A = np.exp(2j * np.pi / 3)


@pytest.fixture(scope="module")
def env64():
    return pgjax.make(NAME, dtype="float64")


@pytest.fixture(scope="module")
def env32():
    return pgjax.make(NAME)


def _operating_point(env, t_abs: int, inj_mw: float, inj_mvar: float):
    """The loaded grid at profile step `t_abs` and device injections `[n_bus]` MW / Mvar on every device node."""
    p = env.default_params
    ctx = env.context(jnp.asarray(t_abs), p, jnp.ones(p.grid.n_node, env.dtype))
    grid, p_bus, q_bus = env.grid_model.loaded(p, ctx, p.grid)
    nodes = jnp.asarray(env.grid_model.inj_node)
    signs = jnp.where(jnp.arange(len(nodes)) % 2 == 0, 1.0, -0.5)  # some inject, some draw
    p_bus = p_bus.at[nodes].set(inj_mw * signs)
    q_bus = q_bus.at[nodes].set(inj_mvar * signs)
    return grid, p_bus, q_bus, float(ctx.series[int(p.load_series[0])]) * float(p.load_scale)


def _opendss_voltages(env, factor: float, p_bus, q_bus) -> dict:
    """OpenDSS's node voltages (complex, p.u. of each node's base) on the scenario's network with every
    load at `factor` of its published power and the device injections as constant-power loads."""
    from pgjax.converters import opendss
    from pgjax.scenario.opendss_network import feeder_path

    raw = pgjax.scenario.load(NAME)[0]["network"]
    dss = opendss.compile_file(feeder_path(raw["opendss"], ""), tuple(raw["commands"]))
    opendss.pin_taps(dss)  # the taps the scenario pinned
    dss.Text.Command("set loadmult=1")
    dss.Loads.First()
    while True:
        kw, kvar = dss.Loads.kW(), dss.Loads.kvar()  # both first: setting kW rescales kvar at the load's pf
        dss.Loads.kW(kw * factor)
        dss.Loads.kvar(kvar * factor)
        if not dss.Loads.Next():
            break
    names = env.scenario.network.netmap.node_names
    vbase = np.asarray(env.scenario.network.grid.node.vbase_kv)
    for k, n in enumerate(np.asarray(env.grid_model.inj_node)):
        dss.Text.Command(f"new load.inj{k} bus1={names[n]} phases=1 kV={float(vbase[n])!r} model=1 vminpu=0.5 vmaxpu=2 "
                         f"kW={-float(p_bus[n]) * 1e3!r} kvar={-float(q_bus[n]) * 1e3!r}")
    dss.Text.Command("set tolerance=1e-12")
    dss.Text.Command("solve")
    assert dss.Solution.Converged()
    v = np.asarray(dss.Circuit.AllBusVolts())
    v = v[0::2] + 1j * v[1::2]
    return {n.lower(): v[i] for i, n in enumerate(dss.Circuit.AllNodeNames())}


@pytest.mark.parametrize("t_abs, inj_mw, inj_mvar", [(12, 0.2, 0.05), (20, 0.1, -0.08), (300, 0.0, 0.0)])
def test_power_flow_equals_opendss_and_float32_within_1e_4(env64, env32, t_abs, inj_mw, inj_mvar):
    grid, p_bus, q_bus, factor = _operating_point(env64, t_abs, inj_mw, inj_mvar)
    pf = jax.jit(env64.grid_model.solve)(grid, p_bus, q_bus, env64.default_params, None)
    assert bool(pf.converged)
    ref = _opendss_voltages(env64, factor, np.asarray(p_bus), np.asarray(q_bus))
    names = env64.scenario.network.netmap.node_names
    vb = np.asarray(env64.scenario.network.grid.node.vbase_kv) * 1e3
    vm_ref = np.array([abs(ref[n]) for n in names]) / vb
    assert np.max(np.abs(np.asarray(pf.vm_pu) - vm_ref)) <= 1e-6
    ang_ref = np.rad2deg(np.angle([ref[n] for n in names]))
    assert np.max(np.abs((np.asarray(pf.va_deg) - ang_ref + 180) % 360 - 180)) <= 1e-4

    grid32, p32, q32, _ = _operating_point(env32, t_abs, inj_mw, inj_mvar)
    pf32 = jax.jit(env32.grid_model.solve)(grid32, p32, q32, env32.default_params, None)
    assert pf32.vm_pu.dtype == jnp.float32 and bool(pf32.converged)
    assert np.max(np.abs(np.asarray(pf32.vm_pu, np.float64) - vm_ref)) <= 1e-4


def test_unbalance_factor_equals_numpy_sequence_components(env64):
    grid, p_bus, q_bus, _ = _operating_point(env64, 12, 0.25, 0.0)
    params = env64.default_params
    pf = env64.grid_model.solve(grid, p_bus, q_bus, params, None)
    v = np.asarray(pf.vm_pu) * np.exp(1j * np.deg2rad(np.asarray(pf.va_deg)))
    buses, nodes = unbalance.three_phase_buses(env64.scenario.network.netmap.node_names)
    assert len(buses) == nodes.shape[0] > 50 and "150" in buses and "48" in buses
    seq = np.linalg.inv(np.array([[1, 1, 1], [1, A**2, A], [1, A, A**2]])) @ v[nodes].T  # rows: V0, V1, V2
    expected = 100 * np.abs(seq[2]) / np.abs(seq[1])
    np.testing.assert_allclose(np.asarray(pf.vuf_percent), expected, rtol=1e-9, atol=1e-12)
    assert 0.1 < expected.max() < 5.0  # an unbalanced feeder, not a balanced or broken one

    for limit in (0.0, float(np.median(expected))):  # the cost is the excess over the limit, per bus
        p = params.replace(network_aux=params.network_aux.replace(vuf_max_percent=jnp.asarray(limit)))
        per_bus, info = env64.grid_model.unbalance(p, pf)
        np.testing.assert_allclose(float(info["safety_unbalance"]), np.maximum(expected - limit, 0).sum(), rtol=1e-9)
        np.testing.assert_allclose(float(np.sum(per_bus)), np.maximum(expected - limit, 0).sum(), rtol=1e-9)
        assert float(info["vuf_max_percent"]) == pytest.approx(expected.max(), rel=1e-9)


def test_vuf_of_known_phasors():
    pos = np.array([1, A**2, A])  # a b c, positive sequence
    neg = np.array([1, A, A**2])
    v = np.stack([pos, pos + 0.03 * neg, 0.5 * pos + 0.1 * np.ones(3)])
    got = np.asarray(unbalance.vuf_percent(jnp.asarray(v.real), jnp.asarray(v.imag)))
    np.testing.assert_allclose(got, [0.0, 3.0, 0.0], atol=1e-9)  # zero sequence does not count


def test_steps_finite_under_jit_and_vmap(env32):
    env, n = env32, 4
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    obs, state = jax.vmap(env.reset)(keys)
    step = jax.jit(jax.vmap(env.step))
    assert obs.shape == (n, env.num_agents, env.obs_dim) and obs.dtype == jnp.float32
    for t in range(env.episode_steps):
        k = jax.random.split(jax.random.PRNGKey(t + 1), 2 * n)
        actions = jax.vmap(lambda kk: jax.random.uniform(kk, (env.num_agents, env.act_dim), minval=-1, maxval=1))(k[:n])
        obs, state, reward, _, truncated, info = step(k[n:], state, actions)
        for x in (obs, reward, info["safety"], info["vuf_max_percent"], info["safety_unbalance"]):
            assert np.all(np.isfinite(np.asarray(x))), t
        assert np.all(np.asarray(info["converged"]) == 1.0) and np.all(np.asarray(info["nonconverged"]) == 0.0), t
    assert np.all(np.asarray(truncated))
    assert "unbalance" in env.cost_signals and env.cost_signals["unbalance"].info_key == "safety_unbalance"


def test_per_phase_observations_and_actions_in_the_schema(env32):
    env = env32
    assert env.agents == ("A", "B", "C", "D")
    obs_schema, act_schema = env.observation_schema, env.action_schema
    keys = [f.key for f in obs_schema.agent_features("B")]
    assert {"bus/48.1/vm_pu", "bus/48.2/vm_pu", "bus/48.3/vm_pu"} <= set(keys)  # every phase of a 3-phase bus
    assert "bus/11.1/vm_pu" not in keys  # zone A's
    assert act_schema.column("A", "pv/a_pv33/q_mvar") >= 0 and act_schema.column("A", "storage/a_ess24/p_mw") >= 0
    obs, state = env.reset(jax.random.PRNGKey(0))
    assert float(obs_schema.decode(obs[1], "B", "bus/48.2/vm_pu")) == pytest.approx(1.0)


def _cli(argv) -> int:
    """`pgjax ARGV` in this process: its exit status (the commands return it or raise SystemExit)."""
    from pgjax.cli import main

    try:
        return main(list(argv))
    except SystemExit as e:
        return int(e.code or 0)


def test_train_and_eval_smoke(tmp_path):
    out = tmp_path / "run"
    assert _cli(["train", "--scenario", NAME, "--out", str(out), "num_envs=4", "num_steps=24",
                 "total_timesteps=192", "update_epochs=1", "num_minibatches=1"]) == 0
    assert _cli(["eval", str(out), "--no-oracle", "--no-plot", "--episodes", "2"]) == 0
    import json

    results = json.loads((out / "eval.json").read_text())
    assert {"mappo", "do_nothing", "rule_based"} <= set(results)
    for row in results.values():
        assert np.isfinite(row["safety_unbalance"]) and row["converged"] == 24.0  # every step converged


def test_bad_three_phase_scenarios_name_the_problem():
    from pgjax.errors import InputError
    from pgjax.scenario import ScenarioError

    raw = pgjax.scenario.load(NAME)[0]
    with pytest.raises(ScenarioError, match=r"network.*no_such\.dss"):
        pgjax.make({**raw, "network": {"opendss": "no_such.dss"}})
    with pytest.raises(ScenarioError, match=r"network\.cmds"):
        pgjax.make({**raw, "network": {**raw["network"], "cmds": []}})
    with pytest.raises(InputError, match="fixed_point"):
        pgjax.make(NAME, method="newton")

"""Protocols, channels and timing inside the environment step (`pgjax.coordination`).

References: the action -> setpoint map of the module docstring, the PCC bill of
`pgjax.devices.pcc` in closed form, conservation of traded energy and money, and the same
environment without the feature (zero delay, tick interval 1) for the synchronous case.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax

KEY = jax.random.PRNGKey(3)


def rollout(env, actions, key=KEY, steps=None):
    """Infos of `steps` steps (actions `[T, n_agents, act_dim]`), same keys every call."""
    step = jax.jit(env.step)
    _, state = env.reset(key)
    infos, obs = [], []
    for t in range(steps or len(actions)):
        o, state, _, _, _, info = step(jax.random.fold_in(key, t), state, actions[t], env.default_params)
        infos.append(jax.device_get(info))
        obs.append(np.asarray(o))
    return infos, obs


@pytest.fixture(scope="module")
def dso_setpoint():
    return pgjax.make("multi_microgrid", learned="system", vertical="setpoint")


def setpoint_action(env, target_mw):
    lay = env.coordinator.links
    u = (np.asarray(target_mw) + lay.export_max_mw) / (lay.import_max_mw + lay.export_max_mw)
    a = np.zeros((env.num_agents, env.act_dim))
    a[lay.parent_agent, lay.parent_col] = 2 * u - 1
    return a


def test_learned_operator_sends_one_setpoint_per_microgrid(dso_setpoint):
    env = dso_setpoint
    assert env.agents == ("DSO",)
    lay = env.coordinator.links
    assert lay.tracked.all() and len(lay.grid_nodes) == 3
    # the operator commands its own taps/shunts directly and one exchange setpoint per microgrid
    own = sum(g.n * pgjax.devices.get(g.type).act_dim for g in env.layout.groups if (g.controller == 0).any())
    assert env.act_sizes == (own + 3,)
    infos, _ = rollout(env, [setpoint_action(env, [0.3, -0.2, 0.1])] * 2)
    np.testing.assert_allclose(infos[-1]["message_received"], [0.3, -0.2, 0.1], atol=1e-12)
    assert int(infos[-1]["messages_sent"]) == 3


def test_fixed_microgrid_controllers_track_the_setpoint(dso_setpoint):
    """Two setpoints 0.2 MW apart (inside the storage range) move each realized import by 0.2 MW."""
    env = dso_setpoint
    lo = rollout(env, [setpoint_action(env, [0.5, 0.5, 0.5])])[0][0]["grid_import_mw"]
    hi = rollout(env, [setpoint_action(env, [0.7, 0.7, 0.7])])[0][0]["grid_import_mw"]
    np.testing.assert_allclose(hi - lo, 0.2, atol=0.01)  # losses change a little with the dispatch


def test_zero_delay_is_synchronous_and_delay_k_arrives_k_steps_later():
    targets = [[0.1 * t, -0.05 * t, 0.02 * t] for t in range(6)]
    env0 = pgjax.make("multi_microgrid", learned="system", vertical="setpoint")
    env2 = pgjax.make("multi_microgrid", learned="system", vertical="setpoint", msg_delay={"DSO": 2})
    acts = [setpoint_action(env0, x) for x in targets]
    got0 = np.array([i["message_received"] for i in rollout(env0, acts)[0]])
    got2 = np.array([i["message_received"] for i in rollout(env2, acts)[0]])
    np.testing.assert_allclose(got0, targets, atol=1e-12)
    np.testing.assert_allclose(got2[2:], got0[:-2], atol=1e-12)
    np.testing.assert_allclose(got2[:2], 0.0)  # nothing arrived yet: the fixed default (balance yourself)


def test_price_signal_moves_dispatch_the_right_way():
    env = pgjax.make("multi_microgrid", learned="system", vertical="price_signal")
    lay = env.coordinator.links

    def imports(action):
        a = np.zeros((1, env.act_dim))
        a[0, lay.parent_col] = action
        return rollout(env, [a] * 3)[0][-1]["grid_import_mw"]

    cheap, dear = imports(-1.0), imports(1.0)
    assert np.all(dear < cheap - 0.1), (cheap, dear)  # a high price makes microgrids produce and import less


def test_p2p_trading_settles_energy_and_money_between_agents():
    env = pgjax.make("multi_microgrid", horizontal="p2p_trading")
    base = pgjax.make("multi_microgrid")
    rng = np.random.default_rng(0)
    acts = [rng.uniform(-1, 1, (env.num_agents, env.act_dim)) for _ in range(8)]
    with_p2p, _ = rollout(env, acts)
    without, _ = rollout(base, acts)
    pcc = env.default_params.devices["pcc"]
    traded = 0.0
    for a, b in zip(with_p2p, without):
        p2p = a["p2p_mw"]
        assert abs(p2p.sum()) < 1e-9  # energy bought equals energy sold
        np.testing.assert_allclose(a["grid_import_mw"], b["grid_import_mw"], atol=1e-12)  # financial only
        traded += a["p2p_volume_mw"]

        def bill(x, price=a["price"]):
            return price * (np.maximum(x, 0) - (1 - np.asarray(pcc.sell_discount)) * np.maximum(-x, 0))

        # payments cancel, so the total changes by the grid bills only
        change = np.sum(bill(a["grid_import_mw"] - p2p) - bill(a["grid_import_mw"]))
        np.testing.assert_allclose(a["cost_total"] - b["cost_total"], change, rtol=1e-9, atol=1e-9)
    assert traded > 0


def test_tick_interval_holds_actions():
    env = pgjax.make("multi_microgrid", communication={"tick_interval": 3})
    plain = pgjax.make("multi_microgrid")
    rng = np.random.default_rng(1)
    acts = [rng.uniform(-1, 1, (env.num_agents, env.act_dim)) for _ in range(7)]
    held = [acts[3 * (t // 3)] for t in range(7)]
    a, _ = rollout(env, acts)
    b, _ = rollout(plain, held)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["cost"], y["cost"], rtol=1e-12)


def test_messages_appear_in_distributed_observations_only_for_the_receiver():
    env = pgjax.make("multi_microgrid", learned="grid", vertical="price_signal")
    infos, obs = rollout(env, [np.zeros((env.num_agents, env.act_dim))] * 2)
    # the fixed operator passes the market price on; each microgrid sees it as its last feature
    np.testing.assert_allclose(obs[-1][:, -1], infos[-1]["price"] / 100.0, rtol=1e-12)
    assert env.obs_dim == pgjax.make("multi_microgrid").obs_dim + 1


def test_coordination_jits_and_vmaps_without_retracing():
    env = pgjax.make("multi_microgrid", horizontal="consensus", loss_prob=0.3)
    traces = []

    def step(k, s, a):
        traces.append(1)
        return env.step(k, s, a, env.default_params)

    vstep = jax.jit(jax.vmap(step))
    keys = jax.random.split(KEY, 4)
    _, state = jax.vmap(env.reset)(keys)
    for t in range(3):
        acts = jax.random.uniform(jax.random.fold_in(KEY, t), (4, env.num_agents, env.act_dim), minval=-1, maxval=1)
        obs, state, _, _, _, info = vstep(keys, state, acts)
    assert len(traces) == 1 and bool(jnp.isfinite(obs).all())
    assert int(info["messages_sent"][0]) == 6  # complete graph of 3 agents, both directions


def test_bad_protocol_blocks_name_the_key():
    from pgjax.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="protocol.vertical"):
        pgjax.make("multi_microgrid", vertical="auction")
    with pytest.raises(ScenarioError, match=r"communication.msg_delay.MG9"):
        pgjax.make("multi_microgrid", msg_delay={"MG9": 1})
    with pytest.raises(ScenarioError, match="communication.loss_prob"):
        pgjax.make("multi_microgrid", loss_prob=1.5)


def test_admm_dispatch_meets_the_optimality_conditions():
    """Dispatched units run where marginal cost equals the ADMM price; the balance residual vanishes."""
    env = pgjax.make("multi_microgrid", horizontal="admm_dispatch", split="test")
    gen = env.default_params.devices["generator"]
    b, c = np.asarray(gen.cost_b_per_mwh), np.asarray(gen.cost_c_per_mw2h)
    infos, obs = rollout(env, [np.zeros((env.num_agents, env.act_dim))] * 12)
    checked = 0
    for info, o in zip(infos[2:], obs[2:]):
        assert info["admm_residual_mw"] < 1e-3
        lam = o[0, -1] * 100  # each agent observes the ADMM price as its last feature
        p = np.asarray(o[:, -2]) * env.coordinator.links.scale_mw  # each agent's dispatch, MW
        marginal = b + 2 * c * p
        at_min = np.isclose(p, 0, atol=1e-4) | np.isclose(p, np.asarray(gen.p_min_mw), atol=1e-4)
        balanced = np.isclose(marginal, lam, atol=0.05)
        # KKT: a unit runs at the price, or sits at its minimum when dearer (ramp-limited maxima
        # when cheaper are allowed)
        assert np.all(balanced | (at_min & (marginal >= lam - 0.05)) | (marginal < lam)), (p, marginal, lam)
        checked += balanced.sum()
    assert checked > 0

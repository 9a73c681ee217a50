"""Protocols, channels and timing inside the environment step (`pgjax.protocols.coordination`).

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


def rollout(env, actions, key=KEY, steps=None, states=False):
    """Infos and observations of `steps` steps (actions `[T, n_agents, act_dim]`), same keys
    every call; with `states=True` also the states, from the one after reset on (`[T + 1]`)."""
    step = jax.jit(env.step)
    _, state = env.reset(key)
    infos, obs, kept = [], [], [jax.device_get(state)]
    for t in range(steps or len(actions)):
        o, state, _, _, _, info = step(jax.random.fold_in(key, t), state, actions[t], env.default_params)
        infos.append(jax.device_get(info))
        obs.append(np.asarray(o))
        if states:
            kept.append(jax.device_get(state))
    return (infos, obs, kept) if states else (infos, obs)


@pytest.fixture(scope="module")
def dso_setpoint():
    return pgjax.make("multi_microgrid", learned="system", vertical="setpoint", dtype="float64")


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
    env0 = pgjax.make("multi_microgrid", learned="system", vertical="setpoint", dtype="float64")
    env2 = pgjax.make("multi_microgrid", learned="system", vertical="setpoint", msg_delay={"DSO": 2}, dtype="float64")
    acts = [setpoint_action(env0, x) for x in targets]
    got0 = np.array([i["message_received"] for i in rollout(env0, acts)[0]])
    got2 = np.array([i["message_received"] for i in rollout(env2, acts)[0]])
    np.testing.assert_allclose(got0, targets, atol=1e-12)
    np.testing.assert_allclose(got2[2:], got0[:-2], atol=1e-12)
    np.testing.assert_allclose(got2[:2], 0.0)  # nothing arrived yet: the fixed default (balance yourself)


def test_price_signal_moves_dispatch_the_right_way():
    env = pgjax.make("multi_microgrid", learned="system", vertical="price_signal", dtype="float64")
    lay = env.coordinator.links

    def imports(action):
        a = np.zeros((1, env.act_dim))
        a[0, lay.parent_col] = action
        return rollout(env, [a] * 3)[0][-1]["grid_import_mw"]

    cheap, dear = imports(-1.0), imports(1.0)
    assert np.all(dear < cheap - 0.1), (cheap, dear)  # a high price makes microgrids produce and import less


P2P_DELAY = 2  # steps the delayed market's bids take


@pytest.fixture(scope="module")
def p2p_runs():
    """The same 8 random actions on multi_microgrid without P2P, with it, and with bids
    `P2P_DELAY` steps late: `{None: base, 0: p2p, P2P_DELAY: delayed p2p}` -> `(env, infos, obs)`."""
    envs = {None: pgjax.make("multi_microgrid", dtype="float64"), 0: pgjax.make("multi_microgrid", horizontal="p2p_trading", dtype="float64"),
            P2P_DELAY: pgjax.make("multi_microgrid", horizontal="p2p_trading", msg_delay=P2P_DELAY, dtype="float64")}
    rng = np.random.default_rng(0)
    acts = [rng.uniform(-1, 1, (envs[0].num_agents, envs[0].act_dim)) for _ in range(8)]
    return {d: (env, *rollout(env, acts)) for d, env in envs.items()}


def pcc_bill(env, price, import_mw):
    """Each grid agent's PCC bill `[n]` ($ per step) in closed form (`pgjax.devices.pcc`):
    `dt * price * price_scale * (import - (1 - sell_discount) * export)`."""
    pcc, dt = env.default_params.devices["pcc"], float(env.default_params.dt_h)
    x, rate = np.asarray(import_mw), price * np.asarray(pcc.price_scale)
    return dt * rate * (np.maximum(x, 0) - (1 - np.asarray(pcc.sell_discount)) * np.maximum(-x, 0))


@pytest.mark.parametrize("delay", [0, P2P_DELAY])
def test_p2p_trading_settles_energy_and_money_between_agents(p2p_runs, delay):
    """Each agent's cost changes by its grid bill change (it imports `p2p_mw` less) plus its
    payment; energy and money only move between agents; all trades at one price between the
    sellers' offer (the discounted price) and the buyers' bid (the price)."""
    env, with_p2p, _ = p2p_runs[delay]
    _, without, _ = p2p_runs[None]
    assert env.agents == ("MG1", "MG2", "MG3")  # the learned agents are the grid agents, in order
    dt = float(env.default_params.dt_h)
    discount = np.asarray(env.default_params.devices["pcc"].sell_discount)
    scale = np.asarray(env.default_params.devices["pcc"].price_scale)
    traded = 0.0
    for t, (a, b) in enumerate(zip(with_p2p, without)):
        p2p, pay = a["p2p_mw"], a["p2p_payment"]
        np.testing.assert_allclose(a["grid_import_mw"], b["grid_import_mw"], atol=1e-12)  # financial only
        assert abs(p2p.sum()) < 1e-9 and abs(pay.sum()) < 1e-9  # energy bought = sold, money paid = received
        # per agent: the grid bills the import left after the trades; the agent pays for what it bought
        bills = pcc_bill(env, a["price"], a["grid_import_mw"] - p2p) - pcc_bill(env, a["price"], a["grid_import_mw"])
        expected = bills + pay * dt
        np.testing.assert_allclose(a["cost"] - b["cost"], expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a["cost_total"] - b["cost_total"], expected.sum(), rtol=1e-9, atol=1e-9)
        trading = np.abs(p2p) > 1e-9
        np.testing.assert_array_equal(np.abs(pay) > 1e-9, trading)
        if trading.any():  # uniform price: payment = p* MW, buyers pay, sellers are paid
            p_star = pay[trading] / p2p[trading]
            np.testing.assert_allclose(p_star, p_star[0], rtol=1e-9)
            bid_price = with_p2p[t - delay]["price"] * scale  # the price the bids were made at
            assert np.max((1 - discount) * bid_price) - 1e-9 <= p_star[0] <= np.min(bid_price) + 1e-9
        traded += a["p2p_volume_mw"]
    assert traded > 0.3


def test_p2p_with_delayed_bids_clears_the_bids_sent_delay_steps_earlier(p2p_runs):
    """Bids are each agent's last measured surplus (-import) at an offer of the discounted price
    (sellers) or the price (buyers). With bids `d` steps late, the trades of step `t` are the
    clearing (`pgjax.protocols.p2p.clear`) of the bids sent at step `t - d` (none before `d`),
    which for a fixed-action run is the synchronous market shifted by `d` steps."""
    from pgjax.protocols import p2p

    clear = jax.jit(p2p.clear)
    for delay in (0, P2P_DELAY):
        env, infos, _ = p2p_runs[delay]
        discount = np.asarray(env.default_params.devices["pcc"].sell_discount)
        scale = np.asarray(env.default_params.devices["pcc"].price_scale)
        for t, info in enumerate(infos):
            sent = t - delay
            if sent < 0:  # nothing has arrived yet
                np.testing.assert_array_equal(info["p2p_mw"], 0.0)
                np.testing.assert_array_equal(info["p2p_payment"], 0.0)
                continue
            surplus = -infos[sent - 1]["grid_import_mw"] if sent > 0 else np.zeros(3)  # measured before step `sent`
            price = infos[sent]["price"] * scale
            offer = np.where(surplus > 0, (1 - discount) * price, price)
            trades, tprice, _ = (np.asarray(x) for x in clear(jnp.asarray(surplus), jnp.asarray(offer),
                                                                   jnp.ones(3, bool)))
            np.testing.assert_allclose(info["p2p_mw"], trades.sum(0) - trades.sum(1), atol=1e-9)
            money = trades * tprice
            np.testing.assert_allclose(info["p2p_payment"], money.sum(0) - money.sum(1), atol=1e-7)
    now, late = p2p_runs[0][1], p2p_runs[P2P_DELAY][1]
    for t in range(P2P_DELAY, len(late)):
        for k in ("p2p_mw", "p2p_payment"):
            np.testing.assert_allclose(late[t][k], now[t - P2P_DELAY][k], atol=1e-9)
    assert sum(i["p2p_volume_mw"] for i in late) > 0.3


def test_tick_interval_holds_actions():
    env = pgjax.make("multi_microgrid", communication={"tick_interval": 3}, dtype="float64")
    plain = pgjax.make("multi_microgrid", dtype="float64")
    rng = np.random.default_rng(1)
    acts = [rng.uniform(-1, 1, (env.num_agents, env.act_dim)) for _ in range(7)]
    held = [acts[3 * (t // 3)] for t in range(7)]
    a, _ = rollout(env, acts)
    b, _ = rollout(plain, held)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["cost"], y["cost"], rtol=1e-12)


def test_messages_appear_in_distributed_observations_only_for_the_receiver(p2p_runs):
    """Each grid agent observes the messages it received (`message/<its id>/...` of the public
    schema) and no other agent's: a vertical price passed on by the fixed operator, and the
    P2P trades, which differ from agent to agent."""
    env = pgjax.make("multi_microgrid", learned="grid", vertical="price_signal", dtype="float64")
    infos, obs = rollout(env, [np.zeros((env.num_agents, env.act_dim))] * 2)
    schema = env.layout.observation
    assert env.obs_dim == pgjax.make("multi_microgrid", dtype="float64").obs_dim + 1
    for a, me in enumerate(env.agents):
        for other in env.agents:
            key = f"message/{other}/price"
            assert (schema.local(me, key) >= 0) == (other == me), (me, key)
        np.testing.assert_allclose(schema.decode(obs[-1][a], me, f"message/{me}/price"), infos[-1]["price"],
                                   rtol=1e-12)
        assert sum(f.kind == "message" for f in schema.agent_features(me)) == 1

    env, infos, obs = p2p_runs[0]
    schema = env.layout.observation
    seen = 0
    for info, o in zip(infos, obs):
        for a, me in enumerate(env.agents):
            np.testing.assert_allclose(schema.decode(o[a], me, f"message/{me}/p2p_mw"), info["p2p_mw"][a],
                                       atol=1e-12)
            for b, other in enumerate(env.agents):
                if other == me:
                    continue
                assert schema.local(me, f"message/{other}/p2p_mw") == -1
                # nor is the other agent's trade (observed as MW over its import limit) anywhere in my row
                theirs = schema.feature(f"message/{other}/p2p_mw").encode(info["p2p_mw"][b])
                if abs(theirs) > 1e-6:
                    assert not np.isclose(o[a], theirs, rtol=0, atol=1e-12).any(), (me, other)
                    seen += 1
    assert seen > 0


def test_lost_messages_never_arrive_and_arrive_at_the_channel_rate():
    """`loss_prob = 0.5`, no delay: each step the operator sends every microgrid a new setpoint;
    a microgrid receives either this step's setpoint or, where it was lost, keeps the last one
    delivered (the default, 0, before anything arrived in the episode); fresh arrivals over
    96 steps x 3 links are Binomial(288, 0.5)."""
    p = 0.5
    env = pgjax.make("multi_microgrid", learned="system", vertical="setpoint", loss_prob=p, dtype="float64")
    rng = np.random.default_rng(4)
    steps = 4 * env.episode_steps
    targets = rng.uniform(-1.0, 1.0, (steps, 3))
    infos, _ = rollout(env, [setpoint_action(env, x) for x in targets])
    fresh, last = 0, np.zeros(3)
    for t, info in enumerate(infos):
        if t % env.episode_steps == 0:
            last = np.zeros(3)  # a new episode: a new channel, nothing delivered yet
        got = info["message_received"]
        new = np.isclose(got, targets[t], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[~new], last[~new], rtol=0, atol=1e-12)  # lost: the last value stays
        assert int(info["messages_sent"]) == 3  # lost messages were sent all the same
        fresh += new.sum()
        last = got
    n = steps * 3
    assert abs(fresh - n * (1 - p)) <= 4 * np.sqrt(n * p * (1 - p)), (fresh, n)


def test_coordination_jits_and_vmaps_without_retracing():
    env = pgjax.make("multi_microgrid", horizontal="consensus", loss_prob=0.3, dtype="float64")
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
    """The generators run at the closed-form optimum of the joint dispatch (`admm.optimal_dispatch`):
    each unit's ramp- and commitment-feasible range from the state before the step, the grid as a
    participant at the market price (curvature `GRID_COST_A`), the balance of each agent's last
    import plus its unit's last output. The power is read from the state after the step, where a
    unit realizes the target as its `p_action` does (off below half its minimum output, else the
    target within its ramp window); the price agents observe is the optimum's multiplier."""
    from types import SimpleNamespace

    from pgjax.devices import generator
    from pgjax.protocols import admm

    env = pgjax.make("multi_microgrid", horizontal="admm_dispatch", split="test", dtype="float64")
    gp = env.default_params.devices["generator"]
    links = env.coordinator.links
    np.testing.assert_array_equal(links.unit_of_grid, [0, 1, 2])  # one generator per microgrid
    ctx = SimpleNamespace(dt_h=env.default_params.dt_h)
    b, c = np.asarray(gp.cost_b_per_mwh), np.asarray(gp.cost_c_per_mw2h)
    infos, obs, states = rollout(env, [np.zeros((env.num_agents, env.act_dim))] * 17, states=True)  # to the evening
    schema = env.layout.observation
    interior = at_max = 0
    for t, (info, o) in enumerate(zip(infos, obs)):
        gen0 = states[t].devices["generator"]
        p = np.asarray(states[t + 1].devices["generator"].p_mw)
        lo, hi = (np.asarray(x) for x in generator.p_range(gp, gen0, ctx))
        w_lo, w_hi = (np.asarray(x) for x in generator.window(gp, gen0, ctx.dt_h))
        demand = np.sum(np.asarray(states[t].devices["pcc"].import_mw) + np.asarray(gen0.p_mw))
        price = float(info["price"])
        p_opt, lam = admm.optimal_dispatch(
            np.append(c, admm.GRID_COST_A), np.append(b, price), np.append(lo, -links.export_max_mw.sum()),
            np.append(hi, links.import_max_mw.sum() + admm.GRID_HEADROOM_MW), demand)
        target, lam = np.asarray(p_opt)[:3], float(lam)
        threshold = 0.5 * np.maximum(w_lo, generator.EPS)
        on = target >= threshold
        expected = np.where(on, np.clip(target, w_lo, w_hi), 0.0)
        clear = np.abs(target - threshold) > 1e-3  # commitment not decided by the ADMM's last digits
        np.testing.assert_allclose(p[clear], expected[clear], atol=2e-3, err_msg=f"step {t}")
        for a, me in enumerate(env.agents):
            np.testing.assert_allclose(schema.decode(o[a], me, f"message/{me}/admm_price"), lam, atol=0.05)
        assert info["admm_residual_mw"] < 1e-3
        inside = clear & on & (target > w_lo + 1e-3) & (target < w_hi - 1e-3)
        np.testing.assert_allclose(b[inside] + 2 * c[inside] * p[inside], lam, atol=0.1)  # marginal cost = price
        interior += inside.sum()
        at_max += (clear & on & (b + 2 * c * w_hi < lam - 0.1) & (w_hi > w_lo)).sum()  # cheaper: ramp-limited max
    assert interior > 0 and at_max > 0, (interior, at_max)

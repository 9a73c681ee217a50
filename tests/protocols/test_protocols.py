"""Coordination protocols: consensus, P2P double auction, price response, setpoint, ADMM,
local controllers, the registry and the user-written example protocol."""

from __future__ import annotations

import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgjax import protocols as P
from pgjax.devices import storage
from pgjax.protocols import (
    Messages,
    admm,
    consensus,
    local,
    p2p,
    price_signal,
    setpoint,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def ring(n):
    a = np.zeros((n, n), bool)
    for i in range(n):
        a[i, (i + 1) % n] = a[(i + 1) % n, i] = True
    return a


def all_links(n):
    return Messages.full(jnp.zeros((n, n, 1)))


# ----------------------------------------------------------------------------- registry

def test_registry_lists_builtins_and_rejects_unknown():
    assert {"none", "setpoint", "price_signal"} <= set(P.names("vertical", selectable=True))
    assert {"admm_dispatch", "consensus", "none", "p2p_trading"} <= set(P.scenario_names("horizontal"))
    assert {"none_horizontal", "consensus", "p2p_trading", "admm_dispatch"} <= set(P.names("horizontal"))
    for name in P.names():
        assert P.get(name).doc.strip(), f"{name} has no docstring"
    with pytest.raises(KeyError):
        P.get("nope")
    with pytest.raises(ValueError):
        P.register(P.get("consensus"))


def test_none_protocol_sends_and_commands_nothing():
    prm = P.get("none").params_cls(n_senders=3, n_receivers=4)
    cmd, msgs, _ = P.get("none")(prm, P.get("none").init(prm), {}, Messages.empty(3, 4))
    assert cmd == {} and msgs.mask.shape == (3, 4) and int(msgs.count) == 0


# ----------------------------------------------------------------------------- consensus

CONSENSUS = jax.jit(consensus.apply)


def test_consensus_reaches_average_on_connected_ring():
    n = 8
    prm = consensus.make_params(ring(n), iterations=200)
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=n) * 10)
    cmd, msgs, st_ = CONSENSUS(prm, consensus.init(prm), {"value": x0}, all_links(n))
    np.testing.assert_allclose(cmd["value"], jnp.mean(x0), atol=1e-6)
    assert int(msgs.count) == 2 * n and int(st_.iterations_run) == 200
    w = consensus.metropolis_weights(ring(n))
    np.testing.assert_allclose(w.sum(0), 1.0)
    np.testing.assert_allclose(w.sum(1), 1.0)


def test_consensus_stays_within_components():
    a = np.zeros((8, 8), bool)
    a[:4, :4] = ring(4)
    a[4:, 4:] = ring(4)
    x0 = jnp.arange(8.0)
    prm = consensus.make_params(a, iterations=200)
    out = CONSENSUS(prm, consensus.init(prm), {"value": x0}, all_links(8))[0]["value"]
    np.testing.assert_allclose(out[:4], 1.5, atol=1e-6)
    np.testing.assert_allclose(out[4:], 5.5, atol=1e-6)
    assert np.all(np.abs(out - jnp.mean(x0)) > 1.0)  # nothing crossed between components


def test_consensus_channel_cuts_links():
    # a connected ring, but the channel lost messages on the 3-4 and 7-0 links: two components
    n = 8
    mask = np.ones((n, n), bool)
    mask[3, 4] = mask[7, 0] = False
    x0 = jnp.arange(8.0)
    prm = consensus.make_params(ring(n), iterations=300)
    out = CONSENSUS(prm, consensus.init(prm), {"value": x0}, Messages(jnp.zeros((n, n, 1)), jnp.asarray(mask)))
    np.testing.assert_allclose(out[0]["value"][:4], 1.5, atol=1e-6)
    np.testing.assert_allclose(out[0]["value"][4:], 5.5, atol=1e-6)


# ----------------------------------------------------------------------------- P2P trading

N_P2P = 6
CLEAR = {m: jax.jit(lambda net, price, m=m: p2p.apply(p2p.make_params(N_P2P, m, dt_h=0.25), p2p.init(None),
                                                      {"net_mw": net, "price": price}, None)[0])
         for m in ("uniform", "pay_as_bid")}


def check_market(net, price, c):
    net, price = np.asarray(net), np.asarray(price)
    t, tp = np.asarray(c["trades_mw"]), np.asarray(c["trade_price"])
    tol = 1e-9
    assert np.all(t >= 0)
    # energy and money only move between agents
    assert abs(float(np.sum(c["p2p_mw"]))) <= tol
    assert abs(float(np.sum(c["payment"]))) <= tol * max(1.0, float(np.sum(t * tp)))
    # sellers sell at most their surplus, buyers buy at most their deficit
    sold, bought = t.sum(1), t.sum(0)
    assert np.all(sold <= np.maximum(net, 0) + tol) and np.all(bought <= np.maximum(-net, 0) + tol)
    s, b = np.nonzero(t > 0)
    # never below a seller's offer, never above a buyer's bid
    assert np.all(tp[s, b] >= price[s] - tol) and np.all(tp[s, b] <= price[b] + tol)
    # the market is cleared: no leftover seller offers at or below a leftover buyer's bid
    left_s = (np.maximum(net, 0) - sold) > 1e-9
    left_b = (np.maximum(-net, 0) - bought) > 1e-9
    if left_s.any() and left_b.any():
        assert price[left_s].min() > price[left_b].max()
    np.testing.assert_allclose(c["p2p_mw"], bought - sold, atol=tol)


qty = st.one_of(st.just(0.0), st.floats(-5.0, 5.0, allow_nan=False))
prices = st.one_of(st.sampled_from([10.0, 20.0, 30.0]), st.floats(0.0, 100.0, allow_nan=False))


@settings(max_examples=30, deadline=None)
@given(st.lists(qty, min_size=N_P2P, max_size=N_P2P), st.lists(prices, min_size=N_P2P, max_size=N_P2P),
       st.sampled_from(["uniform", "pay_as_bid"]))
def test_p2p_clearing_properties(net, price, mechanism):
    net, price = jnp.asarray(net), jnp.asarray(price)
    check_market(net, price, CLEAR[mechanism](net, price))


def test_p2p_example_and_no_crossing():
    net = jnp.array([2.0, -1.0, 1.5, -3.0, 0.5, 0.0])
    price = jnp.array([10.0, 30.0, 25.0, 20.0, 40.0, 0.0])
    c = CLEAR["uniform"](net, price)
    # merit order: seller 0 (2 MW @ 10) serves buyer 1 (@ 30) and 1 MW of buyer 3 (@ 20); 25 > 20 stops
    assert float(c["volume_mw"]) == pytest.approx(2.0)
    assert float(c["clearing_price"]) == pytest.approx(15.0)
    np.testing.assert_allclose(c["p2p_mw"], [-2, 1, 0, 1, 0, 0])
    np.testing.assert_allclose(c["payment"], [-7.5, 3.75, 0, 3.75, 0, 0])  # 15 $/MWh * MW * 0.25 h
    cb = CLEAR["pay_as_bid"](net, price)
    np.testing.assert_allclose(cb["trade_price"][0, [1, 3]], [30.0, 20.0])
    # every bid below every offer: nothing trades
    for clear in CLEAR.values():
        c = clear(net, jnp.array([50.0, 30.0, 45.0, 20.0, 60.0, 0.0]))
        assert float(jnp.sum(c["trades_mw"])) == 0.0 and float(jnp.sum(jnp.abs(c["payment"]))) == 0.0
        assert np.isnan(float(c["clearing_price"]))


# ----------------------------------------------------------------------------- vertical

def test_price_response_within_limits_and_monotone():
    rng = np.random.default_rng(1)
    n = 12
    is_sto = np.arange(n) >= 8
    sp = storage.Params(bus=jnp.zeros(4, jnp.int32), e_min_mwh=jnp.zeros(4), e_max_mwh=jnp.full(4, 4.0),
                        p_charge_max_mw=jnp.full(4, 2.0), p_discharge_max_mw=jnp.full(4, 2.0),
                        eta_charge=jnp.full(4, 0.95), eta_discharge=jnp.full(4, 0.95), s_max_mva=jnp.zeros(4),
                        degradation_cost_per_mwh=jnp.full(4, 2.0), soc_init_min=jnp.zeros(4),
                        soc_init_max=jnp.zeros(4))
    e = jnp.array([0.0, 0.5, 2.0, 4.0])  # empty, low, half, full
    dis, ch = storage.limits(sp, storage.State(e_mwh=e, p_mw=jnp.zeros(4), q_mvar=jnp.zeros(4)), 1.0)
    p_min = np.concatenate([rng.uniform(-3, 0, 4), rng.uniform(0, 1, 4), -np.asarray(ch)])
    p_max = np.concatenate([rng.uniform(0, 0.5, 4), rng.uniform(2, 5, 4), np.asarray(dis)])
    a = np.concatenate([rng.uniform(0.0, 0.5, 8), [0.05] * 4])
    a[0] = 0.0  # linear cost: bang-bang-like response, still within limits
    b = np.concatenate([rng.uniform(0, 60, 8), [2.0] * 4])
    owner = np.array([0] * 6 + [1] * 6)
    prm = price_signal.make_params(owner, p_min, p_max, a, b, is_storage=is_sto, energy_value=40.0,
                                   energy_value_slope=20.0, soc_ref=0.5, price_min=-20.0, price_max=150.0)
    soc = jnp.concatenate([jnp.full(8, 0.5), e / 4.0])
    f = jax.jit(lambda prm, act: price_signal.apply(
        prm, (), {"action": act, "p_min_mw": jnp.asarray(p_min), "p_max_mw": jnp.asarray(p_max), "soc": soc},
        None))
    acts = jnp.linspace(-1, 1, 41)
    ps = np.stack([np.asarray(f(prm, jnp.array([x, x]))[0]["p_mw"]) for x in acts])
    assert np.all(ps >= p_min - 1e-12) and np.all(ps <= p_max + 1e-12)
    assert np.all(np.diff(ps, axis=0) >= -1e-12), "response must be non-decreasing in price"
    assert np.all(ps[-1, :8] > ps[0, :8])  # generators / loads move with the price
    # closed form for a generator with interior optimum
    cmd, msgs, _ = f(prm, jnp.array([0.0, 0.0]))
    price = 65.0
    np.testing.assert_allclose(cmd["price"], price)
    np.testing.assert_allclose(cmd["p_mw"][1:8], np.clip((price - b[1:8]) / (2 * a[1:8]), p_min[1:8], p_max[1:8]))
    assert msgs.mask.shape == (2, n) and int(msgs.count) == n
    # storage at low price charges (unless full), at high price discharges (unless empty)
    assert ps[0, 8 + 0] < 0 and ps[0, 8 + 3] == 0 and ps[-1, 8 + 3] > 0 and ps[-1, 8 + 0] == 0


def test_setpoint_scales_to_limits():
    prm = setpoint.Params(owner=jnp.array([0, 0, 1]), column=jnp.array([0, 1, 0]),
                          p_min_mw=jnp.array([0.0, -2.0, 1.0]), p_max_mw=jnp.array([4.0, 2.0, 3.0]), n_agents=2)
    act = jnp.array([[-1.0, 1.0], [0.0, 0.7]])
    cmd, msgs, _ = jax.jit(setpoint.apply)(prm, (), {"action": act}, None)
    np.testing.assert_allclose(cmd["p_mw"], [0.0, 2.0, 2.0])
    np.testing.assert_array_equal(msgs.mask, [[True, True, False], [False, False, True]])
    np.testing.assert_allclose(msgs.data[1, 2, 0], 2.0)
    cmd = setpoint.apply(prm, (), {"action": act * 5, "p_max_mw": jnp.array([1.0, 1.0, 1.5])}, None)[0]
    np.testing.assert_allclose(cmd["p_mw"], [0.0, 1.0, 1.25])


# ----------------------------------------------------------------------------- ADMM

def test_admm_matches_closed_form_optimum():
    a = jnp.array([0.10, 0.05, 0.20, 0.08, 0.12])
    b = jnp.array([20.0, 25.0, 15.0, 30.0, 22.0])
    f = jax.jit(admm.apply)
    # no binding limits: lambda = (D + sum b/2a) / sum 1/2a
    prm = admm.make_params(a, b, -1e3, 1e3, iterations=300)
    cmd = f(prm, admm.init(prm), {"demand_mw": jnp.array([60.0, 40.0])}, None)[0]
    lam = (100.0 + jnp.sum(b / (2 * a))) / jnp.sum(1 / (2 * a))
    np.testing.assert_allclose(cmd["p_mw"], (lam - b) / (2 * a), atol=1e-6)
    np.testing.assert_allclose(cmd["price"], lam, atol=1e-5)
    # binding limits: compare with the bisection reference
    prm = admm.make_params(a, b, 0.0, jnp.array([40.0, 30.0, 50.0, 10.0, 40.0]), iterations=400)
    cmd, msgs, s = f(prm, admm.init(prm), {"demand_mw": jnp.array([110.0])}, None)
    p_ref, lam_ref = admm.optimal_dispatch(a, b, 0.0, prm.p_max_mw, 110.0)
    np.testing.assert_allclose(cmd["p_mw"], p_ref, atol=1e-6)
    np.testing.assert_allclose(cmd["price"], lam_ref, atol=1e-4)
    assert float(cmd["residual"]) < 1e-6 and int(msgs.count) == 20
    # warm start: the next step starts at the optimum and stays there
    cmd2 = f(prm, s, {"demand_mw": jnp.array([110.0])}, None)[0]
    np.testing.assert_allclose(cmd2["p_mw"], p_ref, atol=1e-6)


# ----------------------------------------------------------------------------- local controllers

def test_local_controllers():
    v = jnp.array([0.90, 0.92, 0.95, 1.0, 1.05, 1.08, 1.10])
    q = local.volt_var(v, 2.0)
    np.testing.assert_allclose(q, [0.88, 0.88, 0.44, 0.0, -0.44, -0.88, -0.88], atol=1e-12)
    curves = jnp.broadcast_to(jnp.asarray(local.CATEGORY_B), (7, 4, 2))
    np.testing.assert_allclose(local.volt_var(v, 2.0, curves), q)
    p = local.droop_pf(jnp.array([49.8, 50.0, 50.2, 52.0]), 5.0, 10.0, 0.0, 10.0, droop=0.04)
    np.testing.assert_allclose(p, [6.0, 5.0, 4.0, 0.0])
    qv = local.droop_qv(jnp.array([0.95, 1.0, 1.005, 1.05]), 1.0, droop_v=0.05, deadband_pu=0.01)
    np.testing.assert_allclose(qv, [0.8, 0.0, 0.0, -0.8])
    np.testing.assert_allclose(local.to_action(jnp.array([0.0, 5.0, 10.0]), 0.0, 10.0), [-1, 0, 1])


# ----------------------------------------------------------------------------- example protocol

def test_example_protocol_runs_and_converges():
    spec = importlib.util.spec_from_file_location("example_protocol", ROOT / "scripts" / "example_protocol.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert len((ROOT / "scripts" / "example_protocol.py").read_text().splitlines()) < 100
    assert "leader_average" in P.REGISTRY
    trace = mod.run(n=5, steps=30, delay=0, loss_prob=0.0)
    np.testing.assert_allclose(trace[2:], 3.0)  # synchronous: report (1 step), then broadcast (1 step)
    trace = mod.run(n=5, steps=30, delay=1, loss_prob=0.2, seed=3)
    np.testing.assert_allclose(trace[-1], 3.0)


# ----------------------------------------------------------------------------- jit / vmap

def test_protocols_jit_vmap_without_retrace():
    B, n = 16, 6
    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    batch = lambda x: jnp.broadcast_to(x, (B,) + jnp.shape(x))

    cons = consensus.make_params(ring(n), iterations=30)
    mk = p2p.make_params(n)
    ad = admm.make_params(jnp.full(n, 0.1), jnp.linspace(10, 30, n), 0.0, 50.0, iterations=50)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def all_protocols(cons, ad, net, price, x, demand):
        c = jax.vmap(lambda x: consensus.apply(cons, consensus.init(cons), {"value": x}, all_links(n))[0]["value"])(x)
        m = jax.vmap(lambda q, p: p2p.apply(mk, p2p.init(mk), {"net_mw": q, "price": p}, None)[0]["p2p_mw"])(net, price)
        a = jax.vmap(lambda d, prm: admm.apply(prm, admm.init(prm), {"demand_mw": d}, None)[0]["p_mw"])(demand, ad)
        return c, m, a

    ad_b = jax.tree_util.tree_map(batch, ad)
    for k in (k1, k2):
        ka, kb, kc = jax.random.split(k, 3)
        net = jax.random.normal(ka, (B, n))
        price = jax.random.uniform(kb, (B, n)) * 50
        x = jax.random.normal(kc, (B, n))
        c, m, a = all_protocols(cons, ad_b, net, price, x, jnp.linspace(50, 150, B)[:, None])
        assert c.shape == (B, n) and m.shape == (B, n) and a.shape == (B, n)
        np.testing.assert_allclose(jnp.sum(m, axis=1), 0.0, atol=1e-9)

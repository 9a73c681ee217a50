"""The perfect-foresight oracle (`pgjax.baselines.oracle`) on multi_microgrid's test year.

The plan keeps the storage within its energy bounds and balances every microgrid at every
step; rolled out in the environment, it costs less than rule-based and do-nothing on the
same test days, also counting safety violations at the env's penalty; and each device's inverse
action decoding reproduces the setpoint through the device's own `decode`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.baselines.oracle import (
    Oracle,
    applies,
    draw_episodes,
    generator_action,
    oracle_controller,
    plan_episode,
    renewable_action,
    storage_action,
)
from pgjax.baselines.rule_based import controller, make_rollout
from pgjax.devices import generator, renewable, storage
from pgjax.devices.base import Context

EPISODES = 3


@pytest.fixture(scope="module")
def env():
    return pgjax.make("multi_microgrid", split="test")


@pytest.fixture(scope="module")
def episodes(env):
    _, states = draw_episodes(env, jax.random.PRNGKey(0), EPISODES)
    return [jax.tree.map(lambda x, i=i: x[i], states) for i in range(EPISODES)]


def test_applies_only_to_microgrid_scenarios(env):
    assert applies(env) is None
    assert applies(pgjax.make("voltage_control_33bw")) is not None


def test_plan_keeps_soc_bounds_and_balances_every_step(env, episodes):
    prm = env.default_params.devices["storage"]
    e_min, e_max = np.asarray(prm.e_min_mwh), np.asarray(prm.e_max_mwh)
    eta_c, eta_d = np.asarray(prm.eta_charge), np.asarray(prm.eta_discharge)
    dt = float(env.default_params.dt_h)
    for state in episodes:
        plan = plan_episode(env, env.default_params, state)
        e, p = np.asarray(plan.storage_e_mwh), np.asarray(plan.storage_p_mw)
        assert np.all(e >= e_min - 1e-7) and np.all(e <= e_max + 1e-7)
        assert np.all(np.abs(p) <= np.maximum(prm.p_charge_max_mw, prm.p_discharge_max_mw) + 1e-7)
        np.testing.assert_allclose(e[1:], e[:-1] + dt * (eta_c * np.maximum(-p, 0) - np.maximum(p, 0) / eta_d),
                                   atol=1e-7)
        # load = generation + renewables + discharge - charge + import - export, per microgrid and step
        supply = p + np.asarray(plan.generator_p_mw) + sum(np.asarray(v) for v in plan.renewable_p_mw.values())
        np.testing.assert_allclose(np.asarray(plan.load_mw),
                                   supply + np.asarray(plan.import_mw) - np.asarray(plan.export_mw), atol=1e-7)
        assert np.all(np.asarray(plan.import_mw) * np.asarray(plan.export_mw) <= 1e-9)
        on = np.asarray(plan.generator_on)
        assert np.all(np.asarray(plan.generator_p_mw)[~on] == 0)


def test_oracle_costs_less_than_rule_based_and_do_nothing_on_test_days(env):
    key = jax.random.PRNGKey(0)
    names = ["oracle", "rule_based", "do_nothing"]
    ctrls = [oracle_controller(env, key, EPISODES)] + [controller(n, env) for n in names[1:]]
    run = make_rollout(env, ctrls, EPISODES)
    totals = {n: run(key, i)[0] for i, n in enumerate(names)}
    assert np.sum(totals["oracle"]["nan_actions"]) == 0  # every episode recognized
    assert np.all(totals["oracle"]["cost"] <= totals["rule_based"]["cost"])
    assert np.all(totals["oracle"]["cost"] <= totals["do_nothing"]["cost"])
    penalty = float(env.default_params.penalty)  # and on the env's objective, cost + penalty * safety
    objective = {n: t["cost"] + penalty * t["safety"] for n, t in totals.items()}
    assert np.all(objective["oracle"] <= objective["rule_based"])
    assert np.all(objective["oracle"] <= objective["do_nothing"])


def test_the_rollout_follows_the_plan(env, episodes):
    """Planned storage energy and commitment are what the environment reaches with the actions."""
    oracle = Oracle(env)
    state = episodes[0]
    plan, actions, objectives = oracle.plan(state)
    assert len(objectives) == 3 and min(objectives) < objectives[0]  # the voltage model pays

    def step(st, a):
        _, st, *_ = env.step_env(jax.random.PRNGKey(0), st, a.astype(jnp.float32), env.default_params)
        return st, (st.devices["storage"].e_mwh, st.devices["generator"].on)

    _, (e, on) = jax.lax.scan(step, state, actions)
    np.testing.assert_allclose(np.asarray(e), np.asarray(plan.storage_e_mwh)[1:], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(on), np.asarray(plan.generator_on))


def _ctx(dt_h, series):
    return Context(dt_h=jnp.asarray(dt_h), hour=jnp.asarray(0.0), price=jnp.asarray(0.0),
                   series=jnp.asarray(series), vm_pu=jnp.ones(1))


@pytest.mark.parametrize("dt_h", [1.0, 0.25])
def test_inverse_decoding_round_trips(env, dt_h):
    rng = np.random.default_rng(0)
    n = 64
    ctx = _ctx(dt_h, rng.uniform(0, 1, 10))

    prm = jax.tree.map(lambda x: jnp.repeat(x[:1], n), env.default_params.devices["storage"])
    st = storage.State(e_mwh=jnp.asarray(rng.uniform(0.2, 2.0, n)), p_mw=jnp.zeros(n), q_mvar=jnp.zeros(n))
    dis, ch = storage.limits(prm, st, dt_h)
    p = jnp.where(rng.uniform(size=n) < 0.5, dis, -ch) * rng.uniform(0, 1, n)
    q = rng.uniform(-1, 1, n) * storage.q_capability(prm.s_max_mva, p)
    sp = storage.decode(prm, st, storage_action(prm, st, p, q, dt_h), ctx)
    np.testing.assert_allclose(sp.p_mw, p, atol=1e-9)
    np.testing.assert_allclose(sp.q_mvar, q, atol=1e-9)

    prm = jax.tree.map(lambda x: jnp.repeat(x[:1], n), env.default_params.devices["generator"])
    was_on = jnp.asarray(rng.uniform(size=n) < 0.5)
    st = generator.State(p_mw=jnp.where(was_on, rng.uniform(0.1, 0.66, n), 0.0), q_mvar=jnp.zeros(n), on=was_on,
                         hours_in_state=jnp.full(n, 10.0))
    on = was_on | (rng.uniform(size=n) < 0.5)  # stays on, starts, or stays off
    lo = jnp.where(was_on, jnp.maximum(prm.p_min_mw, st.p_mw - prm.ramp_down_mw_per_h * dt_h), prm.p_min_mw)
    hi = jnp.where(was_on, jnp.minimum(prm.p_max_mw, st.p_mw + prm.ramp_up_mw_per_h * dt_h),
                   jnp.maximum(prm.p_min_mw, jnp.minimum(prm.p_max_mw, prm.ramp_up_mw_per_h * dt_h)))
    p = jnp.where(on, lo + rng.uniform(0, 1, n) * (jnp.maximum(hi, lo) - lo), 0.0)
    q = jnp.where(on, rng.uniform(-0.5, 0.5, n), 0.0)
    sp = generator.decode(prm, st, generator_action(prm, st, on, p, q, dt_h), ctx)
    np.testing.assert_array_equal(sp.aux > 0.5, on)
    np.testing.assert_allclose(sp.p_mw, p, atol=1e-9)
    np.testing.assert_allclose(sp.q_mvar, q, atol=1e-9)

    for name in ("pv", "wind"):
        prm = jax.tree.map(lambda x: jnp.repeat(x[:1], n), env.default_params.devices[name])
        avail = jnp.minimum(renewable.available(prm, ctx), prm.s_max_mva)
        p = avail * rng.uniform(0, 1, n)
        q = rng.uniform(-1, 1, n) * renewable.q_capability(prm.s_max_mva, p)
        sp = renewable.decode(prm, None, renewable_action(prm, p, q, ctx), ctx)
        np.testing.assert_allclose(sp.p_mw, p, atol=1e-9)
        np.testing.assert_allclose(sp.q_mvar, q, atol=1e-9)

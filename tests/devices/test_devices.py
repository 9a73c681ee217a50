"""Device models on their own: feasibility by construction, closed-form energy balances,
unit-commitment timing, the grid connection's bill, exchange and limits, switched shunts
against pandapower, and the registry. Parameters are synthetic arrays; the dynamic devices
step many devices for many steps with random actions inside one `lax.scan`."""

from __future__ import annotations

import copy
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandapower as pp
import pytest
from conftest import SOLVE, assert_parity, bucket, reference
from flax import struct

from pgjax import devices as dev
from pgjax.devices import flexible_load, generator, pcc, renewable, shunt, storage, tap_changer
from pgjax.devices.base import Context, DeviceType, Field, Setpoint

N, T = 64, 400


def ctx(dt_h=1.0, hour=0.0, series=None, price=50.0):
    series = jnp.zeros(1) if series is None else series
    return Context(dt_h=jnp.asarray(dt_h), hour=jnp.asarray(hour), price=jnp.asarray(price),
                   series=series, vm_pu=jnp.ones(4))


def build(device_type: DeviceType, n: int, **values):
    """Parameters for `n` devices: given values (scalars or arrays) plus field defaults."""
    full = {}
    for name, f in device_type.fields.items():
        v = values.get(name, f.default)
        if v is None:
            v = -1
        full[name] = np.broadcast_to(np.asarray(v), (n,)).tolist()
    return jax.tree.map(jnp.asarray, device_type.build(full))


def rollout(device_type, params, key, dt_h, steps=T, hours=None, series=None):
    """Random actions for `steps` steps; returns (states before, setpoints) stacked over time."""
    n = params.bus.shape[0]
    state = device_type.init(params, jax.random.PRNGKey(7))

    def body(state, inp):
        k, hour = inp
        a = jax.random.uniform(k, (n, device_type.act_dim), minval=-1.5, maxval=1.5)
        c = ctx(dt_h, hour, series)
        sp = device_type.decode(params, state, a, c)
        return device_type.dynamics(params, state, sp, c), (state, sp)

    hours = jnp.mod(jnp.arange(steps) * dt_h, 24.0) if hours is None else hours
    _, out = jax.lax.scan(body, state, (jax.random.split(key, steps), hours))
    return out


@pytest.fixture(scope="module")
def storage_params():
    rng = np.random.default_rng(0)
    e_max = rng.uniform(0.5, 4.0, N)
    return build(storage.STORAGE, N, bus=0, e_min_mwh=0.1 * e_max, e_max_mwh=e_max,
                 p_charge_max_mw=rng.uniform(0.2, 2.0, N), p_discharge_max_mw=rng.uniform(0.2, 2.0, N),
                 eta_charge=rng.uniform(0.8, 1.0, N), eta_discharge=rng.uniform(0.8, 1.0, N),
                 s_max_mva=rng.uniform(0.0, 2.0, N), soc_init_min=0.1, soc_init_max=1.0)


@pytest.mark.parametrize("dt_h", [1.0, 0.25])
def test_storage_soc_in_bounds_and_energy_closed_form(storage_params, dt_h):
    p = storage_params
    states, sp = jax.jit(rollout, static_argnums=0)(storage.STORAGE, p, jax.random.PRNGKey(1), dt_h)
    e = np.asarray(states.e_mwh)  # [T, N] before each step
    e_next = np.asarray(sp.aux)
    tol = 1e-9
    assert (e_next >= np.asarray(p.e_min_mwh) - tol).all() and (e_next <= np.asarray(p.e_max_mwh) + tol).all()
    # per-step closed form: charging stores eta_c * P dt, discharging removes P dt / eta_d
    pw = np.asarray(sp.p_mw)
    expected = e + dt_h * (np.asarray(p.eta_charge) * np.maximum(-pw, 0) - np.maximum(pw, 0) / np.asarray(p.eta_discharge))
    np.testing.assert_allclose(e_next, expected, atol=1e-9)
    # over the whole run: final energy = initial + efficiency-weighted throughput
    charged = dt_h * np.maximum(-pw, 0).sum(0)
    discharged = dt_h * np.maximum(pw, 0).sum(0)
    np.testing.assert_allclose(e_next[-1], e[0] + np.asarray(p.eta_charge) * charged
                               - discharged / np.asarray(p.eta_discharge), atol=1e-8)
    # power limits and inverter rating; the battery really cycles
    assert (pw <= np.asarray(p.p_discharge_max_mw) + tol).all() and (-pw <= np.asarray(p.p_charge_max_mw) + tol).all()
    s = np.hypot(pw, np.asarray(sp.q_mvar))
    assert (s <= np.maximum(np.asarray(p.s_max_mva), np.abs(pw)) + 1e-9).all()
    assert (np.abs(np.asarray(sp.q_mvar))[:, np.asarray(p.s_max_mva) == 0] == 0).all()
    assert (e_next.max(0) - e_next.min(0) > 0.1 * np.asarray(p.e_max_mwh)).all()
    c = jax.vmap(lambda st, s_: storage.STORAGE.safety(p, st, s_, ctx(dt_h)))(states, sp)
    assert float(jnp.max(c)) == 0.0


def test_storage_full_charge_reaches_e_max_exactly(storage_params):
    p = storage_params.replace(s_max_mva=jnp.zeros(N))  # power bounded by p_charge_max only
    state = storage.STORAGE.init(p, jax.random.PRNGKey(0))
    for _ in range(60):  # always charge: the limit derived from SOC stops exactly at e_max
        sp = storage.STORAGE.decode(p, state, -jnp.ones((N, 2)), ctx(1.0))
        state = storage.STORAGE.dynamics(p, state, sp, ctx(1.0))
    np.testing.assert_allclose(state.e_mwh, p.e_max_mwh, rtol=1e-12)


@pytest.fixture(scope="module")
def generator_run():
    rng = np.random.default_rng(1)
    p_max = rng.uniform(0.5, 2.0, N)
    params = build(generator.GENERATOR, N, bus=0, p_min_mw=0.2 * p_max, p_max_mw=p_max,
                   s_max_mva=1.1 * p_max, q_min_mvar=-0.3 * p_max, q_max_mvar=0.5 * p_max,
                   ramp_up_mw_per_h=rng.uniform(0.1, 1.0, N) * p_max,
                   ramp_down_mw_per_h=rng.uniform(0.1, 1.0, N) * p_max,
                   min_up_h=rng.integers(1, 5, N).astype(float), min_down_h=rng.integers(1, 5, N).astype(float),
                   startup_cost=10.0, cost_a_per_h=1.0, cost_b_per_mwh=30.0, cost_c_per_mw2h=5.0,
                   initial_on=rng.random(N) < 0.5)
    states, sp = jax.jit(rollout, static_argnums=0)(generator.GENERATOR, params, jax.random.PRNGKey(2), 1.0)
    return params, states, sp


def test_generator_ramp_and_capability(generator_run):
    params, states, sp = generator_run
    p = np.asarray(sp.p_mw)
    on = np.asarray(sp.aux) > 0.5
    was_on = np.asarray(states.on)
    p_prev = np.asarray(states.p_mw)
    tol = 1e-9
    both = on & was_on
    dp = p - p_prev
    assert (dp[both] <= np.broadcast_to(np.asarray(params.ramp_up_mw_per_h), p.shape)[both] + tol).all()
    assert (-dp[both] <= np.broadcast_to(np.asarray(params.ramp_down_mw_per_h), p.shape)[both] + tol).all()
    # shutdown only from within one ramp-down of p_min; start-up within one ramp-up (or p_min)
    stop = was_on & ~on
    assert (p_prev[stop] <= (np.asarray(params.p_min_mw) + np.asarray(params.ramp_down_mw_per_h))[None].repeat(T, 0)[stop] + tol).all()
    pmin, pmax = np.asarray(params.p_min_mw), np.asarray(params.p_max_mw)
    assert ((p >= pmin - tol) & (p <= pmax + tol))[on].all() and (p[~on] == 0).all()
    q = np.asarray(sp.q_mvar)
    assert (np.hypot(p, q) <= np.asarray(params.s_max_mva) + tol).all()
    assert ((q >= np.asarray(params.q_min_mvar) - tol) & (q <= np.asarray(params.q_max_mvar) + tol)).all()
    assert stop.any() and (on & ~was_on).any(), "random actions should start and stop units"


def test_generator_min_up_down_time(generator_run):
    params, states, sp = generator_run
    on = np.asarray(sp.aux) > 0.5  # [T, N] commitment of each step
    initial = np.asarray(params.initial_on)
    min_up, min_down = np.asarray(params.min_up_h), np.asarray(params.min_down_h)
    for i in range(N):
        seq = np.concatenate([[initial[i]], on[:, i]])
        changes = np.flatnonzero(seq[1:] != seq[:-1]) + 1  # index in seq where a new run starts
        runs = np.diff(np.concatenate([changes, [len(seq)]]))  # length of each run (hours)
        for start, length in zip(changes[:-1], runs[:-1]):  # completed runs
            assert length >= (min_up[i] if seq[start] else min_down[i]) - 1e-9, (i, start, length)


def test_generator_cost_closed_form(generator_run):
    params, states, sp = generator_run
    c = jax.vmap(lambda st, s_: generator.GENERATOR.cost(params, st, s_, ctx(1.0)))(states, sp)
    p, on = np.asarray(sp.p_mw), np.asarray(sp.aux)
    started = on * (1 - np.asarray(states.on))
    expected = 1.0 * on + 30.0 * p + 5.0 * p**2 + 10.0 * started
    np.testing.assert_allclose(c, expected, rtol=1e-12)


@pytest.mark.parametrize("kind", [renewable.PV, renewable.WIND])
def test_renewable_output_within_available_and_inverter(kind):
    rng = np.random.default_rng(3)
    cap = rng.uniform(0.1, 2.0, N)
    params = build(kind, N, bus=0, p_max_mw=cap, s_max_mva=cap * rng.uniform(1.0, 1.3, N), profile=0,
                   curtailable=rng.random(N) < 0.7)
    series = jnp.asarray([0.73])
    states, sp = rollout(kind, params, jax.random.PRNGKey(3), 1.0, steps=50, series=series)
    avail = 0.73 * cap
    p, q = np.asarray(sp.p_mw), np.asarray(sp.q_mvar)
    np.testing.assert_allclose(np.asarray(sp.aux), np.broadcast_to(avail, p.shape))
    assert (p >= 0).all() and (p <= avail + 1e-12).all()
    fixed = ~np.asarray(params.curtailable)
    np.testing.assert_allclose(p[:, fixed], np.broadcast_to(avail[fixed], p[:, fixed].shape))
    q_cap = np.sqrt(np.asarray(params.s_max_mva) ** 2 - p**2)
    assert (np.abs(q) <= q_cap + 1e-12).all()
    m = kind.metrics(params, states, sp, ctx(1.0))
    np.testing.assert_allclose(np.asarray(m["curtailment_mwh"] + m["renewable_mwh"]), np.broadcast_to(avail, p.shape))


def test_shiftable_load_serves_daily_energy_exactly():
    rng = np.random.default_rng(4)
    p_max = rng.uniform(0.1, 1.0, N)
    e_daily = p_max * rng.uniform(1.0, 23.0, N)
    params = build(flexible_load.SHIFTABLE_LOAD, N, bus=0, p_max_mw=p_max, e_daily_mwh=e_daily)
    for dt_h in (1.0, 0.25):
        steps = int(3 * 24 / dt_h)
        states, sp = rollout(flexible_load.SHIFTABLE_LOAD, params, jax.random.PRNGKey(5), dt_h, steps=steps)
        cons = -np.asarray(sp.p_mw)
        assert (cons >= -1e-12).all() and (cons <= p_max + 1e-9).all()
        per_day = cons.reshape(3, -1, N).sum(1) * dt_h
        np.testing.assert_allclose(per_day, np.broadcast_to(e_daily, per_day.shape), rtol=1e-9)


def test_curtailable_load_curtails_within_limit_and_pays_comfort():
    params = build(flexible_load.CURTAILABLE_LOAD, N, bus=0, p_nom_mw=2.0, q_per_p=0.5, profile=0,
                   curtail_max=0.3, comfort_cost_per_mwh=100.0)
    st = flexible_load.CURTAILABLE_LOAD.init(params, None)
    a = jnp.linspace(-1, 1, N)[:, None]
    c = ctx(0.5, series=jnp.asarray([0.8]))
    sp = flexible_load.CURTAILABLE_LOAD.decode(params, st, a, c)
    demand = 1.6
    np.testing.assert_allclose(-sp.p_mw + sp.aux, demand)  # served + curtailed = demand
    assert float(jnp.max(sp.aux)) == pytest.approx(0.3 * demand) and float(jnp.min(sp.aux)) == 0.0
    np.testing.assert_allclose(sp.q_mvar, 0.5 * sp.p_mw)
    np.testing.assert_allclose(flexible_load.CURTAILABLE_LOAD.cost(params, st, sp, c), 100.0 * sp.aux * 0.5)


def test_tap_changer_ratio_follows_pandapower_formula():
    # lv-side ratio tap: pandapower scales vn_lv by (1 + (pos - neutral) s), ratio 1 / that
    params = build(tap_changer.TAP_CHANGER, 2, branch=0, tap_base=[1 / 1.075, 1.05], base_pos=[12, 2],
                   initial_pos=[12, 2], tap_neutral=0, tap_min=-16, tap_max=16, tap_step_percent=[0.625, 2.5],
                   hv_side=[False, True], max_step_change=3)
    pos = jnp.asarray([-5.0, 7.0])
    r = tap_changer.ratio(params, pos)
    np.testing.assert_allclose(r[0], 1 / (1 - 5 * 0.00625), rtol=1e-12)
    np.testing.assert_allclose(r[1], 1.05 * (1 + 7 * 0.025) / (1 + 2 * 0.025), rtol=1e-12)
    st = tap_changer.TAP_CHANGER.init(params, None)
    sp = tap_changer.TAP_CHANGER.decode(params, st, jnp.asarray([[1.0], [-0.4]]), ctx())
    np.testing.assert_allclose(sp.aux, [15.0, 1.0])  # +3 and round(-1.2) = -1 positions
    sp = tap_changer.TAP_CHANGER.decode(params, st.replace(pos=jnp.asarray([15.0, -16.0])),
                                        jnp.asarray([[1.0], [-1.0]]), ctx())
    np.testing.assert_allclose(sp.aux, [16.0, -16.0])  # clipped to the range


def pf_result(p_from_mw=(0.0,), slack_p_mw=(0.0,)):
    """The two power-flow outputs a grid connection reads (branch flows at the from end, slack P)."""
    return types.SimpleNamespace(p_from_mw=jnp.asarray(p_from_mw, float), slack_p_mw=jnp.asarray(slack_p_mw, float))


def test_pcc_exchange_on_branch_and_at_ext_grid():
    """Import = direction * P at the branch's from end, or the external grid's slack P."""
    params = build(pcc.PCC, 4, branch=[2, 1, -1, -1], ext_grid=[-1, -1, 1, 0], direction=[1.0, -1.0, 1.0, 1.0])
    pf = pf_result(p_from_mw=[0.4, -0.7, 1.25], slack_p_mw=[3.0, -2.5])
    np.testing.assert_allclose(pcc.exchange(params, pf), [1.25, 0.7, -2.5, 3.0], rtol=0, atol=0)
    c = ctx(2.0).replace(pf=pf)
    np.testing.assert_allclose(pcc.PCC.measure(params, pcc.PCC.init(params, None), c).import_mw, [1.25, 0.7, -2.5, 3.0])
    m = pcc.PCC.metrics(params, None, None, c)
    np.testing.assert_allclose(m["import_mwh"], [2.5, 1.4, 0.0, 6.0])
    np.testing.assert_allclose(m["export_mwh"], [0.0, 0.0, 5.0, 0.0])
    sp = pcc.PCC.decode(params, None, jnp.zeros((4, 0)), c)  # no action, no injection
    assert float(jnp.abs(sp.p_mw).sum() + jnp.abs(sp.q_mvar).sum()) == 0.0


def test_pcc_bill_closed_form():
    """`dt * price * price_scale * (import - (1 - sell_discount) * export)` ($)."""
    imports = np.array([1.5, -2.0, 0.0, -0.4, 0.7])
    discount = np.array([0.1, 0.1, 0.5, 0.0, 0.25])
    scale = np.array([1.0, 1.0, 2.0, 0.5, 1.5])
    params = build(pcc.PCC, 5, ext_grid=np.arange(5), sell_discount=discount, price_scale=scale)
    price, dt_h = 42.0, 0.25
    expected = [dt_h * price * scale[0] * 1.5, -dt_h * price * scale[1] * 0.9 * 2.0, 0.0,
                -dt_h * price * scale[3] * 1.0 * 0.4, dt_h * price * scale[4] * 0.7]
    c = ctx(dt_h, price=price).replace(pf=pf_result(slack_p_mw=imports))
    np.testing.assert_allclose(pcc.PCC.cost(params, None, None, c), expected, rtol=1e-12)
    bill = pcc.PCC.grid_connection.bill(params, jnp.asarray(price), jnp.asarray(imports), jnp.asarray(dt_h))
    np.testing.assert_allclose(bill, expected, rtol=1e-12)
    # a negative price: importing earns, exporting pays
    c = c.replace(price=jnp.asarray(-10.0))
    np.testing.assert_allclose(pcc.PCC.cost(params, None, None, c), -np.asarray(expected) * 10.0 / 42.0, rtol=1e-12)


def test_pcc_safety_above_import_and_export_limits():
    """Safety = import above `import_max_mw` + export above `export_max_mw`, MW; zero inside."""
    imports = np.array([2.5, 1.9, -3.5, -1.0, 0.0, 5.0])
    params = build(pcc.PCC, 6, ext_grid=np.arange(6), import_max_mw=[2.0, 2.0, 1.0, 1.0, 0.0, 1e9],
                   export_max_mw=[1.0, 1.0, 3.0, 0.5, 0.0, 1e9])
    c = ctx().replace(pf=pf_result(slack_p_mw=imports))
    np.testing.assert_allclose(pcc.PCC.safety(params, None, None, c), [0.5, 0.0, 0.5, 0.5, 0.0, 0.0], atol=1e-12)
    lim_imp, lim_exp = pcc.PCC.grid_connection.limits(params)
    np.testing.assert_allclose(lim_imp, [2.0, 2.0, 1.0, 1.0, 0.0, pcc.FINITE_MAX_MW])
    np.testing.assert_allclose(lim_exp, [1.0, 1.0, 3.0, 0.5, 0.0, pcc.FINITE_MAX_MW])


def test_shunt_steps_clip_to_range_and_cost_switching():
    """New step = clip(step + round(clip(a, -1, 1) * max_step_change), 0, max_step); cost
    `switching_cost * |change|`; the state keeps the new step."""
    steps = np.array([0.0, 2.0, 4.0, 3.0, 1.0, 2.0, 2.0])
    actions = np.array([-1.0, 0.4, 1.0, 0.9, -3.0, 0.1, 0.5])
    change = np.array([3, 3, 2, 3, 2, 1, 3])
    params = build(shunt.SHUNT, 7, bus=0, q_step_mvar=0.3, max_step=4, max_step_change=change, switching_cost=1.5)
    state = shunt.State(step=jnp.asarray(steps))
    sp = shunt.SHUNT.decode(params, state, jnp.asarray(actions)[:, None], ctx())
    expected = np.clip(steps + np.round(np.clip(actions, -1, 1) * change), 0, 4)
    np.testing.assert_array_equal(sp.aux, expected)
    np.testing.assert_array_equal(expected, [0.0, 3.0, 4.0, 4.0, 0.0, 2.0, 4.0])  # the cases: low, up, high, clipped
    assert float(jnp.abs(sp.p_mw).sum() + jnp.abs(sp.q_mvar).sum()) == 0.0  # acts through the bus shunt
    np.testing.assert_allclose(shunt.SHUNT.cost(params, state, sp, ctx()), 1.5 * np.abs(expected - steps))
    assert float(jnp.max(shunt.SHUNT.safety(params, state, sp, ctx()))) == 0.0
    np.testing.assert_array_equal(shunt.SHUNT.dynamics(params, state, sp, ctx()).step, expected)


def test_shunt_susceptance_matches_pandapower_shunt(case):
    """Capacitor steps (and a reactor) applied to case33bw's bus shunts give pandapower's
    power flow with `create_shunt(q_mvar = -step * q_step_mvar)` at those buses: the bank
    injects `step * q_step_mvar * V^2`. Two banks on one bus add up."""
    net, grid, netmap, unchanged = case("case33bw")
    buses = [17, 17, 32, 24]  # net bus index; 17 holds two banks
    q_step = np.array([0.1, 0.05, 0.08, -0.06])  # Mvar per step at 1 pu (last: a reactor)
    steps = np.array([3.0, 2.0, 4.0, 1.0])
    params = build(shunt.SHUNT, 4, bus=netmap.bus_lookup[buses], q_step_mvar=q_step, max_step=4)
    g = jax.tree.map(jnp.asarray, grid)
    g = shunt.SHUNT.apply_to_grid(params, shunt.State(step=jnp.asarray(steps)), g)
    added = np.asarray(g.bus.bs_mvar) - np.asarray(grid.bus.bs_mvar)
    np.testing.assert_allclose(added[netmap.bus_lookup[[17, 32, 24]]], [0.4, 0.32, -0.06], rtol=1e-12)
    assert np.count_nonzero(added) == 3
    result = SOLVE(bucket(g))
    assert bool(result.converged)
    ref_net = copy.deepcopy(net)
    for b, q, n in zip(buses, q_step, steps):
        pp.create_shunt(ref_net, b, q_mvar=-q * n, p_mw=0.0)
    ref = reference(ref_net)
    assert_parity(result, netmap, ref)
    np.testing.assert_allclose(-ref.res_shunt.q_mvar.values, q_step * steps * ref.res_bus.vm_pu.loc[buses].values ** 2,
                               rtol=1e-9)  # the closed form, in pandapower's own result
    # the banks moved the voltages (the comparison is not of two unchanged networks)
    assert float(np.max(np.abs(ref.res_bus.vm_pu.values - unchanged.res_bus.vm_pu.values))) > 1e-3


def test_shunt_rule_switches_towards_the_voltage_band():
    """Below `v_low_pu` a capacitor steps in (a reactor out), above `v_high_pu` the reverse."""
    params = build(shunt.SHUNT, 4, bus=[0, 1, 2, 3], q_step_mvar=[0.1, 0.1, -0.1, 0.1], max_step=4,
                   max_step_change=2, v_low_pu=0.97, v_high_pu=1.03)
    c = Context(dt_h=jnp.asarray(1.0), hour=jnp.asarray(0.0), price=jnp.asarray(0.0), series=jnp.zeros(1),
                vm_pu=jnp.asarray([0.95, 1.05, 0.95, 1.0]))
    state = shunt.State(step=jnp.full(4, 2.0))
    sp = shunt.SHUNT.decode(params, state, shunt.SHUNT.rule(params, state, c), c)
    np.testing.assert_array_equal(sp.aux, [3.0, 1.0, 1.0, 2.0])


def test_registry_accepts_a_user_type_without_core_edits():
    @struct.dataclass
    class P:
        bus: jax.Array
        p_mw: jax.Array

    @struct.dataclass
    class S:
        x: jax.Array

    zero = lambda p, s, sp, c: jnp.zeros_like(p.p_mw)  # noqa: E731
    toy = DeviceType(
        name="toy_constant_load", params_cls=P, state_cls=S,
        fields={"bus": Field("bus"), "p_mw": Field("float", unit="MW")}, act_dim=0, obs_dim=0,
        default_action=(), init=lambda p, k: S(x=jnp.zeros_like(p.p_mw)),
        decode=lambda p, s, a, c: Setpoint(p_mw=-p.p_mw, q_mvar=0 * p.p_mw, aux=0 * p.p_mw),
        dynamics=lambda p, s, sp, c: s, cost=zero, safety=zero,
        observe=lambda p, s, c: jnp.zeros((p.p_mw.shape[0], 0)))
    try:
        dev.register(toy)
        assert dev.get("toy_constant_load") is toy
        with pytest.raises(ValueError, match="already registered"):
            dev.register(toy)
    finally:
        dev.REGISTRY.pop("toy_constant_load", None)
    with pytest.raises(KeyError, match="unknown"):
        dev.get("toy_constant_load")

"""Frequency dynamics against closed forms, pandapower's operating point and power balance."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pandapower as pp
import pytest

from pgjax import networks
from pgjax.frequency import dynamics as d
from pgjax.frequency import ieee68


def single_machine(m_s=10.0, d_pu=1.0, inv_r=20.0, t_gov=0.5) -> d.Plant:
    """One machine on one bus (no branches), per unit on the system base."""
    f = lambda x: jnp.asarray([x], jnp.float64)  # noqa: E731
    return d.Plant(m_s=f(m_s), d_pu=f(d_pu), inv_r_pu=f(inv_r), t_gov_s=f(t_gov), c_machine_pu=f(10.0),
                   machine_bus=jnp.zeros(1, jnp.int32), p0_pu=f(1.0), branch_from=jnp.zeros(0, jnp.int32),
                   branch_to=jnp.zeros(0, jnp.int32), c_branch_pu=jnp.zeros(0), load_damping_pu=f(0.0),
                   f0_hz=jnp.asarray(60.0))


def load_step(plant, dp_pu, n_sub, h=0.1):
    topo = d.all_in_service(plant)
    disc = d.discretize(plant, topo, h)
    w = disc.red.s.T @ jnp.full(plant.load_damping_pu.shape, -dp_pu)
    return d.simulate(disc, d.zero_state(plant), jnp.tile(w, (n_sub, 1)))


@pytest.fixture(scope="module")
def sys68():
    return ieee68.build()


def test_single_machine_closed_forms():
    m, dmp, inv_r, dp = 10.0, 1.0, 20.0, 0.1
    x, tr = load_step(single_machine(m, dmp, inv_r), dp, 6000)
    ss = -dp / (dmp + inv_r)
    np.testing.assert_allclose(float(x.dw_pu[0]), ss, rtol=1e-6)
    np.testing.assert_allclose(float(tr.dw_bus_pu[-1, 0]), ss, rtol=1e-6)
    np.testing.assert_allclose(float(x.dpm_pu[0]), -inv_r * ss, rtol=1e-6)  # governor output dP / (1 + D R)
    np.testing.assert_allclose(float(tr.rocof_pu_s[0, 0]), -dp / m, rtol=1e-12)  # -dP / 2H at t = 0+


def test_single_machine_trajectory_without_governor():
    """inv_r = 0: dw(t) = -dP / D (1 - exp(-D t / M)) at every sub-step end (exact discretization)."""
    m, dmp, dp, h = 8.0, 2.0, 0.05, 0.1
    _, tr = load_step(single_machine(m, dmp, 0.0), dp, 200, h)
    t = h * np.arange(1, 201)
    np.testing.assert_allclose(np.asarray(tr.dw_pu[:, 0]), -dp / dmp * (1 - np.exp(-dmp * t / m)), rtol=1e-9)


def test_operating_point_is_pandapowers(sys68):
    net = networks.load("ieee68")
    pp.runpp(net, tolerance_mva=1e-10)
    np.testing.assert_allclose(sys68.op.vm_pu, net.res_bus.vm_pu.values, atol=1e-8)
    np.testing.assert_allclose(sys68.op.va_deg, net.res_bus.va_degree.values, atol=1e-6)
    gen_p = np.r_[net.res_gen.p_mw.values, net.res_ext_grid.p_mw.values]
    gen_q = np.r_[net.res_gen.q_mvar.values, net.res_ext_grid.q_mvar.values]
    np.testing.assert_allclose(sys68.op.p_gen_mw, gen_p, atol=1e-6)
    np.testing.assert_allclose(sys68.op.q_gen_mvar, gen_q, atol=1e-6)
    assert np.all(sys68.plant.c_branch_pu > 0) and np.all(sys68.plant.c_machine_pu > 0)


def test_68bus_steady_state_and_power_balance(sys68):
    plant = d.Plant(*map(jnp.asarray, sys68.plant))
    topo = d.all_in_service(plant)
    disc = d.discretize(plant, topo, 0.1)
    dp_bus = jnp.zeros(68).at[int(sys68.load_bus[3])].set(-3.0)  # 300 MW more load
    w = disc.red.s.T @ dp_bus
    x, tr = d.simulate(disc, d.zero_state(plant), jnp.tile(w, (12000, 1)))  # slowest mode decays as exp(-0.018 t)
    beta = float(jnp.sum(plant.d_pu) + jnp.sum(plant.inv_r_pu) + jnp.sum(plant.load_damping_pu))
    np.testing.assert_allclose(np.asarray(tr.dw_bus_pu[-1]), -3.0 / beta, rtol=1e-6)
    # steady state: mechanical power change = load change + load relief + machine damping
    dw = float(x.dw_pu[0])
    balance = float(jnp.sum(x.dpm_pu)) - 3.0 - dw * float(jnp.sum(plant.d_pu) + jnp.sum(plant.load_damping_pu))
    assert abs(balance) < 1e-6 * 3.0
    # lossless network at every state: sum of machine electrical power = load drawn (with its frequency relief)
    pe = d.electrical_power(plant, disc.red, x, dp_bus)
    np.testing.assert_allclose(float(jnp.sum(pe)), 3.0 + float(jnp.sum(plant.load_damping_pu * (disc.red.s @ x.dw_pu))),
                               rtol=1e-9)
    np.testing.assert_allclose(np.asarray(jnp.sum(disc.red.s, 1)), 1.0, atol=1e-12)


def test_contingency_changes_trajectory_only_from_its_step(sys68):
    plant = d.Plant(*map(jnp.asarray, sys68.plant))
    base = d.all_in_service(plant)
    dp_bus = jnp.zeros(68).at[int(sys68.load_bus[0])].set(-1.0)

    def run(trip_step, machine):
        def step(x, k):
            on = base.machine_on.at[machine].set(k < trip_step)
            topo = base._replace(machine_on=on)
            disc = d.discretize(plant, topo, 0.1)
            w = disc.red.s.T @ (dp_bus + d.lost_injection(plant, topo, 68))
            x, tr = d.simulate(disc, x, jnp.tile(w, (20, 1)))
            return d.recentre(plant, topo, x), tr.dw_bus_pu
        return jax.lax.scan(step, d.zero_state(plant), jnp.arange(10))[1]

    never, trip = run(100, 1), run(4, 1)
    np.testing.assert_array_equal(np.asarray(never[:4]), np.asarray(trip[:4]))
    assert np.all(np.abs(np.asarray(never[4:] - trip[4:])).max(axis=(1, 2)) > 1e-6)


def test_no_retracing(sys68):
    plant = d.Plant(*map(jnp.asarray, sys68.plant))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(plant, topo, w):
        disc = d.discretize(plant, topo, 0.1)
        return d.simulate(disc, d.zero_state(plant), w)

    topo = d.all_in_service(plant)
    for k in range(3):
        t = topo._replace(branch_on=topo.branch_on.at[int(sys68.branch_candidates[k])].set(False))
        run(plant._replace(m_s=plant.m_s * (1 + k)), t, jnp.full((5, 16), 0.01 * k))
    batched = jax.jit(jax.vmap(lambda w: d.simulate(d.discretize(plant, topo, 0.1), d.zero_state(plant), w)))
    x, _ = batched(jnp.zeros((2, 5, 16)))
    assert x.dw_pu.shape == (2, 16)

"""The environment: API shapes, jit + vmap without retracing, auto-reset, NaN actions,
reward = -(cost + penalty * safety) from independently computed costs and safety, the
energy balance against pandapower, the PCC bill in closed form, device-level agents,
observation modes, float32, and a smoke test of every registered scenario. Jitted
functions are built once per module.

The independent references: `pandapower_step` solves the step's operating point with
pandapower on the scenario's own pandapower net (not the converted grid), and
`device_costs` / `agent_safety` restate the cost and safety definitions of the device
modules' docstrings and of `pgjax.env.reward` on the states before and after the step.
"""

from __future__ import annotations

import copy
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pandapower as pp
import pytest

import pgjax
from pgjax import devices as dev
from pgjax import scenario, verification

B = 64


@pytest.fixture(scope="module")
def mm():
    """multi_microgrid with jitted single and batched steps."""
    env = pgjax.make("multi_microgrid", dtype="float64")
    step = jax.jit(env.step)

    @chex.assert_max_traces(n=1)
    def traced_step(key, state, actions, params):
        return env.step(key, state, actions, params)

    vstep = jax.jit(jax.vmap(traced_step, in_axes=(0, 0, 0, None)))
    vreset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    return env, step, vstep, vreset


def random_actions(key, env, shape=()):
    return jax.random.uniform(key, shape + (env.num_agents, env.act_dim), minval=-1.2, maxval=1.2)


# ------------------------------------------------------------------ independent references

# multi_microgrid.yaml `profiles.loads`: the load series of each agent's loads (by name prefix).
LOAD_SERIES = {"MG1": "load_PGE-TAC", "MG2": "load_SCE-TAC", "MG3": "load_SDGE-TAC", "DSO": "load_CA ISO-TAC"}
PRICE_SERIES = "price_0096WD_7_N001"  # multi_microgrid.yaml `profiles.price`
INJECTING = ("generator", "storage", "pv", "wind")  # device types whose state holds this step's p_mw, q_mvar


def owner(name: str) -> str:
    """The tree agent of a device or bus name: "mg1_ess" -> "MG1", "DSO Bus 844" -> "DSO"."""
    return name.replace("_", " ").split()[0].upper()


def pandapower_step(env, params, state, new):
    """pandapower's AC power flow of the step from `state` to `new` (multi_microgrid).

    The scenario's pandapower net with: loads scaled by the step's profile values
    (`LOAD_SERIES`) and `params.load_scale`, every injecting device as a static generator
    with the setpoint kept in its state, the tap changers' positions as the transformers'
    `tap_pos`, the switched shunts' steps as shunts (`q_mvar = -step * q_step_mvar`, pandapower
    counts consumption positive) and the external grid's setpoint from `params.grid`.
    Solved by `pgjax.verification.run_reference`.
    """
    c = env.scenario
    assert {g.type for g in env.layout.groups} <= set(INJECTING) | {"pcc", "tap_changer", "shunt"}
    net = copy.deepcopy(c.net)
    row = np.asarray(params.profiles)[int(state.start + state.t)]
    series = dict(zip(c.series_names, row))
    factor = [series[LOAD_SERIES[owner(n)]] * float(params.load_scale) for n in net.load.name]
    net.load["scaling"] = net.load.scaling.values * np.asarray(factor)
    net_bus = {}
    for i, b in zip(net.bus.index, c.netmap.bus_lookup):
        net_bus.setdefault(int(b), i)
    trafo = dict(zip(c.netmap.branch_rows["trafo"].tolist(), net.trafo.index))
    for g in env.layout.groups:
        prm, st = jax.device_get((params.devices[g.type], new.devices[g.type]))
        for k, name in enumerate(g.names):
            if g.type in INJECTING:
                pp.create_sgen(net, net_bus[int(prm.bus[k])], p_mw=float(st.p_mw[k]), q_mvar=float(st.q_mvar[k]),
                               name=name)
            elif g.type == "tap_changer":
                net.trafo.loc[trafo[int(prm.branch[k])], "tap_pos"] = float(st.pos[k])
            elif g.type == "shunt":
                q_mvar = -float(st.step[k] * prm.q_step_mvar[k])
                pp.create_shunt(net, net_bus[int(prm.bus[k])], q_mvar=q_mvar, name=name)
    eg = c.netmap.ext_grid_index
    net.ext_grid.loc[eg, "vm_pu"] = np.asarray(params.grid.ext_grid.vm_pu)[:len(eg)]
    return verification.run_reference(net)[0]


def pcc_imports(env, params, ref) -> np.ndarray:
    """Import of each grid connection `[n_pcc]` (MW, negative: export) from pandapower's
    transformer flows: the hv (from) end of the connection's branch times its direction."""
    pcc = jax.device_get(params.devices["pcc"])
    trafo = dict(zip(env.scenario.netmap.branch_rows["trafo"].tolist(), ref.trafo.index))
    p_hv = [float(ref.res_trafo.p_hv_mw.loc[trafo[int(b)]]) for b in np.asarray(pcc.branch)]
    return np.asarray(pcc.direction) * np.asarray(p_hv)


def device_costs(env, params, state, new, import_mw) -> dict:
    """$ of every device this step, by device name, from the device modules' cost definitions:
    generator `dt (a on + b p + c p^2) + startup_cost * started`, storage
    `degradation_cost_per_mwh |p| dt`, PV / wind `curtailment_cost_per_mwh (p_avail - p) dt`,
    PCC `dt price (import - (1 - sell_discount) export)` (price: the scenario's price series
    times `price_scale`), tap changer and shunt `switching_cost |change|`."""
    c = env.scenario
    t_abs = int(state.start + state.t)
    price = float(np.asarray(params.profiles)[t_abs, c.series_names.index(PRICE_SERIES)])
    dt = float(params.dt_h)
    out = {}
    for g in env.layout.groups:
        prm, old, st = jax.device_get((params.devices[g.type], state.devices[g.type], new.devices[g.type]))
        if g.type == "generator":
            on, started = st.on.astype(float), (st.on & ~old.on).astype(float)
            cost = dt * (prm.cost_a_per_h * on + prm.cost_b_per_mwh * st.p_mw + prm.cost_c_per_mw2h * st.p_mw ** 2) \
                + prm.startup_cost * started
        elif g.type == "storage":
            cost = prm.degradation_cost_per_mwh * np.abs(st.p_mw) * dt
        elif g.type in ("pv", "wind"):
            cost = prm.curtailment_cost_per_mwh * (st.p_avail_mw - st.p_mw) * dt
        elif g.type == "pcc":
            imp, exp = np.maximum(import_mw, 0), np.maximum(-import_mw, 0)
            cost = dt * price * prm.price_scale * (imp - (1 - prm.sell_discount) * exp)
        elif g.type == "tap_changer":
            cost = prm.switching_cost * np.abs(st.pos - old.pos)
        elif g.type == "shunt":
            cost = prm.switching_cost * np.abs(st.step - old.step)
        out.update(zip(g.names, cost.tolist()))
    return out


def agent_safety(env, params, ref, import_mw) -> dict:
    """Safety of every tree agent (MG1..MG3, DSO) from pandapower's solution: voltage outside
    [vm_min, vm_max] at its buses (one per grid bus: fused buses count once), branch loading
    above the limit / 100 by the branch's to (lv) bus, and its grid connections' import above
    `import_max_mw` plus export above `export_max_mw`."""
    c = env.scenario
    vm_min, vm_max, l_max = float(params.vm_min_pu), float(params.vm_max_pu), float(params.loading_max_percent)
    names = ref.bus.name
    out = {}
    seen = set()
    for i, b in zip(ref.bus.index, c.netmap.bus_lookup):
        if int(b) in seen:
            continue
        seen.add(int(b))
        vm = float(ref.res_bus.vm_pu.loc[i])
        out[owner(names.loc[i])] = out.get(owner(names.loc[i]), 0.0) + max(vm_min - vm, 0) + max(vm - vm_max, 0)
    for table, to_col in (("line", "to_bus"), ("trafo", "lv_bus")):
        loading = ref["res_" + table].loading_percent
        for i, to_bus in zip(ref[table].index, ref[table][to_col]):
            a = owner(names.loc[to_bus])
            out[a] = out.get(a, 0.0) + max(float(loading.loc[i]) - l_max, 0) / 100
    pcc = jax.device_get(params.devices["pcc"])
    excess = (np.maximum(import_mw - np.asarray(pcc.import_max_mw), 0)
              + np.maximum(-import_mw - np.asarray(pcc.export_max_mw), 0))
    for name, e in zip(env.layout.group("pcc").names, excess):
        out[owner(name)] += float(e)
    return out


def per_agent(env, values: dict) -> np.ndarray:
    """`[n_agents]` of learned grid agents from per-name values: a microgrid's own, plus an
    equal share of the fixed operator's (DSO: split among the microgrids below it)."""
    agents = list(env.agents)
    out = np.zeros(len(agents))
    for name, v in values.items():
        a = owner(name)
        if a in agents:
            out[agents.index(a)] += v
        else:
            assert a == "DSO", name
            out += v / len(agents)
    return out


@pytest.fixture(scope="module")
def network_taps(mm):
    """multi_microgrid's parameters with the tap changers held at the network's own positions
    and the external grid at 0.95 pu (voltages then cross both limits of the band).

    A tap changer on the lv side away from the network's position changes pandapower's
    per-unit transformer impedance, which the device does not model (see
    `test_tap_positions_match_pandapower`); held there, pandapower is an exact reference.
    """
    env = mm[0]
    p = env.default_params
    tc = p.devices["tap_changer"]
    tc = tc.replace(initial_pos=tc.base_pos, max_step_change=jnp.zeros_like(tc.max_step_change))
    sh = p.devices["shunt"]
    sh = sh.replace(initial_step=sh.max_step)  # switched out by the band rule over the first steps
    grid = p.grid.replace(ext_grid=p.grid.ext_grid.replace(vm_pu=jnp.full_like(p.grid.ext_grid.vm_pu, 0.95)))
    return p.replace(devices={**p.devices, "tap_changer": tc, "shunt": sh}, grid=grid)



def test_reset_step_shapes_and_spaces(mm):
    env, step, _, _ = mm
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert env.agents == ("MG1", "MG2", "MG3")
    assert obs.shape == (env.num_agents, env.obs_dim)
    obs2, state2, reward, terminated, truncated, info = step(
        jax.random.PRNGKey(1), state, random_actions(jax.random.PRNGKey(2), env), params)
    assert obs2.shape == obs.shape and reward.shape == (env.num_agents,)
    assert terminated.shape == () and truncated.shape == () and not bool(truncated)
    assert int(state2.t) == 1 and bool(jnp.all(jnp.isfinite(obs2)))
    for a in env.agents:
        assert env.action_space(a).shape[0] <= env.act_dim and env.observation_space(a).shape[0] <= env.obs_dim
    assert env.action_mask.shape == (env.num_agents, env.act_dim)
    assert env.world_state(state2).shape == (env.layout.observation.n_features,)
    for key in ("cost_total", "losses_mw", "voltage_violation_rate", "controllable", "curtailment_mwh",
                "import_mwh", "export_mwh", "net_load_variance_mw2", "nan_actions", "final_observation"):
        assert key in info


def test_vmap_jit_no_retrace_and_batch_equals_single(mm):
    env, step, vstep, vreset = mm
    params = env.default_params
    keys = jax.random.split(jax.random.PRNGKey(3), B)
    obs, state = vreset(keys, params)
    for i in range(3):  # vstep traces its step at most once (chex.assert_max_traces)
        acts = random_actions(jax.random.PRNGKey(10 + i), env, (B,))
        obs, state, reward, term, trunc, info = vstep(jax.random.split(jax.random.PRNGKey(20 + i), B), state, acts, params)
    assert obs.shape == (B, env.num_agents, env.obs_dim) and bool(jnp.all(jnp.isfinite(reward)))
    # the batch equals single-environment steps
    k = jax.random.split(jax.random.PRNGKey(99), B)
    acts = random_actions(jax.random.PRNGKey(98), env, (B,))
    batched = vstep(k, state, acts, params)
    for i in (0, 17):
        single = step(k[i], jax.tree.map(lambda x: x[i], state), acts[i], params)
        np.testing.assert_allclose(batched[0][i], single[0], atol=1e-9)
        np.testing.assert_allclose(batched[2][i], single[2], atol=1e-9)


def test_episode_bounds_auto_reset_and_invariants(mm, network_taps):
    """A whole episode of random actions: SOC bounds, auto-reset; every step (but the last,
    whose state is the reset one) against pandapower on the same operating point (slack
    power, losses, voltages, PCC exchanges) and the reward from independent costs and safety.

    Tolerances: the feeder is radial and `distflow` exact, so pgjax and pandapower agree to
    ~5e-11 MW / 1e-11 pu (measured); 1e-8 leaves margin. Costs and safety follow from them.
    """
    env, step, _, _ = mm
    params = network_taps
    obs, state = env.reset(jax.random.PRNGKey(4), params)
    starts = set(np.asarray(params.starts).tolist())
    assert int(state.start) in starts
    ess = params.devices["storage"]
    pcc_imports_seen, shunt_steps_seen, vm_seen = [], set(), []
    for t in range(env.episode_steps):
        acts = random_actions(jax.random.PRNGKey(100 + t), env)
        obs, new, reward, term, trunc, info = step(jax.random.PRNGKey(200 + t), state, acts, params)
        assert bool(jnp.all(info["safety"] >= 0)) and float(info["nonconverged"]) == 0.0
        assert bool(trunc) == (t == env.episode_steps - 1) and not bool(term)
        np.testing.assert_allclose(jnp.sum(info["cost"]), info["cost_total"], rtol=1e-9)
        if t == env.episode_steps - 1:
            state = new
            break
        e = new.devices["storage"].e_mwh
        assert bool(jnp.all(e >= ess.e_min_mwh - 1e-9)) and bool(jnp.all(e <= ess.e_max_mwh + 1e-9))

        ref = pandapower_step(env, params, state, new)
        # energy balance: slack power and losses are pandapower's
        loss = ref.res_line.pl_mw.sum() + ref.res_trafo.pl_mw.sum()  # lines, transformers (switches: no impedance)
        np.testing.assert_allclose(info["slack_p_mw"], ref.res_ext_grid.p_mw.sum(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(info["losses_mw"], loss, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.asarray(new.vm_pu)[env.scenario.netmap.bus_lookup], ref.res_bus.vm_pu,
                                   rtol=0, atol=1e-8)
        import_mw = pcc_imports(env, params, ref)
        np.testing.assert_allclose(new.devices["pcc"].import_mw, import_mw, rtol=0, atol=1e-8)

        # reward = -(cost + penalty * safety) * scale from independently computed parts
        cost = per_agent(env, device_costs(env, params, state, new, import_mw))
        safety = per_agent(env, agent_safety(env, params, ref, import_mw))
        np.testing.assert_allclose(info["cost"], cost, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(info["safety"], safety, rtol=1e-9, atol=1e-8)
        expected = -(cost + float(params.penalty) * safety) * float(params.reward_scale)
        np.testing.assert_allclose(reward, expected, rtol=1e-9, atol=1e-8)
        pcc_imports_seen.append(import_mw)
        shunt_steps_seen.add(tuple(np.asarray(new.devices["shunt"].step).tolist()))
        vm_seen.append(ref.res_bus.vm_pu.values)
        state = new
    # the last step reset the environment and kept the final observation
    assert int(state.t) == 0 and int(state.start) in starts
    assert not np.allclose(info["final_observation"], obs)
    # the episode exercised what the references check: exports (sell discount), imports,
    # switched shunts, voltages below, inside and above the band
    pcc_imports_seen, vm_seen = np.asarray(pcc_imports_seen), np.asarray(vm_seen)
    assert (pcc_imports_seen < 0).any() and (pcc_imports_seen > 0).any()
    assert len(shunt_steps_seen) > 1
    inside = (vm_seen >= float(params.vm_min_pu)) & (vm_seen <= float(params.vm_max_pu))
    assert (vm_seen < float(params.vm_min_pu)).any() and (vm_seen > float(params.vm_max_pu)).any() and inside.any()


@pytest.mark.xfail(strict=True, reason="tap_changer sets only the branch ratio; pandapower's lv-side ratio tap "
                                       "also rescales the per-unit transformer impedance (reported, issue 17)")
def test_tap_positions_match_pandapower(mm):
    """The scenario's own tap positions (4, away from the network's 12 and 16) against
    pandapower with the same `tap_pos`: today the voltages differ by ~5e-4 pu."""
    env, step, _, _ = mm
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(4), params)
    _, new, _, _, _, info = step(jax.random.PRNGKey(200), state, random_actions(jax.random.PRNGKey(100), env), params)
    ref = pandapower_step(env, params, state, new)
    np.testing.assert_allclose(np.asarray(new.vm_pu)[env.scenario.netmap.bus_lookup], ref.res_bus.vm_pu,
                               rtol=0, atol=1e-8)


def test_nan_actions_are_counted_and_replaced_by_default(mm):
    env, step, _, _ = mm
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(5), params)
    acts = random_actions(jax.random.PRNGKey(6), env)
    acts = jnp.where(jnp.asarray(env.action_mask), acts, 0.0)
    nan_acts = acts.at[0, 1].set(jnp.nan).at[2, 4].set(jnp.nan)
    replaced = acts.at[0, 1].set(env.default_actions[0, 1]).at[2, 4].set(env.default_actions[2, 4])
    key = jax.random.PRNGKey(7)
    out_nan = step(key, state, nan_acts, params)
    out_def = step(key, state, replaced, params)
    assert int(out_nan[5]["nan_actions"]) == 2 and int(out_def[5]["nan_actions"]) == 0
    np.testing.assert_array_equal(out_nan[0], out_def[0])
    np.testing.assert_array_equal(out_nan[2], out_def[2])
    # out-of-range actions are clipped: 5 acts like 1
    out_big = step(key, state, acts.at[1, 1].set(5.0), params)
    out_one = step(key, state, acts.at[1, 1].set(1.0), params)
    np.testing.assert_array_equal(out_big[2], out_one[2])


def test_price_enters_cost(mm):
    """Doubling the price changes each microgrid's cost by exactly its PCC bill at the price,
    `dt * price * (import - (1 - sell_discount) * export)`, with the imports measured at the
    PCC (unchanged by the price). MG1 runs its units flat out with its loads' profile at 0
    (it exports: the sell discount enters), MG2 and MG3 charge and stay off (they import)."""
    env, step, _, _ = mm
    params = env.default_params
    c = env.scenario
    _, state = env.reset(jax.random.PRNGKey(8), params)
    t_abs = int(state.start + state.t)
    profiles = params.profiles.at[t_abs, c.series_names.index(LOAD_SERIES["MG1"])].set(0.0)
    base_params = params.replace(profiles=profiles)
    price_col = c.series_names.index(PRICE_SERIES)
    doubled_params = params.replace(profiles=profiles.at[:, price_col].multiply(2.0))
    sign = jnp.asarray([[1.0 if a == "MG1" else -1.0] for a in env.agents])  # MG1 all out, the others all in
    acts = jnp.where(jnp.asarray(env.action_mask), sign, 0.0)
    key = jax.random.PRNGKey(1)
    _, new, _, _, _, base = step(key, state, acts, base_params)
    _, new2, _, _, _, doubled = step(key, state, acts, doubled_params)
    import_mw = np.asarray(new.devices["pcc"].import_mw)
    np.testing.assert_array_equal(new2.devices["pcc"].import_mw, import_mw)
    names = env.layout.group("pcc").names
    assert [owner(n) for n in names] == list(env.agents)
    assert import_mw[0] < -0.1 and (import_mw[1:] > 0.1).all(), import_mw

    price = float(profiles[t_abs, price_col])
    assert price > 1.0  # a price at which the bill is visible
    pcc = jax.device_get(params.devices["pcc"])
    dt = float(params.dt_h)
    imp, exp = np.maximum(import_mw, 0), np.maximum(-import_mw, 0)
    bill = dt * price * pcc.price_scale * (imp - (1 - pcc.sell_discount) * exp)
    np.testing.assert_allclose(doubled["cost"] - base["cost"], bill, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(doubled["price"], 2 * base["price"])
    np.testing.assert_allclose(doubled["cost_total"] - base["cost_total"], bill.sum(), rtol=1e-9)


def test_device_level_agents(mm):
    """`hierarchy.learned: device`: one agent per controllable device (named after it), whose
    action columns are exactly that device's; moving one agent's action moves only its
    device; each agent pays its device's cost plus an equal share of its microgrid's PCC
    bill (the PCC has no action), and the costs add up to the total."""
    env = pgjax.make("multi_microgrid", learned="device", dtype="float64")
    controllable = [(g.type, n) for g in env.layout.groups if dev.get(g.type).act_dim for n in g.names]
    assert env.agents == tuple(n for _, n in controllable) and len(env.agents) == 16
    for a, (kind, name) in enumerate(controllable):
        t = dev.get(kind)
        cols = env.layout.action.columns[a]
        assert [(col.target, col.kind, col.name) for col in cols] == [(name, kind, f.name) for f in t.action_features()]
        assert env.act_sizes[a] == t.act_dim and [col.column for col in cols] == list(range(t.act_dim))

    step = jax.jit(env.step)
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(3), params)
    acts = random_actions(jax.random.PRNGKey(4), env)
    _, new, _, _, _, info = step(jax.random.PRNGKey(5), state, acts, params)
    a = env.agents.index("mg2_ess")
    _, moved, _, _, _, _ = step(jax.random.PRNGKey(5), state, acts.at[a].set(-acts[a]), params)
    p_ess = np.asarray(new.devices["storage"].p_mw) != np.asarray(moved.devices["storage"].p_mw)
    assert p_ess.tolist() == [n == "mg2_ess" for n in env.layout.group("storage").names]
    for kind in ("generator", "pv", "wind", "tap_changer", "shunt"):
        jax.tree.map(np.testing.assert_array_equal, new.devices[kind], moved.devices[kind])

    import_mw = np.asarray(new.devices["pcc"].import_mw)  # the exchange the PCC measured
    costs = device_costs(env, params, state, new, import_mw)
    expected = np.array([costs[n] for n in env.agents])
    for name in env.layout.group("pcc").names:  # split among the microgrid's device agents
        mine = [i for i, n in enumerate(env.agents) if owner(n) == owner(name)]
        assert len(mine) == 4
        expected[mine] += costs[name] / len(mine)
    np.testing.assert_allclose(info["cost"], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.sum(info["cost"]), info["cost_total"], rtol=1e-9)
    np.testing.assert_allclose(info["cost_total"], sum(costs.values()), rtol=1e-9)


@pytest.fixture(scope="module")
def vc_pair():
    """voltage_control_33bw in distributed (default) and centralized observation modes."""
    a = pgjax.make("voltage_control_33bw", dtype="float64")
    b = pgjax.make("voltage_control_33bw", centralized=True, dtype="float64")
    return (a, jax.jit(a.step)), (b, jax.jit(b.step))


def test_centralized_and_distributed_differ_only_in_observations(vc_pair):
    (a, step_a), (b, step_b) = vc_pair
    assert a.obs_dim < b.obs_dim == b.layout.observation.n_features
    key = jax.random.PRNGKey(11)
    _, sa = a.reset(key, a.default_params)
    _, sb = b.reset(key, b.default_params)
    acts = random_actions(jax.random.PRNGKey(12), a)
    oa, sa2, ra, _, _, ia = step_a(key, sa, acts, a.default_params)
    ob, sb2, rb, _, _, ib = step_b(key, sb, acts, b.default_params)
    np.testing.assert_array_equal(ra, rb)
    jax.tree.map(np.testing.assert_array_equal, sa2, sb2)
    assert oa.shape != ob.shape
    # every local feature is also in the global vector; centralized rows are all equal
    np.testing.assert_array_equal(ob[0], a.world_state(sa2))
    np.testing.assert_array_equal(ob[0], ob[-1])
    idx = a.layout.observation.index
    np.testing.assert_array_equal(oa, np.where(idx >= 0, np.asarray(ob[0])[np.maximum(idx, 0)], 0))
    np.testing.assert_array_equal(ra, jnp.full_like(ra, ra[0]))  # shared reward in this scenario


def test_float32_env_steps():
    env = pgjax.make("voltage_control_33bw", dtype="float32")
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(3):
        obs, state, reward, _, _, info = step(jax.random.PRNGKey(t), state, random_actions(jax.random.PRNGKey(t), env), env.default_params)
    assert obs.dtype == jnp.float32 and reward.dtype == jnp.float32 and state.vm_pu.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(obs))) and float(info["nonconverged"]) == 0.0


def test_reactive_power_control_removes_overvoltage(vc_pair):
    """voltage_control_33bw: at noon in summer, no control violates 1.05 pu and absorbing Q fixes it."""
    (env, step), _ = vc_pair
    params = env.default_params
    start = int(np.asarray(params.starts)[np.asarray(params.starts) > 4000][0])
    _, state = env.reset(jax.random.PRNGKey(0), params)
    state = state.replace(start=jnp.asarray(start, jnp.int32), t=jnp.asarray(12, jnp.int32))
    none = jnp.zeros((env.num_agents, env.act_dim))
    absorb = jnp.where(jnp.asarray(env.action_mask), -1.0, 0.0)
    _, _, r0, _, _, i0 = step(jax.random.PRNGKey(0), state, none, params)
    _, _, r1, _, _, i1 = step(jax.random.PRNGKey(0), state, absorb, params)
    assert float(i0["vm_max_pu"]) > 1.05 and float(i0["voltage_violation_rate"]) > 0
    assert float(i1["vm_max_pu"]) < float(i0["vm_max_pu"]) and float(i1["safety_voltage"]) < float(i0["safety_voltage"])
    assert float(r1[0]) > float(r0[0])


# Random-action steps per scenario in the finite-steps test: PGJAX_FINITE_STEPS=1000000 runs
# the 1e6 (256 environments x 3,907 steps in one jitted scan; see the README's "Validating inputs").
FINITE_STEPS = int(os.environ.get("PGJAX_FINITE_STEPS", "4096"))


@pytest.mark.parametrize("name", scenario.names())
def test_every_registered_scenario_runs_random_steps_finite(name):
    """`FINITE_STEPS` random-action steps (default 4,096: 256 environments x 16 steps, vmap
    inside one jitted scan): observations and rewards all finite; a power flow that does not
    converge is flagged and penalized (every agent's safety counts it), and is rare: at most
    one step in 10^4 (measured: 1 in 102,400 steps of multi_microgrid, seed 0)."""
    env = pgjax.make(name, dtype="float64")
    n = min(256, FINITE_STEPS)
    steps = -(-FINITE_STEPS // n)

    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(state, k):
            acts = jax.random.uniform(k, (n, env.num_agents, env.act_dim), minval=-1, maxval=1)
            obs, state, reward, _, _, info = jax.vmap(env.step)(jax.random.split(k, n), state, acts)
            assert obs.shape == (n, env.num_agents, env.obs_dim)
            finite = jnp.all(jnp.isfinite(obs)) & jnp.all(jnp.isfinite(reward))
            penalized = jnp.all(info["safety"] >= info["nonconverged"][:, None])
            return state, (finite & penalized, jnp.sum(info["nonconverged"]))
        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    finite_and_flagged, nonconverged = run(jax.random.PRNGKey(0))
    assert bool(finite_and_flagged.all())
    assert float(nonconverged.sum()) <= 1e-4 * n * steps


def test_bang_bang_actions_never_give_inf_or_nan():
    """Extreme (+-1) actions make some DistFlow steps diverge: flagged and penalized, all finite."""
    env = pgjax.make("multi_microgrid", dtype="float64")
    n = 64
    vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, env.default_params)
    nonconv = 0.0
    for t in range(48):
        k = jax.random.fold_in(jax.random.PRNGKey(1), t)
        acts = jnp.sign(jax.random.normal(k, (n, env.num_agents, env.act_dim)))
        obs, state, reward, _, _, info = vstep(jax.random.split(k, n), state, acts, env.default_params)
        assert bool(jnp.isfinite(obs).all()) and bool(jnp.isfinite(reward).all())
        assert float(jnp.max(jnp.abs(reward))) < 1e4
        # a diverged step is penalized: every agent's safety counts it
        assert bool(jnp.all(info["safety"] >= info["nonconverged"][:, None]))
        nonconv += float(info["nonconverged"].sum())
    assert nonconv > 0  # the actions did drive some power flows to diverge (the path under test)

"""Perfect-foresight dispatch oracle for microgrid scenarios: a cost reference from above.

    ctrl = oracle_controller(env, key, num_episodes=32)   # plans the episodes `key` draws
    totals, _ = rollout(env, ctrl, key, num_episodes=32)  # baselines.rule_based.rollout

For every episode (a day: 24 hourly steps, or 96 in `multi_microgrid_15min`) the oracle
knows the whole day in advance (prices, loads and available renewable power, read from the
episode's profile rows exactly as the environment reads them) and the initial device state,
and solves a mixed-integer linear program with `scipy.optimize.milp` (HiGHS) over all
microgrids (learned agents). Per microgrid and step t (length dt h), all powers in MW:

    balance     sum_g p_g + sum_r p_r + sum_s (dis_s - ch_s) + imp - exp = d_t
                (d_t: the fixed net load of the agent's buses: loads minus static generation;
                lossless "copper plate" inside the microgrid)
    storage     e_t = e_{t-1} + dt (eta_c ch_t - dis_t / eta_d),  e_min <= e_t <= e_max,
                0 <= ch <= P_ch z,  0 <= dis <= P_dis (1 - z),  z binary (one direction per step)
    generator   u binary (on), start s and stop w binary, s_t - w_t = u_t - u_{t-1}, s + w <= 1,
                p_min u <= p <= p_max u,
                p_t - p_{t-1} <= RU u_{t-1} + SU s_t,   p_{t-1} - p_t <= RD u_t + SD w_t
                (RU = ramp_up dt, RD = ramp_down dt, SU = max(p_min, min(p_max, RU)) the highest
                start-up output, SD = p_min + RD the highest output a unit may stop from),
                minimum up / down time: the starts (stops) of the last ceil(min_up / dt)
                (ceil(min_down / dt)) steps <= u_t (1 - u_t), and the initial state's remaining
                up / down time; without `commitment` u = 1
    renewables  0 <= p_r <= available_r(t)
    grid        0 <= imp <= import_max y,  0 <= exp <= export_max (1 - y),  y binary (at negative
                prices buying and selling at once would otherwise pay)
    minimize    sum_t [dt price_t (imp - (1 - sell_discount) exp) + dt deg (ch + dis)
                + dt (a u + b p + f) + startup_cost s + dt curtailment_cost (available - p_r)]
                with f >= c (2 p_k p - p_k^2) at `FUEL_TANGENTS` points p_k in [0, p_max]
                (tangents of c p^2 from below: within c (p_max / (K - 1))^2 / 4 $/h).

Without a network model the microgrids decouple, but their joint arbitrage drives the weak
IEEE 34 feeder far out of its voltage band (charging all three storage units at once at
noon: 0.88 pu). So the oracle then re-plans `ITERATIONS` times with the devices' reactive
power as variables (within their capability at full output; generators only when on) and a
linear voltage model of every bus, `vm = offset + S_p P + S_q Q` (`voltage_sensitivity`:
central differences of the scenario's power flow per step; the offset corrected each time to
the voltages the environment produced under the previous plan), with soft limits
`[vm_min + V_MARGIN, vm_max - V_MARGIN]` whose violation costs the env's reward penalty per pu
and step. Of the plans it keeps the one with the lowest environment objective
`cost + penalty * safety` over the episode (`Oracle.plan`).

The commitment constraints are the generator's unit-commitment rules of
`pgjax.devices.generator` exactly (not a relaxation), so every plan is feasible in the
environment. Why it is a bound-like reference: with perfect foresight and the optimal
commitment, the copper-plate optimum (up to the fuel-cost tangents and the `MIP_GAP`) is the
lowest cost any controller can reach on that day ignoring the network; the environment's
cost of the kept plan adds the network losses at the grid connections and whatever the
voltage limits cost (arbitrage given up). It is not a proof of optimality for the AC problem
(the voltage model is linearized and the plan is open loop). Episodes carry no terminal value
of stored energy, so, like any cost-minimizing controller of the environment, the plan ends
the day with the storage emptied when selling pays.

The plan is converted into environment actions by inverting each device's action decoding
(`storage_action`, `generator_action`, `renewable_action`), step by step along the device
states the environment itself computes (`decode` / `dynamics` of the device types), and
the actions are rolled out in the real environment (AC power flow, unit-commitment rules,
the feeder's rule-based capacitor banks), so reported cost and safety come from the
environment.

Episodes: a controller only sees observations, so `oracle_controller(env, key, n)` draws the
episodes of `key` as `pgjax.baselines.common.evaluate` and `pgjax.baselines.rule_based.make_rollout` do
(`draw_episodes`), plans them, and at the first step recognizes its episode by the initial
observation (the nearest of the planned episodes' initial observations; exact in practice).
If none matches (different key or episode count), its actions are NaN, which the environment
counts in `info["nan_actions"]` (`pgjax/commands/eval.py` refuses such a result).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import struct
from scipy.optimize import Bounds, LinearConstraint, milp

from pgjax.baselines.common import F32, MARLEnv
from pgjax.baselines.rule_based import Controller
from pgjax import devices as dev
from pgjax.devices import generator, renewable, storage
from pgjax.devices.base import q_capability, to_action
from pgjax.env import scaled_grid
from pgjax.powerflow import bus_injections, network, solve

__all__ = ["EpisodePlan", "Oracle", "VoltageModel", "applies", "draw_episodes", "generator_action",
           "oracle_controller", "plan_actions", "plan_episode", "renewable_action", "simulate", "storage_action",
           "voltage_sensitivity"]

PLANNED = ("storage", "generator", "pv", "wind")  # device types the oracle dispatches
PASSIVE = ("pcc", "shunt", "tap_changer")  # device types without active-power injection
RENEWABLE = ("pv", "wind")
FUEL_TANGENTS = 21  # tangent points of the quadratic fuel cost
EPS_H = 1e-6  # the generator's tolerance on hours in state (pgjax.devices.generator.EPS)
MATCH_TOL = 1e-3  # max |obs - planned initial obs| to recognize an episode
V_MARGIN = 0.002  # pu kept inside the voltage limits against the linear model's error
ITERATIONS = 2  # re-plans with the voltage model
MIP_GAP = 1e-4  # relative optimality gap of the MILP (HiGHS default)


# -------------------------------------------------------------------- inverse decoding

def storage_action(params, state, p_mw, q_mvar, dt_h) -> jax.Array:
    """Action `[n, 2]` whose `storage.decode` gives injection `p_mw [n]` and `q_mvar [n]` (MW, Mvar).

    `p_mw` must lie within `storage.limits` at `state` (else the action saturates at +-1).
    """
    dis, ch = storage.limits(params, state, dt_h)
    a_p = jnp.where(p_mw >= 0, p_mw / jnp.maximum(dis, 1e-300), p_mw / jnp.maximum(ch, 1e-300))
    a_p = jnp.where(jnp.abs(p_mw) > 0, a_p, 0.0)
    cap = q_capability(params.s_max_mva, jnp.clip(a_p, -1, 1) * jnp.where(a_p >= 0, dis, ch))
    a_q = jnp.where(cap > 0, q_mvar / jnp.maximum(cap, 1e-300), 0.0)
    return jnp.clip(jnp.stack([a_p, a_q], axis=-1), -1.0, 1.0)


def generator_action(params, state, on, p_mw, q_mvar, dt_h) -> jax.Array:
    """Action `[n, 3]` whose `generator.decode` gives commitment `on [n]` (bool), `p_mw`, `q_mvar` `[n]`.

    The commitment change must be allowed at `state` (minimum up / down time, shutdown
    output) and `p_mw` lie within the ramp-feasible range (else the action saturates).
    """
    lo, hi = generator.window(params, state, dt_h)
    a_p = jnp.where(on, to_action(p_mw, lo, hi), -1.0)
    p = jnp.where(on, lo + (jnp.clip(a_p, -1, 1) + 1) / 2 * (hi - lo), 0.0)
    q_cap = q_capability(params.s_max_mva, p)
    q_lo = jnp.maximum(params.q_min_mvar, -q_cap)
    q_hi = jnp.maximum(jnp.minimum(params.q_max_mvar, q_cap), q_lo)
    a_q = jnp.where(on, to_action(q_mvar, q_lo, q_hi), 0.0)
    return jnp.clip(jnp.stack([jnp.where(on, 1.0, -1.0), a_p, a_q], axis=-1), -1.0, 1.0)


def renewable_action(params, p_mw, q_mvar, ctx) -> jax.Array:
    """Action `[n, 2]` whose `renewable.decode` gives output `p_mw [n]` (<= available) and `q_mvar [n]`."""
    avail = renewable.usable(params, ctx)
    a_p = jnp.where(avail > 0, 2.0 * p_mw / jnp.maximum(avail, 1e-300) - 1.0, 1.0)
    a_p = jnp.where(params.curtailable, a_p, 1.0)
    p = jnp.where(params.curtailable, avail * (jnp.clip(a_p, -1, 1) + 1) / 2, avail)
    cap = q_capability(params.s_max_mva, p)
    a_q = jnp.where(cap > 0, q_mvar / jnp.maximum(cap, 1e-300), 0.0)
    return jnp.clip(jnp.stack([a_p, a_q], axis=-1), -1.0, 1.0)


# ------------------------------------------------------------------------ episode data

def applies(env) -> str | None:
    """`None` if the oracle can plan `env`, else the reason why not (a sentence)."""
    layout, c = getattr(env, "layout", None), getattr(env, "scenario", None)
    if layout is None or c is None:
        return "not a pgjax scenario"
    if layout.learned_level == "device":
        return "agents are single devices (the oracle plans per microgrid)"
    for g in layout.groups:
        if g.type not in PLANNED + PASSIVE:
            return f"it has '{g.type}' devices (the oracle plans {', '.join(PLANNED)} and a grid connection)"
    nodes = layout.agent_nodes
    for g in layout.groups:
        if g.type not in PLANNED:
            continue
        bus_node = c.bus_owner[g.bus]
        for k in range(g.n):
            if g.controller[k] < 0 or bus_node[k] != nodes[g.controller[k]]:
                return f"{g.type} '{g.names[k]}' is not controlled by the agent whose buses it sits on"
    pcc = layout.group("pcc")
    branch = np.asarray(env.default_params.devices["pcc"].branch) if pcc is not None else None
    for name, node in zip(layout.agents, nodes):
        mine = np.flatnonzero(pcc.owner == node) if pcc is not None else []
        if len(mine) != 1 or int(branch[mine[0]]) < 0:
            return f"agent {name} does not have exactly one grid connection (pcc) on a branch"
    return None


def _contexts(env, params, start, steps: int):
    """The env's per-step `Context` for steps `start .. start + steps - 1` (leaves `[steps, ...]`)."""
    vm = jnp.ones(params.grid.n_bus, env.dtype)
    return jax.vmap(lambda t: env.context(start + t, params, vm))(jnp.arange(steps))


@struct.dataclass
class EpisodePlan:
    """The oracle's dispatch of one episode, `T` steps; device arrays cover every device of the type."""

    storage_p_mw: jax.Array  # [T, n_storage] injection (discharge positive)
    storage_q_mvar: jax.Array  # [T, n_storage]
    storage_e_mwh: jax.Array  # [T + 1, n_storage] stored energy before step 0 .. after step T - 1
    generator_on: jax.Array  # [T, n_generator] bool
    generator_p_mw: jax.Array  # [T, n_generator]
    generator_q_mvar: jax.Array  # [T, n_generator]
    renewable_p_mw: dict  # type ("pv", "wind") -> [T, n] output
    renewable_q_mvar: dict  # type -> [T, n]
    renewable_avail_mw: dict  # type -> [T, n] available power
    import_mw: jax.Array  # [T, n_agents] planned grid exchange (>= 0)
    export_mw: jax.Array  # [T, n_agents]
    load_mw: jax.Array  # [T, n_agents] fixed net load of the agent's buses
    price: jax.Array  # [T] $/MWh
    cost: jax.Array  # [n_agents] planned cost, $ (copper plate, no losses, no voltage penalty)


@dataclasses.dataclass(frozen=True)
class VoltageModel:
    """Linear bus voltages `vm[t] = offset[t] + s_p[t] @ P[t] + s_q[t] @ Q[t]` (pu) of device injections.

    `P[t], Q[t]` `[n_col]` (MW, Mvar) are the summed injections of the planned devices at the
    buses `col_bus`; `column[type] [n]` is each device's column.
    """

    offset_pu: np.ndarray  # [T, n_bus]
    s_p: np.ndarray  # [T, n_bus, n_col] pu / MW
    s_q: np.ndarray  # [T, n_bus, n_col] pu / Mvar
    column: dict  # type -> [n] int
    monitored: np.ndarray  # [n_bus] bool (energized buses)
    vm_min_pu: float
    vm_max_pu: float
    penalty: float  # $ per pu of voltage violation per step (the env's reward weight)


class _MILP:
    """A small sparse MILP builder over `scipy.optimize.milp` (variables by index arrays)."""

    def __init__(self):
        self.lb, self.ub, self.c, self.integer = [], [], [], []
        self.rows, self.cols, self.vals, self.row_lo, self.row_hi = [], [], [], [], []

    def var(self, n: int, lb, ub, cost=0.0, integer: bool = False) -> np.ndarray:
        first = len(self.lb)
        self.lb += list(np.broadcast_to(np.asarray(lb, float), (n,)))
        self.ub += list(np.broadcast_to(np.asarray(ub, float), (n,)))
        self.c += list(np.broadcast_to(np.asarray(cost, float), (n,)))
        self.integer += [int(integer)] * n
        return np.arange(first, first + n)

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.row_lo)
        for col, val in terms:
            self.rows.append(r)
            self.cols.append(int(col))
            self.vals.append(float(val))
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    def solve(self, what: str) -> np.ndarray:
        a = sp.csr_array((self.vals, (self.rows, self.cols)), shape=(len(self.row_lo), len(self.lb)))
        res = milp(np.asarray(self.c), integrality=np.asarray(self.integer),
                   bounds=Bounds(np.asarray(self.lb), np.asarray(self.ub)),
                   constraints=LinearConstraint(a, np.asarray(self.row_lo), np.asarray(self.row_hi)),
                   options={"mip_rel_gap": MIP_GAP, "time_limit": 120.0})
        if res.x is None:
            raise ValueError(f"oracle: the dispatch MILP of {what} has no solution: {res.message}")
        return res.x


def _scalars(prm, k: int) -> dict:
    """Device `k`'s parameters as Python numbers."""
    return {f.name: np.asarray(getattr(prm, f.name))[k].item() for f in dataclasses.fields(prm)}


def _q_box(s_max_mva: float, p_max_mw: float) -> float:
    """Reactive power available at any active power up to `p_max_mw` (0 for an unrated inverter)."""
    return math.sqrt(max(s_max_mva**2 - p_max_mw**2, 0.0)) if s_max_mva > 0 else 0.0


def plan_episode(env, params, state, voltage: VoltageModel | None = None) -> EpisodePlan:
    """The optimal dispatch of the episode starting at `state` (an `EnvState` right after reset).

    Without `voltage`: active power only (Q = 0), the microgrids' copper-plate problems side
    by side. With `voltage`: also the devices' reactive power (within the capability at full
    output), and every monitored bus voltage of the linear model kept in
    `[vm_min + V_MARGIN, vm_max - V_MARGIN]` or penalized at `penalty` $ per pu and step.
    Raises `ValueError` if the scenario is not supported (`applies`) or the MILP fails.
    """
    reason = applies(env)
    if reason is not None:
        raise ValueError(f"oracle: cannot plan scenario '{env.name}': {reason}")
    layout, bus_owner = env.layout, env.scenario.bus_owner
    steps = int(env.episode_steps)
    ctxs = _contexts(env, params, state.start, steps)
    dt = float(params.dt_h)
    price = np.asarray(ctxs.price, float)  # [T]
    fixed = np.asarray(jax.vmap(lambda cx: bus_injections(scaled_grid(params, cx, params.grid))[0])(ctxs))  # [T, n_bus]
    groups = {g.type: g for g in layout.groups if g.type in PLANNED}
    avail = {t: np.asarray(jax.vmap(lambda cx, prm=params.devices[t]: renewable.usable(prm, cx))(ctxs))
             for t in RENEWABLE if t in groups}
    n_agents = env.num_agents
    zeros = {t: np.zeros((steps, g.n)) for t, g in groups.items()}
    m = _MILP()
    p_vars, q_vars = {}, {}  # (type, k) -> [T] column indices (q: None without voltage model)
    gen_u, storage_ce, pcc_vars, agent_cols = {}, {}, [], []
    with_q = voltage is not None
    pcc_group = layout.group("pcc")
    loads = np.zeros((steps, n_agents))
    const = np.zeros(n_agents)
    for a, node in enumerate(layout.agent_nodes):
        first = len(m.lb)
        balance = [[] for _ in range(steps)]  # per step: (column, coefficient) of injections
        loads[:, a] = -fixed[:, bus_owner == node].sum(axis=1)
        ch_total, gen_total = 0.0, 0.0
        for t_name, g in groups.items():
            for k in np.flatnonzero(g.controller == a):
                prm = _scalars(params.devices[t_name], k)
                if t_name == "storage":
                    e0 = float(np.asarray(state.devices["storage"].e_mwh)[k])
                    ch, dis, e, p_ch, p_dis = _add_storage(m, prm, e0, steps, dt)
                    storage_ce[k] = (ch, dis, e)
                    p_vars[t_name, k] = [[(dis[t], 1.0), (ch[t], -1.0)] for t in range(steps)]
                    q_max = _q_box(prm["s_max_mva"], max(p_ch, p_dis))
                    q = m.var(steps, -q_max, q_max) if with_q else None
                    ch_total, gen_total = ch_total + p_ch, gen_total + p_dis
                elif t_name == "generator":
                    p, u, q = _add_generator(m, prm, jax.tree.map(lambda x, k=k: np.asarray(x)[k],
                                                                  state.devices["generator"]), steps, dt, with_q)
                    gen_u[k] = u
                    p_vars[t_name, k] = [[(p[t], 1.0)] for t in range(steps)]
                    gen_total += prm["p_max_mw"]
                else:
                    av = avail[t_name][:, k]
                    cur = dt * prm["curtailment_cost_per_mwh"]
                    p = m.var(steps, 0.0 if prm["curtailable"] else av, av, -cur)
                    const[a] += float(cur * av.sum())
                    p_vars[t_name, k] = [[(p[t], 1.0)] for t in range(steps)]
                    q_max = _q_box(prm["s_max_mva"], min(prm["p_max_mw"], prm["s_max_mva"]))
                    q = m.var(steps, -q_max, q_max) if with_q else None
                    gen_total += float(av.max(initial=0.0))
                q_vars[t_name, k] = q
                for t in range(steps):
                    balance[t] += p_vars[t_name, k][t]
        pcc = np.flatnonzero(pcc_group.owner == node)[0]
        pcc_vars.append(_add_grid_exchange(m, _scalars(params.devices["pcc"], pcc), dt * price, loads[:, a],
                                           ch_total, gen_total, balance))
        agent_cols.append((first, len(m.lb)))
    if with_q:
        _add_voltage_rows(m, voltage, groups, p_vars, q_vars, steps)
    x = m.solve(f"the episode starting at profile step {int(state.start)}")
    cost = np.array([float(np.dot(m.c[lo:hi], x[lo:hi])) for lo, hi in agent_cols]) + const
    out_p = {t: zeros[t].copy() for t in groups}
    out_q = {t: zeros[t].copy() for t in groups}
    for (t_name, k), q in q_vars.items():
        out_p[t_name][:, k] = [sum(v * x[i] for i, v in terms) for terms in p_vars[t_name, k]]
        if q is not None:
            out_q[t_name][:, k] = x[q]
    on = np.zeros_like(zeros.get("generator", np.zeros((steps, 0))), bool)
    for k, u in gen_u.items():
        on[:, k] = x[u] > 0.5
    e = np.broadcast_to(np.asarray(state.devices["storage"].e_mwh) if "storage" in groups else np.zeros(0),
                        (steps + 1, zeros.get("storage", np.zeros((0, 0))).shape[1])).copy()
    for k, (_, _, e_k) in storage_ce.items():
        e[1:, k] = x[e_k]
    empty = np.zeros((steps, 0))
    return EpisodePlan(
        storage_p_mw=out_p.get("storage", empty), storage_q_mvar=out_q.get("storage", empty), storage_e_mwh=e,
        generator_on=on, generator_p_mw=np.where(on, out_p.get("generator", empty), 0.0),
        generator_q_mvar=np.where(on, out_q.get("generator", empty), 0.0),
        renewable_p_mw={t: out_p[t] for t in avail}, renewable_q_mvar={t: out_q[t] for t in avail},
        renewable_avail_mw=avail, import_mw=np.stack([x[i] for i, _ in pcc_vars], axis=1),
        export_mw=np.stack([x[o] for _, o in pcc_vars], axis=1), load_mw=loads, price=price, cost=cost)


def _add_storage(m: _MILP, s: dict, e0: float, steps: int, dt: float) -> tuple:
    """Storage variables and constraints; returns `(ch, dis, e)` index arrays and the power limits."""
    s_cap = s["s_max_mva"] if s["s_max_mva"] > 0 else math.inf
    p_ch, p_dis = min(s["p_charge_max_mw"], s_cap), min(s["p_discharge_max_mw"], s_cap)
    ch = m.var(steps, 0.0, p_ch, dt * s["degradation_cost_per_mwh"])
    dis = m.var(steps, 0.0, p_dis, dt * s["degradation_cost_per_mwh"])
    e = m.var(steps, s["e_min_mwh"], s["e_max_mwh"])
    z = m.var(steps, 0, 1, integer=True)
    for t in range(steps):
        prev = [(e[t - 1], -1.0)] if t else []
        rhs = e0 if t == 0 else 0.0
        m.row([(e[t], 1.0), *prev, (ch[t], -dt * s["eta_charge"]), (dis[t], dt / s["eta_discharge"])], rhs, rhs)
        m.row([(ch[t], 1.0), (z[t], -p_ch)], -np.inf, 0.0)
        m.row([(dis[t], 1.0), (z[t], p_dis)], -np.inf, p_dis)
    return ch, dis, e, p_ch, p_dis


def _add_generator(m: _MILP, g: dict, st, steps: int, dt: float, with_q: bool) -> tuple:
    """Generator variables and constraints (module docstring); returns `(p, u, q)` index arrays."""
    on0, p0, hours0 = bool(st.on), float(st.p_mw), float(st.hours_in_state)
    ru, rd = g["ramp_up_mw_per_h"] * dt, g["ramp_down_mw_per_h"] * dt
    su = max(g["p_min_mw"], min(g["p_max_mw"], ru))
    sd = g["p_min_mw"] + rd
    # commitment forced by the initial state's remaining minimum up / down time
    u_lb, u_ub = np.zeros(steps), np.ones(steps)
    if not g["commitment"]:
        u_lb[:] = 1.0
    for t in range(steps):
        if hours0 + t * dt < (g["min_up_h"] if on0 else g["min_down_h"]) - EPS_H:
            u_lb[t], u_ub[t] = (1.0, 1.0) if on0 else (0.0, 0.0)
    p = m.var(steps, 0.0, g["p_max_mw"], dt * g["cost_b_per_mwh"])
    u = m.var(steps, u_lb, u_ub, dt * g["cost_a_per_h"], integer=True)
    s = m.var(steps, 0, 1, g["startup_cost"], integer=True)
    w = m.var(steps, 0, 1, integer=True)
    f = m.var(steps, 0.0, np.inf, dt)
    q_cap = _q_box(g["s_max_mva"], g["p_max_mw"])
    q_lo, q_hi = min(max(g["q_min_mvar"], -q_cap), 0.0), max(min(g["q_max_mvar"], q_cap), 0.0)
    q = m.var(steps, q_lo, q_hi) if with_q else None
    mu = max(math.ceil((g["min_up_h"] - EPS_H) / dt), 1)
    md = max(math.ceil((g["min_down_h"] - EPS_H) / dt), 1)
    c2 = g["cost_c_per_mw2h"]
    for t in range(steps):
        m.row([(p[t], 1.0), (u[t], -g["p_max_mw"])], -np.inf, 0.0)
        m.row([(p[t], 1.0), (u[t], -g["p_min_mw"])], 0.0, np.inf)
        if t:  # start / stop and ramps from the previous step (from the initial state at t = 0)
            m.row([(s[t], 1.0), (w[t], -1.0), (u[t], -1.0), (u[t - 1], 1.0)], 0.0, 0.0)
            m.row([(p[t], 1.0), (p[t - 1], -1.0), (u[t - 1], -ru), (s[t], -su)], -np.inf, 0.0)
            m.row([(p[t - 1], 1.0), (p[t], -1.0), (u[t], -rd), (w[t], -sd)], -np.inf, 0.0)
        else:
            m.row([(s[t], 1.0), (w[t], -1.0), (u[t], -1.0)], -float(on0), -float(on0))
            m.row([(p[t], 1.0), (s[t], -su)], -np.inf, p0 + ru * on0)
            m.row([(p[t], -1.0), (u[t], -rd), (w[t], -sd)], -np.inf, -p0)
        m.row([(s[t], 1.0), (w[t], 1.0)], -np.inf, 1.0)
        m.row([(s[j], 1.0) for j in range(max(0, t - mu + 1), t + 1)] + [(u[t], -1.0)], -np.inf, 0.0)
        m.row([(w[j], 1.0) for j in range(max(0, t - md + 1), t + 1)] + [(u[t], 1.0)], -np.inf, 1.0)
        for pk in np.linspace(0.0, g["p_max_mw"], FUEL_TANGENTS):  # f >= c (2 pk p - pk^2)
            m.row([(f[t], 1.0), (p[t], -2.0 * c2 * pk)], -c2 * pk**2, np.inf)
        if with_q:  # reactive power only when on
            m.row([(q[t], 1.0), (u[t], -q_hi)], -np.inf, 0.0)
            m.row([(q[t], 1.0), (u[t], -q_lo)], 0.0, np.inf)
    return p, u, q


def _add_grid_exchange(m: _MILP, g: dict, dt_price, load, ch_total: float, gen_total: float, balance) -> tuple:
    """Import / export of one microgrid and its balance rows; returns `(imp, exp)` index arrays."""
    buy = dt_price * g["price_scale"]  # [T] $/MW
    imp_max = np.minimum(g["import_max_mw"], np.maximum(load, 0) + ch_total)  # tight big-M per step
    exp_max = np.minimum(g["export_max_mw"], np.maximum(-load, 0) + gen_total)
    imp = m.var(len(load), 0.0, imp_max, buy)
    exp = m.var(len(load), 0.0, exp_max, -(1 - g["sell_discount"]) * buy)
    y = m.var(len(load), 0, 1, integer=True)
    for t in range(len(load)):
        m.row([(imp[t], 1.0), (y[t], -imp_max[t])], -np.inf, 0.0)
        m.row([(exp[t], 1.0), (y[t], exp_max[t])], -np.inf, exp_max[t])
        m.row([*balance[t], (imp[t], 1.0), (exp[t], -1.0)], load[t], load[t])
    return imp, exp


def _add_voltage_rows(m: _MILP, vmod: VoltageModel, groups, p_vars, q_vars, steps: int) -> None:
    """Soft voltage limits of `vmod` on the monitored buses that the devices can push out of band."""
    lo_lim, hi_lim = vmod.vm_min_pu + V_MARGIN, vmod.vm_max_pu - V_MARGIN
    reach_p = np.zeros(vmod.s_p.shape[2])  # [n_col] largest |P| / |Q| per column
    reach_q = np.zeros(vmod.s_p.shape[2])
    for (t_name, k), q in q_vars.items():
        col = vmod.column[t_name][k]
        reach_p[col] += max(m.ub[i] for i, _ in p_vars[t_name, k][0])
        if q is not None:
            reach_q[col] += max(abs(m.lb[q[0]]), abs(m.ub[q[0]]))
    for t in range(steps):
        reach = np.abs(vmod.s_p[t]) @ reach_p + np.abs(vmod.s_q[t]) @ reach_q  # [n_bus]
        off = vmod.offset_pu[t]
        for b in np.flatnonzero(vmod.monitored & ((off - reach < lo_lim) | (off + reach > hi_lim))):
            terms = []
            for (t_name, k), q in q_vars.items():
                col = vmod.column[t_name][k]
                terms += [(i, v * vmod.s_p[t, b, col]) for i, v in p_vars[t_name, k][t]]
                if q is not None:
                    terms.append((q[t], vmod.s_q[t, b, col]))
            under, over = m.var(2, 0.0, np.inf, vmod.penalty)
            m.row([*terms, (under, 1.0)], lo_lim - off[b], np.inf)
            m.row([*terms, (over, -1.0)], -np.inf, hi_lim - off[b])


# ------------------------------------------------------------------- plan -> actions

def plan_actions(env, params, state, plan: EpisodePlan) -> jax.Array:
    """Env actions `[T, n_agents, act_dim]` that make the environment follow `plan` from `state`.

    Steps through the episode with the device types' own `decode` / `dynamics`, inverting
    the decoding at each step's device state.
    """
    groups = {g.type: g for g in env.layout.groups if g.type in PLANNED}
    targets = {"storage": (plan.storage_p_mw, plan.storage_q_mvar),
               "generator": (plan.generator_on, plan.generator_p_mw, plan.generator_q_mvar),
               **{t: (plan.renewable_p_mw[t], plan.renewable_q_mvar[t]) for t in plan.renewable_p_mw}}
    targets = {k: v for k, v in targets.items() if k in groups}
    # the plan is float64 (numpy / HiGHS); the env may run in float32 (`pgjax train`'s default)
    targets = jax.tree.map(lambda x: jnp.asarray(x, env.dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
                           else jnp.asarray(x), targets)

    def step(dev_states, xs):
        t, target = xs
        ctx = env.context(state.start + t, params, state.vm_pu)
        actions = jnp.zeros((env.num_agents, env.act_dim), env.dtype)
        new_states = dict(dev_states)
        for name, g in groups.items():
            prm, st = params.devices[name], dev_states[name]
            if name == "storage":
                act = storage_action(prm, st, *target[name], ctx.dt_h)
            elif name == "generator":
                act = generator_action(prm, st, *target[name], ctx.dt_h)
            else:
                act = renewable_action(prm, *target[name], ctx)
            t_dev = dev.get(name)
            new_states[name] = t_dev.dynamics(prm, st, t_dev.decode(prm, st, act, ctx), ctx)
            mine = np.flatnonzero(g.controller >= 0)
            for j in range(act.shape[1]):
                actions = actions.at[g.controller[mine], g.offset[mine] + j].set(act[mine, j])
        return new_states, actions

    steps = plan.price.shape[0]
    _, actions = jax.lax.scan(step, {k: state.devices[k] for k in groups}, (jnp.arange(steps), targets))
    return actions


# ------------------------------------------------------- network model and iterations

def simulate(env, params, state, actions) -> dict:
    """Roll `actions [T, n_agents, act_dim]` out from `state` (float32 actions, as the rollouts pass them).

    Returns per step `vm_pu [T, n_bus]`, `cost [T]` and `safety [T]` (summed over agents).
    """
    def step(st, action):
        _, st, _, _, _, info = env.step_env(jax.random.PRNGKey(0), st, action.astype(F32), params)
        return st, (st.vm_pu, jnp.sum(info["cost"]), jnp.sum(info["safety"]))

    _, (vm, cost, safety) = jax.lax.scan(step, state, actions)
    return {"vm_pu": vm, "cost": cost, "safety": safety}


def voltage_sensitivity(env, params, state) -> tuple[jax.Array, jax.Array]:
    """`(s_p, s_q)` `[T, n_bus, n_col]` pu per MW / Mvar: bus voltages' sensitivity to device injections.

    Columns are the buses of the planned devices in ascending order. Central differences
    (1e-3 MW / Mvar) of the scenario's power flow at each step's loads with no device
    injection and the taps and shunts as at `state`.
    """
    col_bus = np.unique(np.concatenate([np.asarray(params.devices[g.type].bus) for g in env.layout.groups
                                        if g.type in PLANNED]))
    grid0 = params.grid
    for g in env.layout.groups:
        t_dev = dev.get(g.type)
        if t_dev.apply_to_grid is not None:
            grid0 = t_dev.apply_to_grid(params.devices[g.type], state.devices[g.type], grid0)
    delta = 1e-3
    n_col = len(col_bus)
    pert = jnp.asarray(np.concatenate([np.eye(n_col), -np.eye(n_col)]) * delta, env.dtype)  # [2 n_col, n_col]

    def sens(ctx):
        grid = scaled_grid(params, ctx, grid0)
        p0, q0 = bus_injections(grid)

        def vm(dp, dq):
            return solve(grid, p0.at[col_bus].add(dp), q0.at[col_bus].add(dq), method=env.method,
                         max_iter=env.max_iter, jacobian=env.jacobian).vm_pu

        vp = jax.vmap(lambda d: vm(d, 0.0))(pert)
        vq = jax.vmap(lambda d: vm(0.0, d))(pert)
        return ((vp[:n_col] - vp[n_col:]) / (2 * delta)).T, ((vq[:n_col] - vq[n_col:]) / (2 * delta)).T

    return jax.vmap(sens)(_contexts(env, params, state.start, int(env.episode_steps)))

class Oracle:
    """Plans episodes of `env` (module docstring); the jitted pieces are compiled once per instance.

    `plan(state) -> (EpisodePlan, actions [T, n_agents, act_dim], objectives)`: the
    copper-plate plan, then `iterations` re-plans with the linear voltage model, its offset
    corrected by the environment's voltages under the previous plan; returned is the plan
    with the lowest environment objective `cost + penalty * safety` (summed over the episode),
    `objectives` lists it per plan.
    """

    def __init__(self, env, params=None, iterations: int = ITERATIONS):
        reason = applies(env)
        if reason is not None:
            raise ValueError(f"oracle: cannot plan scenario '{env.name}': {reason}")
        self.env = env
        self.params = env.default_params if params is None else params
        self.iterations = iterations
        self._actions = jax.jit(lambda st, pl: plan_actions(env, self.params, st, pl))
        self._simulate = jax.jit(lambda st, act: simulate(env, self.params, st, act))
        self._sensitivity = jax.jit(lambda st: voltage_sensitivity(env, self.params, st))

    def plan(self, state) -> tuple[EpisodePlan, jax.Array, list[float]]:
        env, prm = self.env, self.params
        penalty = float(prm.penalty)
        col_bus = self._columns()
        s_p, s_q = self._sensitivity(state)
        column = {t: np.searchsorted(col_bus, np.asarray(prm.devices[t].bus)) for t in self._planned()}
        s_p, s_q = np.asarray(s_p), np.asarray(s_q)
        monitored = np.asarray(network.energized(prm.grid))
        plan, best, objectives = plan_episode(env, prm, state), None, []
        for i in range(self.iterations + 1):
            actions = self._actions(state, plan)
            sim = jax.device_get(self._simulate(state, actions))
            objectives.append(float(np.sum(sim["cost"]) + penalty * np.sum(sim["safety"])))
            if best is None or objectives[-1] < best[0]:
                best = (objectives[-1], plan, actions)
            if i == self.iterations:
                break
            p_col, q_col = _injections(plan, column, len(col_bus))
            offset = sim["vm_pu"] - np.einsum("tbc,tc->tb", s_p, p_col) - np.einsum("tbc,tc->tb", s_q, q_col)
            vmod = VoltageModel(offset, s_p, s_q, column, monitored, float(prm.vm_min_pu), float(prm.vm_max_pu),
                                penalty)
            plan = plan_episode(env, prm, state, vmod)
        return best[1], best[2], objectives

    def _planned(self) -> list[str]:
        return [g.type for g in self.env.layout.groups if g.type in PLANNED]

    def _columns(self) -> np.ndarray:
        return np.unique(np.concatenate([np.asarray(self.params.devices[t].bus) for t in self._planned()]))


def _injections(plan: EpisodePlan, column: dict, n_col: int) -> tuple[np.ndarray, np.ndarray]:
    """Planned injections summed per sensitivity column, `(P, Q)` each `[T, n_col]`."""
    parts = [("storage", plan.storage_p_mw, plan.storage_q_mvar),
             ("generator", plan.generator_p_mw, plan.generator_q_mvar),
             *[(t, plan.renewable_p_mw[t], plan.renewable_q_mvar[t]) for t in plan.renewable_p_mw]]
    steps = plan.price.shape[0]
    p, q = np.zeros((steps, n_col)), np.zeros((steps, n_col))
    for t, pp, qq in parts:
        if t in column:
            np.add.at(p, (slice(None), column[t]), np.asarray(pp))
            np.add.at(q, (slice(None), column[t]), np.asarray(qq))
    return p, q


# ------------------------------------------------------------------------- controller

def draw_episodes(env, key, num_episodes: int, params=None):
    """Initial `(obs [E, n_agents, obs_dim] float32, EnvState batched over E)` of the episodes of `key`.

    The same draws as `pgjax.baselines.common.evaluate` and `pgjax.baselines.rule_based.make_rollout`:
    one key per episode from `split(key, num_episodes)`, reset with its first split.
    """
    menv = MARLEnv.wrap(env, params)
    return jax.jit(jax.vmap(lambda k: menv.reset(jax.random.split(k)[0])))(jax.random.split(key, num_episodes))


def oracle_controller(env, key, num_episodes: int, params=None, iterations: int = ITERATIONS) -> Controller:
    """The oracle as a `Controller` for the `num_episodes` episodes that `key` draws (module docstring).

    Plans every episode up front (`Oracle.plan`); `act` recognizes the episode by its initial
    observation and replays the planned actions. The carry is `(episode index [] int32, step [] int32)`.
    """
    menv = MARLEnv.wrap(env, params)
    obs0, states = draw_episodes(menv, key, num_episodes)
    oracle = Oracle(menv.env, menv.params, iterations)
    table = [oracle.plan(jax.tree.map(lambda x, i=i: x[i], states))[1] for i in range(num_episodes)]
    table = jnp.asarray(np.stack(table), F32)  # [E, T, n_agents, act_dim]
    obs0 = jnp.asarray(obs0, F32)
    steps = table.shape[1]

    def act(carry, key, obs, aux=None):
        index, t = carry
        dist = jnp.max(jnp.abs(obs0 - obs[None]), axis=(1, 2))  # [E]
        found = jnp.argmin(dist).astype(jnp.int32)
        index = jnp.where(t == 0, jnp.where(dist[found] <= MATCH_TOL, found, -1), index)
        action = table[jnp.maximum(index, 0), jnp.minimum(t, steps - 1)]
        return jnp.where(index >= 0, action, jnp.nan), (index, t + 1)

    return Controller(lambda: (jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32)), act)

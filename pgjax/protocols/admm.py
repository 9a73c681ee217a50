"""`admm_dispatch` (horizontal, advanced): coordinated dispatch by consensus ADMM (sharing form).

Problem: agents `i` with costs `f_i(p) = a_i p^2 + b_i p` ($/h) and limits `[p_min_i, p_max_i]`
share a power balance `sum_i p_i = D` (`D = sum(agent_outputs["demand_mw"])`, each agent
reporting its own demand). The sharing ADMM of Boyd et al. (2011, sec. 7.3), with scaled
dual `u` and penalty `rho`, runs `iterations` rounds per step:
    x_i <- argmin f_i(x) + rho/2 (x - v_i)^2 = clip((rho v_i - b_i) / (2 a_i + rho), p_min_i, p_max_i),
           v_i = x_i - mean(x) + D/n - u
    u   <- u + mean(x) - D/n
Each round every agent sends its `x_i` to the others (all-to-all over `params.adjacency`,
or to an aggregator; the messages out carry the final round) and the mean and `u` are
computed from them. `-rho u` converges to the system marginal price (the dual of the
balance), and `x` to the optimal dispatch: `p_i = clip((lambda - b_i) / 2a_i, p_min_i, p_max_i)`
with `lambda` such that the balance holds (`optimal_dispatch` computes it by bisection).
The state keeps `x` and `u` so each step warm-starts from the last solution.

commands: `p_mw [n]` (dispatch), `price [n]` ($/MWh, `-rho u`, the same for all),
`residual []` (`|sum(p) - D|` after the last round).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import numpy as np

from pgjax import devices as dev
from pgjax.devices.base import Feature
from pgjax.protocols.messages import Messages
from pgjax.protocols import coupling
from pgjax.protocols.registry import Protocol, register


@struct.dataclass
class Params:
    cost_a: jax.Array  # [n] $/(MW^2 h), > 0
    cost_b: jax.Array  # [n] $/MWh
    p_min_mw: jax.Array  # [n]
    p_max_mw: jax.Array  # [n]
    rho: jax.Array  # [] ADMM penalty ($/(MW^2 h)); about mean(2 a) works well
    adjacency: jax.Array  # [n, n] bool, who reports x to whom (for message accounting)
    iterations: int = struct.field(pytree_node=False, default=100)


@struct.dataclass
class State:
    x: jax.Array  # [n]
    u: jax.Array  # []


def make_params(cost_a, cost_b, p_min_mw, p_max_mw, rho=None, iterations=100, adjacency=None):
    a = jnp.asarray(cost_a, float)
    n = a.shape[0]
    return Params(cost_a=a, cost_b=jnp.asarray(cost_b, float) * jnp.ones(n),
                  p_min_mw=jnp.asarray(p_min_mw, float) * jnp.ones(n),
                  p_max_mw=jnp.asarray(p_max_mw, float) * jnp.ones(n),
                  rho=jnp.asarray(2.0 * jnp.mean(a) if rho is None else rho, float),
                  adjacency=(jnp.ones((n, n), bool) & ~jnp.eye(n, dtype=bool)) if adjacency is None
                  else jnp.asarray(adjacency, bool), iterations=int(iterations))


def init(params: Params):
    return State(x=jnp.zeros_like(params.cost_a), u=jnp.zeros_like(params.rho))


def apply(params: Params, state: State, agent_outputs, messages_in):
    n = params.cost_a.shape[0]
    target = jnp.sum(agent_outputs["demand_mw"]) / n
    a, b, rho = params.cost_a, params.cost_b, params.rho

    def body(_, xu):
        x, u = xu
        v = x - jnp.mean(x) + target - u
        x = jnp.clip((rho * v - b) / (2.0 * a + rho), params.p_min_mw, params.p_max_mw)
        return x, u + jnp.mean(x) - target

    x, u = jax.lax.fori_loop(0, params.iterations, body, (state.x, state.u))
    price = jnp.full((n,), -rho * u)
    commands = {"p_mw": x, "price": price, "residual": jnp.abs(jnp.sum(x) - n * target)}
    return commands, Messages.broadcast(x, params.adjacency), State(x=x, u=u)


def optimal_dispatch(cost_a, cost_b, p_min, p_max, demand, iters=200):
    """Reference optimum by bisection on the price: `(p [n], lambda)`, p = clip((lambda-b)/2a, lo, hi)."""
    a, b, lo, hi = (jnp.asarray(v, float) for v in (cost_a, cost_b, p_min, p_max))
    total = lambda lam: jnp.sum(jnp.clip((lam - b) / (2 * a), lo, hi))
    l_lo = jnp.min(b + 2 * a * lo) - 1.0
    l_hi = jnp.max(b + 2 * a * hi) + 1.0

    def body(_, lh):
        l0, l1 = lh
        mid = 0.5 * (l0 + l1)
        under = total(mid) < demand
        return jnp.where(under, mid, l0), jnp.where(under, l1, mid)

    l0, l1 = jax.lax.fori_loop(0, iters, body, (l_lo, l_hi))
    lam = 0.5 * (l0 + l1)
    return jnp.clip((lam - b) / (2 * a), lo, hi), lam


GRID_COST_A = 1.0  # $/(MW^2 h): curvature given to the grid as a participant (import at the price)
GRID_HEADROOM_MW = 1e3  # the grid's import range beyond the agents' import limits


def _env_init(links, dtype):
    return State(x=jnp.zeros(links.n_grid + 1, dtype), u=jnp.zeros((), dtype))


def agent_terms(links, inputs):
    """Each grid agent's report, 5 arrays `[n_grid]` (cost_a, cost_b, p_min, p_max, need) of its first fuel
    unit (zeros and a unit curvature without one); `need` is its import plus the unit's last output."""
    d = inputs.import_mw.dtype
    unit = dev.get(links.unit_type).dispatch if links.unit_type else None
    if unit is None:  # no unit to dispatch: every agent only reports its need
        lo = hi = a = b = p_last = jnp.zeros(1, d)
    else:
        gp, gs = inputs.params[links.unit_type], inputs.states[links.unit_type]
        lo, hi = unit.p_range(gp, gs, inputs.ctx)
        a, b, _, _ = unit.price_terms(gp, gs)
        p_last = gs.p_mw
    pick = lambda x, fill: coupling.take_grid(x, links.unit_of_grid, fill)  # noqa: E731
    need = inputs.import_mw + pick(p_last, 0.0)
    return pick(jnp.maximum(a, 1e-3), 1.0), pick(b, 0.0), pick(lo, 0.0), pick(hi, 0.0), need


def solve_reports(links, reports, price, state):
    """The joint dispatch of the grid agents' reports (`agent_terms`) with the grid as the last participant
    (importing at `price`), warm-started from `state`: `(commands, messages, state)` of `apply`."""
    a, b, lo, hi, need = reports
    n, d = links.n_grid, need.dtype
    cost_a = jnp.concatenate([a, jnp.full(1, GRID_COST_A, d)])
    cost_b = jnp.concatenate([b, jnp.full(1, price, d)])
    p_min = jnp.concatenate([lo, -jnp.full(1, links.export_max_mw.sum(), d)])
    p_max = jnp.concatenate([hi, jnp.full(1, links.import_max_mw.sum() + GRID_HEADROOM_MW, d)])
    prm = make_params(cost_a, cost_b, p_min, p_max, iterations=links.options["iterations"],
                      adjacency=coupling.graph("complete", n + 1))
    prm = jax.tree.map(lambda x: x.astype(d) if jnp.issubdtype(x.dtype, jnp.floating) else x, prm)
    out, msgs, state = apply(prm, state, {"demand_mw": jnp.concatenate([need, jnp.zeros(1, d)])}, None)
    return out, msgs, jax.tree.map(lambda x: x.astype(d), state)


def _env_step(links, state, inputs, key):
    """Joint dispatch of each grid agent's first fuel unit, with the grid as the last participant."""
    n, d = links.n_grid, inputs.import_mw.dtype
    unit = dev.get(links.unit_type).dispatch if links.unit_type else None
    out, msgs, state = solve_reports(links, agent_terms(links, inputs), inputs.price, state)
    p_mw, price = out["p_mw"][:n], out["price"][0]
    actions = {}
    if unit is not None:
        gp, gs = inputs.params[links.unit_type], inputs.states[links.unit_type]
        idx = jnp.asarray(np.maximum(links.unit_of_grid, 0))
        target = jnp.zeros(gp.p_max_mw.shape, d).at[idx].set(p_mw)
        act = unit.p_action(gp, gs, inputs.ctx, target)
        dispatched = np.isin(np.arange(act.shape[0]), links.unit_of_grid)
        columns = np.isin(np.arange(act.shape[1]), unit.p_columns)
        actions = {links.unit_type: (jnp.asarray(dispatched[:, None] & columns[None, :]), act)}
    messages = jnp.stack([p_mw, jnp.full(n, price, d)], axis=-1)
    return coupling.Outputs(received=jnp.zeros(n, d), messages=messages, actions=actions, n_sent=msgs.count,
                            info={"admm_residual_mw": out["residual"].astype(d)}), state


# In a scenario: the grid agents' first fuel units (`Dispatch.merit == 2`) dispatched jointly by
# consensus ADMM, warm-started from the last step; agents observe their dispatch and the price.
ENV_COUPLING = coupling.Coupling(
    features=(Feature("dispatch_mw", "MW", "over the import limit"), Feature("admm_price", "$/MWh", "over 100")),
    init=_env_init, step=_env_step, scale=coupling.scale_mw_and_price, defaults={"iterations": 50},
    info={"admm_residual_mw": "scalar"})
ADMM_DISPATCH = register(Protocol("admm_dispatch", "horizontal", Params, init, apply, __doc__, coupling=ENV_COUPLING))

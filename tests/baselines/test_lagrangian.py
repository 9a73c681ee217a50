"""MAPPO-Lagrangian (`algorithm: mappo_lagrangian`) on the toy setpoint env, whose safety signal
`overshoot` has a closed form: `sum(max(|x| - x_safe, 0))`, so a policy that sits on targets
uniform in [-1, 1] pays 0.125 per coordinate and step (x_safe = 0.5) and one that stops at
`x_safe` pays nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.baselines.common import evaluate
from pgjax.baselines.mappo import MAPPOConfig, make_train, train_seeds
from pgjax.baselines.toy_env import SetpointEnv

BASE = {"env": "setpoint", "num_envs": 16, "num_steps": 16, "update_epochs": 4, "num_minibatches": 2,
        "actor_hidden": (32,), "critic_hidden": (32,), "lr_actor": 3e-3, "lr_critic": 3e-3, "gamma": 0.9}


def config(num_updates: int, **kw) -> MAPPOConfig:
    cfg = {**BASE, **kw}
    return MAPPOConfig(**cfg, total_timesteps=num_updates * cfg["num_envs"] * cfg["num_steps"])


@pytest.fixture(scope="module")
def env():
    return SetpointEnv(num_agents=2)


def test_overshoot_signal_has_its_closed_form(env):
    """Sitting on the targets costs 0.125 per coordinate and step (from the second step on: the
    first step starts at a random point within reach); stopping at x_safe costs nothing."""
    on_target = evaluate(env, env.optimal_policy, jax.random.PRNGKey(0), num_episodes=4096)
    steps = env.episode_steps
    # x_0 and g uniform in [-1, 1], step size 1: the optimum reaches g in one step unless |g - x_0| > 1,
    # then it moves one unit towards g; expected overshoot per coordinate over the episode ~ 0.125 * steps
    per_coordinate = on_target["overshoot"] / env.num_agents
    assert abs(per_coordinate - 0.125 * steps) < 0.05 * steps * 0.125 + 0.03, per_coordinate

    def stop_at_safe(key, obs):
        x, g = obs[..., :1], obs[..., 1:2]
        return jnp.clip(jnp.clip(g, -0.5, 0.5) - x, -1.0, 1.0)

    assert evaluate(env, stop_at_safe, jax.random.PRNGKey(0), num_episodes=256)["overshoot"] == 0.0


def test_multiplier_rises_while_over_budget_and_falls_otherwise(env):
    """Projected dual ascent: `lambda <- clip(lambda + lr (J - budget) / budget, 0, max)` each update, with `J`
    the mean cost of the episodes that ended; here every env's episodes end together at rollout
    boundaries, so `J` is exactly the episode length times the mean cost per step. The random
    initial policy overshoots far more than the budget (lambda rises), the penalized one less (it falls)."""
    budget, init, lr = 5.0, 2.0, 0.5
    cfg = config(8, algorithm="mappo_lagrangian", cost_budgets={"overshoot": budget}, lagrangian_init=init,
                 lagrangian_lr=lr)
    _, m = jax.jit(make_train(cfg, env))(jax.random.PRNGKey(1))
    lam, cost = np.asarray(m["lagrange/overshoot"]), np.asarray(m["episode_cost/overshoot"])
    np.testing.assert_allclose(cost, env.episode_steps * np.asarray(m["info/overshoot"]), rtol=1e-5)
    before = np.concatenate([[init], lam[:-1]])
    np.testing.assert_allclose(lam, np.clip(before + lr * (cost - budget) / budget, 0.0, cfg.lagrangian_max),
                               rtol=1e-5)
    step = lam - before
    assert np.all(np.sign(step) == np.sign(cost - budget)), (lam, cost)
    assert (step > 0).any() and (step < 0).any(), (lam, cost)


def test_lagrangian_run_meets_its_budget_where_plain_mappo_does_not(env):
    """The same training (seeds, sizes, steps) with and without the constraint: plain MAPPO learns to
    sit on its targets and overshoots (~2 per episode); MAPPO-Lagrangian keeps the evaluated episode
    cost under the budget on every seed and still moves towards its targets."""
    budget, seeds = 0.3, 2
    results = {}
    for algorithm, extra in (("mappo", {}), ("mappo_lagrangian", {"cost_budgets": {"overshoot": budget},
                                                                   "lagrangian_lr": 0.15})):
        cfg = config(60, algorithm=algorithm, num_seeds=seeds, **extra)
        train = make_train(cfg, env)
        states, metrics = train_seeds(cfg, jax.random.PRNGKey(3), env)
        results[algorithm] = [evaluate(env, train.act, jax.random.PRNGKey(9), num_episodes=256,
                                       policy_state=jax.tree.map(lambda x: x[s], states)) for s in range(seeds)]
        if algorithm == "mappo_lagrangian":
            assert np.all(np.asarray(metrics["lagrange/overshoot"])[:, -1] > 0)  # the constraint binds
    plain = [r["overshoot"] for r in results["mappo"]]
    constrained = [r["overshoot"] for r in results["mappo_lagrangian"]]
    print("overshoot per episode: plain", plain, "constrained", constrained)
    assert min(plain) > 3 * budget, plain
    assert max(constrained) <= budget, constrained
    do_nothing = evaluate(env, lambda k, o: jnp.zeros(o.shape[:-1] + (1,)), jax.random.PRNGKey(9), num_episodes=256)
    assert all(r["return"] > do_nothing["return"] + 1.0 for r in results["mappo_lagrangian"]), results


def test_budgets_must_name_signals_of_the_env(env):
    with pytest.raises(ValueError, match=r"cost_budgets: no safety signal \['voltage'\].*overshoot \(distance"):
        make_train(config(1, algorithm="mappo_lagrangian", cost_budgets={"voltage": 1.0}), env)
    with pytest.raises(ValueError, match="cost_budgets: algorithm mappo_lagrangian needs"):
        config(1, algorithm="mappo_lagrangian")
    with pytest.raises(ValueError, match="only used with algorithm: mappo_lagrangian"):
        config(1, cost_budgets={"overshoot": 1.0})

"""The JaxMARL adapter (`pgjax.wrappers.jaxmarl`): JaxMARL's `MultiAgentEnv` API over the
functional env, equal to it step by step, JaxMARL's own auto-reset and `LogWrapper`
episode returns, jit + vmap without retracing, and an IPPO update loop in the structure of
JaxMARL's `ippo_ff` baselines (batchify agents x envs, one jitted update of rollout, GAE and
clipped PPO epochs) training through the adapter.

JaxMARL 0.2.0's IPPO/MAPPO are scripts in its repository, not in its wheel; the wheel's
parts (`MultiAgentEnv`, `spaces`, `wrappers.baselines.LogWrapper`) are used here unchanged."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jaxmarl.environments.multi_agent_env import MultiAgentEnv
from jaxmarl.wrappers.baselines import LogWrapper

import pgjax
from pgjax.errors import InputError
from pgjax.wrappers.jaxmarl import PgjaxMultiAgentEnv

SCENARIO = "multi_microgrid"


@pytest.fixture(scope="module")
def menv():
    return PgjaxMultiAgentEnv(SCENARIO, dtype="float32")


def stacked(d, agents):
    return jnp.stack([d[a] for a in agents])


def test_spaces_and_api(menv):
    env = menv.env
    assert isinstance(menv, MultiAgentEnv)
    assert menv.agents == list(env.agents) and menv.num_agents == env.num_agents
    for a in menv.agents:
        assert menv.observation_space(a).shape == (env.obs_dim,)
        assert menv.action_space(a).shape == (env.act_dim,)
        assert float(menv.action_space(a).low) == -1.0 and float(menv.action_space(a).high) == 1.0
    avail = menv.get_avail_actions(None)
    np.testing.assert_array_equal(stacked(avail, menv.agents), env.action_mask)
    assert menv.agent_classes == {"grid": menv.agents}
    with pytest.raises(InputError, match="one action per agent"):
        menv.step_env(jax.random.PRNGKey(0), menv.reset(jax.random.PRNGKey(0))[1], {menv.agents[0]: jnp.zeros(9)})
    with pytest.raises(InputError, match="overrides"):
        PgjaxMultiAgentEnv(env, dtype="float64")


def test_steps_equal_the_functional_env_and_auto_reset_on_all_done():
    """`step(key)` = `env.step_env(split(key)[0])` (float64: two XLA programs agree to rounding);
    at the episode's end (every agent truncated, `__all__`) the observation and state are
    `reset(split(key)[1])`'s."""
    menv = PgjaxMultiAgentEnv(SCENARIO, dtype="float64")
    env, params, agents = menv.env, menv.params, menv.agents
    assert env.dtype == jnp.float64
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)  # noqa: E731
    key = jax.random.PRNGKey(7)
    obs, state = menv.reset(key)
    f_reset, f_step = jax.jit(env.reset_env), jax.jit(env.step_env)
    f_obs, f_state = f_reset(key, params)
    close(stacked(obs, agents), f_obs)
    rng = np.random.default_rng(0)
    step = jax.jit(menv.step)
    for t in range(env.episode_steps):
        acts = rng.uniform(-1.2, 1.2, (env.num_agents, env.act_dim))
        k = jax.random.PRNGKey(100 + t)
        obs, state, rew, dones, infos = step(k, state, {a: acts[i] for i, a in enumerate(agents)})
        k_step, k_reset = jax.random.split(k)
        f_obs, f_state, f_rew, f_term, f_trunc, f_info = f_step(k_step, f_state, acts, params)
        close(stacked(rew, agents), f_rew)
        close(infos["cost"], f_info["cost"])
        close(infos["cost_total"], np.full(env.num_agents, f_info["cost_total"]))
        assert int(infos["clipped_actions"][0]) == int(f_info["clipped_actions"]) > 0
        assert all(v.shape == (env.num_agents,) for v in infos.values())
        ended = bool(f_term | f_trunc)
        assert bool(dones["__all__"]) == ended == (t == env.episode_steps - 1)
        np.testing.assert_array_equal(stacked({a: dones[a] for a in agents}, agents), np.full(len(agents), ended))
        if ended:
            r_obs, r_state = f_reset(k_reset, params)
            close(stacked(obs, agents), r_obs)
            assert int(state.t) == 0 and int(state.start) == int(r_state.start)
        else:
            close(stacked(obs, agents), f_obs)


def test_log_wrapper_returns_and_vmap_without_retracing(menv, caplog):
    """JaxMARL's `LogWrapper` over the adapter, vmapped over 3 envs inside one `lax.scan`:
    its returned episode return equals the sum of the rewards over the episode, and a second
    rollout of the same shapes traces nothing."""
    env = LogWrapper(menv)
    n_envs, n = 3, menv.env.episode_steps
    agents, act_dim = menv.agents, menv.env.act_dim

    @jax.jit
    def rollout(key):
        k0, k1 = jax.random.split(key)
        obs, state = jax.vmap(env.reset)(jax.random.split(k0, n_envs))

        def body(state, k):
            ka, ks = jax.random.split(k)
            acts = jax.random.uniform(ka, (len(agents), n_envs, act_dim), minval=-1, maxval=1)
            _, state, rew, dones, info = jax.vmap(env.step)(jax.random.split(ks, n_envs), state,
                                                             {a: acts[i] for i, a in enumerate(agents)})
            return state, (stacked(rew, agents), info["returned_episode_returns"], dones["__all__"])

        return jax.lax.scan(body, state, jax.random.split(k1, n))[1]

    rew, returned, done = rollout(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(done)[:, 0], np.arange(n) == n - 1)
    np.testing.assert_allclose(returned[-1], rew.sum(axis=0).T, rtol=1e-5)  # [n_envs, n_agents]
    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles():
        jax.block_until_ready(rollout(jax.random.PRNGKey(1)))
    assert not [r for r in caplog.records if "Finished tracing" in r.getMessage()]


def _mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (i, o)) * np.sqrt(2.0 / i) * (0.01 if j == len(sizes) - 2 else 1.0), jnp.zeros(o))
            for j, (k, i, o) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]


def _apply(layers, x):
    for w, b in layers[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def test_ippo_trains_through_the_adapter(menv):
    """IPPO as JaxMARL's `ippo_ff` baselines run it (shared actor-critic over `batchify`-ed
    agents x envs, Gaussian actions, GAE, clipped PPO epochs, all in one jitted update) on
    `multi_microgrid` through `LogWrapper(adapter)`: updates run and stay finite, LogWrapper's
    episode returns are the rollouts' reward sums, and the mean policy's return on fixed
    evaluation episodes improves."""
    env = LogWrapper(menv)
    agents, n_agents = menv.agents, menv.num_agents
    obs_dim, act_dim = menv.env.obs_dim, menv.env.act_dim
    n_envs, n_steps, n_actors = 8, menv.env.episode_steps, n_agents * 8
    gamma, lam, clip, epochs = 0.99, 0.95, 0.2, 4
    tx = optax.adam(3e-3)
    k_a, k_c = jax.random.split(jax.random.PRNGKey(0))
    params = {"actor": _mlp(k_a, [obs_dim, 32, act_dim]), "critic": _mlp(k_c, [obs_dim, 32, 1]),
              "log_std": jnp.full(act_dim, -0.5)}
    opt = tx.init(params)

    def batchify(x):  # {agent: [n_envs, ...]} -> [n_agents * n_envs, ...] (JaxMARL's batchify)
        return jnp.concatenate([x[a] for a in agents]).reshape(n_actors, -1)

    def unbatchify(x):
        x = x.reshape(n_agents, n_envs, -1)
        return {a: x[i] for i, a in enumerate(agents)}

    def log_prob(p, obs, act):
        mean, std = _apply(p["actor"], obs), jnp.exp(p["log_std"])
        return jnp.sum(-0.5 * ((act - mean) / std) ** 2 - p["log_std"] - 0.5 * jnp.log(2 * jnp.pi), -1)

    @jax.jit
    def update(carry, _):
        params, opt, state, obs, key = carry

        def step(c, k):
            state, obs = c
            ka, ks = jax.random.split(k)
            x = batchify(obs)
            act = _apply(params["actor"], x) + jnp.exp(params["log_std"]) * jax.random.normal(ka, (n_actors, act_dim))
            obs2, state, rew, dones, info = jax.vmap(env.step)(jax.random.split(ks, n_envs), state, unbatchify(act))
            value = _apply(params["critic"], x)[:, 0]
            return (state, obs2), (x, act, log_prob(params, x, act), value, batchify(rew)[:, 0],
                                   batchify(dones)[:, 0], info["returned_episode_returns"].mean())

        key, k = jax.random.split(key)
        (state, obs), (x, act, logp, value, rew, done, ret) = jax.lax.scan(step, (state, obs),
                                                                          jax.random.split(k, n_steps))
        last = _apply(params["critic"], batchify(obs))[:, 0]

        def gae(c, t):
            adv, nxt = c
            delta = t[0] + gamma * nxt * (1 - t[2]) - t[1]
            adv = delta + gamma * lam * (1 - t[2]) * adv
            return (adv, t[1]), adv

        _, adv = jax.lax.scan(gae, (jnp.zeros_like(last), last), (rew, value, done.astype(rew.dtype)), reverse=True)
        target = adv + value
        adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)

        def loss(p):
            ratio = jnp.exp(log_prob(p, x, act) - logp)
            pg = -jnp.mean(jnp.minimum(ratio * adv_n, jnp.clip(ratio, 1 - clip, 1 + clip) * adv_n))
            v = _apply(p["critic"], x)[..., 0]
            return pg + 0.5 * jnp.mean((v - target) ** 2)

        def epoch(c, _):
            p, o = c
            value_loss, g = jax.value_and_grad(loss)(p)
            upd, o = tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o), value_loss

        (params, opt), losses = jax.lax.scan(epoch, (params, opt), None, epochs)
        return (params, opt, state, obs, key), (losses[0], ret[-1], jnp.mean(rew) * n_steps)

    @jax.jit
    def evaluate(params):  # the mean policy's return on 8 fixed episodes (same days, same keys)
        obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(9), n_envs))

        def step(c, k):
            state, obs = c
            act = _apply(params["actor"], batchify(obs))
            obs, state, rew, _, _ = jax.vmap(env.step)(jax.random.split(k, n_envs), state, unbatchify(act))
            return (state, obs), batchify(rew)[:, 0]

        return jnp.sum(jax.lax.scan(step, (state, obs), jax.random.split(jax.random.PRNGKey(10), n_steps))[1]) / n_envs

    before = float(evaluate(params))
    obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), n_envs))
    carry = (params, opt, state, obs, jax.random.PRNGKey(2))
    carry, (losses, returned, returns) = jax.lax.scan(update, carry, None, 12)
    losses, returned, returns = (np.asarray(v) for v in (losses, returned, returns))
    assert np.isfinite(losses).all() and np.isfinite(returns).all()
    # LogWrapper's episode return of each update is the sum of that update's rewards (one episode each)
    np.testing.assert_allclose(returned, returns, rtol=1e-4)
    after = float(evaluate(carry[0]))
    assert after > before, (before, after)
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), carry[0], params))

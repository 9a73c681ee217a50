"""PPO's learner (`MAPPO.update` and its losses) against references written out in numpy.

- The advantages and value targets `update` trains on are a numpy GAE recursion of the rollout
  with the configured `gamma` and `gae_lambda` (read from inside `update` by a
  `jax.debug.callback` in a wrapped loss; the rollout is replayed with `MAPPO._env_step`).
- The actor loss is the clipped surrogate on normalized advantages (Gaussian log-probabilities
  over the action mask), hence invariant to `adv -> a adv + b` (a > 0); ratios straddle
  `[1 - clip_eps, 1 + clip_eps]` so the clip binds.
- The critic loss is PPO's clipped-value loss (default config), the plain squared error with
  `clip_value=False`, at points where the two differ.
- The entropy bonus lowers the loss as `log_std` grows.

Everything runs on `SetpointEnv` (two agents, action sizes 1 and 2: one padded action column)
with tiny networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.baselines.mappo import MAPPOConfig, Transition, make_train

F32 = np.float32
LOG_2PI = np.log(2 * np.pi)
SMALL = {"env": "setpoint", "env_kwargs": {"num_agents": 2, "dim": (1, 2)}, "actor_hidden": (16,),
         "critic_hidden": (16,), "num_envs": 4, "num_steps": 16, "total_timesteps": 64}


def small(**kw) -> MAPPOConfig:
    return MAPPOConfig(**{**SMALL, **kw})


# ---------------------------------------------------------------------------- references

def np_gae(values, rewards, dones, last_value, gamma, lam):
    """`values, rewards [T, E, A]`, `dones [T, E]`, `last_value [E, A]` -> advantages `[T, E, A]` (float64)."""
    values, rewards, last_value = (np.asarray(x, np.float64) for x in (values, rewards, last_value))
    nonterminal = 1.0 - np.asarray(dones, np.float64)[..., None]
    adv, next_adv, next_value = np.zeros_like(values), np.zeros_like(last_value), last_value
    for t in reversed(range(len(values))):
        delta = rewards[t] + gamma * nonterminal[t] * next_value - values[t]
        adv[t] = next_adv = delta + gamma * lam * nonterminal[t] * next_adv
        next_value = values[t]
    return adv


def np_log_prob(action, mean, log_std, mask):
    """Diagonal Gaussian log-density `[..., d] -> [...]` over the unmasked columns."""
    action, mean, log_std = (np.asarray(x, np.float64) for x in (action, mean, log_std))
    per_dim = -0.5 * ((action - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI
    return np.sum(np.where(mask, per_dim, 0.0), -1)


def np_surrogate(ratio, adv, clip_eps, normalize=True, clip=True):
    """PPO's actor loss `-mean(min(r A, clip(r) A))` on normalized advantages."""
    adv = np.asarray(adv, np.float64)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    clipped = np.clip(ratio, 1 - clip_eps, 1 + clip_eps) if clip else ratio
    return -np.mean(np.minimum(ratio * adv, clipped * adv))


def np_value_loss(value, old_value, target, eps, clip=True):
    value, old_value, target = (np.asarray(x, np.float64) for x in (value, old_value, target))
    loss = (value - target) ** 2
    if clip:
        loss = np.maximum(loss, (old_value + np.clip(value - old_value, -eps, eps) - target) ** 2)
    return 0.5 * np.mean(loss)


def transition(obs, ws, action=None, log_prob=None, value=None) -> Transition:
    """A hand-made minibatch `[B, ...]`; fields a loss does not read are zeros."""
    b, n = obs.shape[:2]
    zeros = np.zeros((b, n), F32)
    return Transition(obs=jnp.asarray(obs, F32), ws=jnp.asarray(ws, F32),
                      action=jnp.asarray(np.zeros((b, n, 1), F32) if action is None else action, F32),
                      log_prob=jnp.asarray(zeros if log_prob is None else log_prob, F32),
                      value=jnp.asarray(zeros if value is None else value, F32), reward=jnp.asarray(zeros),
                      done=jnp.zeros((b,), bool), cost=jnp.zeros((b, 0), F32), cost_value=jnp.zeros((b, 0), F32))


@pytest.fixture(scope="module")
def actor_case():
    """A trainer, actor parameters with a non-default log_std, and a minibatch whose ratios
    `exp(log_ratio)` against the current policy are known, half of them outside [0.8, 1.2]."""
    train = make_train(small(clip_eps=0.2))
    params = train.init(jax.random.PRNGKey(0)).actor.params
    params = jax.tree.map(lambda x: x, params)  # a copy to edit
    params["params"]["log_std"] = jnp.asarray([-0.3, 0.4], F32)
    rng = np.random.default_rng(1)
    b, n = 64, train.env.num_agents
    obs = rng.normal(size=(b, n, train.env.obs_dim)).astype(F32)
    mean, log_std = jax.tree.map(np.asarray, train.policy_dist(params, jnp.asarray(obs)))
    mask = np.asarray(train.env.action_mask, bool)  # [n_agents, act_dim]; agent 0's second column is padding
    assert not mask.all()
    action = (mean + np.exp(log_std) * rng.normal(size=mean.shape)).astype(F32)
    action[:, ~mask] = 50.0  # padding: would dominate any log-probability that counted it
    log_ratio = rng.uniform(-0.5, 0.5, size=(b, n))
    old_log_prob = (np_log_prob(action, mean, log_std, mask) - log_ratio).astype(F32)
    mb = transition(obs, np.zeros((b, train.env.world_state_dim), F32), action, old_log_prob)
    adv = (3.0 * rng.normal(size=(b, n)) + 1.5).astype(F32)  # far from normalized
    return train, params, mb, adv, np.exp(log_ratio), mask, log_std


# ----------------------------------------------------------------------- update's GAE

def test_update_trains_on_numpy_gae_of_its_rollout(monkeypatch):
    """The advantages `update` hands the actor loss, and the targets it hands the critic loss,
    are numpy's GAE(gamma, lambda) of the rollout (replayed with `_env_step` from the same state)."""
    gamma, lam = 0.9, 0.8
    cfg = small(gamma=gamma, gae_lambda=lam, update_epochs=1, num_minibatches=2)
    train = make_train(cfg)
    ts = train.init(jax.random.PRNGKey(3))

    # the rollout update will make: same state, same key
    end, (traj, *_) = jax.lax.scan(train._env_step, ts, None, cfg.num_steps)
    last_value = train.value(end.critic.params, *train._normalized(end))
    done = np.asarray(traj.done)
    assert done[:-1].any() and not done.all(), "the rollout must cut an episode mid-way"
    want_adv = np_gae(traj.value, traj.reward, done, last_value, gamma, lam)
    assert np.abs(want_adv - np_gae(traj.value, traj.reward, done, last_value, gamma, 1.0)).max() > 0.1
    assert np.abs(want_adv - np_gae(traj.value, traj.reward, done, last_value, 0.99, lam)).max() > 0.1

    seen = {"actor": [], "critic": []}

    def record(name, *xs):
        jax.debug.callback(lambda *a: seen[name].append([np.asarray(x) for x in a]), *xs)

    actor_loss, critic_loss = train._actor_loss, train._critic_loss

    def spy_actor(params, mb, adv):
        record("actor", mb.log_prob, mb.value, adv)
        return actor_loss(params, mb, adv)

    def spy_critic(params, mb, targets):
        record("critic", mb.log_prob, targets)
        return critic_loss(params, mb, targets)

    monkeypatch.setattr(train, "_actor_loss", spy_actor)
    monkeypatch.setattr(train, "_critic_loss", spy_critic)
    jax.block_until_ready(train.update(ts))
    assert len(seen["actor"]) == len(seen["critic"]) == cfg.num_minibatches

    # minibatches are shuffled: find each row's rollout step by its (continuous, distinct) log-probabilities
    n = train.env.num_agents
    ref_lp = np.asarray(traj.log_prob, np.float64).reshape(-1, n)
    ref_value = np.asarray(traj.value, np.float64).reshape(-1, n)
    ref_adv = want_adv.reshape(-1, n)
    for name in ("actor", "critic"):
        got = [np.concatenate(x).reshape(-1, n) for x in zip(*seen[name])]
        dist = np.abs(got[0][:, None, :] - ref_lp[None, :, :]).max(-1)  # [batch seen, batch of the rollout]
        row = dist.argmin(1)
        assert np.array_equal(np.sort(row), np.arange(cfg.batch_size)), "every rollout step once"
        assert dist[np.arange(len(row)), row].max() < 1e-4, "update's rollout is the replayed one"
        if name == "actor":
            np.testing.assert_allclose(got[1], ref_value[row], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[2], ref_adv[row], rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_allclose(got[1], ref_adv[row] + ref_value[row], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ actor loss

def test_actor_loss_is_the_clipped_surrogate_on_normalized_advantages(actor_case):
    train, params, mb, adv, ratio_np, mask, log_std = actor_case
    eps = train.config.clip_eps
    assert train.config.ent_coef == 0.0
    assert 0.2 < np.mean(np.abs(ratio_np - 1) > eps) < 0.8, "the clip must bind on part of the batch"
    want = np_surrogate(ratio_np, adv, eps)
    # the test can tell the reference from the faults it guards against
    assert abs(want - np_surrogate(ratio_np, adv, eps, clip=False)) > 0.01
    assert abs(want - np_surrogate(ratio_np, adv, eps, normalize=False)) > 0.1

    loss, aux = train._actor_loss(params, mb, jnp.asarray(adv))
    np.testing.assert_allclose(float(aux["actor_loss"]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(aux["clip_frac"]), np.mean(np.abs(ratio_np - 1) > eps), atol=1e-6)
    entropy = np.mean(np.sum(np.where(mask, 0.5 + 0.5 * LOG_2PI + log_std, 0.0), -1))
    np.testing.assert_allclose(float(aux["entropy"]), entropy, rtol=1e-5)


@pytest.mark.parametrize("scale, shift", [(3.0, 5.0), (0.1, -2.0)])
def test_actor_loss_is_invariant_to_affine_rescaling_of_advantages(actor_case, scale, shift):
    train, params, mb, adv, *_ = actor_case
    base, _ = train._actor_loss(params, mb, jnp.asarray(adv))
    moved, _ = train._actor_loss(params, mb, jnp.asarray(scale * adv + shift, F32))
    np.testing.assert_allclose(float(moved), float(base), rtol=1e-4, atol=1e-6)


def test_entropy_bonus_lowers_the_loss_as_log_std_grows(actor_case):
    """`loss = pg - ent_coef * entropy`: the bonus adds `-ent_coef * (mean count of unmasked
    columns)` to d loss / d log_std, negative on every real column."""
    train, params, mb, adv, ratio_np, mask, log_std = actor_case
    coef = 0.5
    bonus = make_train(train.config.replace(ent_coef=coef))
    grad = lambda t: jax.grad(lambda p: t._actor_loss(p, mb, jnp.asarray(adv))[0])(params)  # noqa: E731
    extra = np.asarray(grad(bonus)["params"]["log_std"]) - np.asarray(grad(train)["params"]["log_std"])
    np.testing.assert_allclose(extra, -coef * mask.mean(0), rtol=1e-5, atol=1e-7)
    assert (extra < 0).all()

    loss, aux = bonus._actor_loss(params, mb, jnp.asarray(adv))
    entropy = np.mean(np.sum(np.where(mask, 0.5 + 0.5 * LOG_2PI + log_std, 0.0), -1))
    np.testing.assert_allclose(float(loss), np_surrogate(ratio_np, adv, bonus.config.clip_eps) - coef * entropy,
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- critic loss

def test_critic_loss_is_the_clipped_value_loss_and_plain_without_clipping():
    """Default config: `0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, +-eps) - R)^2))`,
    scaled by `vf_coef` for the optimizer; `clip_value=False`: `0.5 mean((V - R)^2)`."""
    train = make_train(small())
    c = train.config
    assert c.clip_value, "PPO's value clipping is on by default"
    params = train.init(jax.random.PRNGKey(0)).critic.params
    rng = np.random.default_rng(2)
    b, n = 64, train.env.num_agents
    obs = rng.normal(size=(b, n, train.env.obs_dim)).astype(F32)
    ws = rng.normal(size=(b, train.env.world_state_dim)).astype(F32)
    value = np.asarray(train.value(params, jnp.asarray(obs), jnp.asarray(ws)), np.float64)
    old_value = (value + rng.uniform(-0.6, 0.6, size=value.shape)).astype(F32)  # most moves exceed eps = 0.2
    targets = (value + rng.normal(0.0, 0.5, size=value.shape)).astype(F32)
    mb = transition(obs, ws, value=old_value)

    want = np_value_loss(value, old_value, targets, c.value_clip_eps)
    plain = np_value_loss(value, old_value, targets, c.value_clip_eps, clip=False)
    assert want > 1.1 * plain, "the clipped term must bind on part of the batch"

    loss, aux = train._critic_loss(params, mb, jnp.asarray(targets))
    np.testing.assert_allclose(float(aux["critic_loss"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(loss), c.vf_coef * want, rtol=1e-5)

    unclipped = make_train(c.replace(clip_value=False))
    loss, aux = unclipped._critic_loss(params, mb, jnp.asarray(targets))
    np.testing.assert_allclose(float(aux["critic_loss"]), plain, rtol=1e-5)
    np.testing.assert_allclose(float(loss), c.vf_coef * plain, rtol=1e-5)

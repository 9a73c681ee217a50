"""MAPPO / IPPO (`baselines/`): GAE, config validation, learning on a toy task, parameter
sharing by agent type, checkpoints, resume.

Everything trains on `pgjax.baselines.toy_env.SetpointEnv` (agents steer points to targets; the
optimum is closed-form) with tiny networks, so the file runs in well under a minute; one
`slow` test runs a single update on the real `multi_microgrid` scenario.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.baselines.common import MARLEnv, evaluate
from pgjax.baselines.mappo import (MAPPOConfig, RunningStats, gae, load_checkpoint, main, make_train, param_index, run,
                             save_checkpoint)
from pgjax.baselines.rule_based import do_nothing_policy, random_policy
from pgjax.baselines.toy_env import SetpointEnv

TINY = {"env": "setpoint", "num_envs": 8, "num_steps": 16, "update_epochs": 4, "num_minibatches": 2,
        "actor_hidden": (32,), "critic_hidden": (32,), "lr_actor": 3e-3, "lr_critic": 3e-3, "gamma": 0.9}


def tiny(num_updates: int, **kw) -> MAPPOConfig:
    cfg = {**TINY, **kw}
    return MAPPOConfig(**cfg, total_timesteps=num_updates * cfg["num_envs"] * cfg["num_steps"])


@pytest.fixture(scope="module")
def env():
    return SetpointEnv(num_agents=2)


# ------------------------------------------------------------------------------------ GAE

def test_gae_matches_hand_computation_with_a_done_in_the_middle():
    gamma, lam = 0.9, 0.8
    v = np.array([1.0, 2.0, 3.0])
    r = np.array([0.5, -1.0, 2.0])
    d = np.array([0.0, 1.0, 0.0])  # the episode ends after step 1: V(s_2) is a new episode's
    v_last = 4.0
    # the recursion written out, back to front
    delta2 = r[2] + gamma * v_last - v[2]                      # 2 + 3.6 - 3 = 2.6
    a2 = delta2
    delta1 = r[1] + gamma * 0.0 - v[1]                         # done: no bootstrap -> -3
    a1 = delta1 + 0.0                                          # done: no carry from step 2
    delta0 = r[0] + gamma * v[1] - v[0]                        # 0.5 + 1.8 - 1 = 1.3
    a0 = delta0 + gamma * lam * a1                             # 1.3 - 0.72 * 3 = -0.86
    expected = np.array([a0, a1, a2])
    np.testing.assert_allclose(expected, [-0.86, -3.0, 2.6], atol=1e-12)

    adv, targets = gae(jnp.asarray(v, jnp.float32), jnp.asarray(r, jnp.float32), jnp.asarray(d, jnp.float32),
                       jnp.asarray(v_last, jnp.float32), gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(targets, expected + v, rtol=1e-6)


def test_gae_broadcasts_dones_over_agents():
    """`values [T, E, A]` with `dones [T, E, 1]`: each (env, agent) follows the 1-D recursion."""
    rng = np.random.default_rng(3)
    v, r = rng.normal(size=(2, 5, 3, 2)).astype(np.float32)
    d = (rng.uniform(size=(5, 3, 1)) < 0.3).astype(np.float32)
    last = np.ones((3, 2), np.float32)
    gamma, lam = 0.99, 0.95
    expected, next_adv, next_v = np.zeros_like(v), np.zeros_like(last), last
    for t in reversed(range(5)):
        expected[t] = r[t] + gamma * (1 - d[t]) * next_v - v[t] + gamma * lam * (1 - d[t]) * next_adv
        next_adv, next_v = expected[t], v[t]
    adv, _ = jax.jit(gae, static_argnums=(4, 5))(v, r, d, last, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)


def test_running_stats_match_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 4)).astype(np.float32)
    stats = RunningStats.create((4,))
    for chunk in np.split(x, 5):
        stats = stats.update(jnp.asarray(chunk))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, x.var(0), rtol=1e-3)


# --------------------------------------------------------------------------------- config

@pytest.mark.parametrize("key, value, words", [
    ("num_envs", 0, ["num_envs", "int", ">= 1"]),
    ("num_envs", 2.5, ["num_envs", "int"]),
    ("num_envs", "1.5", ["num_envs", "int", "'1.5'"]),
    ("total_timesteps", "lots", ["total_timesteps", "int", "'lots'"]),
    ("lr_actor", "nan", ["lr_actor", "finite number", "'nan'"]),
    ("lr_actor", True, ["lr_actor", "number"]),
    ("lr_critic", "-1e-3", ["lr_critic", "> 0", "'-1e-3'"]),
    ("actor_hidden", ["64", "6.5"], ["actor_hidden", "list of ints"]),
    ("param_sharing", "agent", ["param_sharing", "'type'", "'agent'"]),
    ("agent_types", {"agent_0": 1}, ["agent_types", "string labels"]),
    ("agent_types", {"agent_0": "a"}, ["agent_types", "param_sharing: type", "'all'"]),
    ("gamma", 1.5, ["gamma", "<= 1"]),
    ("lr_actor", "fast", ["lr_actor", "number"]),
    ("clip_eps", 0.0, ["clip_eps", "> 0"]),
    ("ippo", "yes", ["ippo", "algorithm"]),
    ("algorithm", "sac", ["algorithm", "mappo_lagrangian"]),
    ("cost_budgets", {"voltage": 0}, ["cost_budgets", "> 0", "voltage"]),
    ("actor_hidden", [64, 0], ["actor_hidden", "list of ints"]),
    ("activation", "sigmoid", ["activation", "tanh"]),
    ("num_minibatches", 7, ["num_minibatches", "divide"]),
])
def test_config_errors_name_the_key(key, value, words):
    with pytest.raises(ValueError) as err:
        MAPPOConfig.from_dict({key: value})
    for w in words:
        assert w in str(err.value)


def test_config_parses_numeric_strings_as_yaml_1_1_gives_them(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` and `1e5` as strings; float and int fields parse them."""
    path = tmp_path / "cfg.yaml"
    path.write_text("lr_actor: 1e-3\nlr_critic: 3E-4\ngamma: '0.5'\nmax_grad_norm: 10\ntotal_timesteps: 1e5\n"
                    "num_envs: '16'\nupdate_epochs: 4.0\nactor_hidden: ['32', 3.2e1]\n")
    import yaml

    assert isinstance(yaml.safe_load(path.read_text())["lr_actor"], str)  # the YAML 1.1 behaviour at issue
    cfg = MAPPOConfig.from_yaml(path)
    assert (cfg.lr_actor, cfg.lr_critic, cfg.gamma, cfg.max_grad_norm) == (1e-3, 3e-4, 0.5, 10.0)
    assert all(type(v) is float for v in (cfg.lr_actor, cfg.gamma, cfg.max_grad_norm))
    assert (cfg.total_timesteps, cfg.num_envs, cfg.update_epochs, cfg.actor_hidden) == (100_000, 16, 4, (32, 32))
    assert all(type(v) is int for v in (cfg.total_timesteps, cfg.num_envs, cfg.update_epochs, *cfg.actor_hidden))
    assert MAPPOConfig.from_dict(cfg.to_dict()) == cfg
    path.write_text("num_steps: 2.5e1\nnum_envs: 1.5\n")
    with pytest.raises(ValueError, match=r"cfg.yaml: num_envs: expected an int >= 1, got 1.5"):
        MAPPOConfig.from_yaml(path)


def test_mappo_command_line_takes_numeric_string_overrides(tmp_path):
    """`python -m pgjax.baselines.mappo key=value ...`: overrides are YAML values, so `1e-3` arrives as a string."""
    out = tmp_path / "run"
    assert main(["--out", str(out), "env=setpoint", "num_envs=2", "num_steps=4", "num_minibatches=1",
                 "update_epochs=1", "total_timesteps=8e0", "lr_actor=1e-3", "lr_critic=5E-4",
                 "actor_hidden=[8]", "critic_hidden=[8]"]) == 0
    saved = MAPPOConfig.from_yaml(out / "config.yaml")
    assert (saved.lr_actor, saved.lr_critic, saved.total_timesteps) == (1e-3, 5e-4, 8)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["--out", str(out), "env=setpoint", "num_envs=1.5"])


def test_config_reads_the_legacy_share_params_flag():
    assert MAPPOConfig.from_dict({"share_params": True}).param_sharing == "all"
    assert MAPPOConfig.from_dict({"share_params": False}).param_sharing == "none"
    with pytest.raises(ValueError, match="share_params: replaced by param_sharing"):
        MAPPOConfig.from_dict({"share_params": False, "param_sharing": "type"})


def test_config_rejects_unknown_keys_and_round_trips_yaml(tmp_path):
    with pytest.raises(ValueError, match="LR"):
        MAPPOConfig.from_dict({"LR": 1e-3})
    cfg = MAPPOConfig(num_envs=4, num_steps=8, total_timesteps=64, actor_hidden=[16, 16], env_kwargs={"dt_h": 0.5},
                      param_sharing="type", agent_types={"MG1": "a", "MG2": "a", "MG3": "b"})
    assert cfg.actor_hidden == (16, 16) and cfg.num_updates == 2 and cfg.minibatch_size == 8
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert MAPPOConfig.from_yaml(path) == cfg
    path.write_text("num_envs: 4\nnum_stepz: 8\n")
    with pytest.raises(ValueError, match="num_stepz"):
        MAPPOConfig.from_yaml(path)


# ------------------------------------------------------------------------------- adapter

def test_adapter_reduces_flags_and_info(env):
    menv = MARLEnv.wrap(env)
    assert (menv.num_agents, menv.obs_dim, menv.act_dim, menv.world_state_dim) == (2, 3, 1, 5)
    _, state = menv.reset(jax.random.PRNGKey(0))
    for t in range(env.episode_steps):
        _, state, reward, done, info = menv.step(jax.random.PRNGKey(t), state, jnp.zeros((2, 1)))
        assert reward.shape == (2,) and done.shape == () and bool(done) == (t == env.episode_steps - 1)
    assert set(info) == {"cost", "distance", "overshoot"}  # final_observation dropped, per-agent cost summed
    assert all(v.shape == () and v.dtype == jnp.float32 for v in info.values())


def test_random_and_do_nothing_baselines(env):
    key = jax.random.PRNGKey(0)
    rand, still = (evaluate(env, p, key, num_episodes=64) for p in (random_policy(env), do_nothing_policy(env)))
    # do nothing: E[(x0 - g)^2] = 2/3 per agent and step, 8 steps
    assert abs(still["return"] - (-8 * 2 / 3)) < 0.8
    assert still["return"] > rand["return"] + 2
    assert abs(still["cost"] - 2 * still["return"] * -1) < 1e-4  # info cost: summed over agents and steps


# ------------------------------------------------------------------------------- training

SEEDS, CHUNK, N_UPDATES = 2, 5, 25  # updates of 128 env steps per seed


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """Two seeds trained together (vmap) by the `run` driver in chunks of `CHUNK` updates:
    stopped after 20 updates, then resumed from the checkpoint to 25."""
    cfg = tiny(N_UPDATES, num_seeds=SEEDS, seed=7)
    train = make_train(cfg, env)
    out = tmp_path_factory.mktemp("run")
    logs = []
    initial = train.seed_init(jax.random.PRNGKey(cfg.seed))
    at_20 = run(cfg, out, chunk_updates=CHUNK, train=train, until_update=N_UPDATES - CHUNK, log=logs.append)
    final = run(cfg, out, resume=True, chunk_updates=CHUNK, train=train, log=logs.append)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    metrics = {k: np.array([[r[k] for r in rows if r["seed"] == s] for s in range(SEEDS)]) for k in rows[0]}
    return {"train": train, "cfg": cfg, "out": out, "logs": logs, "initial": initial, "at_20": at_20,
            "final": final, "metrics": metrics}


def seed(states, i):
    return jax.tree.map(lambda x: x[i], states)


def test_training_improves_return_on_two_seeds(env, trained):
    """The trained deterministic policy beats the initial one by a wide margin on both seeds."""
    train, metrics = trained["train"], trained["metrics"]
    assert metrics["actor_loss"].shape == (SEEDS, N_UPDATES)
    assert set(metrics) >= {"episode_return", "critic_loss", "entropy", "approx_kl", "info/cost", "info/distance"}

    def score(states, i):
        return evaluate(env, train.act, jax.random.PRNGKey(9), num_episodes=64, policy_state=seed(states, i))["return"]

    before = np.array([score(trained["initial"], i) for i in range(SEEDS)])
    after = np.array([score(trained["final"], i) for i in range(SEEDS)])
    optimum = evaluate(env, env.optimal_policy, jax.random.PRNGKey(9), num_episodes=64)["return"]
    # before ~ -5 (near do-nothing), optimum ~ -0.05: each seed closes most of the gap
    assert np.all(after > before + 2.0), (before, after, optimum)
    assert np.all(optimum - after < 0.2 * (optimum - before)), (before, after, optimum)
    # training-time return (stochastic policy) and the critic loss improve too (mean over seeds)
    ret = metrics["episode_return"].mean(0)
    assert ret[-5:].mean() > ret[:3].mean() + 2.0
    closs = metrics["critic_loss"].mean(0)
    assert closs[-5:].mean() < 0.5 * closs[:3].mean()
    assert not np.allclose(metrics["actor_loss"][0], metrics["actor_loss"][1])  # the seeds differ


def test_whole_run_is_one_jitted_function_with_every_variant_flag(env):
    """`jit(make_train(cfg))(key)`, here with per-agent parameters (leading agent axis), IPPO,
    no agent id, no normalization and an annealed learning rate."""
    cfg = tiny(2, param_sharing="none", algorithm="ippo", agent_id=False, normalize_obs=False, normalize_reward=False,
               anneal_lr=True)
    train = make_train(cfg, env)
    state, metrics = jax.jit(train)(jax.random.PRNGKey(1))
    assert int(state.update_step) == 2
    assert all(np.isfinite(metrics[k]).all() for k in ("actor_loss", "critic_loss", "entropy"))
    assert state.actor.params["params"]["log_std"].shape == (2, 1)
    assert train.critic_in_dim == 3  # local observation only
    obs, _ = env.reset(jax.random.PRNGKey(2))
    assert train.act(state, None, obs).shape == (2, 1)


# ---------------------------------------------------------------------- parameter sharing

MIXED_DIMS = (1, 2, 1, 2)  # agents 0 and 2 steer 1-D points, agents 1 and 3 2-D ones: two types by action size


@pytest.fixture(scope="module")
def typed():
    """One run with one actor / critic per agent type on agents of two kinds, and its initial state."""
    env = SetpointEnv(num_agents=4, dim=MIXED_DIMS)
    cfg = tiny(15, param_sharing="type")
    train = make_train(cfg, env)
    initial = train.init(jax.random.PRNGKey(3))
    final, metrics = jax.jit(train)(jax.random.PRNGKey(3), initial)
    return {"env": env, "train": train, "initial": initial, "final": final, "metrics": jax.device_get(metrics)}


def leaves_of_agent(train, params, a):
    return [np.asarray(x[a]) for x in jax.tree.leaves(train.agent_params(params))]


def test_type_sharing_gives_one_parameter_set_per_type(typed):
    """Agents of one type keep identical actor and critic parameters through training, types differ,
    and both sets were trained (gradients of all agents of a type add up in their set)."""
    train, initial, final = typed["train"], typed["initial"], typed["final"]
    np.testing.assert_array_equal(train.param_index, [0, 1, 0, 1])
    assert final.actor.params["params"]["log_std"].shape == (2, 2)  # [n_types, act_dim]
    for net in ("actor", "critic"):
        params = getattr(final, net).params
        for a, b in ((0, 2), (1, 3)):
            for x, y in zip(leaves_of_agent(train, params, a), leaves_of_agent(train, params, b)):
                np.testing.assert_array_equal(x, y)
        assert not all(np.allclose(x, y) for x, y in zip(leaves_of_agent(train, params, 0),
                                                         leaves_of_agent(train, params, 1)))
        before = getattr(initial, net).params
        for t in (0, 1):
            assert not all(np.allclose(x, y) for x, y in zip(leaves_of_agent(train, before, t),
                                                             leaves_of_agent(train, params, t)))


def test_type_sharing_trains(typed):
    """Finite losses, a critic that fits, a return that improves and a trained policy that beats
    the initial one on agents of both types."""
    env, train, m = typed["env"], typed["train"], typed["metrics"]
    assert all(np.isfinite(m[k]).all() for k in ("actor_loss", "critic_loss", "entropy", "approx_kl"))
    assert m["critic_loss"][-3:].mean() < 0.5 * m["critic_loss"][:3].mean()
    assert m["episode_return"][-3:].mean() > m["episode_return"][:3].mean() + 1.0
    before, after = (evaluate(env, train.act, jax.random.PRNGKey(9), num_episodes=64, policy_state=s)["return"]
                     for s in (typed["initial"], typed["final"]))
    assert after > before + 1.0, (before, after)


def test_sharing_modes_and_explicit_types():
    """"none": one independent set per agent; `agent_types` overrides the size-based types; every
    agent must be labelled."""
    env = SetpointEnv(num_agents=4, dim=MIXED_DIMS)
    train = make_train(tiny(1, param_sharing="none"), env)
    kernel = np.asarray(train.init(jax.random.PRNGKey(0)).actor.params["params"]["MLP_0"]["Dense_0"]["kernel"])
    assert kernel.shape == (4, 5 + 4, 32)  # [n_agents, obs_dim + agent one-hot, hidden]
    assert all(not np.allclose(kernel[a], kernel[b]) for a in range(4) for b in range(a))  # independent inits
    menv = MARLEnv.wrap(env)
    labels = {"agent_0": "x", "agent_1": "x", "agent_2": "y", "agent_3": "x"}
    np.testing.assert_array_equal(param_index(menv, "type", labels), [0, 0, 1, 0])
    np.testing.assert_array_equal(param_index(MARLEnv.wrap(SetpointEnv(num_agents=3)), "type", {}), [0, 0, 0])
    assert param_index(menv, "all", {}) is None
    with pytest.raises(ValueError, match=r"agent_types: .*none for \['agent_3'\].*unknown agents \['agent_9'\]"):
        param_index(menv, "type", {"agent_0": "x", "agent_1": "x", "agent_2": "y", "agent_9": "x"})


# ---------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_restores_identical_actions(trained, tmp_path):
    train, at_20 = trained["train"], trained["at_20"]
    path = tmp_path / "ckpt" / "ckpt.msgpack"
    save_checkpoint(path, at_20, 20)
    save_checkpoint(path, at_20, 20)  # overwrite in place
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.msgpack"]  # no temp file left
    restored, step = load_checkpoint(path, trained["initial"])
    assert step == 20
    obs = jax.random.normal(jax.random.PRNGKey(5), (10, 2, 3))
    for s in range(SEEDS):
        for deterministic in (True, False):
            np.testing.assert_array_equal(train.act(seed(at_20, s), jax.random.PRNGKey(6), obs, deterministic),
                                          train.act(seed(restored, s), jax.random.PRNGKey(6), obs, deterministic))
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(path, seed(restored, 0))  # no seed axis: other shapes


def test_checkpoint_round_trip_with_per_type_parameters(typed, tmp_path):
    """The stacked `[n_types, ...]` layout restores exactly; a layout of another sharing mode is refused."""
    train, final = typed["train"], typed["final"]
    path = tmp_path / "typed.msgpack"
    save_checkpoint(path, final, 15)
    restored, step = load_checkpoint(path, typed["initial"])
    assert step == 15 and int(restored.update_step) == 15
    for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(x, y)
    obs = jax.random.normal(jax.random.PRNGKey(5), (10, 4, 5))
    np.testing.assert_array_equal(train.act(final, None, obs), train.act(restored, None, obs))
    other = make_train(tiny(15, param_sharing="none"), typed["env"]).init(jax.random.PRNGKey(3))
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(path, other)


def test_resume_continues_the_step_counter_and_reproduces_the_run(trained):
    """`run` stopped after 20 updates and resumed to 25 continues at 21, writes each update once,
    and ends where an uninterrupted run of 25 updates from the same seed ends: every leaf of the
    state (parameters, optimizer moments and counts, normalization statistics, env states, keys)
    and every update's metrics."""
    train, metrics = trained["train"], trained["metrics"]
    assert any("resumed" in line and "update 20" in line for line in trained["logs"])
    for s in range(SEEDS):
        np.testing.assert_array_equal(metrics["update_step"][s], np.arange(1, N_UPDATES + 1))
        np.testing.assert_array_equal(metrics["env_steps"][s], np.arange(1, N_UPDATES + 1) * 128)
    np.testing.assert_array_equal(trained["final"].update_step, [N_UPDATES] * SEEDS)
    assert int(trained["final"].actor.step[0]) == N_UPDATES * 4 * 2  # epochs x minibatches per update

    # the same 25 updates without a checkpoint in between (the chunk program is compiled already)
    state, chunks = trained["initial"], []  # `seed_init` of the run's seed
    for _ in range(N_UPDATES // CHUNK):
        state, m = train.seed_chunk(state, CHUNK)
        chunks.append(jax.device_get(m))
    paths = jax.tree_util.tree_leaves_with_path(trained["final"])
    for (path, resumed), straight in zip(paths, jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(np.asarray(resumed, float), np.asarray(straight, float), rtol=1e-6, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))
    for k in ("actor_loss", "critic_loss", "episode_return", "approx_kl"):
        straight = np.concatenate([m[k] for m in chunks], axis=1)  # [seed, update]
        np.testing.assert_allclose(metrics[k], straight, rtol=1e-5, atol=1e-7, err_msg=k)
    with pytest.raises(ValueError, match="different config"):
        run(trained["cfg"].replace(lr_actor=1e-4), trained["out"], resume=True, train=train, log=lambda _: None)


# ------------------------------------------------------------------------------- real env

@pytest.mark.slow
def test_one_update_on_multi_microgrid():
    import pgjax

    env = pgjax.make("multi_microgrid")
    cfg = MAPPOConfig(num_envs=2, num_steps=4, total_timesteps=8, num_minibatches=2, update_epochs=1,
                      actor_hidden=(16,), critic_hidden=(16,))
    state, metrics = jax.jit(make_train(cfg, env))(jax.random.PRNGKey(0))
    assert int(state.update_step) == 1
    assert np.isfinite(metrics["actor_loss"]).all() and "info/cost" in metrics

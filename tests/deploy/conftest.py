"""Shared fixtures of the deployment tests: a run folder holding a fixed-weight test policy.

The policy is a freshly initialised MAPPO actor (no training) made to act: its mean head is
scaled up (actions spread over [-1, 1] instead of ~0) and its observation statistics are
random, so normalization, clipping and every layer matter in the comparisons.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import yaml

from pgjax.baselines.mappo import CHECKPOINT, CONFIG, MAPPOConfig, make_train, save_checkpoint
from pgjax.runio import write_atomic

SCENARIO = "multi_microgrid"
CONFIG_KW = dict(env=SCENARIO, env_kwargs={"dtype": "float32"}, num_envs=2, num_steps=4, total_timesteps=8,
                 num_minibatches=1, actor_hidden=(16, 16), critic_hidden=(8,))


def fixed_policy_state(train, key):
    """`seed_init` state with a scaled-up mean head and random observation statistics (seed axis of 1)."""
    ts = train.seed_init(key)
    k_mean, k_var = jax.random.split(jax.random.PRNGKey(7))
    params = ts.actor.params
    head = params["params"]["Dense_0"]
    head = {**head, "kernel": head["kernel"] * 150.0, "bias": head["bias"] + 0.1}
    params = {"params": {**params["params"], "Dense_0": head}}
    stats = ts.obs_stats.replace(mean=0.3 * jax.random.normal(k_mean, ts.obs_stats.mean.shape),
                                 var=jnp.exp(jax.random.uniform(k_var, ts.obs_stats.var.shape, minval=-1.0, maxval=1.0)))
    return ts.replace(actor=ts.actor.replace(params=params), obs_stats=stats)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A run folder (config.yaml + checkpoint.msgpack) of the fixed-weight policy; `(path, train, state)`."""
    cfg = MAPPOConfig(**CONFIG_KW)
    out = tmp_path_factory.mktemp("run")
    train = make_train(cfg)
    state = fixed_policy_state(train, jax.random.PRNGKey(cfg.seed))
    write_atomic(out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    save_checkpoint(out / CHECKPOINT, state, 0)
    return out, train, jax.tree.map(lambda x: x[0], state)


@pytest.fixture(scope="session")
def export_dir(run_dir, tmp_path_factory):
    from pgjax.deploy.export import export_run

    out = tmp_path_factory.mktemp("export")
    export_run(run_dir[0], out)
    return out


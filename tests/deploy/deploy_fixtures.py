"""Fixtures of the deployment tests (imported by each tests/deploy module: a second `conftest`
module would shadow tests/conftest.py, which other tests import by name): a run folder holding
a fixed-weight test policy.

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
                                 var=jnp.exp(jax.random.uniform(k_var, ts.obs_stats.var.shape, minval=-1.0,
                                                                maxval=1.0)))
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
    export_run(run_dir[0], out, onnx=True)
    return out



@pytest.fixture(scope="session")
def env():
    """The plant's environment: the exported run's scenario and dtype."""
    import pgjax

    return pgjax.make(SCENARIO, **CONFIG_KW["env_kwargs"])


@pytest.fixture
def loop(env, export_dir, tmp_path):
    """`loop(periods, dmap=None, faults=(), plant_period=None, steps=None, **controller options)`: a plant
    on a free port of 127.0.0.1 and the controller against it; returns `(plant, controller, summary)`."""
    import asyncio

    from pgjax.deploy.device_map import map_for_env, parse_map
    from pgjax.deploy.plant import Plant
    from pgjax.deploy.runtime import Controller

    async def run(periods, dmap, faults, plant_period, steps, ctl_kw):
        plant = Plant(env, dmap, day=0, faults=faults, period_s=plant_period, log_path=tmp_path / "plant.jsonl",
                      steps=periods if steps is None else steps)
        await plant.start()
        ctl = Controller(export_dir, dmap, log_path=tmp_path / "deploy.jsonl", port=plant.port,
                         **{"period_s": 0.05, "read_timeout_s": 1.0, **ctl_kw})
        try:
            summary = await ctl.run(periods=periods)
        finally:
            await plant.stop()
        return plant, ctl, summary

    def go(periods, dmap=None, faults=(), plant_period=None, steps=None, **ctl_kw):
        dmap = parse_map(map_for_env(env, port=0)) if dmap is None else dmap
        return asyncio.run(run(periods, dmap, faults, plant_period, steps, ctl_kw))

    return go

"""Training over several local devices (`pgjax train --devices N`, `pgjax.distributed.batch_mesh`,
`mappo.shardings`): the environments split along the batch axis, the networks replicated, the same
learning curve and parameters as one device up to reduction order, checkpoints that
resume on another device count, and evaluation episodes split over devices
(`make_rollout(mesh=...)`, `pgjax eval / compare --devices`) with the same totals.

JAX fixes its device count when it starts, so each check runs in a fresh Python process
with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (four CPU devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pgjax.distributed import batch_mesh

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from pgjax.baselines.mappo import MAPPOConfig, run

    out = sys.argv[1]
    cfg = MAPPOConfig(env="setpoint", num_envs=8, num_steps=8, num_minibatches=2, update_epochs=2,
                      actor_hidden=[16], critic_hidden=[16], total_timesteps=64 * 4)
    quiet = lambda line: None
    one = run(cfg, f"{out}/one", devices=1, chunk_updates=2, log=quiet)
    four = run(cfg, f"{out}/four", devices=4, chunk_updates=2, log=quiet)
    # half the run on 4 devices, the rest resumed on 2
    run(cfg, f"{out}/resumed", devices=4, chunk_updates=2, until_update=2, log=quiet)
    resumed = run(cfg, f"{out}/resumed", devices=2, chunk_updates=2, resume=True, log=quiet)
    # evaluation episodes split over the 4 devices: the same totals as on one
    from pgjax.baselines.common import make_env
    from pgjax.baselines.rule_based import controller, make_rollout
    from pgjax.distributed import batch_mesh
    env = make_env("setpoint")
    ctrl = controller("random", env)
    totals = [make_rollout(env, [ctrl], 8, mesh=m)(jax.random.PRNGKey(5))[0] for m in (None, batch_mesh(4, 8))]
    diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float))))
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    print(json.dumps({
        "devices": jax.device_count(),
        "obs_devices": len(four.obs.sharding.device_set),
        "obs_shard_shape": list(four.obs.sharding.shard_shape(four.obs.shape)),
        "actor_devices": len(four.actor.params.sharding.device_set) if hasattr(four.actor.params, "sharding")
                         else len(jax.tree.leaves(four.actor.params)[0].sharding.device_set),
        "actor_replicated": all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(four.actor.params)),
        "params_four": diff(one.actor.params, four.actor.params) + diff(one.critic.params, four.critic.params),
        "params_resumed": diff(one.actor.params, resumed.actor.params),
        "steps": [int(np.asarray(s.update_step)[0]) for s in (one, four, resumed)],
        "rollout_keys": sorted(totals[0]) == sorted(totals[1]),
        "rollout_diff": diff(totals[0], totals[1]),
    }))
""")


def test_batch_mesh_checks_the_device_count_and_the_split():
    assert batch_mesh(1, 8) is None and batch_mesh("all", 8) is None  # one CPU device in this process
    with pytest.raises(ValueError, match=r"devices: expected 1\.\.1 .*xla_force_host_platform_device_count"):
        batch_mesh(2, 8)
    with pytest.raises(ValueError, match="devices: expected"):
        batch_mesh(0, 8)


@pytest.mark.slow
def test_four_devices_train_like_one_and_resume_on_two(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["obs_devices"] == 4 and out["obs_shard_shape"][1] == 2  # [seeds, 8 envs / 4, agents, obs]
    assert out["actor_replicated"]
    assert out["steps"] == [4, 4, 4]
    assert out["params_four"] < 1e-5, out  # float32 reductions in another order only
    assert out["params_resumed"] < 1e-5, out
    assert out["rollout_keys"] and out["rollout_diff"] < 1e-5, out  # pgjax eval / compare --devices 4

    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "four", "resumed")}
    for name in ("four", "resumed"):
        assert [r["update_step"] for r in rows[name]] == [r["update_step"] for r in rows["one"]]
        for a, b in zip(rows["one"], rows[name]):
            for key in ("reward", "actor_loss", "critic_loss", "entropy"):
                assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (name, key, a[key], b[key])


def _primitives(jaxpr) -> set:
    """Names of every primitive in a closed jaxpr, nested jaxprs (scan, cond, pjit, ...) included."""
    names = set()
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        names.add(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    names |= _primitives(sub)
    return names


def test_training_chunk_has_no_host_round_trip():
    """The jitted MAPPO chunk on multi_microgrid (the GPU path: `--preset gpu` is this program with
    larger batches) holds no host callback; the pandapower reference mode, which does call the
    host each step, is found by the same check."""
    import jax

    import pgjax
    from pgjax.baselines.mappo import MAPPOConfig, make_train

    cfg = MAPPOConfig(env="multi_microgrid", env_kwargs={"dtype": "float32"}, num_envs=2, num_steps=4,
                      num_minibatches=1, update_epochs=1, actor_hidden=[8], critic_hidden=[8], total_timesteps=8)
    train = make_train(cfg)
    state = jax.eval_shape(train.seed_init, jax.random.PRNGKey(0))
    prims = _primitives(jax.make_jaxpr(train.seed_chunk_fn(1))(state))
    assert "scan" in prims and not {p for p in prims if "callback" in p}, sorted(prims)

    env = pgjax.make("multi_microgrid", method="pandapower")
    _, st = jax.eval_shape(env.reset, jax.random.PRNGKey(0), env.default_params)
    acts = jax.ShapeDtypeStruct((env.num_agents, env.act_dim), env.dtype)
    ref = _primitives(jax.make_jaxpr(env.step)(jax.random.PRNGKey(0), st, acts, env.default_params))
    assert {p for p in ref if "callback" in p}, sorted(ref)

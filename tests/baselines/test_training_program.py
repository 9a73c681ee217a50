"""The training program is one compiled program per chunk size: no host callback inside, no
retracing between chunks (the rollout, GAE and every epoch stay on the device)."""

from __future__ import annotations

import jax
import pytest

from pgjax.baselines.mappo import MAPPOConfig, make_train, run

TINY = {"env": "setpoint", "num_envs": 4, "num_steps": 8, "update_epochs": 2, "num_minibatches": 2,
        "actor_hidden": (8,), "critic_hidden": (8,)}


@pytest.mark.parametrize("cfg", [
    {**TINY, "total_timesteps": 4 * 8 * 6},
    {**TINY, "total_timesteps": 4 * 8 * 6, "algorithm": "mappo_lagrangian", "cost_budgets": {"overshoot": 1.0},
     "num_seeds": 2},
    {"env": "multi_microgrid", "env_kwargs": {"dtype": "float32"}, "num_envs": 2, "num_steps": 4,
     "num_minibatches": 1, "update_epochs": 1, "total_timesteps": 16},
], ids=["setpoint", "lagrangian_2_seeds", "multi_microgrid"])
def test_chunk_program_has_no_host_callback(cfg):
    config = MAPPOConfig.from_dict(cfg)
    train = make_train(config)
    state = train.seed_init(jax.random.PRNGKey(0))
    hlo = jax.jit(train.seed_chunk_fn(2)).lower(state).as_text()
    assert "while" in hlo  # the scans are there ...
    for marker in ("callback", "host_compute", "outfeed", "infeed"):  # ... and nothing leaves the device
        assert marker not in hlo.lower(), marker


def test_chunks_are_traced_once_and_not_retraced(tmp_path):
    """`run` in three chunks of 2 updates: `update` is traced for the first chunk only; the
    checkpointed state that comes back (same shapes and dtypes) reuses the compiled program."""
    config = MAPPOConfig.from_dict({**TINY, "total_timesteps": 4 * 8 * 6})
    train = make_train(config)
    traces = []
    update = train.update

    def counting_update(ts):
        traces.append(1)
        return update(ts)

    train.update = counting_update
    run(config, tmp_path / "run", chunk_updates=2, train=train, log=lambda _: None)
    assert len(traces) == 1, traces
    run(config.replace(total_timesteps=4 * 8 * 10), tmp_path / "run", resume=True, chunk_updates=2, train=train,
        log=lambda _: None)  # a resumed run from the restored checkpoint: still the same program
    assert len(traces) == 1, traces


def test_every_env_batch_field_is_split_over_devices():
    """`ENV_BATCH_FIELDS` (what `shardings` splits over devices) are exactly the `TrainState`
    fields whose arrays lead with the environment axis (Lagrangian state included)."""
    from pgjax.baselines.mappo import ENV_BATCH_FIELDS

    config = MAPPOConfig.from_dict({**TINY, "num_envs": 7, "total_timesteps": 7 * 8, "num_minibatches": 1,
                                    "algorithm": "mappo_lagrangian", "cost_budgets": {"overshoot": 1.0}})
    state = make_train(config).init(jax.random.PRNGKey(0))
    leading = {name for name in vars(state)
               if (leaves := jax.tree.leaves(getattr(state, name))) and all(x.ndim and x.shape[0] == 7 for x in leaves)}
    assert leading == set(ENV_BATCH_FIELDS)

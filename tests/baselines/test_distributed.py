"""Training as one program over two processes on 127.0.0.1 (`pgjax.distributed`, `mappo.run`):
both processes hold the same parameters after every update, equal to a one-process run of
the combined batch; process 0 alone writes the run folder, which both resume from.

Each process is a fresh Python (JAX's distributed runtime starts once per process) with one
CPU device; their collectives go through Gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    coordinator, n_proc, pid, out, dump = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    from pgjax import distributed
    if n_proc > 1:
        distributed.initialize(coordinator, n_proc, pid)
    import jax
    import numpy as np
    from pgjax.baselines.mappo import MAPPOConfig, run

    cfg = MAPPOConfig(env="setpoint", num_envs=4, num_steps=8, num_minibatches=2, update_epochs=2,
                      actor_hidden=[16], critic_hidden=[16], total_timesteps=32 * 3)
    leaves, shards = {}, None
    for k in (1, 2, 3):  # one update per call; the calls after the first resume from the folder
        state = run(cfg, out, resume=k > 1, chunk_updates=1, until_update=k, log=lambda line: None)
        shards = len(state.obs.sharding.device_set)
        host = distributed.host_arrays(state)
        for i, leaf in enumerate(jax.tree.leaves((host.actor.params, host.critic.params))):
            leaves[f"u{k}_{i}"] = np.asarray(leaf)
    np.savez(dump, **leaves)
    print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(), "obs_shards": shards}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, env):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_combined_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [_launch([coordinator, 2, pid, tmp_path / "dist", tmp_path / f"p{pid}.npz"], env) for pid in (0, 1)]
    single = _launch([coordinator, 1, 0, tmp_path / "single", tmp_path / "single.npz"], env)
    outs = []
    for p in [*procs, single]:
        try:
            stdout, stderr = p.communicate(timeout=900)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, stderr[-4000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1] == {"processes": 2, "devices": 2, "obs_shards": 2}
    assert outs[2]["processes"] == 1

    p0, p1, ref = (np.load(tmp_path / f) for f in ("p0.npz", "p1.npz", "single.npz"))
    assert sorted(p0.files) == sorted(ref.files) and any(f.startswith("u3_") for f in ref.files)
    for name in ref.files:  # after every update
        np.testing.assert_array_equal(p0[name], p1[name])  # one program: the same bits in both processes
        np.testing.assert_allclose(p0[name], ref[name], rtol=1e-5, atol=1e-6)  # reduction order only

    # the folder was written once, by process 0, and holds every update's rows once
    dist = tmp_path / "dist"
    rows = [json.loads(line) for line in (dist / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update_step"] for r in rows] == [1, 2, 3] == [r["update_step"] for r in ref_rows]
    for a, b in zip(rows, ref_rows):
        assert abs(a["actor_loss"] - b["actor_loss"]) <= 1e-4 * max(1.0, abs(b["actor_loss"]))
    assert not [f for f in os.listdir(dist) if f.startswith(".") or f.endswith(".tmp")]

"""`pgjax export`: the numpy policy gives the JAX actor's actions; the manifest describes the schema."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from pgjax.deploy.export import content_hash
from pgjax.deploy.policy import PolicyFileError, load_policy, read_manifest
from deploy_fixtures import env, export_dir, loop, run_dir  # noqa: F401 (the deployment tests' fixtures)


def rollout_observations(env, train, state, steps: int) -> np.ndarray:
    """Observations `[steps, n_agents, obs_dim]` of `steps` env steps under the JAX actor."""
    key = jax.random.PRNGKey(3)
    step = jax.jit(env.step)
    act = jax.jit(lambda obs: train.act(state, key, obs, deterministic=True))
    obs, st = env.reset(key)
    out = []
    for t in range(steps):
        out.append(np.asarray(obs))
        obs, st, *_ = step(jax.random.fold_in(key, t), st, act(obs))
    return np.stack(out)


def test_numpy_policy_equals_jax_actor(run_dir, export_dir):
    _, train, state = run_dir
    env = train.env.env
    obs = rollout_observations(env, train, state, steps=6)  # [6, n_agents, obs_dim]
    jax_actions = np.asarray(train.act(state, jax.random.PRNGKey(0), obs, deterministic=True))
    assert np.abs(jax_actions).max() > 0.5, "the test policy must act, not sit at 0"
    assert (np.abs(jax_actions) == 1.0).any() and (np.abs(jax_actions) < 0.9).any()  # clipped and interior
    for a, name in enumerate(env.agents):
        policy = load_policy(export_dir, name)
        n_obs, n_act = env.obs_sizes[a], env.act_sizes[a]
        np.testing.assert_allclose(policy(obs[:, a, :n_obs]), jax_actions[:, a, :n_act], atol=1e-5, rtol=0)
        np.testing.assert_allclose(policy(obs[0, a, :n_obs]), jax_actions[0, a, :n_act], atol=1e-5, rtol=0)


def test_onnx_policy_equals_jax_actor(run_dir, export_dir):
    import onnxruntime

    _, train, state = run_dir
    env = train.env.env
    obs = rollout_observations(env, train, state, steps=6)
    jax_actions = np.asarray(train.act(state, jax.random.PRNGKey(0), obs, deterministic=True))
    manifest = read_manifest(export_dir)
    for a, entry in enumerate(manifest["agents"]):
        session = onnxruntime.InferenceSession(str(export_dir / entry["onnx"]), providers=["CPUExecutionProvider"])
        out = session.run(None, {"obs": obs[:, a, :env.obs_sizes[a]].astype(np.float32)})[0]
        np.testing.assert_allclose(out, jax_actions[:, a, :env.act_sizes[a]], atol=1e-5, rtol=0)


def test_manifest_schema_and_hash(run_dir, export_dir):
    _, train, _ = run_dir
    env = train.env.env
    m = read_manifest(export_dir)
    assert m["content_hash"] == content_hash(m)
    assert m["scenario"]["name"] == env.name and m["control_period_h"] == float(env.scenario.dt_h)
    for a, entry in enumerate(m["agents"]):
        feats = env.layout.observation.agent_features(a)
        assert [o["key"] for o in entry["observation"]] == [f.key for f in feats]
        assert [(o["unit"], o["scale"], o["offset"]) for o in entry["observation"]] == \
            [(f.unit, f.scale, f.offset) for f in feats]
        cols = env.layout.action.columns[a]
        assert [c["key"] for c in entry["action"]] == [c.key for c in cols]
        assert [c["column"] for c in entry["action"]] == list(range(len(cols)))
        assert [c["default"] for c in entry["action"]] == list(env.default_actions[a, :len(cols)])


def test_changed_weights_refused(export_dir, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    name = read_manifest(copy)["agents"][0]["name"]
    weights = copy / f"{name}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyFileError, match=f"{name}.safetensors: sha256"):
        load_policy(copy, name)


def test_exported_runner_needs_no_jax(run_dir, export_dir):
    """The export's own `pgjax_policy.py`, run from the export folder, imports no JAX and acts like the actor."""
    _, train, state = run_dir
    env = train.env.env
    obs = np.asarray(env.reset(jax.random.PRNGKey(5))[0])
    expected = np.asarray(train.act(state, jax.random.PRNGKey(0), obs, deterministic=True))[0, :env.act_sizes[0]]
    code = ("import sys, json; sys.path.insert(0, '.'); import numpy as np; import pgjax_policy as p; "
            f"pol = p.load_policy('.', {env.agents[0]!r}); "
            f"a = pol(np.array({obs[0, :env.obs_sizes[0]].tolist()!r})); "
            "loaded = sorted(m for m in ('jax', 'flax', 'jaxlib', 'pgjax') if m in sys.modules); "
            "print(json.dumps([loaded, a.tolist()]))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=export_dir)
    assert out.returncode == 0, out.stderr
    loaded, action = json.loads(out.stdout)
    assert loaded == []
    np.testing.assert_allclose(action, expected, atol=1e-5, rtol=0)


def test_export_command(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pgjax.cli", "export", str(run_dir[0]), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["format"] == "pgjax-policy/1"

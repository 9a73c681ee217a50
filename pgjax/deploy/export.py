"""Export a run folder's actors: `export_run(run_dir, out_dir)` (the `pgjax export` command).

Writes into `out_dir`, one weights file per learned agent (weights of agents sharing a
parameter set are repeated, so each file stands alone) and, last, `manifest.json`:

    format            "pgjax-policy/1"
    scenario          the run's `env` and `env_kwargs` (`pgjax.make(env, **env_kwargs)`)
    control_period_h  the scenario's step length (`dt_h`); episode_steps
    run               run folder, update step, seed index, config
    agents[]          name, weights (file), weights_sha256, parameter_set,
                      architecture: mlp, activation, hidden, obs_dim (padded), obs_size,
                        act_size, agent_id / agent_index / n_agents, normalize_obs, obs_clip, eps
                      observation[]: position, key, kind, owner, name, unit, scale, offset, doc
                        (observed = (physical - offset) / scale; the network normalizes it
                        further with obs.mean / obs.var, stored with the weights)
                      action[]: column, key, device, kind, name, unit, doc, low -1, high 1,
                        default (the device's safe action), setpoint (how [-1, 1] maps to the
                        device: the device type's action documentation)
    agents[].onnx     with `onnx=True`: `<agent>.onnx` and its sha256 (`pgjax.deploy.onnx_export`)
    runner            `pgjax_policy.py`, a copy of `pgjax.deploy.policy` (numpy + safetensors only;
                      `import pgjax` itself pulls in JAX), and its sha256
    content_hash      sha256 of the canonical JSON of everything above (weights by their sha256)

Weights files are safetensors (no pickle): `layer{k}.kernel [in, out]`, `layer{k}.bias [out]`
(hidden layers, then the mean head), `log_std [act_dim]` (not used by the deterministic
policy), `obs.mean`, `obs.var [obs_dim]`. `pgjax.deploy.policy.load_policy` reads them.
Every file is written atomically (`pgjax.runio`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
from pathlib import Path

import numpy as np

from pgjax.deploy.policy import FORMAT, MANIFEST, sha256_file
from pgjax.errors import InputError
from pgjax.runio import write_atomic, write_json

RUNNER = "pgjax_policy.py"


def load_run(run_dir):
    """`(config, env, trainer, seed-stacked train state, update step)` of a run folder (like `pgjax eval`)."""
    import jax

    from pgjax.baselines.common import make_env
    from pgjax.baselines.mappo import CHECKPOINT, CONFIG, load_checkpoint, make_train, read_run_config

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir / CONFIG)
    env = make_env(cfg.env, **cfg.env_kwargs)
    if not hasattr(env, "layout"):
        raise InputError(f"{run_dir / CONFIG}: env: expected a pgjax scenario (export needs its layout), "
                         f"got {cfg.env!r}")
    train = make_train(cfg, env)
    template = train.seed_init(jax.random.PRNGKey(cfg.seed))
    states, step = load_checkpoint(run_dir / CHECKPOINT, template)
    return cfg, env, train, states, step


def _dense_layers(params: dict, n_hidden: int) -> list:
    """`[(kernel, bias)]` of the actor: `MLP_0/Dense_k` for the hidden layers, then the head `Dense_0`."""
    p = params["params"]
    layers = [p["MLP_0"][f"Dense_{k}"] for k in range(n_hidden)] + [p["Dense_0"]]
    return [(np.asarray(d["kernel"], np.float32), np.asarray(d["bias"], np.float32)) for d in layers]


def agent_tensors(train, state, agent: int) -> dict:
    """The safetensors content of one agent: its parameter set's layers, log_std and the observation statistics."""
    import jax

    params = state.actor.params
    if train.param_index is not None:
        params = jax.tree.map(lambda x: x[int(train.param_index[agent])], params)
    out = {}
    for k, (w, b) in enumerate(_dense_layers(params, len(train.config.actor_hidden))):
        out[f"layer{k}.kernel"], out[f"layer{k}.bias"] = w, b
    out["log_std"] = np.asarray(params["params"]["log_std"], np.float32)
    out["obs.mean"] = np.asarray(state.obs_stats.mean, np.float32)
    out["obs.var"] = np.asarray(state.obs_stats.var, np.float32)
    return out


def observation_entries(layout, agent: int) -> list[dict]:
    schema = layout.observation
    return [{"position": i, "key": f.key, "kind": f.kind, "owner": f.owner, "name": f.name, "unit": f.unit,
             "scale": f.scale, "offset": f.offset, "doc": f.doc}
            for i, f in enumerate(schema.agent_features(agent))]


def action_entries(layout, agent: int) -> list[dict]:
    from pgjax import devices as dev

    out = []
    for col in layout.action.columns[agent]:
        doc = (dev.get(col.kind).doc.strip().splitlines() or [""])[0] if col.kind != "message" else "protocol message"
        out.append({"column": col.column, "key": col.key, "device": col.target, "kind": col.kind, "name": col.name,
                    "unit": col.unit, "doc": col.doc, "low": -1.0, "high": 1.0,
                    "default": float(layout.default_actions[agent, col.column]),
                    "setpoint": f"{col.doc or col.name} ({col.kind}: {doc})"})
    return out


def content_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def export_run(run_dir, out_dir, seed_index: int = 0, onnx: bool = False) -> dict:
    """Write the export of `run_dir` (seed `seed_index` of its checkpoint) into `out_dir`; returns the manifest.
    `onnx`: also `<agent>.onnx` per agent (`pgjax.deploy.onnx_export`), listed as `onnx` / `onnx_sha256`."""
    import jax
    from safetensors.numpy import save

    from pgjax.baselines.mappo import EPS

    if onnx:
        from pgjax.deploy.onnx_export import policy_graph
        from pgjax.deploy.policy import policy_from

        if importlib.util.find_spec("onnx") is None:
            raise InputError("--onnx: needs the onnx package (pip install 'pgjax[onnx]')")
    cfg, env, train, states, step = load_run(run_dir)
    if not 0 <= seed_index < cfg.num_seeds:
        raise InputError(f"--seed-index: expected 0 <= seed index < {cfg.num_seeds} (the run's num_seeds), "
                         f"got {seed_index}")
    state = jax.tree.map(lambda x: x[seed_index], states)
    layout = env.layout
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agents = []
    for a, name in enumerate(layout.agents):
        weights = f"{name}.safetensors"
        tensors = agent_tensors(train, state, a)
        write_atomic(out / weights, save(tensors))
        arch = {"type": "mlp", "activation": cfg.activation, "hidden": list(cfg.actor_hidden),
                "obs_dim": int(env.obs_dim), "obs_size": int(layout.observation.sizes[a]),
                "act_dim": int(env.act_dim), "act_size": int(layout.act_sizes[a]),
                "agent_id": bool(cfg.agent_id), "agent_index": a, "n_agents": layout.num_agents,
                "normalize_obs": bool(cfg.normalize_obs), "obs_clip": float(cfg.obs_clip), "eps": float(EPS)}
        agents.append({"name": str(name), "weights": weights, "weights_sha256": sha256_file(out / weights),
                       "parameter_set": None if train.param_index is None else int(train.param_index[a]),
                       "architecture": arch, "observation": observation_entries(layout, a),
                       "action": action_entries(layout, a)})
        if onnx:
            agents[-1]["onnx"] = f"{name}.onnx"
            write_atomic(out / agents[-1]["onnx"], policy_graph(policy_from(arch, tensors), str(name)))
            agents[-1]["onnx_sha256"] = sha256_file(out / agents[-1]["onnx"])
    runner = importlib.resources.files("pgjax.deploy").joinpath("policy.py").read_text()
    write_atomic(out / RUNNER, runner)
    manifest = {"format": FORMAT, "scenario": {"env": cfg.env, "env_kwargs": dict(cfg.env_kwargs), "name": env.name},
                "control_period_h": float(env.scenario.dt_h), "episode_steps": int(env.episode_steps),
                "run": {"dir": str(run_dir), "update_step": int(step), "seed_index": seed_index,
                        "config": cfg.to_dict()},
                "runner": {"file": RUNNER, "sha256": sha256_file(out / RUNNER)}, "agents": agents}
    manifest["content_hash"] = content_hash(manifest)
    write_json(out / MANIFEST, manifest)
    return manifest

"""The exported deterministic policy on numpy alone (an edge box needs no JAX).

    policy = load_policy("export/", "MG1")         # manifest.json + MG1.safetensors
    action = policy(obs)                           # obs [obs_size] or [batch, obs_size] -> [.., act_size]

What it computes is the MAPPO actor's Gaussian mean (`pgjax.baselines.mappo.MAPPO.act` with
`deterministic=True`), in float64:
    x = obs padded with zeros to `obs_dim`
    x = clip((x - obs_mean) / sqrt(obs_var + eps), -obs_clip, obs_clip)     (if normalized)
    x = [x, one_hot(agent_index, n_agents)]                                 (if agent_id)
    h = act(x W_k + b_k) for each hidden layer; mean = h W_out + b_out
    action = clip(mean, -1, 1)[:act_size]
This file is also copied into every export as `pgjax_policy.py`, so an edge box runs the
policy with numpy and safetensors alone (`import pgjax` itself pulls in JAX):

    import pgjax_policy; policy = pgjax_policy.load_policy(".", "MG1")

Weights come from the agent's safetensors file, checked against the manifest's sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "pgjax-policy/1"
ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    # flax's nn.gelu default is the tanh approximation
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3))),
}


class PolicyFileError(ValueError):
    """An export folder that cannot be used (missing file, wrong hash, bad manifest); names the file."""


@dataclasses.dataclass(frozen=True, eq=False)
class NumpyPolicy:
    """One agent's deterministic MLP policy (see the module docstring); weights float64."""

    kernels: tuple  # [in, out] per layer, the output layer last
    biases: tuple  # [out] per layer
    activation: str
    obs_mean: np.ndarray | None  # [obs_dim], None when observations are not normalized
    obs_var: np.ndarray | None  # [obs_dim]
    obs_clip: float
    eps: float
    obs_dim: int  # padded observation length the network was trained on
    obs_size: int  # this agent's real observation length
    act_size: int  # this agent's real action length
    agent_onehot: np.ndarray | None  # [n_agents] appended to the normalized observation

    def __call__(self, obs) -> np.ndarray:
        """Actions `[..., act_size]` in [-1, 1] for raw observations `[..., obs_size]` (physical / scale)."""
        obs = np.asarray(obs, np.float64)
        if obs.shape[-1] != self.obs_size:
            raise ValueError(f"policy: expected observations [..., {self.obs_size}], got shape {obs.shape}")
        x = np.zeros(obs.shape[:-1] + (self.obs_dim,))
        x[..., :self.obs_size] = obs
        if self.obs_mean is not None:
            x = np.clip((x - self.obs_mean) / np.sqrt(self.obs_var + self.eps), -self.obs_clip, self.obs_clip)
        if self.agent_onehot is not None:
            x = np.concatenate([x, np.broadcast_to(self.agent_onehot, x.shape[:-1] + self.agent_onehot.shape)], -1)
        act = ACTIVATIONS[self.activation]
        for w, b in zip(self.kernels[:-1], self.biases[:-1]):
            x = act(x @ w + b)
        mean = x @ self.kernels[-1] + self.biases[-1]
        return np.clip(mean, -1.0, 1.0)[..., :self.act_size]


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(export_dir) -> dict:
    """The export's manifest (`PolicyFileError` naming the file if missing or not a pgjax export)."""
    path = Path(export_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: not found (not a folder written by pgjax export?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyFileError(f"{path}: not a readable manifest ({e})") from None
    got = manifest.get("format") if isinstance(manifest, dict) else manifest
    if got != FORMAT:
        raise PolicyFileError(f"{path}: format: expected {FORMAT!r}, got {got!r}")
    return manifest


def agent_entry(manifest: dict, agent: str) -> dict:
    for entry in manifest["agents"]:
        if entry["name"] == agent:
            return entry
    raise PolicyFileError(f"manifest: no agent {agent!r}; it has {[a['name'] for a in manifest['agents']]}")


def load_policy(export_dir, agent: str) -> NumpyPolicy:
    """Agent `agent`'s policy from an export folder (weights checked against the manifest's sha256)."""
    from safetensors.numpy import load_file

    export_dir = Path(export_dir)
    entry = agent_entry(read_manifest(export_dir), agent)
    path = export_dir / entry["weights"]
    if not path.exists():
        raise PolicyFileError(f"{path}: weights file not found")
    if sha256_file(path) != entry["weights_sha256"]:
        raise PolicyFileError(f"{path}: sha256 differs from the manifest's (file changed after export)")
    return policy_from(entry["architecture"], load_file(str(path)))


def policy_from(arch: dict, w: dict) -> NumpyPolicy:
    """A `NumpyPolicy` from a manifest's `architecture` entry and the weights file's tensors."""
    n_layers = len(arch["hidden"]) + 1
    kernels = tuple(np.asarray(w[f"layer{k}.kernel"], np.float64) for k in range(n_layers))
    biases = tuple(np.asarray(w[f"layer{k}.bias"], np.float64) for k in range(n_layers))
    onehot = None
    if arch["agent_id"]:
        onehot = np.eye(arch["n_agents"])[arch["agent_index"]]
    normalized = arch["normalize_obs"]
    return NumpyPolicy(kernels, biases, arch["activation"],
                       np.asarray(w["obs.mean"], np.float64) if normalized else None,
                       np.asarray(w["obs.var"], np.float64) if normalized else None,
                       float(arch["obs_clip"]), float(arch["eps"]), int(arch["obs_dim"]),
                       int(arch["obs_size"]), int(arch["act_size"]), onehot)

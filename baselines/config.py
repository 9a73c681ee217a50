"""`MAPPOConfig`: the typed, validated configuration of `pgjax.baselines.mappo`.

    cfg = MAPPOConfig.from_yaml("run.yaml")          # or from_dict({...}), or MAPPOConfig(...)
    cfg = cfg.replace(num_envs=64)                    # validated again

Every field has a type and a range; `from_dict` / `from_yaml` reject unknown keys and bad
values with a `ValueError` that names the key, what was expected and what was given.
Numbers may come as strings (YAML 1.1 reads `1e-3` as a string): float fields take any
finite number or numeric string (`"1e-3"`, `"10"`), int fields take ints and integral
floats or strings (`1000.0`, `"1e3"`, `"1000"`) but not `1.5`. Derived sizes
(`num_updates`, `minibatch_size`) are properties, so they can never disagree with the fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# name -> (kind, lower, upper, lower_inclusive); kinds: int, float, bool, str, ints, mapping
# (str-keyed), labels (str-keyed mapping of str labels), budgets (str-keyed mapping of numbers > 0)
_RULES: dict[str, tuple] = {
    "env": ("str", None, None, True),
    "env_kwargs": ("mapping", None, None, True),
    "seed": ("int", 0, None, True),
    "num_seeds": ("int", 1, None, True),
    "num_envs": ("int", 1, None, True),
    "num_steps": ("int", 1, None, True),
    "total_timesteps": ("int", 1, None, True),
    "update_epochs": ("int", 1, None, True),
    "num_minibatches": ("int", 1, None, True),
    "lr_actor": ("float", 0.0, None, False),
    "lr_critic": ("float", 0.0, None, False),
    "anneal_lr": ("bool", None, None, True),
    "gamma": ("float", 0.0, 1.0, True),
    "gae_lambda": ("float", 0.0, 1.0, True),
    "clip_eps": ("float", 0.0, None, False),
    "clip_value": ("bool", None, None, True),
    "value_clip_eps": ("float", 0.0, None, False),
    "ent_coef": ("float", 0.0, None, True),
    "vf_coef": ("float", 0.0, None, False),
    "max_grad_norm": ("float", 0.0, None, False),
    "actor_hidden": ("ints", 1, None, True),
    "critic_hidden": ("ints", 1, None, True),
    "activation": ("str", None, None, True),
    "log_std_init": ("float", -20.0, 2.0, True),
    "param_sharing": ("str", None, None, True),
    "agent_types": ("labels", None, None, True),
    "agent_id": ("bool", None, None, True),
    "algorithm": ("str", None, None, True),
    "cost_budgets": ("budgets", None, None, True),
    "lagrangian_lr": ("float", 0.0, None, False),
    "lagrangian_init": ("float", 0.0, None, True),
    "lagrangian_max": ("float", 0.0, None, False),
    "normalize_obs": ("bool", None, None, True),
    "normalize_reward": ("bool", None, None, True),
    "obs_clip": ("float", 0.0, None, False),
    "reward_clip": ("float", 0.0, None, False),
}
ACTIVATIONS = ("tanh", "relu", "gelu")

# Named starting points (`MAPPOConfig.from_dict({**PRESETS[name], ...})`); the defaults above stay
# those of the power-flow scenarios. `frequency_68bus`: the original design's networks but for a
# smaller actor (critic [140 -> 256 -> 256 -> 20 heads], actor [15 -> 64 -> 64 -> 1], ReLU), one
# actor per agent kind and no agent one-hot (the actor sees exactly the 15 local features);
# batch and epochs chosen by measurement on the 2-core CPU: 64 envs x 64 steps, 4 epochs of 4
# minibatches, no entropy bonus and log-std -1 (the original 8 x 256 steps, 10 epochs of 8,
# entropy 0.01: 330 env steps/s and a return of -57,347 after 205k steps; this preset trains at
# 8.8x the speed; after 4.9M steps 3 seeds reach -50,328 [-54,933, -44,174] against AGC's -47,967,
# with no band violation; README "Learning").
_FREQ_KINDS = {**{f"battery_{i}": "battery" for i in range(5)}, **{f"gas_{i}": "gas" for i in range(8)},
               **{f"dr_{i}": "demand_response" for i in range(7)}}
PRESETS: dict[str, dict[str, Any]] = {
    # the laptop preset is tuned on multi_microgrid to finish in a few minutes on a 2-core CPU
    # (compile included) and beat random / do-nothing clearly on the test year (`pgjax train`'s default)
    "laptop": {
        "env": "multi_microgrid", "num_envs": 64, "num_steps": 24, "total_timesteps": 768_000,
        "update_epochs": 4, "num_minibatches": 4, "lr_actor": 1e-3, "lr_critic": 3e-3, "anneal_lr": True,
        "actor_hidden": [64, 64], "critic_hidden": [128, 128],
    },
    # large batches for an accelerator (the same program; README "Scaling out")
    "gpu": {
        "env": "multi_microgrid", "num_envs": 2048, "num_steps": 24, "total_timesteps": 50_000_000,
        "update_epochs": 4, "num_minibatches": 8, "lr_actor": 5e-4, "lr_critic": 1e-3, "anneal_lr": True,
        "actor_hidden": [128, 128], "critic_hidden": [256, 256], "num_seeds": 3,
    },
    "frequency_68bus": {
        "env": "frequency_68bus", "num_envs": 64, "num_steps": 64, "total_timesteps": 4_915_200,
        "update_epochs": 4, "num_minibatches": 4, "lr_actor": 3e-4, "lr_critic": 1e-3, "gamma": 0.99,
        "gae_lambda": 0.95, "clip_eps": 0.2, "ent_coef": 0.0, "log_std_init": -1.0, "actor_hidden": [64, 64],
        "critic_hidden": [256, 256], "activation": "relu", "param_sharing": "type", "agent_types": _FREQ_KINDS,
        "agent_id": False,
    },
}
PARAM_SHARING = ("all", "type", "none")
# mappo: centralized critic on the world state; ippo: each agent's critic on its own observation;
# mappo_lagrangian: mappo with a cost critic per constrained safety signal and learned multipliers
ALGORITHMS = ("mappo", "ippo", "mappo_lagrangian")


@dataclasses.dataclass(frozen=True)
class MAPPOConfig:
    """MAPPO / IPPO hyper-parameters (lower-case keys, the same in YAML)."""

    env: str = "multi_microgrid"  # scenario name or YAML path for `pgjax.make`, or a toy env ("setpoint")
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # overrides for `pgjax.make`
    seed: int = 0
    num_seeds: int = 1  # independent runs, vmapped
    num_envs: int = 16  # environments stepped in parallel per run
    num_steps: int = 24  # environment steps per rollout (per environment)
    total_timesteps: int = 200_000  # environment steps per run, counting every environment
    update_epochs: int = 4
    num_minibatches: int = 4  # must divide num_envs * num_steps
    lr_actor: float = 3e-4
    lr_critic: float = 1e-3
    anneal_lr: bool = False  # linear decay to 0 over `num_updates`
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2  # PPO ratio clip
    clip_value: bool = True
    value_clip_eps: float = 0.2  # value clip, in (normalized) return units
    ent_coef: float = 0.0
    vf_coef: float = 0.5  # scales the critic loss (the critic has its own optimizer)
    max_grad_norm: float = 0.5
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"  # one of ACTIVATIONS
    log_std_init: float = -0.5  # state-independent log standard deviation at start
    param_sharing: str = "all"  # one actor / critic for "all" agents, one per agent "type", or per agent ("none")
    agent_types: Mapping[str, str] = dataclasses.field(default_factory=dict)  # agent name -> type label
    # ("type" only; empty: agents of equal obs / action sizes and device composition share a type)
    agent_id: bool = True  # append an agent one-hot to actor and critic inputs
    algorithm: str = "mappo"  # one of ALGORITHMS
    # mappo_lagrangian: safety signal name (the env's `cost_signals`) -> budget per episode, in the
    # signal's unit summed over the episode's steps (e.g. voltage: p.u. outside the band, summed over
    # buses and steps); each gets a cost critic head and a Lagrange multiplier learned by dual ascent
    cost_budgets: Mapping[str, float] = dataclasses.field(default_factory=dict)
    lagrangian_lr: float = 0.05  # dual ascent step: multiplier change per update at an episode cost of twice the budget
    lagrangian_init: float = 0.0  # multipliers at start
    lagrangian_max: float = 100.0  # multipliers are kept in [0, lagrangian_max]
    normalize_obs: bool = True  # running mean / std (Welford) of observations and world state
    normalize_reward: bool = True  # divide rewards by the running std of the discounted return
    obs_clip: float = 10.0  # clip normalized observations to [-obs_clip, obs_clip]
    reward_clip: float = 10.0  # clip scaled rewards to [-reward_clip, reward_clip]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {self.activation!r}")
        if self.param_sharing not in PARAM_SHARING:
            raise ValueError(f"param_sharing: expected one of {PARAM_SHARING}, got {self.param_sharing!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.algorithm == "mappo_lagrangian" and not self.cost_budgets:
            raise ValueError("cost_budgets: algorithm mappo_lagrangian needs a budget per episode for at least one "
                             "safety signal (e.g. cost_budgets: {voltage: 0.5}), got none")
        if self.cost_budgets and self.algorithm != "mappo_lagrangian":
            raise ValueError(f"cost_budgets: only used with algorithm: mappo_lagrangian, got algorithm: "
                             f"{self.algorithm!r}")
        if self.agent_types and self.param_sharing != "type":
            raise ValueError(f"agent_types: only used with param_sharing: type, got param_sharing: "
                             f"{self.param_sharing!r}")
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            raise ValueError(f"num_minibatches: must divide num_envs * num_steps = {batch}, "
                             f"got {self.num_minibatches}")
        if self.total_timesteps < batch:
            raise ValueError(f"total_timesteps: must be at least num_envs * num_steps = {batch}, "
                             f"got {self.total_timesteps}")

    # ------------------------------------------------------------------ derived sizes

    @property
    def ippo(self) -> bool:
        """Critics on each agent's local observation instead of the world state."""
        return self.algorithm == "ippo"

    @property
    def lagrangian(self) -> bool:
        return self.algorithm == "mappo_lagrangian"

    @property
    def batch_size(self) -> int:
        """Environment steps per update (per run): `num_envs * num_steps`."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates per run: `total_timesteps // batch_size`."""
        return self.total_timesteps // self.batch_size

    @property
    def minibatch_size(self) -> int:
        """Samples (env steps, all agents together) per minibatch."""
        return self.batch_size // self.num_minibatches

    # ---------------------------------------------------------------------- loading

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MAPPOConfig:
        """A config from a flat mapping; unknown keys and bad values raise `ValueError`."""
        if not isinstance(d, Mapping):
            raise ValueError(f"config: expected a mapping of keys to values, got {type(d).__name__}")  # noqa: TRY004
        if "share_params" in d:  # the boolean that `param_sharing` replaced, in older run folders
            share = d["share_params"]
            if not isinstance(share, bool) or "param_sharing" in d:
                raise ValueError(f"share_params: replaced by param_sharing ({PARAM_SHARING}); got share_params: "
                                 f"{share!r}" + (" and param_sharing" if "param_sharing" in d else ""))
            d = {**{k: v for k, v in d.items() if k != "share_params"}, "param_sharing": "all" if share else "none"}
        if "ippo" in d:  # the boolean that `algorithm` replaced, in older run folders
            ippo = d["ippo"]
            if not isinstance(ippo, bool) or "algorithm" in d:
                raise ValueError(f"ippo: replaced by algorithm ({ALGORITHMS}); got ippo: {ippo!r}"
                                 + (" and algorithm" if "algorithm" in d else ""))
            d = {**{k: v for k, v in d.items() if k != "ippo"}, "algorithm": "ippo" if ippo else "mappo"}
        unknown = sorted(set(d) - set(_RULES))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(_RULES)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> MAPPOConfig:
        """A config from a YAML file holding one flat mapping (missing keys take defaults)."""
        import yaml

        with open(path) as f:
            d = yaml.safe_load(f) or {}
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists, dicts) for YAML / JSON; `from_dict(to_dict())` round-trips."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v)
                for k, v in d.items()}

    def replace(self, **changes) -> MAPPOConfig:
        unknown = sorted(set(changes) - set(_RULES))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(_RULES)}")
        return dataclasses.replace(self, **changes)


def _as_number(value: Any) -> float | None:
    """`value` as a finite float (numbers and numeric strings, not bools), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _as_int(value: Any) -> int | None:
    """`value` as an int (ints, integral floats, integral numeric strings such as "1e3"), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _as_number(value)
    return int(number) if number is not None and number.is_integer() else None


def _check(name: str, value: Any) -> Any:
    """`value` converted to the field's type, or a `ValueError` naming `name`, the expectation and `value`."""
    kind, lo, hi, lo_inclusive = _RULES[name]

    def bad(expected):
        return ValueError(f"{name}: expected {expected}, got {value!r}")

    def in_range(v):
        if lo is not None and (v < lo or (v == lo and not lo_inclusive)):
            return False
        return hi is None or v <= hi

    span = (f"{'>=' if lo_inclusive else '>'} {lo}" if lo is not None else "") + \
           (f" and <= {hi}" if hi is not None else "")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("a bool (true / false)")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if kind in ("mapping", "labels", "budgets"):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad("a mapping with string keys")
        if kind == "labels" and not all(isinstance(v, str) and v for v in value.values()):
            raise bad("a mapping of names to non-empty string labels")
        if kind == "budgets":
            numbers = {k: _as_number(v) for k, v in value.items()}
            wrong = {k: value[k] for k, v in numbers.items() if v is None or v <= 0}
            if wrong:
                raise ValueError(f"{name}: expected finite numbers > 0 (budget per episode; the multiplier "
                                 f"moves by the excess relative to it), got {wrong!r}")
            return numbers
        return dict(value)
    if kind == "int":
        v = _as_int(value)
        if v is None or not in_range(v):
            raise bad(f"an int {span}".strip())
        return v
    if kind == "float":
        v = _as_number(value)
        if v is None or not in_range(v):
            raise bad(f"a finite number {span}".strip())
        return v
    if kind == "ints":
        items = () if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else tuple(value)
        ints = tuple(_as_int(v) for v in items)
        if not ints or not all(v is not None and in_range(v) for v in ints):
            raise bad(f"a non-empty list of ints {span}".strip())
        return ints
    raise AssertionError(kind)

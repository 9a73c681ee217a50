"""MAPPO / IPPO trained end-to-end in JAX (structure of JaxMARL's MAPPO, one file, no dict configs).

    cfg = MAPPOConfig(num_envs=16, total_timesteps=100_000)
    train = make_train(cfg)                           # env = pgjax.make(cfg.env, **cfg.env_kwargs)
                                                      # (or a toy env: cfg.env = "setpoint")
    state, metrics = jax.jit(train)(key)              # the whole run: one jitted function
    states, metrics = train_seeds(cfg, key)           # cfg.num_seeds runs at once (vmap)

    # or in chunks (progress, checkpoints, resume):
    state = jax.jit(train.init)(key)
    chunk = jax.jit(train.update_chunk, static_argnums=1)
    state, metrics = chunk(state, 10)                 # metrics: dict of [10] arrays
    save_checkpoint("ckpt.msgpack", state, int(state.update_step))

One update: `lax.scan` over `num_steps` steps of `num_envs` vmapped environments (with
auto-reset), GAE, then `update_epochs` epochs of `num_minibatches` minibatches (both by
`lax.scan`) of the PPO clipped objective with value clipping, an entropy bonus and
global-norm gradient clipping; actor and critic have their own optimizers.

- Actor: decentralized, on the agent's normalized local observation (plus an agent one-hot
  when `agent_id`); diagonal Gaussian with a state-independent log-std; the sample is
  clipped to [-1, 1] for the env, the log-probability is of the unclipped sample; padded
  action columns (`env.action_mask`) are left out of log-probabilities and entropy.
- Critic: centralized on `env.world_state(state)`: one trunk evaluated once per environment
  step, one value head per agent since rewards are per agent (per parameter set when
  `agent_id` is off: agents sharing an actor then share a value, as an agent one-hot input
  would otherwise tell them apart); the heads cost one trunk instead of `n_agents`.
  `algorithm: ippo`: each agent's critic on its own observation (plus the one-hot).
- `algorithm: mappo_lagrangian` (MAPPO-Lagrangian, safety as constraints): each budgeted
  safety signal of the env (`env.cost_signals`, e.g. voltage, loading, devices, frequency
  band; `config.cost_budgets`: budget per episode in the signal's units) gets a head of a
  centralized cost critic (same trunk shape as the critic, its own parameters), cost
  advantages by GAE, and a Lagrange multiplier `lambda_k` learned by projected dual ascent
  once per update, `lambda_k <- clip(lambda_k + lagrangian_lr (J_k - budget_k) / budget_k, 0,
  lagrangian_max)` (the excess relative to the budget, so one rate serves signals of any
  scale), with `J_k` the mean cost of the episodes that ended in the rollout (the last
  estimate when none did). The actor's advantage becomes
  `(A_r - sum_k lambda_k A_k) / (1 + sum_k lambda_k)`; costs are scaled for the cost critic
  like rewards (running std of their discounted sum). Metrics `lagrange/<signal>`,
  `episode_cost/<signal>` (the estimate `J_k`) and `cost_critic_loss` are logged.
- Parameters (`param_sharing`, for the actors and IPPO's critics; the centralized critic has
  its heads instead): one set for all agents ("all",
  no extra axis), one per agent type ("type") or one per agent ("none"). The last two stack
  the sets on a leading `[n_sets]` axis; each agent's set is gathered by its index
  (`MAPPO.param_index [n_agents]`) and the network applied by `vmap` over agents, so
  agents of one type share parameters (and their gradients add up) with no Python loop
  over agents. Types come from `config.agent_types` (agent name -> label), else agents
  with equal observation size, action size and device composition share one
  (`agent_type_keys`).
- Normalization: running mean / variance (Welford, parallel form) of observations and of
  the world state, updated with every new batch of observations; rewards divided by the
  running std of the discounted return. The statistics live in `TrainState` and are
  checkpointed with it, so a restored policy acts identically.
- Episode ends (`terminated | truncated`, any agent) cut bootstrapping; pgjax observations
  hold the episode progress, so time-limit ends are predictable to the critic.

Metrics per update (a dict of scalars; `[num_updates]` arrays from a run): `update_step`,
`env_steps`, `episode_return` (mean over episodes completed in the rollout of the per-agent
mean undiscounted return, NaN if none ended), `episodes`, `reward` (raw, per agent per step),
`actor_loss`, `critic_loss`, `entropy`, `approx_kl`, `clip_frac`, `explained_variance`, the
Lagrangian's metrics (above), and
every scalar `info` metric of the env as `info/<name>` (mean per step; `[n_agents]` infos
summed over agents).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct
from flax.training.train_state import TrainState as NetState
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pgjax import distributed
from pgjax.distributed import BATCH_AXIS, batch_mesh
from pgjax.baselines.common import MARLEnv, Policy, make_env
from pgjax.baselines.config import MAPPOConfig
from pgjax.baselines.networks import Actor, Critic, gaussian_entropy, gaussian_log_prob, sample_action
from pgjax.errors import RunFolderError, brief
from pgjax.runio import append_lines, json_line, remove_temp_files, write_atomic

F32 = jnp.float32
EPS = 1e-8

__all__ = ["MAPPO", "Checkpoint", "MAPPOConfig", "RunningStats", "TrainState", "TrainingDiverged",
           "agent_type_keys", "gae", "load_checkpoint", "make_train", "param_index", "prepare_new_run",
           "read_checkpoint", "read_run_config", "restore_run", "run", "save_checkpoint", "shardings", "train_seeds"]


# ---------------------------------------------------------------------------- normalization

@struct.dataclass
class RunningStats:
    """Running mean and (population) variance over a leading batch axis (Chan et al.'s parallel Welford)."""

    mean: jax.Array  # [*shape]
    var: jax.Array  # [*shape]
    count: jax.Array  # [] float, starts at a tiny epsilon so the first update takes over

    @classmethod
    def create(cls, shape: tuple = ()) -> RunningStats:
        return cls(jnp.zeros(shape, F32), jnp.ones(shape, F32), jnp.asarray(1e-4, F32))

    def update(self, x: jax.Array) -> RunningStats:
        """Fold in a batch `x [n, *shape]`."""
        x = x.astype(F32)
        n = jnp.asarray(x.shape[0], F32)
        b_mean, b_var = jnp.mean(x, 0), jnp.var(x, 0)
        total = self.count + n
        delta = b_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + EPS), -clip, clip)


# ------------------------------------------------------------------------------ train state

@struct.dataclass
class TrainState:
    """Everything a run carries between updates; a pytree (jit / vmap / checkpoint as a whole)."""

    actor: NetState  # params: one set, or `[n_sets, ...]` stacked (see `MAPPO.param_index`)
    critic: NetState  # likewise
    obs_stats: RunningStats  # [obs_dim]
    ws_stats: RunningStats  # [world_state_dim]
    ret_stats: RunningStats  # [] discounted return, for reward scaling
    cost_critic: NetState | None  # centralized cost critic (mappo_lagrangian), else None
    cost_stats: RunningStats  # [n_costs] discounted costs, for cost scaling
    lagrange: jax.Array  # [n_costs] Lagrange multipliers
    episode_cost: jax.Array  # [n_costs] estimate of the cost per episode (mean of the last ended episodes)
    env_state: Any  # batched env state, leading [num_envs]
    obs: jax.Array  # [num_envs, n_agents, obs_dim] raw observations
    ws: jax.Array  # [num_envs, world_state_dim] raw world state
    disc_return: jax.Array  # [num_envs, n_agents] running discounted return (reward scaling)
    ep_return: jax.Array  # [num_envs] undiscounted return of the running episode (mean over agents)
    disc_cost: jax.Array  # [num_envs, n_costs] running discounted costs (cost scaling)
    ep_cost: jax.Array  # [num_envs, n_costs] undiscounted costs of the running episode
    key: jax.Array
    update_step: jax.Array  # [] int32, updates done


class Transition(struct.PyTreeNode):
    obs: jax.Array  # [n_agents, obs_dim] normalized
    ws: jax.Array  # [world_state_dim] normalized
    action: jax.Array  # [n_agents, act_dim] raw Gaussian sample
    log_prob: jax.Array  # [n_agents]
    value: jax.Array  # [n_agents]
    reward: jax.Array  # [n_agents] scaled
    done: jax.Array  # []
    cost: jax.Array  # [n_costs] scaled
    cost_value: jax.Array  # [n_costs]


# ---------------------------------------------------------------------------------- GAE

def gae(values, rewards, dones, last_value, gamma: float, lam: float):
    """Generalized advantage estimation by a reverse `lax.scan`.

    `values`, `rewards [T, ...]`; `dones [T, ...]` (1 where the episode ended *after* step
    t, so V of the next observation, a reset one, is not bootstrapped); `last_value [...]`
    the value of the observation after step T-1. Returns `(advantages, targets) [T, ...]`
    with `A_t = d_t + gamma lam (1 - done_t) A_{t+1}`, `d_t = r_t + gamma (1 - done_t) V_{t+1} - V_t`.
    """
    def body(carry, x):
        next_adv, next_value = carry
        value, reward, done = x
        nonterminal = 1.0 - done
        delta = reward + gamma * next_value * nonterminal - value
        adv = delta + gamma * lam * nonterminal * next_adv
        return (adv, value), adv

    dones = jnp.broadcast_to(dones.astype(values.dtype), values.shape)
    _, adv = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (values, rewards, dones), reverse=True)
    return adv, adv + values


# ------------------------------------------------------------------------ parameter sharing

def agent_type_keys(env: MARLEnv) -> list[tuple]:
    """Per agent, what makes its type: `(obs_size, act_size, device composition)`.

    Sizes from `env.obs_sizes` / `env.act_sizes` when the env has them (pgjax scenarios and
    the toy env do), else the padded `obs_dim` and the action mask; the composition is the
    sorted `(device type, count)` pairs the agent controls, read from the device groups of
    `pgjax.Env.layout` (empty for envs without a layout, such as the toy env).
    """
    raw, n = env.env, env.num_agents
    obs_sizes = tuple(getattr(raw, "obs_sizes", (env.obs_dim,) * n))
    act_sizes = tuple(getattr(raw, "act_sizes", env.action_mask.sum(1)))
    devices = [Counter() for _ in range(n)]
    for group in getattr(getattr(raw, "layout", None), "groups", ()):
        for a in np.asarray(group.controller):
            if a >= 0:
                devices[a][group.type] += 1
    return [(int(obs_sizes[a]), int(act_sizes[a]), tuple(sorted(devices[a].items()))) for a in range(n)]


def param_index(env: MARLEnv, sharing: str, agent_types: Mapping[str, str]) -> np.ndarray | None:
    """Which parameter set each agent uses: `[n_agents]` ints in `[0, n_sets)` in order of first
    appearance, or None for one set shared by all agents (`sharing == "all"`).

    "none": one set per agent; "type": one per label of `agent_types` (agent name -> label,
    every agent named) or, when empty, per distinct `agent_type_keys`.
    """
    if sharing == "all":
        return None
    names = [str(a) for a in env.agents]
    if sharing == "none":
        keys: list = names
    elif agent_types:
        missing, unknown = sorted(set(names) - set(agent_types)), sorted(set(agent_types) - set(names))
        if missing or unknown:
            raise ValueError(f"agent_types: expected a label for every agent of {names}, "
                             f"got none for {missing} and labels for unknown agents {unknown}")
        keys = [agent_types[a] for a in names]
    else:
        keys = agent_type_keys(env)
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.asarray([ids[k] for k in keys], np.int32)


# ---------------------------------------------------------------------------------- MAPPO

class MAPPO:
    """A MAPPO / IPPO trainer for one config and one environment; call it like `train(key)`.

    Pure, jittable, vmappable pieces: `init(key) -> TrainState`, `update(state) -> (state,
    metrics)`, `update_chunk(state, n)` (n static) and `__call__(key, init_state=None)`
    (`config.num_updates` updates). Sizes come from the env (`MARLEnv.wrap`).
    """

    def __init__(self, config: MAPPOConfig, env=None, params=None):
        env = make_env(config.env, **config.env_kwargs) if env is None else env
        self.config = config
        self.env = MARLEnv.wrap(env, params)
        e = self.env
        n_id = e.num_agents if config.agent_id else 0
        self.actor_in_dim = e.obs_dim + n_id
        self.param_index = param_index(e, config.param_sharing, config.agent_types)  # [n_agents] or None
        self.num_param_sets = 1 if self.param_index is None else int(self.param_index.max()) + 1
        self.actor_net = Actor(e.act_dim, config.actor_hidden, config.activation, config.log_std_init)
        if config.ippo:  # per agent (sharing as the actors), on the local observation and one-hot
            self.critic_in_dim, self.value_head = e.obs_dim + n_id, None
            self.critic_net = Critic(config.critic_hidden, config.activation)
        else:  # one trunk on the world state, the head of each agent (or of its parameter set)
            heads = np.arange(e.num_agents) if config.agent_id else (
                np.zeros(e.num_agents, np.int32) if self.param_index is None else self.param_index)
            self.critic_in_dim, self.value_head = e.world_state_dim, np.asarray(heads, np.int32)
            self.critic_net = Critic(config.critic_hidden, config.activation, int(heads.max()) + 1)
        self.cost_names, self.cost_keys, budgets = cost_signals(e, config.cost_budgets)
        self.cost_budget = jnp.asarray(budgets, F32)  # [n_costs] per episode
        self.cost_net = Critic(config.critic_hidden, config.activation, len(self.cost_names)) if config.lagrangian else None
        self.action_mask = jnp.asarray(e.action_mask, F32)  # [n_agents, act_dim]
        self._jitted: dict = {}

    # -------------------------------------------------------------- network application

    def agent_params(self, params):
        """Each agent's parameters: leaves `[n_agents, ...]`, gathered from the `[n_sets, ...]` stack
        by `param_index` (or broadcast from the single set of "all")."""
        n = self.env.num_agents
        if self.param_index is None:
            return jax.tree.map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), params)
        if np.array_equal(self.param_index, np.arange(n)):  # one set per agent, in order: nothing to gather
            return params
        return jax.tree.map(lambda p: p[self.param_index], params)

    def _apply(self, net: nn.Module, params, x):
        """`net` on `x [..., n_agents, in]`: one shared set, or each agent's set (`agent_params`) by vmap.
        An actor gives `(mean, log_std)`, a (single-head) critic values `[..., n_agents]`."""
        if self.param_index is None:
            out = net.apply(params, x)
            return out if isinstance(net, Actor) else out[..., 0]  # a critic's single head
        params = self.agent_params(params)
        lead = x.shape[:-2]
        flat = x.reshape((-1,) + x.shape[-2:])
        if isinstance(net, Actor):  # mean [B, A, act_dim], log_std [A, act_dim]
            mean, log_std = jax.vmap(net.apply, in_axes=(0, 1), out_axes=(1, 0))(params, flat)
            return mean.reshape(lead + mean.shape[1:]), log_std
        return jax.vmap(net.apply, in_axes=(0, 1), out_axes=1)(params, flat).reshape(lead + x.shape[-2:-1])

    def _with_id(self, x):
        """Append the agent one-hot to `x [..., n_agents, d]` when `config.agent_id`."""
        if not self.config.agent_id:
            return x
        n = self.env.num_agents
        onehot = jnp.broadcast_to(jnp.eye(n, dtype=F32), x.shape[:-2] + (n, n))
        return jnp.concatenate([x, onehot], -1)

    def policy_dist(self, actor_params, obs_n):
        """`(mean [..., n_agents, act_dim], log_std)` for normalized observations `[..., n_agents, obs_dim]`."""
        return self._apply(self.actor_net, actor_params, self._with_id(obs_n))

    def value(self, critic_params, obs_n, ws_n):
        """Values `[..., n_agents]` from normalized observations and world state `[..., ws_dim]`."""
        if self.config.ippo:
            return self._apply(self.critic_net, critic_params, self._with_id(obs_n))
        return self.critic_net.apply(critic_params, ws_n)[..., self.value_head]

    def cost_value(self, cost_params, ws_n):
        """Cost values `[..., n_costs]` from the normalized world state (zero-size without cost critic)."""
        if self.cost_net is None:
            return jnp.zeros(ws_n.shape[:-1] + (0,), F32)
        return self.cost_net.apply(cost_params, ws_n)

    # ---------------------------------------------------------------------------- init

    def _optimizer(self, lr: float):
        c = self.config
        steps = c.num_updates * c.update_epochs * c.num_minibatches
        sched = optax.linear_schedule(lr, 0.0, steps) if c.anneal_lr else lr
        return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(sched, eps=1e-5))

    def _init_params(self, net, key, in_dim):
        """One parameter set, or `num_param_sets` independent ones stacked on a leading axis.

        The sets are initialized one by one, not by `vmap`: a vmapped orthogonal initializer is a
        batched QR, which jaxlib 0.10.x runs through its parallel LAPACK path, where every XLA CPU
        worker can end up waiting for chunks nobody runs (the deadlock of `pgjax eval` on the
        frequency preset; docs/xla_cpu_lapack_deadlock.md). Unbatched QRs run on the calling thread."""
        x = jnp.zeros((1, in_dim), F32)
        if self.param_index is None:
            return net.init(key, x)
        sets = [net.init(k, x) for k in jax.random.split(key, self.num_param_sets)]
        return jax.tree.map(lambda *p: jnp.stack(p), *sets)

    def init(self, key) -> TrainState:
        """A fresh run: networks, optimizers, reset environments, statistics seeded with the first observations."""
        c, e = self.config, self.env
        k_actor, k_critic, k_cost, k_env, key = jax.random.split(key, 5)
        step0 = jnp.zeros((), jnp.int32)  # not a weakly typed Python 0: restored checkpoints must not retrace
        actor = NetState.create(apply_fn=self.actor_net.apply, tx=self._optimizer(c.lr_actor),
                                params=self._init_params(self.actor_net, k_actor, self.actor_in_dim)).replace(step=step0)
        critic_params = (self._init_params(self.critic_net, k_critic, self.critic_in_dim) if c.ippo
                         else self.critic_net.init(k_critic, jnp.zeros((1, self.critic_in_dim), F32)))
        critic = NetState.create(apply_fn=self.critic_net.apply, tx=self._optimizer(c.lr_critic),
                                 params=critic_params).replace(step=step0)
        cost_critic = None
        if self.cost_net is not None:
            cost_critic = NetState.create(
                apply_fn=self.cost_net.apply, tx=self._optimizer(c.lr_critic),
                params=self.cost_net.init(k_cost, jnp.zeros((1, e.world_state_dim), F32))).replace(step=step0)
        n_costs = len(self.cost_names)
        obs, env_state = jax.vmap(e.reset)(jax.random.split(k_env, c.num_envs))
        ws = jax.vmap(e.world_state)(env_state, obs)
        return TrainState(
            actor=actor, critic=critic,
            obs_stats=RunningStats.create((e.obs_dim,)).update(obs.reshape(-1, e.obs_dim)),
            ws_stats=RunningStats.create((e.world_state_dim,)).update(ws),
            ret_stats=RunningStats.create(),
            cost_critic=cost_critic, cost_stats=RunningStats.create((n_costs,)),
            lagrange=jnp.full((n_costs,), c.lagrangian_init, F32), episode_cost=jnp.zeros((n_costs,), F32),
            env_state=env_state, obs=obs, ws=ws,
            disc_return=jnp.zeros((c.num_envs, e.num_agents), F32),
            ep_return=jnp.zeros((c.num_envs,), F32),
            disc_cost=jnp.zeros((c.num_envs, n_costs), F32), ep_cost=jnp.zeros((c.num_envs, n_costs), F32),
            key=key, update_step=jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------------------- rollout

    def _normalized(self, ts: TrainState):
        c = self.config
        if not c.normalize_obs:
            return ts.obs, ts.ws
        return ts.obs_stats.normalize(ts.obs, c.obs_clip), ts.ws_stats.normalize(ts.ws, c.obs_clip)

    def _env_step(self, ts: TrainState, _):
        c, e = self.config, self.env
        key, k_act, k_step = jax.random.split(ts.key, 3)
        obs_n, ws_n = self._normalized(ts)
        mean, log_std = self.policy_dist(ts.actor.params, obs_n)
        action = sample_action(k_act, mean, log_std)
        log_prob = gaussian_log_prob(action, mean, log_std, self.action_mask)
        value = self.value(ts.critic.params, obs_n, ws_n)
        cost_value = self.cost_value(None if ts.cost_critic is None else ts.cost_critic.params, ws_n)
        env_action = jnp.clip(action, -1.0, 1.0) * self.action_mask
        obs, env_state, reward, done, info = jax.vmap(e.step)(
            jax.random.split(k_step, c.num_envs), ts.env_state, env_action)
        ws = jax.vmap(e.world_state)(env_state, obs)

        obs_stats, ws_stats = ts.obs_stats, ts.ws_stats
        if c.normalize_obs:
            obs_stats = obs_stats.update(obs.reshape(-1, e.obs_dim))
            ws_stats = ws_stats.update(ws)
        disc_return = ts.disc_return * c.gamma + reward
        ret_stats, scaled = ts.ret_stats, reward
        if c.normalize_reward:
            ret_stats = ret_stats.update(disc_return.reshape(-1))
            scaled = jnp.clip(reward / jnp.sqrt(ret_stats.var + EPS), -c.reward_clip, c.reward_clip)
        ep_return = ts.ep_return + jnp.mean(reward, -1)
        finished = jnp.where(done, ep_return, 0.0)

        cost = jnp.stack([info[k] for k in self.cost_keys], -1) if self.cost_keys else ts.ep_cost[:, :0]
        disc_cost = ts.disc_cost * c.gamma + cost
        cost_stats, scaled_cost = ts.cost_stats, cost
        if c.normalize_reward and self.cost_keys:
            cost_stats = cost_stats.update(disc_cost)
            scaled_cost = jnp.clip(cost / jnp.sqrt(cost_stats.var + EPS), -c.reward_clip, c.reward_clip)
        ep_cost = ts.ep_cost + cost
        finished_cost = jnp.where(done[:, None], ep_cost, 0.0)

        ts = ts.replace(
            obs_stats=obs_stats, ws_stats=ws_stats, ret_stats=ret_stats, cost_stats=cost_stats, env_state=env_state,
            obs=obs, ws=ws, disc_return=jnp.where(done[:, None], 0.0, disc_return),
            ep_return=jnp.where(done, 0.0, ep_return), disc_cost=jnp.where(done[:, None], 0.0, disc_cost),
            ep_cost=jnp.where(done[:, None], 0.0, ep_cost), key=key)
        tr = Transition(obs_n, ws_n, action, log_prob, value, scaled, done, scaled_cost, cost_value)
        return ts, (tr, finished, finished_cost, reward, info)

    # -------------------------------------------------------------------------- losses

    def _actor_loss(self, params, mb: Transition, adv):
        c = self.config
        mean, log_std = self.policy_dist(params, mb.obs)
        log_prob = gaussian_log_prob(mb.action, mean, log_std, self.action_mask)
        log_ratio = log_prob - mb.log_prob
        ratio = jnp.exp(log_ratio)
        adv = (adv - adv.mean()) / (adv.std() + EPS)
        pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - c.clip_eps, 1 + c.clip_eps) * adv).mean()
        entropy = jnp.mean(gaussian_entropy(jnp.broadcast_to(log_std, mean.shape), self.action_mask))
        aux = {"actor_loss": pg, "entropy": entropy,
               "approx_kl": jnp.mean(ratio - 1 - log_ratio),
               "clip_frac": jnp.mean((jnp.abs(ratio - 1) > c.clip_eps).astype(F32))}
        return pg - c.ent_coef * entropy, aux

    def _value_loss(self, value, old_value, targets):
        """`0.5 mean((V - target)^2)`, with PPO's value clipping around the rollout's values when `clip_value`."""
        c = self.config
        loss = (value - targets) ** 2
        if c.clip_value:
            clipped = old_value + jnp.clip(value - old_value, -c.value_clip_eps, c.value_clip_eps)
            loss = jnp.maximum(loss, (clipped - targets) ** 2)
        return 0.5 * loss.mean()

    def _critic_loss(self, params, mb: Transition, targets):
        loss = self._value_loss(self.value(params, mb.obs, mb.ws), mb.value, targets)
        return self.config.vf_coef * loss, {"critic_loss": loss}

    def _cost_critic_loss(self, params, mb: Transition, targets):
        loss = self._value_loss(self.cost_value(params, mb.ws), mb.cost_value, targets)
        return self.config.vf_coef * loss, {"cost_critic_loss": loss}

    def _minibatch_step(self, nets, batch):
        actor, critic, cost_critic = nets
        mb, adv, targets, cost_targets = batch
        a_grad, a_aux = jax.grad(self._actor_loss, has_aux=True)(actor.params, mb, adv)
        c_grad, c_aux = jax.grad(self._critic_loss, has_aux=True)(critic.params, mb, targets)
        aux = {**a_aux, **c_aux}
        if cost_critic is not None:
            k_grad, k_aux = jax.grad(self._cost_critic_loss, has_aux=True)(cost_critic.params, mb, cost_targets)
            cost_critic, aux = cost_critic.apply_gradients(grads=k_grad), {**aux, **k_aux}
        return (actor.apply_gradients(grads=a_grad), critic.apply_gradients(grads=c_grad), cost_critic), aux

    def _epoch(self, carry, _):
        nets, key, batch = carry
        c = self.config
        key, k_perm = jax.random.split(key)
        perm = jax.random.permutation(k_perm, c.batch_size)
        shuffled = jax.tree.map(lambda x: x[perm].reshape((c.num_minibatches, c.minibatch_size) + x.shape[1:]), batch)
        nets, aux = jax.lax.scan(self._minibatch_step, nets, shuffled)
        return (nets, key, batch), aux

    # -------------------------------------------------------------------------- update

    def update(self, ts: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """One rollout and one PPO update; returns the new state and scalar metrics."""
        c = self.config
        ts, (traj, finished, finished_cost, raw_reward, info) = jax.lax.scan(self._env_step, ts, None, c.num_steps)
        obs_n, ws_n = self._normalized(ts)
        last_value = self.value(ts.critic.params, obs_n, ws_n)
        adv, targets = gae(traj.value, traj.reward, traj.done[..., None], last_value, c.gamma, c.gae_lambda)
        n_done = jnp.sum(traj.done)

        lagrange, episode_cost, cost_targets = ts.lagrange, ts.episode_cost, traj.cost_value
        if ts.cost_critic is not None:
            last_cost = self.cost_value(ts.cost_critic.params, ws_n)
            cost_adv, cost_targets = gae(traj.cost_value, traj.cost, traj.done[..., None], last_cost, c.gamma,
                                         c.gae_lambda)
            episode_cost = jnp.where(n_done > 0, jnp.sum(finished_cost, (0, 1)) / jnp.maximum(n_done, 1), episode_cost)
            excess = (episode_cost - self.cost_budget) / self.cost_budget  # relative to the budget
            lagrange = jnp.clip(lagrange + c.lagrangian_lr * excess, 0.0, c.lagrangian_max)
            adv = (adv - jnp.sum(lagrange * cost_adv, -1, keepdims=True)) / (1.0 + jnp.sum(lagrange))

        flat = jax.tree.map(lambda x: x.reshape((c.batch_size,) + x.shape[2:]), (traj, adv, targets, cost_targets))
        key, k_epochs = jax.random.split(ts.key)
        (nets, _, _), aux = jax.lax.scan(self._epoch, ((ts.actor, ts.critic, ts.cost_critic), k_epochs, flat), None,
                                         c.update_epochs)
        ts = ts.replace(actor=nets[0], critic=nets[1], cost_critic=nets[2], lagrange=lagrange,
                        episode_cost=episode_cost, key=key, update_step=ts.update_step + 1)

        explained = 1.0 - jnp.var(targets - traj.value) / (jnp.var(targets) + EPS)
        metrics = {
            "update_step": ts.update_step, "env_steps": ts.update_step * c.batch_size,
            "episode_return": jnp.where(n_done > 0, jnp.sum(finished) / jnp.maximum(n_done, 1), jnp.nan),
            "episodes": n_done, "reward": jnp.mean(raw_reward), "explained_variance": explained,
            **{k: jnp.mean(v) for k, v in aux.items()},
            **{f"info/{k}": jnp.mean(v) for k, v in info.items()},
            **{f"lagrange/{n}": lagrange[i] for i, n in enumerate(self.cost_names)},
            **{f"episode_cost/{n}": episode_cost[i] for i, n in enumerate(self.cost_names)},
        }
        return ts, metrics

    def update_chunk(self, ts: TrainState, num_updates: int):
        """`num_updates` (static) updates by `lax.scan`; metrics as `[num_updates]` arrays."""
        return jax.lax.scan(lambda s, _: self.update(s), ts, None, num_updates)

    def seed_init(self, key) -> TrainState:
        """`config.num_seeds` fresh runs from `key`, stacked on a leading seed axis.

        One jitted `init` per seed: `jit(vmap(init))` over seeds would batch the orthogonal
        initializers' QRs into jaxlib 0.10.x's deadlocking parallel LAPACK path (`_init_params`).
        """
        if "init" not in self._jitted:
            self._jitted["init"] = jax.jit(self.init)
        # one at a time: two inits in flight at once (async dispatch) would each run batched LAPACK
        # calls (the env's reset power flows) on the same two-thread pool, the deadlock's other half
        states = [jax.block_until_ready(self._jitted["init"](k)) for k in jax.random.split(key, self.config.num_seeds)]
        return jax.tree.map(lambda *x: jnp.stack(x), *states)

    def seed_chunk_fn(self, num_updates: int) -> Callable:
        """`update_chunk` on seed-batched states, not jitted: `vmap` over the seed axis, or with one
        seed the unbatched chunk with the axis dropped and put back (a `vmap` over a size-1 axis
        costs a quarter more compile time on the laptop preset: 52 s against 42 s, same run)."""
        chunk = lambda s: self.update_chunk(s, num_updates)  # noqa: E731
        if self.config.num_seeds > 1:
            return jax.vmap(chunk)

        def one_seed(s):
            out = chunk(jax.tree.map(lambda x: x[0], s))
            return jax.tree.map(lambda x: x[None], out)
        return one_seed

    def chunk_program(self, state: TrainState, num_updates: int, mesh: Mesh | None = None) -> Callable:
        """`update_chunk` on seed-batched states like `state`, jitted (not cached).

        With a `mesh` (`batch_mesh`) the state stays laid out as `shardings(state, mesh)` gives:
        each device steps its slice of the environments and XLA inserts the reductions of the
        update (batch statistics, advantages, gradients) across them; the arithmetic is that
        of one device up to the order of those reductions."""
        fn = self.seed_chunk_fn(num_updates)
        if mesh is None:
            return jax.jit(fn)
        sh = shardings(state, mesh)
        metrics = jax.eval_shape(fn, state)[1]
        replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), metrics)
        return jax.jit(fn, in_shardings=(sh,), out_shardings=(sh, replicated))

    def compile_chunk(self, state: TrainState, num_updates: int, mesh: Mesh | None = None) -> None:
        """Compile the chunk of `num_updates` ahead of time for states like `state` (placed
        on `mesh` already, if one); `seed_chunk` then runs it without tracing."""
        program = self.chunk_program(state, num_updates, mesh)
        self._jitted[(num_updates, mesh)] = program.lower(state).compile()

    def is_compiled(self, num_updates: int, mesh: Mesh | None = None) -> bool:
        return (num_updates, mesh) in self._jitted

    def seed_chunk(self, state: TrainState, num_updates: int, mesh: Mesh | None = None):
        """`update_chunk` on seed-batched states (`chunk_program`, cached per `num_updates` and `mesh`)."""
        if not self.is_compiled(num_updates, mesh):
            self._jitted[(num_updates, mesh)] = self.chunk_program(state, num_updates, mesh)
        return self._jitted[(num_updates, mesh)](state)

    def __call__(self, key, init_state: TrainState | None = None):
        """A whole run: `config.num_updates` updates from `init_state` (default: `init(key)`)."""
        ts = self.init(key) if init_state is None else init_state
        return self.update_chunk(ts, self.config.num_updates)

    # -------------------------------------------------------------------------- acting

    def act(self, ts: TrainState, key, obs, deterministic: bool = True):
        """Actions `[..., n_agents, act_dim]` in [-1, 1] for raw observations `[..., n_agents, obs_dim]`."""
        obs = jnp.asarray(obs, F32)
        if self.config.normalize_obs:
            obs = ts.obs_stats.normalize(obs, self.config.obs_clip)
        mean, log_std = self.policy_dist(ts.actor.params, obs)
        action = mean if deterministic else sample_action(key, mean, log_std)
        return jnp.clip(action, -1.0, 1.0) * self.action_mask

    def policy(self, ts: TrainState, deterministic: bool = True) -> Policy:
        """`policy(key, obs)` for `pgjax.baselines.common.evaluate` (one run's state, no seed axis)."""
        return lambda key, obs: self.act(ts, key, obs, deterministic)


# ------------------------------------------------------------------------------ devices

# TrainState fields with a leading [num_envs] axis (after the seed axis of seed-batched states).
ENV_BATCH_FIELDS = ("env_state", "obs", "ws", "disc_return", "ep_return", "disc_cost", "ep_cost")


def shardings(state: TrainState, mesh: Mesh) -> TrainState:
    """`NamedSharding`s of a seed-batched `TrainState` on `mesh`: the environment batch
    (`ENV_BATCH_FIELDS`, axis 1) split along `BATCH_AXIS`, networks, optimizers, statistics
    and keys replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(None, BATCH_AXIS))
    out = jax.tree.map(lambda _: replicated, state)
    return out.replace(**{k: jax.tree.map(lambda _: split, getattr(state, k)) for k in ENV_BATCH_FIELDS})


def cost_signals(env: MARLEnv, budgets: Mapping[str, float]) -> tuple[tuple[str, ...], tuple[str, ...], list[float]]:
    """`(names, info keys, budgets per episode)` of the budgeted safety signals, in `budgets`' order;
    a name the env does not report raises `ValueError` listing the ones it has, with their units."""
    signals = env.cost_signals
    unknown = [n for n in budgets if n not in signals]
    if unknown:
        known = "; ".join(f"{n} ({s.unit})" for n, s in signals.items()) or "none"
        raise ValueError(f"cost_budgets: no safety signal {unknown} in this env; it has: {known}")
    return tuple(budgets), tuple(signals[n].info_key for n in budgets), [float(b) for b in budgets.values()]


def make_train(config: MAPPOConfig, env=None, params=None) -> MAPPO:
    """The trainer: `make_train(config)(key) -> (TrainState, metrics)`; jit it, vmap it over keys."""
    return MAPPO(config, env, params)


def train_seeds(config: MAPPOConfig, key, env=None, params=None):
    """`config.num_seeds` independent runs at once (`seed_init`, then the vmapped updates in one jitted
    program); outputs have a leading seed axis."""
    train = make_train(config, env, params)
    return jax.jit(train.seed_chunk_fn(config.num_updates))(train.seed_init(key))


# ----------------------------------------------------------------------------- checkpoints

class Checkpoint(NamedTuple):
    """What `read_checkpoint` returns: the state, its update step, and how many rows of
    `metrics.jsonl` it covers (None for checkpoints written before that was recorded)."""

    state: Any
    step: int
    metrics_rows: int | None


def save_checkpoint(path, train_state, step: int, metrics_rows: int | None = None) -> None:
    """Write `{step, state[, metrics_rows]}` as msgpack atomically (`pgjax.runio.write_atomic`)."""
    payload = {"step": int(step), "state": serialization.to_state_dict(jax.device_get(train_state))}
    if metrics_rows is not None:
        payload["metrics_rows"] = int(metrics_rows)
    write_atomic(path, serialization.msgpack_serialize(payload))


def _describe(obj) -> str:
    if isinstance(obj, Mapping):
        return f"a mapping of keys {brief(sorted(map(str, obj)))}"
    return f"a {type(obj).__name__} ({brief(obj, 40)})"


def _non_finite(tree, prefix: str) -> list[str]:
    """`'prefix/key/path: k of n'` for each floating leaf of `tree` holding NaN or inf."""
    bad = []
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.asarray(leaf)
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keys)
            bad.append(f"{prefix}{name}: {int((~np.isfinite(x)).sum())} of {x.size} values NaN/inf")
    return bad


def non_finite_weights(state) -> list[str]:
    """The networks, optimizer states and normalization statistics of a `TrainState` that hold NaN / inf
    (every floating leaf for other pytrees); empty when all are finite."""
    if not isinstance(state, TrainState):
        return _non_finite(state, "")
    return [line for name in ("actor", "critic", "cost_critic", "obs_stats", "ws_stats", "ret_stats", "cost_stats",
                              "lagrange") for line in _non_finite(getattr(state, name), f"{name}/")]


def read_checkpoint(path, template) -> Checkpoint:
    """`Checkpoint(state, step, metrics_rows)` from `path`; `template` gives the structure (e.g.
    `init(key)`, same config). A file that is missing, empty, truncated, not a checkpoint, of
    another structure or holding NaN / inf weights raises `RunFolderError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunFolderError(f"{path}: checkpoint not found") from None
    except OSError as e:
        raise RunFolderError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    if not data:
        raise RunFolderError(f"{path}: empty file, not a checkpoint")
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack's and numpy's errors of truncated or foreign bytes
        raise RunFolderError(f"{path}: not a readable checkpoint ({len(data)} bytes; truncated or not msgpack: "
                             f"{brief(str(e), 120)})") from None
    if not isinstance(payload, Mapping) or not {"step", "state"} <= set(payload):
        raise RunFolderError(f"{path}: not a pgjax checkpoint (expected a mapping with 'step' and 'state', "
                             f"got {_describe(payload)})")
    step, rows = payload["step"], payload.get("metrics_rows")
    for key, value in (("step", step), ("metrics_rows", rows)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise RunFolderError(f"{path}: {key}: expected an int >= 0, got {brief(value)}")
    try:
        state = serialization.from_state_dict(template, payload["state"])
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise RunFolderError(f"{path}: checkpoint does not match the template (different config or env?): "
                             f"{brief(str(e), 160)}") from None
    leaves_t, tree_t = jax.tree.flatten(template)
    leaves_s, tree_s = jax.tree.flatten(state)
    if tree_t != tree_s or [np.shape(x) for x in leaves_t] != [np.shape(x) for x in leaves_s]:
        raise RunFolderError(f"{path}: checkpoint does not match the template (different config or env?)")
    bad = non_finite_weights(state)
    if bad:
        raise RunFolderError(f"{path}: non-finite weights, refusing to load them ({'; '.join(bad[:3])}"
                             f"{f'; {len(bad) - 3} more' if len(bad) > 3 else ''})")
    saved_steps = np.unique(np.asarray(getattr(state, "update_step", step)))
    if saved_steps.tolist() != [step]:
        raise RunFolderError(f"{path}: step {step} disagrees with the state's update_step {saved_steps.tolist()}")
    state = jax.tree.map(lambda t, x: jnp.asarray(x, dtype=jnp.result_type(t)), template, state)
    return Checkpoint(state, step, rows)


def load_checkpoint(path, template):
    """`(train_state, step)` from `path` (see `read_checkpoint`)."""
    ckpt = read_checkpoint(path, template)
    return ckpt.state, ckpt.step


# ------------------------------------------------------------------------------ run folders

CHECKPOINT, METRICS, CONFIG = "checkpoint.msgpack", "metrics.jsonl", "config.yaml"
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, "train_summary.json", "curves.png", "eval.json", "eval.csv",
             "eval_meta.json", "eval_day.png")  # what `force=True` removes before a new run (and eval_<label>.*)


def read_run_config(path) -> MAPPOConfig:
    """The `MAPPOConfig` of a run folder's `config.yaml`; any problem raises `RunFolderError` naming the file."""
    import yaml

    path = Path(path)
    try:
        return MAPPOConfig.from_yaml(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: not found (not a run folder of pgjax train?)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFolderError(f"{path}: not a readable config ({brief(str(e), 160)})") from None
    except ValueError as e:
        raise RunFolderError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def existing_run_files(out_dir) -> list[str]:
    """The files of a run present in `out_dir`: `RUN_FILES` and the evaluations written under their
    own names (`eval_<label>.*` of `pgjax eval --split / --set`, `pgjax benchmark`)."""
    out = Path(out_dir)
    named = sorted(p.name for p in out.glob("eval_*") if p.is_file() and p.name not in RUN_FILES)
    return [name for name in RUN_FILES if (out / name).exists()] + named


def prepare_new_run(out_dir, force: bool = False) -> None:
    """Refuse to start a run in a folder that holds one (`RunFolderError`), unless `force`:
    then its run files are removed (other files stay)."""
    out = Path(out_dir)
    found = existing_run_files(out)
    if found and not force:
        raise RunFolderError(f"{out}: holds a run ({', '.join(found)}); resume it, or force a new run "
                             f"to replace it (pgjax train --resume / --force)")
    for name in found:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def repair_metrics(path, rows: int, num_seeds: int, log: Callable[[str], None] = print) -> int:
    """Cut `path` (`metrics.jsonl`) to the `rows` rows a checkpoint covers; returns its size in bytes.

    Rows past them (written by a run that stopped before its next checkpoint) and a cut-off
    last line are dropped, and `log` says so. Fewer rows than covered, or a row that is not
    the JSON object of its update and seed, raise `RunFolderError` naming the file and line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if rows:
            raise RunFolderError(f"{path}: not found, but the checkpoint covers {rows} rows of it") from None
        return 0
    offset = 0
    for i in range(rows):
        end = data.find(b"\n", offset)
        if end < 0:
            raise RunFolderError(f"{path}: {i} complete row(s), but the checkpoint covers {rows}: rows were lost")
        line = data[offset:end]
        try:
            row = json.loads(line)  # lenient: files of older versions hold bare NaN tokens
        except ValueError:
            raise RunFolderError(f"{path}: line {i + 1} is not JSON ({brief(line.decode(errors='replace'))})") from None
        want = {"seed": i % num_seeds, "update_step": i // num_seeds + 1}
        if not isinstance(row, dict) or any(row.get(k) != v for k, v in want.items()):
            raise RunFolderError(f"{path}: line {i + 1}: expected the row of update {want['update_step']}, seed "
                                 f"{want['seed']}, got {brief(row)}")
        offset = end + 1
    extra = data[offset:]
    if extra:
        with open(path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
        whole = extra.count(b"\n")
        parts = ([f"{whole} row(s)"] if whole else []) + ([] if extra.endswith(b"\n") else ["a cut-off last line"])
        log(f"{path}: dropped {' and '.join(parts)} written after the checkpoint (it covers {rows} rows)")
    return offset


def restore_run(out_dir, template, num_seeds: int, log: Callable[[str], None] = print) -> Checkpoint:
    """The checkpoint of a run folder with `metrics.jsonl` repaired to match it (`repair_metrics`).

    A run stopped before its first checkpoint resumes from `template` at update 0; temp files of
    interrupted writes are removed. Damage that cannot be repaired raises `RunFolderError`.
    """
    out = Path(out_dir)
    for p in remove_temp_files(out):
        log(f"{out}: removed {p.name}, left by an interrupted write")
    if (out / CHECKPOINT).exists():
        ckpt = read_checkpoint(out / CHECKPOINT, template)
    else:
        log(f"{out / CHECKPOINT} not found: the run stopped before its first checkpoint; starting at update 0")
        ckpt = Checkpoint(template, 0, 0)
    rows = ckpt.step * num_seeds if ckpt.metrics_rows is None else ckpt.metrics_rows
    repair_metrics(out / METRICS, rows, num_seeds, log)
    return ckpt._replace(metrics_rows=rows)


class TrainingDiverged(FloatingPointError):
    """The networks of a run became NaN / inf; the last finite checkpoint is kept."""


def run(config: MAPPOConfig, out_dir, resume: bool = False, chunk_updates: int = 10, env=None,
        log: Callable[[str], None] = print, until_update: int | None = None,
        train: MAPPO | None = None, force: bool = False,
        on_chunk: Callable[[int, dict], None] | None = None, devices: int | str | None = None) -> TrainState:
    """Train `config.num_seeds` vmapped runs in jitted chunks of `chunk_updates` updates.

    Writes `out_dir/config.yaml` (atomically), appends one JSON line per update and seed to
    `metrics.jsonl` (NaN as null; fsynced), then checkpoints atomically, recording how many
    rows it covers, after every chunk: a crash at any point leaves a checkpoint and at least
    its rows, and `resume=True` drops any rows past them (`restore_run`) and continues from
    `checkpoint.msgpack` (step counter, optimizer, statistics and env states included; only
    `total_timesteps` may differ from the saved config). A new run refuses a folder that
    holds one unless `force` (`prepare_new_run`). Stops at `until_update` (default
    `config.num_updates`). Ctrl-C saves the last completed chunk and returns; networks that
    turn NaN / inf raise `TrainingDiverged` before anything of that chunk is written.
    Compile time is logged apart from steps/s. `train` reuses a trainer (and its compiled
    chunks) built for `config`; `on_chunk(step, metrics)` sees each chunk's host metrics
    (`[num_seeds, n]` arrays). `devices` (a count or `"all"`) splits the environments over
    that many local devices (`batch_mesh`, `MAPPO.seed_chunk`); after `pgjax.distributed.initialize`
    the run is one program over every process's devices, each process stepping its slice of
    the environments, and only process 0 writes the folder. Checkpoints hold the gathered
    state, so a run resumes on any number of devices and processes. Returns the final
    seed-batched `TrainState`.
    """
    import yaml

    out = Path(out_dir)
    train = make_train(config, env) if train is None else train
    state = train.seed_init(jax.random.PRNGKey(config.seed))
    writer = distributed.is_writer()  # with several processes only process 0 writes the run folder
    if resume:
        saved = read_run_config(out / CONFIG)
        if saved.replace(total_timesteps=config.total_timesteps) != config:
            raise RunFolderError(f"{out / CONFIG}: the run was started with a different config (only "
                                 f"total_timesteps may change on resume)")
        if writer:
            state, step, rows = restore_run(out, state, config.num_seeds, log)
        else:
            state, step, rows = read_checkpoint(out / CHECKPOINT, state)
        size = (out / METRICS).stat().st_size if (out / METRICS).exists() else 0
        log(f"resumed {out} at update {step}")
    else:
        if writer:
            prepare_new_run(out, force)
        step = rows = size = 0
    if writer:
        write_atomic(out / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))
        if size == 0:
            write_atomic(out / METRICS, "")
    distributed.barrier("pgjax-run-folder-ready")

    mesh = batch_mesh(devices, config.num_envs, "num_envs")
    if mesh is not None:
        state = distributed.global_arrays(state, shardings(state, mesh))
        log(f"environments split over {mesh.size} devices ({config.num_envs // mesh.size} per device"
            f"{f', {jax.process_count()} processes' if jax.process_count() > 1 else ''})")
    saved_state = state  # what the last checkpoint holds (gathered to the host with several processes)
    stop = config.num_updates if until_update is None else min(until_update, config.num_updates)
    try:
        while step < stop:
            n = min(chunk_updates, stop - step)
            first = not train.is_compiled(n, mesh)
            t0 = time.perf_counter()
            new_state, metrics = train.seed_chunk(state, n, mesh)
            metrics = jax.device_get(metrics)  # replicated: every process holds all of it
            seconds = time.perf_counter() - t0
            if first:
                log(f"compiled a chunk of {n} updates ({seconds:.1f} s with its first run)")
            bad = non_finite_weights(new_state)  # fetches the networks and statistics only
            if bad:
                raise TrainingDiverged(f"training diverged in updates {step + 1}-{step + n}: {'; '.join(bad[:3])}; "
                                       f"{out / CHECKPOINT} of update {step} is kept")
            host_state = distributed.host_arrays(new_state)  # the checkpoint's copy (a collective with several processes)
            lines = [json_line({"seed": seed, **{k: float(v[seed, i]) for k, v in metrics.items()}})
                     for i in range(n) for seed in range(config.num_seeds)]
            new_size = append_lines(out / METRICS, lines) if writer else size
            state, saved_state, step, rows, size = new_state, host_state, step + n, rows + len(lines), new_size
            if writer:
                save_checkpoint(out / CHECKPOINT, saved_state, step, metrics_rows=rows)
            if on_chunk is not None:
                on_chunk(step, metrics)
            last = metrics["episode_return"][:, -1]
            ret = float(np.nanmean(last)) if np.isfinite(last).any() else float("nan")
            log(f"update {step}/{config.num_updates}  env steps {step * config.batch_size}/seed  "
                f"{n * config.batch_size * config.num_seeds / seconds:,.0f} steps/s"
                f"{' (incl. compile)' if first else ''}  return {ret:.3f}")
    except KeyboardInterrupt:
        # the rows of `state` are complete; drop a cut-off append and (re)write its checkpoint
        if writer:
            with open(out / METRICS, "r+b") as f:
                f.truncate(size)
            save_checkpoint(out / CHECKPOINT, saved_state, step, metrics_rows=rows)
        log(f"interrupted: checkpoint of update {step} saved to {out / CHECKPOINT}")
    distributed.barrier("pgjax-run-done")
    return state


def main(argv: list[str] | None = None) -> int:
    """`python -m pgjax.baselines.mappo [--config FILE] [--seeds N] [--out DIR] [--resume | --force] [--chunk N]
    [key=value ...]`."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m pgjax.baselines.mappo", description=main.__doc__)
    parser.add_argument("--config", help="YAML file of MAPPOConfig keys")
    parser.add_argument("--seeds", type=int, help="number of seeds (overrides num_seeds)")
    parser.add_argument("--out", default="runs/mappo", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.msgpack")
    parser.add_argument("--force", action="store_true", help="start a new run in OUT even if it holds one")
    parser.add_argument("--chunk", type=int, default=10, help="updates per jitted chunk (and checkpoint)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value (YAML values)")
    args = parser.parse_args(argv)
    cfg = MAPPOConfig.from_yaml(args.config) if args.config else MAPPOConfig()
    changes = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"override {item!r} is not key=value")
        changes[key] = yaml.safe_load(value)
    if args.seeds is not None:
        changes["num_seeds"] = args.seeds
    try:
        cfg = cfg.replace(**changes)
    except ValueError as e:
        parser.error(str(e))
    try:
        run(cfg, args.out, resume=args.resume, chunk_updates=args.chunk, force=args.force)
    except RunFolderError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

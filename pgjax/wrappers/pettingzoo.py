"""PettingZoo shim: pgjax scenarios as `ParallelEnv`s for RLlib / Stable-Baselines3 users.

    from pgjax.wrappers.pettingzoo import parallel_env, vector_env

    env = parallel_env("multi_microgrid", render_mode="rgb_array")   # + pgjax.make overrides
    obs, infos = env.reset(seed=0)
    while env.agents:
        actions = {a: env.action_space(a).sample() for a in env.agents}
        obs, rewards, terminations, truncations, infos = env.step(actions)
    frame = env.render()                                             # [H, W, 3] uint8

    venv = vector_env("multi_microgrid", num_envs=64)                # one jitted vmapped step
    obs, infos = venv.reset(seed=0)                                  # obs[agent]: [64, obs_size]

Spaces. Each agent's observation and action spaces are `gymnasium.spaces.Box` of its true
(unpadded) sizes, float32: observations unbounded (`-inf, inf`), actions in `[-1, 1]`.
Actions outside are clipped and counted in `infos[agent]["clipped_actions"]`; NaN entries
are replaced by the device's safe default (counted in `infos[agent]["nan_actions"]`).
`step` takes a dict `{agent: action}` with one real array of exactly the agent's action
shape per live agent (`[num_envs, act_size]` in the vector env); another container, a
missing or unknown agent, another shape or a complex / non-numeric action raises
`pgjax.errors.InputError` naming the agent, expected and actual (missing and unknown
agents: an `InputError` that is also a `KeyError`).

Episodes. The scenario's episodes have a fixed length; at the last step every agent is
truncated (`terminated` is always False), the observation returned is the episode's final
one, and `env.agents` empties; call `reset()` for the next episode.

Keys (reproducing a shim trajectory with the functional API). The shim holds one JAX key:

    reset(seed=s):  key = jax.random.PRNGKey(s); key, k = jax.random.split(key)
                    obs, state = env.reset(k, params)
    reset():        continues the held key (the first reset without a seed draws s at random)
    step(actions):  key, k = jax.random.split(key)
                    obs, state, reward, ... = env.step(k, state, padded_actions, params)

with `env = pgjax.make(scenario, **overrides)`, `params = env.default_params` (or the shim's
`params` attribute) and `padded_actions [n_agents, act_dim]` the agents' actions zero-padded.
Observations are the functional ones cut to each agent's size and cast to float32; at the
last step of an episode they are `info["final_observation"]` (the functional env has already
reset itself). The shim runs `env.step_env` on `jax.random.split(k)[0]`, which is exactly
`env.step(k)` without the auto-reset, so the final state stays available for `render()`.

Vector env. `vector_env(scenario, num_envs)` follows the gymnasium vector conventions per
agent: dicts of arrays with a leading `[num_envs]` axis, `observation_space(agent)` batched
and `single_observation_space(agent)` per environment, `reset(seed=s)` seeding environment i
with `s + i` (or a list of seeds), and same-step auto-reset: where an episode ended the
observation returned is the first one of the next episode, the last one is in
`infos[agent]["final_obs"]` with the mask `infos[agent]["_final_obs"]`. Environment i then
follows the trajectory of `parallel_env(...)` reset with seed `s + i` (and `reset()` after
each episode) under the same actions: same keys, episode starts and clipping, values equal up
to the last bits (XLA may round a batched kernel differently from a single one).

Compilation. The jitted reset / step (single and vmapped) are built once per scenario and
overrides and shared by every shim instance (`_backend`); a new batch size costs one more
trace of the vmapped step.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import ClassVar

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from pettingzoo import ParallelEnv

import pgjax
from pgjax import checks
from pgjax import scenario as scenario_mod
from pgjax.env.reward import AGENT_INFO
from pgjax.errors import InputError

__all__ = ["PgjaxParallelEnv", "PgjaxVectorEnv", "parallel_env", "vector_env"]

# Scalar entries of the functional env's info copied into every agent's info dict.
GLOBAL_INFO = (
    "cost_total", "safety_voltage", "safety_loading", "safety_devices", "nonconverged", "losses_mw",
    "voltage_violation_rate", "vm_min_pu", "vm_max_pu", "controllable", "curtailment_mwh", "renewable_mwh",
    "import_mwh", "export_mwh", "net_load_variance_mw2", "price", "p_injected_mw", "slack_p_mw")


# ------------------------------------------------------------------------- compiled backend

class _Backend:
    """One scenario (+ overrides): the functional env and its jitted functions, shared by shims."""

    def __init__(self, scenario, overrides: dict):
        self.env = env = pgjax.make(scenario, **overrides)
        self.n_agents, self.act_dim = env.num_agents, env.act_dim
        self.obs_sizes, self.act_sizes = env.obs_sizes, env.act_sizes
        self._layout = None

        def pack(obs, reward, terminated, truncated, info):
            per_agent = jnp.stack([info[k].astype(reward.dtype) for k in AGENT_INFO], axis=-1)
            scalars = jnp.stack([jnp.asarray(info[k]).astype(reward.dtype) for k in GLOBAL_INFO])
            return (obs.astype(jnp.float32), reward, terminated, truncated, per_agent, scalars)

        def reset(key, params):
            key, k = jax.random.split(key)
            obs, state = env.reset_env(k, params)
            return key, state, obs.astype(jnp.float32)

        def step(key, state, actions, params):
            key, k = jax.random.split(key)
            k_step, _ = jax.random.split(k)  # env.step(k) = step_env(split(k)[0]) + auto-reset
            obs, state, reward, terminated, truncated, info = env.step_env(k_step, state, actions, params)
            return key, state, pack(obs, reward, terminated, truncated, info)

        def vstep_one(key, state, actions, params):
            key, state, out = step(key, state, actions, params)
            done = out[2] | out[3]
            key_r, state_r, obs_r = reset(key, params)  # what reset() does after an episode
            key = jnp.where(done, key_r, key)
            state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_r, state)
            obs = jax.lax.select(done, obs_r, out[0])
            return key, state, (obs, out[0]) + out[1:]

        self.reset = jax.jit(reset)
        self.step = jax.jit(step)
        self.vreset = jax.jit(jax.vmap(reset, in_axes=(0, None)))
        self.vstep = jax.jit(jax.vmap(vstep_one, in_axes=(0, 0, 0, None)))
        self.world_state = jax.jit(env.world_state)

    # host-side network layout for render()
    def layout(self):
        if self._layout is None:
            self._layout = _tree_layout(self.env.scenario.grid)
        return self._layout


def _cache_key(scenario, overrides: dict):
    if isinstance(scenario, dict):
        name = json.dumps(scenario, sort_keys=True, default=repr)
    else:
        text = str(scenario)
        name = text if text.endswith((".yaml", ".yml")) else scenario_mod.resolve_name(text)
    return name, json.dumps(overrides, sort_keys=True, default=repr)


_BACKENDS: dict = {}


def _backend(scenario, overrides: dict) -> _Backend:
    """The shared `_Backend` of a scenario and overrides (built and compiled once)."""
    key = _cache_key(scenario, overrides)
    if key not in _BACKENDS:
        _BACKENDS[key] = _Backend(scenario, overrides)
    return _BACKENDS[key]


def _agent_actions(actions, agents: list, sizes, batch: tuple = ()) -> list[np.ndarray]:
    """Each agent's action from the dict `actions`, checked: `[*batch, act_size]` float64 arrays."""
    if not isinstance(actions, Mapping):
        raise InputError(f"actions: expected a dict {{agent: array}} for the agents {agents}, "
                         f"got {type(actions).__name__}")
    unknown = [a for a in actions if a not in agents]
    if unknown:
        raise checks.MissingKeyError(f"actions: actions for unknown agents {sorted(map(str, unknown))}; "
                                     f"agents are {agents}")
    out = []
    for a, n in zip(agents, sizes):
        if a not in actions:
            raise checks.MissingKeyError(f"actions: no action for agent '{a}' (every live agent must act)")
        x = actions[a]
        checks.check_real_array(f"actions['{a}']", x, batch + (n,), f"{n} entries in [-1, 1]")
        out.append(np.asarray(x, np.float64))
    return out


def _initial_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def _check_render_mode(render_mode, metadata):
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(f"render_mode must be None or one of {metadata['render_modes']}, got {render_mode!r}")
    if render_mode == "human" and not _has_display():
        raise RuntimeError(
            "render_mode='human' needs a display (no DISPLAY / WAYLAND_DISPLAY is set); "
            "use render_mode='rgb_array' and save or show the returned frames instead")


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# ---------------------------------------------------------------------------- single env

class PgjaxParallelEnv(ParallelEnv):
    """A pgjax scenario as a PettingZoo `ParallelEnv` (see the module docstring)."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array", "human"], "name": "pgjax_v0", "is_parallelizable": True,
                "render_fps": 4}

    def __init__(self, scenario="multi_microgrid", render_mode=None, **overrides):
        _check_render_mode(render_mode, self.metadata)
        self.render_mode = render_mode
        self._b = b = _backend(scenario, overrides)
        self.fenv = env = b.env  # the functional environment
        self.params = env.default_params
        self.scenario = env.name
        self.possible_agents = list(env.agents)
        self.agents: list[str] = []
        self.observation_spaces = {
            a: gymnasium.spaces.Box(-np.inf, np.inf, (n,), np.float32) for a, n in zip(env.agents, b.obs_sizes)}
        self.action_spaces = {
            a: gymnasium.spaces.Box(-1.0, 1.0, (n,), np.float32) for a, n in zip(env.agents, b.act_sizes)}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (env.layout.observation.n_features,), np.float32)
        self._key = None
        self._state = None
        self._fig = None

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _obs_dict(self, obs: np.ndarray) -> dict:
        return {a: obs[i, :n] for i, (a, n) in enumerate(zip(self.possible_agents, self._b.obs_sizes))}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        elif self._key is None:
            self._key = jax.random.PRNGKey(_initial_seed())
        self._key, self._state, obs = self._b.reset(self._key, self.params)
        self.agents = list(self.possible_agents)
        infos = {a: {} for a in self.agents}
        return self._obs_dict(np.asarray(obs)), infos

    def _pad_actions(self, actions: dict):
        b = self._b
        padded = np.zeros((b.n_agents, b.act_dim), np.float64)
        clipped, nans = np.zeros(b.n_agents, np.int64), np.zeros(b.n_agents, np.int64)
        for i, (n, x) in enumerate(zip(b.act_sizes, _agent_actions(actions, self.possible_agents, b.act_sizes))):
            nan = np.isnan(x)
            out = ~nan & ((x < -1.0) | (x > 1.0))
            clipped[i], nans[i] = np.count_nonzero(out), np.count_nonzero(nan)
            padded[i, :n] = np.where(out, np.clip(x, -1.0, 1.0), x)
        return padded, clipped, nans

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("step() called after the episode ended (env.agents is empty); call reset() first")
        padded, clipped, nans = self._pad_actions(actions)
        self._key, self._state, out = self._b.step(self._key, self._state, padded, self.params)
        obs, reward, terminated, truncated, per_agent, scalars = jax.device_get(out)
        glob = dict(zip(GLOBAL_INFO, scalars.tolist()))
        rewards, terms, truncs, infos = {}, {}, {}, {}
        for i, a in enumerate(self.possible_agents):
            rewards[a] = float(reward[i])
            terms[a], truncs[a] = bool(terminated), bool(truncated)
            info = {k: float(per_agent[i, j]) for j, k in enumerate(AGENT_INFO)}
            info.update(glob, clipped_actions=int(clipped[i]), nan_actions=int(nans[i]))
            infos[a] = info
        obs = self._obs_dict(obs)
        if bool(terminated) or bool(truncated):
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        """The global state `[n_features]` (float32) for centralized critics."""
        if self._state is None:
            raise RuntimeError("call reset() before state()")
        return np.asarray(self._b.world_state(self._state, self.params), np.float32)

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        frame = render_frame(self._b, jax.device_get(self._state), self.params)
        if self.render_mode == "rgb_array":
            return frame
        self._show(frame)
        return None

    def _show(self, frame):
        import matplotlib.pyplot as plt

        if self._fig is None:
            plt.ion()
            self._fig, ax = plt.subplots(figsize=(frame.shape[1] / 80, frame.shape[0] / 80), dpi=80)
            ax.axis("off")
            self._im = ax.imshow(frame)
            self._fig.tight_layout(pad=0)
        else:
            self._im.set_data(frame)
        self._fig.canvas.draw_idle()
        plt.pause(1.0 / self.metadata["render_fps"])

    def close(self):
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = None


def parallel_env(scenario="multi_microgrid", render_mode=None, **overrides) -> PgjaxParallelEnv:
    """A PettingZoo `ParallelEnv` of a registered scenario name, YAML path or mapping (+ `pgjax.make` overrides)."""
    return PgjaxParallelEnv(scenario, render_mode=render_mode, **overrides)


# ---------------------------------------------------------------------------- vector env

class PgjaxVectorEnv:
    """`num_envs` copies of a scenario stepped by one jitted vmapped call (see the module docstring).

    Per agent: observations `[num_envs, obs_size]` float32, actions `[num_envs, act_size]`,
    rewards `[num_envs]`, terminations / truncations `[num_envs]` bool, infos dicts of
    `[num_envs]` arrays (plus `final_obs` / `_final_obs`). Auto-reset is same-step.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "autoreset_mode": "SameStep"}

    def __init__(self, scenario="multi_microgrid", num_envs: int = 8, render_mode=None, **overrides):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        _check_render_mode(render_mode, self.metadata)
        self.render_mode = render_mode
        self.num_envs = int(num_envs)
        self._b = b = _backend(scenario, overrides)
        self.fenv = env = b.env
        self.params = env.default_params
        self.scenario = env.name
        self.possible_agents = list(env.agents)
        self.agents = list(env.agents)  # every agent acts in every step (auto-reset)
        self.single_observation_spaces = {
            a: gymnasium.spaces.Box(-np.inf, np.inf, (n,), np.float32) for a, n in zip(env.agents, b.obs_sizes)}
        self.single_action_spaces = {
            a: gymnasium.spaces.Box(-1.0, 1.0, (n,), np.float32) for a, n in zip(env.agents, b.act_sizes)}
        self.observation_spaces = {a: gymnasium.vector.utils.batch_space(s, self.num_envs)
                                   for a, s in self.single_observation_spaces.items()}
        self.action_spaces = {a: gymnasium.vector.utils.batch_space(s, self.num_envs)
                              for a, s in self.single_action_spaces.items()}
        self._keys = None
        self._state = None

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def single_observation_space(self, agent):
        return self.single_observation_spaces[agent]

    def single_action_space(self, agent):
        return self.single_action_spaces[agent]

    def _obs_dict(self, obs: np.ndarray) -> dict:
        return {a: obs[:, i, :n] for i, (a, n) in enumerate(zip(self.possible_agents, self._b.obs_sizes))}

    def reset(self, seed=None, options=None):
        """Reset every environment; `seed` an int (environment i gets `seed + i`) or a list of ints."""
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} environments")
            self._keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
        elif self._keys is None:
            s = _initial_seed()
            self._keys = jnp.stack([jax.random.PRNGKey(s + i) for i in range(self.num_envs)])
        self._keys, self._state, obs = self._b.vreset(self._keys, self.params)
        return self._obs_dict(np.asarray(obs)), {a: {} for a in self.possible_agents}

    def step(self, actions: dict):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        b, n_env = self._b, self.num_envs
        padded = np.zeros((n_env, b.n_agents, b.act_dim), np.float64)
        clipped, nans = {}, {}
        xs = _agent_actions(actions, self.possible_agents, b.act_sizes, (n_env,))
        for i, (a, n, x) in enumerate(zip(self.possible_agents, b.act_sizes, xs)):
            nan = np.isnan(x)
            out = ~nan & ((x < -1.0) | (x > 1.0))
            clipped[a], nans[a] = out.sum(axis=1), nan.sum(axis=1)
            padded[:, i, :n] = np.where(out, np.clip(x, -1.0, 1.0), x)
        self._keys, self._state, out = b.vstep(self._keys, self._state, padded, self.params)
        obs, final_obs, reward, terminated, truncated, per_agent, scalars = jax.device_get(out)
        done = terminated | truncated
        glob = {k: scalars[:, j] for j, k in enumerate(GLOBAL_INFO)}
        rewards, terms, truncs, infos = {}, {}, {}, {}
        final = self._obs_dict(final_obs)
        for i, a in enumerate(self.possible_agents):
            rewards[a] = reward[:, i]
            terms[a], truncs[a] = terminated, truncated
            info = {k: per_agent[:, i, j] for j, k in enumerate(AGENT_INFO)}
            info.update(glob, clipped_actions=clipped[a], nan_actions=nans[a], final_obs=final[a], _final_obs=done)
            infos[a] = info
        return self._obs_dict(obs), rewards, terms, truncs, infos

    def render(self, index: int = 0):
        """An `[H, W, 3]` uint8 picture of environment `index` (the state after auto-reset)."""
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        state = jax.device_get(jax.tree.map(lambda x: x[index], self._state))
        return render_frame(self._b, state, self.params)

    def close(self):
        pass


def vector_env(scenario="multi_microgrid", num_envs: int = 8, render_mode=None, **overrides) -> PgjaxVectorEnv:
    """`num_envs` environments of a scenario behind one jitted vmapped step (gymnasium vector conventions)."""
    return PgjaxVectorEnv(scenario, num_envs=num_envs, render_mode=render_mode, **overrides)


# ------------------------------------------------------------------------------- render

def _tree_layout(grid) -> dict:
    """Bus positions: breadth-first depth from the slack buses (x), leaves spread out (y)."""
    n_bus = int(grid.n_bus)
    mask = np.asarray(grid.bus.mask, bool)
    fb, tb = np.asarray(grid.branch.from_bus), np.asarray(grid.branch.to_bus)
    on = np.asarray(grid.branch.in_service, bool) & (fb != tb)
    adj = [[] for _ in range(n_bus)]
    for f, t in zip(fb[on], tb[on]):
        adj[f].append(int(t))
        adj[t].append(int(f))
    eg = np.asarray(grid.ext_grid.bus)[np.asarray(grid.ext_grid.in_service, bool)]
    roots = [int(b) for b in eg] or [int(np.flatnonzero(mask)[0])]
    children = {i: [] for i in range(n_bus)}
    depth = np.full(n_bus, -1)
    order = []
    for r in roots + [i for i in range(n_bus) if mask[i]]:
        if depth[r] >= 0:
            continue
        depth[r] = 0
        order.append(r)
        queue = [r]
        while queue:
            u = queue.pop(0)
            for v in adj[u]:
                if depth[v] < 0:
                    depth[v] = depth[u] + 1
                    children[u].append(v)
                    queue.append(v)
    y = np.zeros(n_bus)
    next_leaf = [0.0]

    def place(u):
        stack = [(u, False)]
        while stack:
            node, expanded = stack.pop()
            if not children[node]:
                y[node] = next_leaf[0]
                next_leaf[0] += 1
            elif not expanded:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(children[node]))
            else:
                y[node] = np.mean([y[c] for c in children[node]])

    for r in order:
        place(r)
        next_leaf[0] += 1  # gap between islands
    return {"x": depth.astype(float), "y": -y, "mask": mask & (depth >= 0), "edges": np.stack([fb[on], tb[on]], 1)}


def _dispatch(env, state, params):
    """[(device name, MW injected (PCC: imported), type, bus or -1)] for devices with an active-power state."""
    out = []
    from pgjax import devices as dev

    for g in env.layout.groups:
        st = state.devices[g.type]
        if hasattr(st, "p_mw"):
            vals = np.asarray(st.p_mw, float).reshape(-1)
        elif hasattr(st, "import_mw"):
            vals = np.asarray(st.import_mw, float).reshape(-1)  # into the grid below the PCC
        else:
            continue
        bus = np.full(g.n, -1) if dev.get(g.type).grid_connection is not None else g.bus
        for k in range(g.n):
            out.append((g.names[k], float(vals[k]), g.type, int(bus[k])))
    return out


def render_frame(backend: _Backend, state, params) -> np.ndarray:
    """An `[H, W, 3]` uint8 picture: buses coloured by voltage, device dispatch bars (matplotlib Agg)."""
    import matplotlib
    from matplotlib import cm, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    env = backend.env
    lay = backend.layout()
    vm = np.asarray(state.vm_pu, float)
    lo, hi = float(params.vm_min_pu), float(params.vm_max_pu)
    fig = Figure(figsize=(10, 5), dpi=80)
    FigureCanvasAgg(fig)
    ax, axb = fig.add_axes((0.02, 0.08, 0.55, 0.82)), fig.add_axes((0.72, 0.1, 0.26, 0.8))
    x, y, shown = lay["x"], lay["y"], lay["mask"]
    m = shown & (vm > 0)  # energized buses (a de-energized bus reads 0 pu)
    segs = [((x[f], y[f]), (x[t], y[t])) for f, t in lay["edges"] if shown[f] and shown[t]]
    ax.add_collection(LineCollection(segs, colors="0.6", linewidths=1.0, zorder=1))
    dead = shown & ~m
    if dead.any():
        ax.scatter(x[dead], y[dead], c="0.85", s=28, zorder=2, edgecolors="0.5", linewidths=0.3)
    norm = colors.Normalize(lo - 0.03, hi + 0.03)
    cmap = matplotlib.colormaps["coolwarm"]
    out = m & ((vm < lo) | (vm > hi))
    ax.scatter(x[m], y[m], c=vm[m], cmap=cmap, norm=norm, s=28, zorder=2, edgecolors="k", linewidths=0.3)
    if out.any():
        ax.scatter(x[out], y[out], s=90, facecolors="none", edgecolors="red", linewidths=1.5, zorder=3)
    disp = _dispatch(env, state, params)
    marker = {"storage": "s", "generator": "^", "pv": "*", "wind": "P"}
    for name, p, kind, bus in disp:
        if bus >= 0 and m[bus]:
            ax.scatter([x[bus] + 0.25], [y[bus] + 0.35], marker=marker.get(kind, "D"), s=40,
                       c="tab:green" if p >= 0 else "tab:orange", zorder=4, edgecolors="k", linewidths=0.3)
    ax.set_axis_off()
    ax.autoscale_view()
    cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.01)
    cb.set_label("bus voltage (pu)")
    t, start = int(state.t), int(state.start)
    hour = (float(params.hour0) + (start + t) * float(params.dt_h)) % 24
    ax.set_title(f"{env.name}  step {t}/{env.episode_steps}  hour {hour:04.1f}  "
                 f"V [{np.min(vm[m], initial=np.inf):.3f}, {np.max(vm[m], initial=-np.inf):.3f}] pu",
                 fontsize=10, loc="left")
    if disp:
        names = [d[0] for d in disp]
        vals = [d[1] for d in disp]
        axb.barh(range(len(vals)), vals, color=["tab:green" if v >= 0 else "tab:orange" for v in vals])
        axb.set_yticks(range(len(vals)), names, fontsize=7)
        axb.invert_yaxis()
        axb.axvline(0, color="k", linewidth=0.5)
        axb.set_xlabel("dispatch (MW, + injects / PCC imports)", fontsize=8)
        axb.tick_params(axis="x", labelsize=7)
    else:
        axb.set_axis_off()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

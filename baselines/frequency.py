"""Reference controllers of `frequency_68bus`, as pure `Controller`s (`pgjax.baselines.rule_based`).

Each is `Controller(init() -> carry, act(carry, key, obs [20, 15], aux) -> (actions [20, 1], carry))`
and reads its observations by feature key through `env.observation_schema` (never offsets).
The machines' own governors (primary response) act in every case; these controllers are
what the 20 agents add on top.

- `no_control`: zero actions (outputs held at the operating point).
- `random`: uniform actions in [-1, 1].
- `droop`: primary droop on the agent's own (delayed) bus frequency: target output
  `-cap / droop_band_hz * df_bus`, full capacity at `droop_band_hz` (0.5 Hz).
- `agc`: secondary control, a PI on the area control error of the one control area (the
  data defines no areas; tie-line terms are absent): `ACE = beta * df_coi` (MW, `beta` the
  system's natural response in MW/Hz), total target `-(kp ACE + ki integral(ACE))` with the
  integral clamped to the agents' total capacity (anti-windup), shared in proportion to the
  ramp limits (so that every unit reaches its share at the same time).

Droop and AGC move towards their target as fast as the ramp allows and keep the output
they commanded in their carry (the delayed observation of it would make them overshoot).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.baselines.rule_based import Controller

F32 = jnp.float32
DROOP_BAND_HZ = 0.5
AGC_KP, AGC_KI_PER_S = 0.1, 1.0 / 60.0


def _positions(env, key_of) -> np.ndarray:
    """`[20]` local positions of the feature `key_of(agent index)` in each agent's observation."""
    schema = env.observation_schema
    pos = [schema.local(a, key_of(a)) for a in range(env.num_agents)]
    if min(pos) < 0:
        raise KeyError(f"frequency baselines: an agent does not observe {key_of(pos.index(min(pos)))!r}")
    return np.asarray(pos)


def _decoder(env, key_of):
    """`decode(obs [20, 15]) -> [20]` physical values of the per-agent feature `key_of(a)`."""
    schema = env.observation_schema
    pos = _positions(env, key_of)
    feats = [schema.feature(key_of(a)) for a in range(env.num_agents)]
    scale = jnp.asarray([f.scale for f in feats], F32)
    offset = jnp.asarray([f.offset for f in feats], F32)
    return lambda obs: obs[jnp.arange(env.num_agents), jnp.asarray(pos)] * scale + offset


def _limits(env):
    p = env.default_params
    step_mw = np.asarray(p.ramp_mw_min, np.float64) * env.dt_s / 60.0
    return jnp.asarray(step_mw, F32), jnp.asarray(np.asarray(p.cap_mw), F32)


def _towards(p_cmd, target, step_mw, cap):
    """Actions moving the commanded output `p_cmd` to `target` within the ramp, and the new `p_cmd`."""
    a = jnp.clip((jnp.clip(target, -cap, cap) - p_cmd) / step_mw, -1.0, 1.0)
    return a[:, None], jnp.clip(p_cmd + a * step_mw, -cap, cap)


def no_control(env) -> Controller:
    zeros = jnp.zeros((env.num_agents, 1), F32)
    return Controller(lambda: jnp.zeros((), F32), lambda carry, key, obs, aux: (zeros, carry))


def random(env) -> Controller:
    shape = (env.num_agents, 1)
    return Controller(lambda: jnp.zeros((), F32),
                      lambda carry, key, obs, aux: (jax.random.uniform(key, shape, F32, -1.0, 1.0), carry))


def droop(env, band_hz: float = DROOP_BAND_HZ) -> Controller:
    bus = np.asarray(env.default_params.agent_bus)
    f_local = _decoder(env, lambda a: f"bus/{bus[a]}/f_hz")
    step_mw, cap = _limits(env)

    def act(p_cmd, key, obs, aux):
        return _towards(p_cmd, -cap / band_hz * (f_local(obs) - 60.0), step_mw, cap)

    return Controller(lambda: jnp.zeros(env.num_agents, F32), act)


def natural_response_mw_hz(env) -> float:
    """`beta` (MW/Hz): machine damping, governors and load relief of the whole system."""
    plant = env.default_params.plant
    beta_pu = float(np.sum(plant.d_pu) + np.sum(plant.inv_r_pu) + np.sum(plant.load_damping_pu))
    return beta_pu * env.system.s_base_mva / float(plant.f0_hz)


def agc(env, kp: float = AGC_KP, ki_per_s: float = AGC_KI_PER_S) -> Controller:
    df_sys = _decoder(env, lambda a: "system//df_hz")
    step_mw, cap = _limits(env)
    share = step_mw / jnp.sum(step_mw)
    beta, dt, total = natural_response_mw_hz(env), env.dt_s, jnp.sum(cap)

    def act(carry, key, obs, aux):
        p_cmd, integral = carry
        ace = beta * jnp.mean(df_sys(obs))  # every agent observes the same system deviation
        integral = jnp.clip(integral + ace * dt, -total / ki_per_s, total / ki_per_s)
        target = -(kp * ace + ki_per_s * integral) * share
        actions, p_cmd = _towards(p_cmd, target, step_mw, cap)
        return actions, (p_cmd, integral)

    return Controller(lambda: (jnp.zeros(env.num_agents, F32), jnp.zeros((), F32)), act)


CONTROLLERS = {"no_control": no_control, "droop": droop, "agc": agc, "random": random}


def controllers(env) -> dict[str, Controller]:
    """Every reference controller for `env`, by name."""
    return {name: make(env) for name, make in CONTROLLERS.items()}

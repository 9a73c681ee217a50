"""Reference controllers and the evaluation of frequency_68bus; a short MAPPO run improves the return."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.baselines import frequency as baselines
from pgjax.baselines.frequency_eval import evaluate, summarize


@pytest.fixture(scope="module")
def env():
    return pgjax.make("frequency_68bus", dtype="float64")


def settle(env, ctrl, params, key, steps=120):
    """COI frequency deviation (Hz) at the end of one episode under `ctrl` (no auto-reset)."""
    obs, state = env.reset(key, params)

    def body(carry, k):
        obs, state, c = carry
        a, c = ctrl.act(c, k, obs.astype(jnp.float32), None)
        obs, state, _, _, _, info = env.step_env(k, state, a, params)
        return (obs, state, c), info["f_coi_hz"]

    _, f = jax.lax.scan(body, (obs, state, ctrl.init()), jax.random.split(key, steps))
    return float(f[-1]) - 60.0


def test_agc_restores_frequency_after_a_machine_trip(env):
    z = jnp.asarray(0.0)
    p = env.default_params.replace(load_sigma=z, common_sigma=z, renewable_sigma=z, p_contingency=jnp.asarray(1.0),
                                   p_machine_trip=jnp.asarray(1.0))
    key = jax.random.PRNGKey(5)
    off = settle(env, baselines.no_control(env), p, key)
    droop = settle(env, baselines.droop(env), p, key)
    agc = settle(env, baselines.agc(env), p, key)
    assert off < -0.3  # primary response alone: -P0 / beta (tests/frequency/test_frequency_env.py)
    assert off < droop < 0  # proportional: a smaller steady-state deviation
    assert abs(agc) < 0.05 * abs(off)  # integral action: back to 60 Hz


def test_evaluate_reports_every_controller(env):
    out = evaluate(env, baselines.controllers(env), jax.random.PRNGKey(0), num_episodes=2)
    assert set(out) == {"no_control", "droop", "agc", "random"}
    for m in out.values():
        assert 0.0 <= m["in_band_rate"] <= 1.0 and m["nadir_hz"] <= 60.0 <= m["zenith_hz"]
    assert out["no_control"]["effort_mw_per_episode"] == 0.0
    assert out["agc"]["return_per_episode"] > out["random"]["return_per_episode"]


def test_summarize_reads_extremes_and_rates():
    info = {"f_min_hz": np.array([[60.0, 59.4], [59.9, 60.0]]), "f_max_hz": np.array([[60.1, 60.0], [60.0, 60.6]]),
            "in_band": np.array([[1.0, 0.0], [1.0, 0.0]]), "rocof_hz_s": np.array([[0.0, 0.2], [0.1, 0.0]])}
    totals = {k: np.array([1.0, 3.0]) for k in ("violations", "outside_band_s", "return", "freq_penalty", "cost",
                                                 "effort_mw")}
    m = summarize(totals, info)
    assert m["nadir_hz"] == 59.4 and m["zenith_hz"] == 60.6 and m["in_band_rate"] == 0.5
    assert m["nadir_mean_hz"] == pytest.approx(59.65) and m["violations_per_episode"] == 2.0


@pytest.mark.slow
def test_short_mappo_run_improves_the_return():
    """24 updates of the preset (64 envs x 64 steps; a 120-step episode ends every second update or
    so, NaN where none did): the training episodes' return rises."""
    from pgjax.baselines.config import PRESETS, MAPPOConfig
    from pgjax.baselines.mappo import make_train

    preset = PRESETS["frequency_68bus"]
    cfg = MAPPOConfig.from_dict({**preset, "total_timesteps": 24 * preset["num_envs"] * preset["num_steps"],
                                 "env_kwargs": {"dtype": "float32"}})
    train = make_train(cfg)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    _, metrics = jax.jit(train.update_chunk, static_argnums=1)(state, cfg.num_updates)
    ret = np.asarray(metrics["episode_return"])
    assert np.isfinite(ret).sum() >= 10 and np.all(np.isfinite(ret[1::2]) | np.isfinite(ret[::2]))
    # returns are negative and noisy (each episode draws its trip and loads): the last 6 updates'
    # mean beats the first 6's
    assert np.nanmean(ret[-6:]) > np.nanmean(ret[:6]), ret

"""float32, the training path, against float64 on whole episodes.

The same scenario is built in both dtypes; a batch of environments starts from the same
float64 reset state (cast to float32, so the random draws of `reset` cannot differ between
dtypes) and takes the same random actions with the same keys for a whole episode (24 steps,
`step_env`, no auto-reset), one jitted `scan` per dtype. Every step: every power flow
converged in both dtypes, and bus voltages and rewards agree within 3x the largest
difference measured (2026-12-01, CPU, 8 environments x 24 steps):

| scenario | max |dvm| pu | max |dreward| / max |reward| |
| --- | --- | --- |
| multi_microgrid | 4.9e-7 | 2.7e-6 (6.8e-6 of 2.5) |
| voltage_control_33bw | 7.2e-7 | 1.0e-5 (1.8e-4 of 17.6) |

The reward difference grows with the reward's size (float32 rounds relative to magnitude), so
its tolerance is relative to the episode's largest reward. The voltage tolerance is far inside
the README's 1e-4 p.u. promise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax

N_ENVS = 8
TOL_VM_PU = 2.2e-6  # 3x 7.2e-7
TOL_REWARD = 3e-5  # of max |reward|: 3x 1.0e-5


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _episode(env, state0, actions, keys):
    """Voltages `[T, N, n_bus]`, nonconverged `[T, N]` and rewards `[T, N, n_agents]` of one episode."""
    params = env.default_params

    @jax.jit
    def run(state, actions, keys):
        def body(state, x):
            act, key = x
            _, state, reward, _, _, info = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(key, state, act, params)
            return state, (state.vm_pu, info["nonconverged"], reward)
        return jax.lax.scan(body, state, (actions, keys))[1]

    return jax.tree.map(np.asarray, run(_cast(state0, env.dtype), actions.astype(env.dtype), keys))


@pytest.mark.parametrize("name", ["multi_microgrid", "voltage_control_33bw"])
def test_float32_episode_matches_float64(name):
    env64, env32 = pgjax.make(name, dtype="float64"), pgjax.make(name, dtype="float32")
    assert env64.dtype == jnp.float64 and env32.dtype == jnp.float32
    steps = env64.episode_steps
    assert steps == 24
    _, state0 = jax.vmap(env64.reset)(jax.random.split(jax.random.PRNGKey(0), N_ENVS))
    k_act, k_step = jax.random.split(jax.random.PRNGKey(1))
    actions = jax.random.uniform(k_act, (steps, N_ENVS, env64.num_agents, env64.act_dim), jnp.float64, -1, 1)
    keys = jax.random.split(k_step, steps * N_ENVS).reshape(steps, N_ENVS, -1)

    vm64, nc64, r64 = _episode(env64, state0, actions, keys)
    vm32, nc32, r32 = _episode(env32, state0, actions, keys)
    assert vm32.dtype == np.float32 and vm64.dtype == np.float64
    assert nc64.sum() == 0 and nc32.sum() == 0, "a power flow did not converge"
    err = np.abs(vm32.astype(np.float64) - vm64).max(axis=(1, 2))  # per step
    assert err.max() <= TOL_VM_PU, f"float32 voltages off by up to {err.max():.2e} pu (per step: {err})"
    assert np.isfinite(r32).all()
    scale = np.abs(r64).max()
    assert scale > 0.1  # rewards are not all ~0 (the penalties and costs are there)
    d_reward = np.abs(r32.astype(np.float64) - r64).max()
    assert d_reward <= TOL_REWARD * scale, f"float32 rewards off by {d_reward:.2e} (max |reward| {scale:.3g})"

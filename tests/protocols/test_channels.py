"""Communication channel (delay, jitter, loss) and per-agent timing (ticks, action/observation delay)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from pgjax.protocols import channels
from pgjax.protocols import Messages


def run_channel(cp, msgs_per_step, key):
    """Scan `transmit` over a stack of messages `[T, S, R, D]` (all links sending); returns delivered."""
    def body(cs, xs):
        data, k = xs
        got, cs = channels.transmit(cp, cs, Messages.full(data), k)
        return cs, (got.data, got.mask)

    T = msgs_per_step.shape[0]
    cs, out = jax.lax.scan(body, channels.channel_init(cp, msgs_per_step.shape[-1]),
                           (msgs_per_step, jax.random.split(key, T)))
    return cs, out


RUN = jax.jit(run_channel)
# shared shapes and static depth, so the timing tests compile each function once
N_AG, ACT_DIM, MAX_DELAY = 3, 2, 2
ACT = jax.jit(channels.apply_action_timing)
OBS = jax.jit(channels.apply_obs_timing)


def test_message_with_delay_k_arrives_exactly_k_steps_later():
    n, T = 4, 8
    delay = jnp.arange(n * n).reshape(n, n) % 4  # per-link delays 0..3
    cp = channels.channel_params(n, n, delay=delay, max_delay=5)
    # one message per link at step 0 (its value 1 + link id), nothing afterwards
    sent = jnp.zeros((T, n, n, 1)).at[0, ..., 0].set(1.0 + jnp.arange(n * n).reshape(n, n))
    cs = channels.channel_init(cp, 1)
    arrivals = []
    transmit = jax.jit(channels.transmit)
    for t in range(T):
        msgs = Messages(sent[t], jnp.full((n, n), t == 0))
        got, cs = transmit(cp, cs, msgs, jax.random.PRNGKey(t))
        arrivals.append((np.asarray(got.mask), np.asarray(got.data[..., 0])))
    for s in range(n):
        for r in range(n):
            steps = [t for t, (m, _) in enumerate(arrivals) if m[s, r]]
            assert steps == [int(delay[s, r])], (s, r, steps)
            assert arrivals[steps[0]][1][s, r] == 1.0 + s * n + r
    assert int(cs.sent) == n * n and int(cs.delivered) == n * n and int(cs.dropped) == 0
    # the last delivery is held per link, with its age
    np.testing.assert_allclose(cs.last[..., 0], 1.0 + jnp.arange(n * n).reshape(n, n))
    np.testing.assert_array_equal(cs.age, T - delay)


def test_zero_delay_reproduces_synchronous_exchange():
    n, T = 10, 200  # the loss test's shapes: one compiled scan for both
    cp = channels.channel_params(n, n)
    data = jax.random.normal(jax.random.PRNGKey(0), (T, n, n, 1))
    _, (got, mask) = RUN(cp, data, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(got, data)
    assert bool(jnp.all(mask))


def test_loss_probability_within_binomial_bounds():
    n, T, p = 10, 200, 0.3
    cp = channels.channel_params(n, n, loss_prob=p)
    cs, (_, mask) = RUN(cp, jnp.ones((T, n, n, 1)), jax.random.PRNGKey(7))
    N = T * n * n
    dropped = N - int(jnp.sum(mask))
    assert dropped == int(cs.dropped) and int(cs.sent) == N
    assert abs(dropped - p * N) <= 4 * np.sqrt(N * p * (1 - p)), dropped / N


def test_jitter_delays_in_range_and_seeded():
    n = 6
    cp = channels.channel_params(n, n, delay=1, jitter=2, jitter_kind="uniform")
    cg = channels.channel_params(n, n, delay=2, jitter=1.0, jitter_kind="gaussian", max_delay=4)
    assert cp.max_delay == 3

    @jax.jit
    def samples(keys):
        return (jax.vmap(lambda k: channels.sample_delay(cp, k))(keys),
                jax.vmap(lambda k: channels.sample_delay(cg, k))(keys))

    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    d, dg = (np.asarray(x) for x in samples(keys))
    assert set(np.unique(d).tolist()) == {1, 2, 3}
    assert dg.min() >= 0 and dg.max() <= 4 and abs(dg.mean() - 2.0) < 0.1
    np.testing.assert_array_equal(samples(keys)[0], d)  # seeded: same keys, same delays


def test_tick_interval_holds_actions():
    n, T, A = N_AG, 12, ACT_DIM
    tp = channels.timing_params(n, tick_interval=jnp.array([1, 3, 4]), tick_offset=jnp.array([0, 0, 1]),
                             max_delay=MAX_DELAY)
    ts = channels.timing_init(tp, jnp.zeros((n, A)), jnp.zeros((n, A)))
    acts = jax.random.normal(jax.random.PRNGKey(0), (T, n, A))
    f = ACT
    out = []
    for t in range(T):
        eff, acting, ts = f(tp, ts, acts[t])
        out.append(np.asarray(eff))
        np.testing.assert_array_equal(acting, [True, t % 3 == 0, (t - 1) % 4 == 0])
    out = np.stack(out)
    np.testing.assert_array_equal(out[:, 0], acts[:, 0])  # interval 1: every step
    for t in range(T):
        np.testing.assert_array_equal(out[t, 1], acts[t - t % 3, 1])  # last tick at a multiple of 3
        last = t - (t - 1) % 4 if t >= 1 else None  # ticks at 1, 5, 9
        np.testing.assert_array_equal(out[t, 2], acts[last, 2] if last is not None else np.zeros(A))


def test_action_and_observation_delays():
    n, T = N_AG, 7
    tp = channels.timing_params(n, act_delay=jnp.array([0, 1, 2]), obs_delay=jnp.array([2, 0, 1]))
    assert tp.max_delay == MAX_DELAY
    default = jnp.full((n, ACT_DIM), -9.0)
    ts = channels.timing_init(tp, default, jnp.full((n, ACT_DIM), -7.0))
    for t in range(T):
        x = jnp.full((n, ACT_DIM), float(t))
        eff, _, ts = ACT(tp, ts, x)
        obs, ts = OBS(tp, ts, x + 100)
        want_a = [t - d if t >= d else -9.0 for d in (0, 1, 2)]
        want_o = [t - d + 100 if t >= d else -7.0 for d in (2, 0, 1)]
        np.testing.assert_array_equal(eff[:, 0], want_a)
        np.testing.assert_array_equal(obs[:, 0], want_o)


def test_synchronous_timing_is_identity():
    n = N_AG
    tp = channels.timing_params(n, max_delay=MAX_DELAY)
    ts = channels.timing_init(tp, jnp.zeros((n, ACT_DIM)), jnp.zeros((n, ACT_DIM)))
    a, o = (jax.random.normal(jax.random.PRNGKey(i), (n, ACT_DIM)) for i in (0, 1))
    eff, acting, ts = ACT(tp, ts, a)
    obs, ts = OBS(tp, ts, o)
    np.testing.assert_array_equal(eff, a)
    np.testing.assert_array_equal(obs, o)
    assert bool(jnp.all(acting))


def test_channel_and_timing_jit_vmap_without_retrace():
    B, n, D = 16, 5, 2
    cp = channels.channel_params(n, n, delay=1, loss_prob=0.1, jitter=1, jitter_kind="uniform")
    tp = channels.timing_params(n, tick_interval=2, act_delay=1, obs_delay=1)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched_step(cs, ts, data, acts, keys):
        def one(cs, ts, data, acts, key):
            got, cs = channels.transmit(cp, cs, Messages.full(data), key)
            eff, _, ts = channels.apply_action_timing(tp, ts, acts)
            obs, ts = channels.apply_obs_timing(tp, ts, got.data[:, 0])
            return cs, ts, eff, obs
        return jax.vmap(one)(cs, ts, data, acts, keys)

    batch = lambda x: jnp.broadcast_to(x, (B,) + jnp.shape(x))
    cs = jax.tree_util.tree_map(batch, channels.channel_init(cp, D))
    ts = jax.tree_util.tree_map(batch, channels.timing_init(tp, jnp.zeros((n, 3)), jnp.zeros((n, D))))
    for t in range(3):
        k = jax.random.PRNGKey(t)
        cs, ts, eff, obs = batched_step(cs, ts, jax.random.normal(k, (B, n, n, D)), jax.random.normal(k, (B, n, 3)),
                                        jax.random.split(k, B))
        assert eff.shape == (B, n, 3) and obs.shape == (B, n, D)
    assert cs.t.shape == (B,) and bool(jnp.all(cs.t == 3))

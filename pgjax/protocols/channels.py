"""Communication channel and timing (HERON's TickConfig as arrays): pure functions, static shapes.

Channel (per link `s -> r`): base delay `delay [S, R]` in steps, jitter (`"uniform"`:
extra delay drawn from `{0, ..., jitter}`; `"gaussian"`: `round(N(0, jitter^2))` added),
total clipped to `[0, max_delay]`, and loss probability `loss_prob [S, R]`. Messages sit in
a ring buffer of static depth `max_delay + 1` (`ChannelState`):

    state = send(params, state, messages_out, key)   # at step t: schedule arrival at t + d
    messages_in, state = receive(state)              # what arrives at step t (slot cleared)
    state = step(state)                              # t <- t + 1
    # or all three: messages_in, state = transmit(params, state, messages_out, key)

A message sent at step `t` with delay `k` is received at step `t + k`; with `k = 0` in the
same step (so zero delay, no jitter and no loss reproduce the synchronous case exactly:
`messages_in == messages_out`). If two messages for one link land on the same step (jitter
can reorder), the later-sent one wins. The state counts sent, dropped and delivered
messages, keeps the last delivered message per link (`last`) and its age in steps (`age`),
for observations that hold the latest news.

Timing per agent (`TimingParams`, `TimingState`):
- `tick_interval [n]`, `tick_offset [n]`: agent `i` acts at steps `t` with
  `(t - offset_i) % interval_i == 0` and holds its last action otherwise (multi-rate);
- `act_delay [n]`: the (held) action takes effect `act_delay` steps later;
- `obs_delay [n]`: the agent observes what was measured `obs_delay` steps earlier.
Delays use `DelayLine` ring buffers of depth `max_delay + 1`, initialized with a default
value (the safe action, the first observation) that fills the first `delay` steps.
Per step the environment calls `apply_action_timing` once before decoding actions and
`apply_obs_timing` once after building observations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.protocols.messages import Messages

JITTER_KINDS = ("none", "uniform", "gaussian")


# ----------------------------------------------------------------------------- channel

@struct.dataclass
class ChannelParams:
    delay: jax.Array  # [S, R] int, base delay in steps
    loss_prob: jax.Array  # [S, R] float in [0, 1]
    jitter: jax.Array  # [S, R] uniform: max extra steps; gaussian: std in steps
    max_delay: int = struct.field(pytree_node=False, default=0)
    jitter_kind: str = struct.field(pytree_node=False, default="none")


@struct.dataclass
class ChannelState:
    data: jax.Array  # [max_delay + 1, S, R, msg_dim] in-flight messages by arrival slot
    mask: jax.Array  # [max_delay + 1, S, R] bool
    t: jax.Array  # [] int, current step
    last: jax.Array  # [S, R, msg_dim] last delivered message per link
    age: jax.Array  # [S, R] int, steps since that delivery (large if never)
    sent: jax.Array  # [] int, messages handed to the channel
    dropped: jax.Array  # [] int, lost messages
    delivered: jax.Array  # [] int
    # this episode's link conditions (`ChannelParams`' own unless `with_conditions` drew others)
    delay: jax.Array  # [S, R] int
    loss_prob: jax.Array  # [S, R]
    jitter: jax.Array  # [S, R]


def channel_params(n_senders, n_receivers, delay=0, loss_prob=0.0, jitter=0.0, jitter_kind="none", max_delay=None):
    """`ChannelParams` from scalars or `[S, R]` arrays; `max_delay` defaults to what they need."""
    if jitter_kind not in JITTER_KINDS:
        raise ValueError(f"jitter_kind must be one of {JITTER_KINDS}, got {jitter_kind!r}")
    shape = (n_senders, n_receivers)
    d = jnp.broadcast_to(jnp.asarray(delay, jnp.int32), shape)
    j = jnp.broadcast_to(jnp.asarray(jitter, float), shape)
    if max_delay is None:
        extra = 0 if jitter_kind == "none" else int(jnp.ceil(jnp.max(j) * (4 if jitter_kind == "gaussian" else 1)))
        max_delay = int(jnp.max(d)) + extra
    return ChannelParams(delay=d, loss_prob=jnp.broadcast_to(jnp.asarray(loss_prob, float), shape),
                         jitter=j, max_delay=int(max_delay), jitter_kind=jitter_kind)


def channel_init(params: ChannelParams, msg_dim: int, dtype=float) -> ChannelState:
    s, r = params.delay.shape
    depth = params.max_delay + 1
    zero = jnp.zeros((), jnp.int32)
    return ChannelState(data=jnp.zeros((depth, s, r, msg_dim), dtype), mask=jnp.zeros((depth, s, r), bool),
                        t=zero, last=jnp.zeros((s, r, msg_dim), dtype),
                        age=jnp.full((s, r), jnp.iinfo(jnp.int32).max // 2, jnp.int32),
                        sent=zero, dropped=zero, delivered=zero, delay=params.delay,
                        loss_prob=params.loss_prob, jitter=params.jitter)


def with_conditions(state: ChannelState, delay=None, loss_prob=None, jitter=None) -> ChannelState:
    """`state` whose links from now on have these conditions (scalars or `[S, R]`; None keeps one).

    Delays beyond the channel's `max_delay` are clipped to it when messages are sent
    (`sample_delay`), so `channel_params(max_delay=...)` must cover any drawn here."""
    shape = state.delay.shape
    return state.replace(
        delay=state.delay if delay is None else jnp.broadcast_to(jnp.asarray(delay, jnp.int32), shape),
        loss_prob=state.loss_prob if loss_prob is None else jnp.broadcast_to(
            jnp.asarray(loss_prob, state.loss_prob.dtype), shape),
        jitter=state.jitter if jitter is None else jnp.broadcast_to(jnp.asarray(jitter, state.jitter.dtype), shape))


def conditions(params: ChannelParams, state: ChannelState) -> ChannelParams:
    """`params` with the link conditions the channel state holds."""
    return params.replace(delay=state.delay, loss_prob=state.loss_prob, jitter=state.jitter)


def sample_delay(params: ChannelParams, key):
    """Per-link delay `[S, R]` for messages sent now: base + jitter, clipped to `[0, max_delay]`."""
    d = params.delay
    if params.jitter_kind == "uniform":
        d = d + jax.random.randint(key, d.shape, 0, jnp.floor(params.jitter).astype(jnp.int32) + 1)
    elif params.jitter_kind == "gaussian":
        d = d + jnp.round(params.jitter * jax.random.normal(key, d.shape)).astype(jnp.int32)
    return jnp.clip(d, 0, params.max_delay)


def send(params: ChannelParams, state: ChannelState, msgs: Messages, key) -> ChannelState:
    """Put `msgs` (sent at step `state.t`) in flight: each survives loss with `1 - loss_prob`
    (the link conditions of `state`, `conditions`)."""
    k_delay, k_loss = jax.random.split(key)
    depth = state.mask.shape[0]
    link = conditions(params, state)
    lost = jax.random.uniform(k_loss, msgs.mask.shape) < link.loss_prob
    ok = msgs.mask & ~lost
    slot = (state.t + sample_delay(link, k_delay)) % depth
    put = (jnp.arange(depth)[:, None, None] == slot[None]) & ok[None]
    return state.replace(
        data=jnp.where(put[..., None], msgs.data[None].astype(state.data.dtype), state.data),
        mask=state.mask | put, sent=state.sent + jnp.sum(msgs.mask, dtype=jnp.int32),
        dropped=state.dropped + jnp.sum(msgs.mask & lost, dtype=jnp.int32))


def receive(state: ChannelState):
    """Messages arriving at step `state.t` (zeros where nothing arrived); clears their slot."""
    i = state.t % state.mask.shape[0]
    mask = state.mask[i]
    data = jnp.where(mask[..., None], state.data[i], 0.0)
    state = state.replace(
        mask=state.mask.at[i].set(False), delivered=state.delivered + jnp.sum(mask, dtype=jnp.int32),
        last=jnp.where(mask[..., None], data, state.last), age=jnp.where(mask, 0, state.age))
    return Messages(data, mask), state


def step(state: ChannelState) -> ChannelState:
    """Advance the channel clock by one step."""
    return state.replace(t=state.t + 1, age=jnp.minimum(state.age, jnp.iinfo(jnp.int32).max // 2 - 1) + 1)


def transmit(params: ChannelParams, state: ChannelState, msgs: Messages, key):
    """`send`, `receive` and `step` in one call: `(messages delivered this step, state)`."""
    msgs_in, state = receive(send(params, state, msgs, key))
    return msgs_in, step(state)


# ----------------------------------------------------------------------------- delay lines

@struct.dataclass
class DelayLine:
    buf: jax.Array  # [max_delay + 1, n, ...]
    t: jax.Array  # [] int


def delay_init(x0, max_delay: int) -> DelayLine:
    """A delay line whose history is `x0 [n, ...]` (what a delayed reader sees at first)."""
    x0 = jnp.asarray(x0)
    return DelayLine(buf=jnp.broadcast_to(x0[None], (max_delay + 1,) + x0.shape), t=jnp.zeros((), jnp.int32))


def delay_push(line: DelayLine, x, delay):
    """Write `x [n, ...]` at this step, return `y` with `y[i] = x_{t - delay[i]}`, and advance."""
    depth = line.buf.shape[0]
    buf = line.buf.at[line.t % depth].set(x)
    d = jnp.clip(jnp.asarray(delay, jnp.int32), 0, depth - 1)
    slot = (line.t - d) % depth
    y = buf[slot, jnp.arange(x.shape[0])]
    return y, DelayLine(buf=buf, t=line.t + 1)


def ticks(t, interval, offset=0):
    """`[n]` bool: agents acting at step `t` (`(t - offset) % interval == 0`)."""
    interval = jnp.maximum(jnp.asarray(interval, jnp.int32), 1)
    return (t - jnp.asarray(offset, jnp.int32)) % interval == 0


def hold(new, held, acting):
    """`new` for acting agents, `held` for the others (leading agent axis)."""
    acting = jnp.reshape(acting, acting.shape + (1,) * (new.ndim - acting.ndim))
    return jnp.where(acting, new, held)


# ----------------------------------------------------------------------------- per-agent timing

@struct.dataclass
class TimingParams:
    tick_interval: jax.Array  # [n] int >= 1
    tick_offset: jax.Array  # [n] int
    act_delay: jax.Array  # [n] int
    obs_delay: jax.Array  # [n] int
    max_delay: int = struct.field(pytree_node=False, default=0)


@struct.dataclass
class TimingState:
    t: jax.Array  # [] int
    held: jax.Array  # [n, act_dim] last action chosen on a tick
    act_line: DelayLine
    obs_line: DelayLine


def timing_params(n, tick_interval=1, tick_offset=0, act_delay=0, obs_delay=0, max_delay=None):
    f = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.int32), (n,))
    p = TimingParams(tick_interval=f(tick_interval), tick_offset=f(tick_offset), act_delay=f(act_delay),
                     obs_delay=f(obs_delay), max_delay=0)
    need = int(max(jnp.max(p.act_delay), jnp.max(p.obs_delay)))
    return p.replace(max_delay=need if max_delay is None else int(max_delay))


def timing_init(params: TimingParams, default_action, obs0) -> TimingState:
    """Hold and action history start at `default_action [n, act_dim]`, observations at `obs0`."""
    return TimingState(t=jnp.zeros((), jnp.int32), held=jnp.asarray(default_action),
                       act_line=delay_init(default_action, params.max_delay),
                       obs_line=delay_init(obs0, params.max_delay))


def apply_action_timing(params: TimingParams, state: TimingState, actions):
    """Tick hold, then action delay. Returns `(effective actions, acting [n] bool, state)`."""
    acting = ticks(state.t, params.tick_interval, params.tick_offset)
    held = hold(jnp.asarray(actions, state.held.dtype), state.held, acting)
    eff, line = delay_push(state.act_line, held, params.act_delay)
    return eff, acting, state.replace(t=state.t + 1, held=held, act_line=line)


def apply_obs_timing(params: TimingParams, state: TimingState, obs):
    """Observation delay: `(obs each agent sees, state)`."""
    y, line = delay_push(state.obs_line, jnp.asarray(obs, state.obs_line.buf.dtype), params.obs_delay)
    return y, state.replace(obs_line=line)

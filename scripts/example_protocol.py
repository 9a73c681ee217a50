"""Writing a new protocol: "leader broadcasts the average" (horizontal), in under 100 lines.

What it sends: every follower reports its value to the leader (`s -> leader`), and the
leader broadcasts the average of the reports it has received to everyone (`leader -> r`),
both in one `[n, n, 1]` message tensor.
How it acts: each agent's command is the latest average it has received from the leader
(held when a broadcast is lost or late); the leader uses its own average at once.

Run it:  /work/venv/bin/python scripts/example_protocol.py
It steps the protocol through a channel with one step of delay and 20 % loss.
"""

import jax
import jax.numpy as jnp
from flax import struct

from pgjax.protocols import channels
from pgjax.protocols import REGISTRY, Messages, Protocol, register


@struct.dataclass
class Params:
    leader: jax.Array  # [] int, index of the leader agent
    n_agents: int = struct.field(pytree_node=False, default=2)


def init(params: Params):
    # last value reported by each agent (as the leader knows it) and last average each agent holds
    n = params.n_agents
    return {"reports": jnp.zeros(n), "known": jnp.zeros(n, bool), "average": jnp.zeros(n)}


def apply(params: Params, state, agent_outputs, messages_in):
    n, ld = params.n_agents, params.leader
    me = jnp.arange(n)
    value = jnp.asarray(agent_outputs["value"])
    # leader: update the reports that arrived (column `leader` of the incoming tensor), own value now
    got = messages_in.mask[:, ld] & (me != ld)
    reports = jnp.where(got, messages_in.data[:, ld, 0], state["reports"]).at[ld].set(value[ld])
    known = (state["known"] | got).at[ld].set(True)
    avg = jnp.sum(jnp.where(known, reports, 0.0)) / jnp.sum(known)
    # followers: adopt the leader's broadcast when it arrives (row `leader`), else hold
    heard = messages_in.mask[ld, :]
    average = jnp.where(heard, messages_in.data[ld, :, 0], state["average"]).at[ld].set(avg)
    # outgoing: followers -> leader (their value), leader -> all (the fresh average)
    to_leader = (me[None, :] == ld) & (me[:, None] != ld)
    from_leader = (me[:, None] == ld) & (me[None, :] != ld)
    data = jnp.where(to_leader, value[:, None], 0.0) + jnp.where(from_leader, avg, 0.0)
    msgs = Messages(data[..., None], to_leader | from_leader)
    return {"value": average}, msgs, {"reports": reports, "known": known, "average": average}


LEADER_AVERAGE = Protocol("leader_average", "horizontal", Params, init, apply, __doc__)
if LEADER_AVERAGE.name not in REGISTRY:
    register(LEADER_AVERAGE)


def run(n=5, steps=12, delay=1, loss_prob=0.2, seed=0):  # delay <= 3
    """Run the protocol through a channel with `jax.lax.scan`; returns the commands per step."""
    params = Params(leader=jnp.asarray(0), n_agents=n)
    values = jnp.arange(1.0, n + 1.0)  # constant local values; their mean is (n + 1) / 2
    cp = channels.channel_params(n, n, delay=delay, loss_prob=loss_prob, max_delay=3)  # static buffer depth

    def one_step(carry, key):
        ps, cs, msgs_in = carry
        cmd, out, ps = apply(params, ps, {"value": values}, msgs_in)
        msgs_in, cs = channels.transmit(cp, cs, out, key)
        return (ps, cs, msgs_in), cmd["value"]

    carry = (init(params), channels.channel_init(cp, 1), Messages.empty(n, n))
    _, trace = jax.jit(lambda c, k: jax.lax.scan(one_step, c, k))(
        carry, jax.random.split(jax.random.PRNGKey(seed), steps))
    return trace


if __name__ == "__main__":
    trace = run()
    for t, row in enumerate(trace):
        print(f"step {t:2d}: " + " ".join(f"{v:5.2f}" for v in row))
    print("target mean:", float(jnp.mean(jnp.arange(1.0, 6.0))))

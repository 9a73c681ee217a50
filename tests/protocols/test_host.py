"""Per-agent protocol messages on the host (`pgjax.protocols.host`) equal the compiled step's.

For every protocol a scenario can name: random imports, prices and actions, the coupling's
`step` compiled with `jax.jit` on an ideal channel, and each agent's host execution (what it
sends from its own values, what it observes from everyone's payloads) give the same message
features, agent by agent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.protocols import admm, host
from pgjax.protocols.coupling import Inputs, connection_terms

CASES = {  # protocol -> (kind, scenario overrides)
    "p2p_trading": ("horizontal", {"horizontal": "p2p_trading"}),
    "consensus": ("horizontal", {"horizontal": "consensus"}),
    "admm_dispatch": ("horizontal", {"horizontal": "admm_dispatch"}),
    "none": ("horizontal", {}),
    "setpoint": ("vertical", {"learned": "system", "vertical": "setpoint"}),
    "price_signal": ("vertical", {"learned": "system", "vertical": "price_signal"}),
}


def random_inputs(env, key):
    """`Inputs` of a reset state with random imports, price, net loads and actions."""
    _, state = env.reset(jax.random.PRNGKey(0))
    params = env.default_params
    ctx = env.context(state.start + state.t, params, state.vm_pu)
    n, d = env.coordinator.links.n_grid, env.dtype
    k = jax.random.split(key, 4)
    return Inputs(actions=jax.random.uniform(k[0], (env.num_agents, env.act_dim), d, -1.0, 1.0),
                  price=jax.random.uniform(k[1], (), d, 10.0, 120.0),
                  import_mw=jax.random.uniform(k[2], (n,), d, -1.5, 1.5),
                  net_load_mw=jax.random.uniform(k[3], (n,), d, -1.0, 1.0), ctx=ctx,
                  params=params.devices, states=state.devices)


@pytest.mark.parametrize("name", sorted(CASES))
def test_host_messages_equal_the_compiled_step(name):
    kind, overrides = CASES[name]
    env = pgjax.make("multi_microgrid", dtype="float64", **overrides)  # x64: consensus needs it
    coord, links, d = env.coordinator, env.coordinator.links, np.float64
    cp = coord.vertical if kind == "vertical" else coord.horizontal
    sp = host.spec(coord, kind)
    step = jax.jit(lambda st, inp, key: cp.step(links, st, inp, key))
    discount, scale = (np.asarray(x) for x in connection_terms(links, env.default_params.devices, env.dtype))
    largest = 0.0
    for seed in range(6):
        inputs = random_inputs(env, jax.random.PRNGKey(seed))
        out, _ = step(cp.init(links, env.dtype), inputs, jax.random.PRNGKey(99))
        reports = np.stack([np.asarray(x) for x in admm.agent_terms(links, inputs)], axis=-1) \
            if name == "admm_dispatch" else None
        local = [host.Local(import_mw=float(inputs.import_mw[i]), price=float(inputs.price),
                            sell_discount=float(discount[i]), price_scale=float(scale[i]),
                            report=None if reports is None else reports[i]) for i in range(links.n_grid)]
        if kind == "vertical":  # the learned operator is agent 0, the parent of every tracked child
            payload = sp.send(links, 0, host.Local(price=float(inputs.price), actions=np.asarray(inputs.actions[0])), d)
            sent = {0: payload}
        else:
            sent = {i: p for i in range(links.n_grid) if (p := sp.send(links, i, local[i], d)) is not None}
        got = np.stack([sp.receive(links, i, sent, local[i], d)[0] for i in range(links.n_grid)])
        want = np.asarray(out.messages)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6, err_msg=f"{name}, seed {seed}")
        largest = max(largest, float(np.abs(want).max(initial=0.0)))
    if name in ("p2p_trading", "setpoint", "price_signal", "consensus", "admm_dispatch"):
        assert largest > 0  # something was traded / sent


def test_a_protocol_without_host_execution_is_named():
    env = pgjax.make("multi_microgrid", dtype="float64", horizontal="consensus")
    saved = host.HORIZONTAL.pop("consensus")
    try:
        with pytest.raises(ValueError, match="'consensus': no per-agent execution"):
            host.spec(env.coordinator, "horizontal")
    finally:
        host.HORIZONTAL["consensus"] = saved

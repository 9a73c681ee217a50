"""A device type and a protocol written in a user's own module work from a YAML scenario, no core edit.

The module below lives outside `pgjax/` (written to a temporary folder and imported from
there, as a user's package would be); it registers a `heat_pump` device type and a
`peer_mean` horizontal protocol through the public registries, and a scenario names them.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from importlib import resources

import jax
import numpy as np
import pytest
import yaml

import pgjax

USER_MODULE = textwrap.dedent('''
    """A user's plug-ins: a controllable heat pump and a "mean of my peers' imports" protocol."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import struct

    from pgjax import devices, protocols
    from pgjax.protocols import channels
    from pgjax.devices import DeviceType, Feature, Field, Setpoint
    from pgjax.protocols import Messages, Protocol
    from pgjax.protocols.coupling import Coupling, Outputs, peer_channel_init


    @struct.dataclass
    class Params:
        bus: jax.Array
        p_max_mw: jax.Array


    @struct.dataclass
    class State:
        p_mw: jax.Array  # injection (negative: consumption)


    def decode(params, state, action, ctx):
        p = -params.p_max_mw * (jnp.clip(action[:, 0], -1.0, 1.0) + 1.0) / 2.0
        return Setpoint(p_mw=p, q_mvar=jnp.zeros_like(p), aux=jnp.zeros_like(p))


    HEAT_PUMP = DeviceType(
        name="heat_pump", params_cls=Params, state_cls=State,
        fields={"bus": Field("bus"), "p_max_mw": Field("float", unit="MW")}, act_dim=1, obs_dim=1,
        default_action=(-1.0,), init=lambda params, key: State(p_mw=jnp.zeros_like(params.p_max_mw)),
        decode=decode, dynamics=lambda params, state, sp, ctx: State(p_mw=sp.p_mw),
        cost=lambda params, state, sp, ctx: jnp.zeros_like(sp.p_mw),
        safety=lambda params, state, sp, ctx: jnp.zeros_like(sp.p_mw),
        observe=lambda params, state, ctx: (state.p_mw / params.p_max_mw)[:, None],
        obs_features=(Feature("p_mw", "MW"),), act_features=(Feature("p_mw", "MW", "-1 off .. +1 full power"),),
        obs_scale=lambda params: (np.asarray(params.p_max_mw)[:, None], 0.0), doc="a heat pump")


    def step(links, chan, inputs, key):
        msgs = Messages.broadcast(inputs.import_mw, links.adjacency)
        delivered, chan = channels.transmit(links.hparams, chan, msgs, key)
        heard = jnp.sum(jnp.where(delivered.mask, delivered.data[..., 0], 0.0), axis=0)
        mean = heard / jnp.maximum(jnp.sum(delivered.mask, axis=0), 1)
        return Outputs(received=jnp.zeros_like(mean), messages=mean[:, None], actions={}, n_sent=msgs.count,
                       info={}), chan


    PEER_MEAN = Protocol(
        "peer_mean", "horizontal", Params, init=lambda params: (), apply=lambda *a: ({}, None, ()),
        doc="each grid agent observes the mean of its peers' last imports",
        coupling=Coupling(features=(Feature("peer_mean_import_mw", "MW"),), init=peer_channel_init(1), step=step,
                          scale=lambda links: np.ones((links.n_grid, 1)), defaults={"graph": "complete"}))
    for entry, registry in ((HEAT_PUMP, devices.REGISTRY), (PEER_MEAN, protocols.REGISTRY)):
        if entry.name not in registry:
            registry.register(entry)
''')


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "my_grid_plugins.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module("my_grid_plugins")
    finally:
        sys.path.remove(str(folder))
    raw = yaml.safe_load(resources.files("pgjax").joinpath("scenarios/multi_microgrid.yaml").read_text())
    raw.pop("variants")
    mg1 = next(a for a in raw["agents"] if a["id"] == "MG1")
    mg1["devices"].append({"type": "heat_pump", "name": "hp1", "bus": "MG1 Bus 634", "p_max_mw": 0.3})
    raw["protocol"] = {"horizontal": "peer_mean"}
    return pgjax.make(raw, dtype="float64")


def _step(env, state, actions, key=1):
    return jax.jit(env.step)(jax.random.PRNGKey(key), state, actions, env.default_params)


def test_a_user_device_type_is_controlled_observed_and_in_the_power_flow(plugin_env):
    env = plugin_env
    col = env.layout.action.column("MG1", "heat_pump/hp1/p_mw")
    obs, state = env.reset(jax.random.PRNGKey(0))
    off = np.asarray(env.default_actions).copy()
    full = off.copy()
    full[env.agents.index("MG1"), col] = 1.0
    obs_off, _, _, _, _, info_off = _step(env, state, off)
    obs_on, _, _, _, _, info_on = _step(env, state, full)
    a = env.agents.index("MG1")
    np.testing.assert_allclose(env.layout.observation.decode(obs_on[a], "MG1", "heat_pump/hp1/p_mw"), -0.3, rtol=1e-9)
    np.testing.assert_allclose(env.layout.observation.decode(obs_off[a], "MG1", "heat_pump/hp1/p_mw"), 0.0, atol=1e-12)
    # 0.3 MW more load in MG1 is imported through MG1's transformer (plus a little loss)
    extra = float(info_on["grid_import_mw"][0] - info_off["grid_import_mw"][0])
    assert 0.3 <= extra < 0.3 * 1.05


def test_a_user_protocol_is_selectable_and_its_features_observed(plugin_env):
    env = plugin_env
    assert env.layout.observation.local("MG1", "message/MG1/peer_mean_import_mw") >= 0
    obs, state = env.reset(jax.random.PRNGKey(0))
    actions = np.asarray(env.default_actions)
    _, state, _, _, _, info1 = _step(env, state, actions, key=1)
    obs2, state, _, _, _, info2 = _step(env, state, actions, key=2)
    imports = np.asarray(info1["grid_import_mw"])  # measured at the end of step 1, sent during step 2
    for i, agent in enumerate(env.agents):
        peers = np.delete(imports, i)
        got = env.layout.observation.decode(obs2[i], agent, f"message/{agent}/peer_mean_import_mw")
        np.testing.assert_allclose(got, peers.mean(), rtol=1e-9)
    assert int(info2["messages_sent"]) == 6  # 3 agents x 2 peers

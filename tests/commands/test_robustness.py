"""Evaluation under other conditions than training (`pgjax eval --set`, `pgjax robustness --sweep`):
overrides reach the evaluated step (a delay shifts the received messages by exactly that many
steps), bad keys and values are named, a one-value sweep equals `pgjax eval --set`, and a
condition that changes what the policy observes is refused with the features that differ."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax.baselines.config import MAPPOConfig
from pgjax.baselines.rule_based import Controller, make_rollout
from pgjax.cli import main
from pgjax.commands.eval import test_env as eval_env
from pgjax.commands.robustness import grid, parse_sweeps
from pgjax.errors import InputError
from pgjax.scenario.keypaths import parse_sets

TINY = ["num_envs=2", "num_steps=24", "num_minibatches=1", "update_epochs=1", "actor_hidden=[8]", "critic_hidden=[8]",
        "total_timesteps=48"]


def cli(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code or 0


@pytest.fixture(scope="module")
def p2p_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness") / "p2p"
    assert cli("train", "--scenario", "multi_microgrid_p2p", "--out", str(out), *TINY) == 0
    return out


def test_a_delay_override_shifts_the_received_setpoints_by_exactly_its_steps():
    """`multi_microgrid_dso` (a learned operator sends setpoints): the evaluation env with
    `--set communication.msg_delay=d`, rolled out by `make_rollout` (pgjax eval's rollout)
    under the same open-loop actions, receives at step t what the undelayed one received at t - d."""
    cfg = MAPPOConfig(env="multi_microgrid_dso", env_kwargs={"dtype": "float64"})
    ref_env, _ = eval_env(cfg)
    steps = ref_env.episode_steps
    acts = jax.random.uniform(jax.random.PRNGKey(3), (steps, ref_env.num_agents, ref_env.act_dim), minval=-1, maxval=1)
    open_loop = Controller(lambda: jnp.zeros((), jnp.int32),
                           lambda t, key, obs, aux: (acts[jnp.minimum(t, steps - 1)], t + 1))
    received = {}
    for d in (0, 1, 3):
        env, _ = eval_env(cfg, parse_sets([f"communication.msg_delay={d}"]) if d else None)
        pos = np.array([env.layout.observation.position(k) for k in env.layout.observation.find(kind="message")])
        state_fn = lambda s, env=env, pos=pos: env.world_state(s, env.default_params)[pos]  # noqa: E731
        _, trace = make_rollout(env, [open_loop], 2, trace=True, state_fn=state_fn)(
            jax.random.PRNGKey(0))
        received[d] = np.asarray(trace["state"])  # [episodes, steps, n_grid] setpoints as observed
    assert np.ptp(received[0]) > 0.1  # the setpoints do change from step to step
    for d in (1, 3):
        np.testing.assert_allclose(received[d][:, d:], received[0][:, :-d], rtol=1e-9, atol=1e-12)
        assert not np.allclose(received[d], received[0])


def test_sweeps_parse_as_yaml_sequences_and_grid_is_the_product():
    sweeps = parse_sweeps(["communication.msg_delay=0,1,2,4", "communication.tick_interval=[1,2,1],1"])
    assert sweeps == {"communication.msg_delay": [0, 1, 2, 4], "communication.tick_interval": [[1, 2, 1], 1]}
    g = grid(sweeps)
    assert len(g) == 8 and g[1] == {"communication.msg_delay": 0, "communication.tick_interval": 1}
    for bad, match in ((["communication.msg_delay"], "KEY=V1,V2"), (["a=1", "a=2"], "given twice"),
                       (["a=[1,"], "not a YAML sequence")):
        with pytest.raises(InputError, match=match):
            parse_sweeps(bad)
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        parse_sets(["=2"])


@pytest.mark.slow
def test_eval_set_names_bad_keys_and_values_and_refuses_other_observations(p2p_run, capsys):
    for item, named in (("communication.msg_dealy=2", "communication.msg_dealy"),
                        ("communication.loss_prob=1.5", "communication.loss_prob"),
                        ("communication.msg_delay=-1", "communication.msg_delay"),
                        ("foo.bar=1", "foo")):
        assert cli("eval", str(p2p_run), "--episodes", "2", "--no-plot", "--no-oracle", "--set", item) == 2
        err = capsys.readouterr().err
        assert named in err and "error" in err, (item, err)
    assert cli("eval", str(p2p_run), "--episodes", "2", "--no-plot", "--no-oracle",
               "--set", "protocol.horizontal=none") == 2
    err = capsys.readouterr().err
    assert "cannot run there" in err and "message/MG1/p2p_mw" in err, err


@pytest.mark.slow
def test_a_one_value_sweep_equals_eval_set(p2p_run, capsys):
    assert cli("eval", str(p2p_run), "--episodes", "2", "--no-plot", "--no-oracle",
               "--set", "communication.msg_delay=2", "--set", "communication.loss_prob=0.3") == 0
    # written under the conditions' own names (the test year's eval.json is left alone)
    meta = json.loads((p2p_run / "eval_set_msg_delay-2_loss_prob-0.3_meta.json").read_text())
    assert meta["overrides"] == {"communication.msg_delay": 2, "communication.loss_prob": 0.3}
    evaluated = json.loads((p2p_run / "eval_set_msg_delay-2_loss_prob-0.3.json").read_text())
    out = p2p_run / "rob"
    assert cli("robustness", str(p2p_run), "--episodes", "2", "--out", str(out),
               "--sweep", "communication.msg_delay=2", "--sweep", "communication.loss_prob=0.3") == 0
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["controller"] for r in rows] == ["mappo", "random", "do_nothing", "rule_based"]
    for r in rows:
        for k in ("cost", "safety", "return_per_episode"):
            assert r[k] == evaluated[r["controller"]][k], (r["controller"], k)
    assert (out / "robustness.png").stat().st_size > 0 and (out / "robustness.csv").read_text().count("\n") == 5

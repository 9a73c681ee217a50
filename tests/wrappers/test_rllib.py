"""`scripts/train_rllib.py`: RLlib PPO on the PettingZoo shim, one policy (RLModule) per agent type.

The agent-type table needs only the shim; the training test needs `pip install -e '.[rllib]'`
(skipped when ray is not installed) and is `slow` (~30 s: Ray start-up, scenario compile,
one PPO iteration of a few hundred env steps).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from pgjax.wrappers.pettingzoo import parallel_env

PATH = Path(__file__).resolve().parents[2] / "scripts" / "train_rllib.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_rllib", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_agent_types_group_agents_by_spaces():
    mod = load_script()
    assert mod.agent_types(parallel_env("multi_microgrid")) == {"MG1": "grid", "MG2": "grid", "MG3": "grid"}
    env = parallel_env("voltage_control_33bw")  # R1, R3: 2 actions; R2, R4: 4 actions; all obs sizes differ
    types = mod.agent_types(env)
    assert set(types) == set(env.possible_agents)
    for a in env.possible_agents:
        for b in env.possible_agents:
            same = env.observation_space(a) == env.observation_space(b) and env.action_space(a) == env.action_space(b)
            assert (types[a] == types[b]) == same
    size = env.observation_space("R1").shape[0], env.action_space("R1").shape[0]
    assert types["R1"] == f"grid_o{size[0]}_a{size[1]}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # ray.init starts its processes by fork + exec
def test_one_ppo_iteration_on_multi_microgrid():
    pytest.importorskip("ray.rllib")
    mod = load_script()
    results = mod.train("multi_microgrid", iterations=1, seed=0, train_batch_size=240, minibatch_size=120,
                        num_epochs=1, verbose=False)
    assert len(results) == 1
    runners, learners = results[0]["env_runners"], results[0]["learners"]
    assert runners["num_env_steps_sampled"] > 0
    assert runners["num_episodes"] > 0 and math.isfinite(runners["episode_return_mean"])
    assert all(math.isfinite(v) for v in runners["agent_episode_returns_mean"].values())
    # one shared module 'grid' for MG1..MG3, and it is the one trained
    assert set(runners["module_episode_returns_mean"]) == {"grid"}
    assert set(runners["num_module_steps_sampled"]) == {"grid"}
    assert {m for m in learners if not m.startswith("__")} == {"grid"}
    assert math.isfinite(learners["grid"]["total_loss"])

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


def test_batched_grids_env_is_the_vector_env_per_grid():
    """`BatchedGridsEnv`: grid i of one RLlib env = environment i of `vector_env` (same seed and
    actions), every grid ends at the episode's last step with `__all__`, and RLlib's own
    multi-agent env check passes."""
    pytest.importorskip("ray.rllib")
    import numpy as np
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from pgjax.wrappers.pettingzoo import vector_env
    from pgjax.wrappers.rllib import BatchedGridsEnv, agent_type_of

    n = 3
    env = BatchedGridsEnv({"scenario": "multi_microgrid", "num_grids": n})
    assert env.possible_agents[:4] == ["MG1/0", "MG2/0", "MG3/0", "MG1/1"] and len(env.possible_agents) == 3 * n
    assert agent_type_of("MG3/2") == "MG3"
    check_multiagent_environments(env)
    venv = vector_env("multi_microgrid", num_envs=n)
    obs, _ = env.reset(seed=11)
    vobs, _ = venv.reset(seed=11)
    rng = np.random.default_rng(0)
    for t in range(venv.fenv.episode_steps):
        for a in venv.possible_agents:
            for i in range(n):
                np.testing.assert_array_equal(obs[f"{a}/{i}"], vobs[a][i])
        acts = {a: rng.uniform(-1, 1, (n,) + venv.single_action_space(a).shape).astype(np.float32)
                for a in venv.possible_agents}
        obs, rew, term, trunc, info = env.step({f"{a}/{i}": acts[a][i] for a in acts for i in range(n)})
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(acts)
        last = t == venv.fenv.episode_steps - 1
        assert trunc["__all__"] == last and not term["__all__"]
        for a in venv.possible_agents:
            for i in range(n):
                assert rew[f"{a}/{i}"] == pytest.approx(float(vrew[a][i]), rel=1e-12, abs=1e-12)
                assert info[f"{a}/{i}"]["cost"] == pytest.approx(float(vinfo[a]["cost"][i]), rel=1e-12, abs=1e-12)
                assert trunc[f"{a}/{i}"] == last
                if last:  # the episode's final observation, not the next episode's first
                    np.testing.assert_array_equal(obs[f"{a}/{i}"], vinfo[a]["final_obs"][i])
    obs, _ = env.reset()  # the next episode of every grid
    assert set(obs) == set(env.possible_agents)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_one_ppo_iteration_on_batched_grids():
    """PPO through `BatchedGridsEnv` (8 grids per env runner): all grids' copies of MG1..MG3 train the one module."""
    pytest.importorskip("ray.rllib")
    mod = load_script()
    results = mod.train("multi_microgrid", iterations=1, seed=0, train_batch_size=48, minibatch_size=48,
                        num_epochs=1, verbose=False, num_grids=8)
    runners, learners = results[0]["env_runners"], results[0]["learners"]
    assert mod.sampled_grid_steps(results[0], 8) == 8 * runners["num_env_steps_sampled"] >= 8 * 48
    assert runners["num_episodes"] > 0 and math.isfinite(runners["episode_return_mean"])
    assert set(runners["module_episode_returns_mean"]) == {"grid"}
    assert {m for m in learners if not m.startswith("__")} == {"grid"}
    assert math.isfinite(learners["grid"]["total_loss"])

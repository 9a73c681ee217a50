"""Fixtures of the message-exchanging deployment tests (imported by name): an export of the fixed-weight
test policy (`deploy_fixtures.fixed_policy_state`) trained on `multi_microgrid_p2p`, its environment, and
`hil_day`: a lock-step plant on a free port with one `MessagingController` per agent, against a real
Mosquitto (`broker_fixtures.broker`), all in one event loop."""

from __future__ import annotations

import asyncio

import jax
import pytest
import yaml

from pgjax.baselines.mappo import CHECKPOINT, CONFIG, MAPPOConfig, make_train, save_checkpoint
from pgjax.runio import write_atomic
from deploy_fixtures import CONFIG_KW, fixed_policy_state

# How long a lock-step agent waits for a period's messages. The controllers and the plant of a test
# share one event loop, and on a loaded CI machine (another xdist worker compiling) the loop can stall
# for seconds; a healthy period takes milliseconds, so this bounds only a failing run. Fault tests
# that want the fallback pass a short `wait_s` themselves.
LOCKSTEP_WAIT_S = 20.0

P2P = "multi_microgrid_p2p"


def export_for(scenario, tmp_path_factory, **env_kwargs):
    from pgjax.deploy.export import export_run

    cfg = MAPPOConfig(**{**CONFIG_KW, "env": scenario, "env_kwargs": {**CONFIG_KW["env_kwargs"], **env_kwargs}})
    run = tmp_path_factory.mktemp("run")
    train = make_train(cfg)
    state = fixed_policy_state(train, jax.random.PRNGKey(cfg.seed))
    write_atomic(run / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    save_checkpoint(run / CHECKPOINT, state, 0)
    out = tmp_path_factory.mktemp("export")
    export_run(run, out)
    return out


@pytest.fixture(scope="session")
def p2p_export(tmp_path_factory):
    return export_for(P2P, tmp_path_factory)


@pytest.fixture(scope="session")
def p2p_env():
    import pgjax

    return pgjax.make(P2P, **CONFIG_KW["env_kwargs"])


def run_day(env, export, url, steps, tmp_path, groups, faults=(), during=None, **ctl_kw):
    """A lock-step plant and one controller per agent group (the first writes the heartbeat) for `steps`
    periods; `during(plant, controllers)` runs alongside. Returns `(plant, controllers, summaries)`."""
    from pgjax.deploy.agents import MessagingController
    from pgjax.deploy.device_map import map_for_env, parse_map
    from pgjax.deploy.plant import Plant

    dmap = parse_map(map_for_env(env, port=0))
    ctl_kw.setdefault("wait_s", LOCKSTEP_WAIT_S)

    async def main():
        plant = Plant(env, dmap, day=0, faults=faults, log_path=tmp_path / "plant.jsonl", steps=steps)
        await plant.start()
        ctls = [MessagingController(export, dmap, url, env=env, lockstep=True, agents=tuple(g), heartbeat=j == 0,
                                    port=plant.port, read_timeout_s=2.0, period_s=0.01, log_path=tmp_path / f"deploy{j}.jsonl",
                                    bus_log=tmp_path / f"bus{j}.jsonl", **ctl_kw)
                for j, g in enumerate(groups)]
        try:
            jobs = [c.run(periods=steps) for c in ctls] + ([during(plant, ctls)] if during else [])
            summaries = await asyncio.gather(*jobs)
        finally:
            await plant.stop()
        return plant, ctls, summaries[:len(ctls)]

    return asyncio.run(main())


DSO = "multi_microgrid_dso"


@pytest.fixture(scope="session")
def dso_export(tmp_path_factory):
    return export_for(DSO, tmp_path_factory)


@pytest.fixture(scope="session")
def dso_env():
    import pgjax

    return pgjax.make(DSO, **CONFIG_KW["env_kwargs"])


def run_dso_day(env, export, url, steps, tmp_path, passwords=None, **kw):
    """A lock-step plant, the operator's process (`VerticalParent`, heartbeat) and one `ChildRelay` per
    microgrid, in one event loop (`passwords`: agent -> its broker password)."""
    from pgjax.deploy.agents import ChildRelay, VerticalParent
    from pgjax.deploy.device_map import map_for_env, parse_map
    from pgjax.deploy.plant import Plant

    dmap = parse_map(map_for_env(env, port=0))

    async def main():
        plant = Plant(env, dmap, day=0, log_path=tmp_path / "plant.jsonl", steps=steps)
        await plant.start()
        common = dict(env=env, lockstep=True, port=plant.port, read_timeout_s=2.0, period_s=0.01,
                      **{"wait_s": LOCKSTEP_WAIT_S, **kw})
        pw = passwords or {}
        ctls = [VerticalParent(export, dmap, url, log_path=tmp_path / "op.jsonl", bus_log=tmp_path / "bus_op.jsonl",
                               credentials={k: v for k, v in pw.items() if k == "DSO"}, **common)]
        ctls += [ChildRelay(export, dmap, url, c, heartbeat=False, bus_log=tmp_path / f"bus_{c}.jsonl",
                            credentials={k: v for k, v in pw.items() if k == c}, **common)
                 for c in ("MG1", "MG2", "MG3")]
        try:
            summaries = await asyncio.gather(*[c.run(periods=steps) for c in ctls])
        finally:
            await plant.stop()
        return plant, ctls, summaries

    return asyncio.run(main())

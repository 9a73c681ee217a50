"""`pgjax/commands/compare_protocols.py` (`pgjax compare`) on two configurations, two episodes each.

`none` and `p2p` under the random policy (the rule-based microgrids rarely have a surplus to
trade on two days); the time is the two compilations (~20 s each on an idle 2-core machine).
"""

from __future__ import annotations

import csv
import math

import pytest


def load_script():
    from pgjax.commands import compare_protocols

    return compare_protocols


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    script = load_script()
    rows = script.compare(script.build_parser().parse_args(["--configs", "none,p2p", "--episodes", "2",
                                                            "--policy", "random", "--out", str(out)]))
    return out, {r["config"]: r for r in rows}


def test_writes_csv_and_png(result):
    out, _ = result
    assert (out / "compare.png").stat().st_size > 0
    with open(out / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["config"] for r in table] == ["none", "p2p"]


def test_metrics(result):
    _, rows = result
    metrics = [k for k, _, _, _ in load_script().METRICS]
    for r in rows.values():
        assert r["episodes"] == 2
        assert all(math.isfinite(r[k]) for k in metrics), r
    assert rows["none"]["messages_sent"] == 0
    assert rows["p2p"]["messages_sent"] > 0
    assert rows["p2p"]["p2p_volume_mwh"] > 0 and rows["none"]["p2p_volume_mwh"] == 0
    # the same days and actions; p2p trades are financial, so the physics is unchanged
    for k in ("price", "voltage_violation_rate", "import_mwh", "curtailment_mwh"):
        assert rows["p2p"][k] == pytest.approx(rows["none"][k], rel=1e-6)


def test_controllers_read_the_price():
    """The DSO rule forwards the market price; the grid rule-based controller sees it despite message features."""
    import jax
    import numpy as np

    import pgjax

    cp = load_script()
    key = jax.random.PRNGKey(3)
    for kw in ({"vertical": "price_signal", "learned": "system"}, {"horizontal": "p2p_trading"}):
        env = pgjax.make("multi_microgrid", split="test", **kw)
        obs, state = env.reset(key)
        obs = obs.astype(np.float32)  # as the rollouts see it (`pgjax.baselines.common.MARLEnv`)
        price = float(env.context(state.start + state.t, env.default_params, state.vm_pu).price)
        ctrl, _ = cp.policy_for("rule_based", env)
        actions, history = ctrl.act(ctrl.init(), key, obs, None)
        if cp.is_system(env):
            links = env.coordinator.links
            lo, hi = links.options["price_min"], links.options["price_max"]
            sent = (np.asarray(actions)[links.parent_agent, links.parent_col] + 1) / 2 * (hi - lo)
            np.testing.assert_allclose(sent, np.clip(price, lo, hi), rtol=1e-5)
        else:  # the rule-based controller stores the observed price in its 24 h history
            assert np.any(np.isclose(np.asarray(history), price, rtol=1e-5))

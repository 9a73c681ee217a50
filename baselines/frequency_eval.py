"""Evaluate controllers of `frequency_68bus` on test episodes: the frequency metrics per controller.

    env = pgjax.make("frequency_68bus", split="test")
    results = evaluate(env, controllers(env), jax.random.PRNGKey(0), num_episodes=32)
    print(table(results))

Every controller runs on the same episodes (same key: same loads, renewables and
contingencies), in one compiled rollout (`pgjax.baselines.rule_based.make_rollout`).
Metrics (`METRICS`): `in_band_rate` (fraction of steps in which no bus left
[59.5, 60.5] Hz, contingencies included), `violations_per_episode` (bus-steps out of the
band), `outside_band_s_per_episode`, `nadir_hz` / `zenith_hz` (extremes over all episodes)
and their means per episode, `rocof_max_hz_s` (largest centre-of-inertia RoCoF),
`return_per_episode`, `freq_penalty_per_episode`, `control_cost_per_episode`,
`effort_mw_per_episode` (sum of |output changes|).
"""

from __future__ import annotations

import jax
import numpy as np

from pgjax.baselines.frequency import controllers
from pgjax.baselines.rule_based import make_rollout

METRICS = (("in_band_rate", "in band", "{:.4f}"), ("violations_per_episode", "viol/ep", "{:.2f}"),
           ("outside_band_s_per_episode", "out s/ep", "{:.1f}"), ("nadir_hz", "nadir Hz", "{:.3f}"),
           ("zenith_hz", "zenith Hz", "{:.3f}"), ("rocof_max_hz_s", "RoCoF Hz/s", "{:.3f}"),
           ("return_per_episode", "return/ep", "{:,.0f}"), ("freq_penalty_per_episode", "freq pen/ep", "{:,.0f}"),
           ("control_cost_per_episode", "cost/ep", "{:,.0f}"), ("effort_mw_per_episode", "effort MW/ep", "{:,.1f}"))


def summarize(totals: dict, info: dict) -> dict[str, float]:
    """Per-episode totals `[n]` and per-step infos `[n, steps]` -> the metrics of the module docstring."""
    f_min, f_max = np.asarray(info["f_min_hz"]), np.asarray(info["f_max_hz"])
    return {
        "episodes": int(f_min.shape[0]), "in_band_rate": float(np.mean(info["in_band"])),
        "violations_per_episode": float(np.mean(totals["violations"])),
        "outside_band_s_per_episode": float(np.mean(totals["outside_band_s"])),
        "nadir_hz": float(f_min.min()), "nadir_mean_hz": float(f_min.min(1).mean()),
        "zenith_hz": float(f_max.max()), "zenith_mean_hz": float(f_max.max(1).mean()),
        "rocof_max_hz_s": float(np.max(info["rocof_hz_s"])),
        "return_per_episode": float(np.mean(totals["return"])),
        "freq_penalty_per_episode": float(np.mean(totals["freq_penalty"])),
        "control_cost_per_episode": float(np.mean(totals["cost"])),
        "effort_mw_per_episode": float(np.mean(totals["effort_mw"])),
    }


def evaluate(env, controllers: dict, key, num_episodes: int = 32, aux=None) -> dict[str, dict[str, float]]:
    """`{name: metrics}` of every `Controller` in `controllers` on `num_episodes` episodes of `env`
    (`aux`, e.g. a MAPPO `TrainState`, is passed to every controller's `act`)."""
    names = list(controllers)
    run = make_rollout(env, [controllers[n] for n in names], num_episodes, trace=True)
    out = {}
    for i, name in enumerate(names):
        totals, trace = run(key, i, aux)
        out[name] = summarize(totals, trace["info"])
    return out


def evaluate_run(env, policy, states, num_seeds: int, key, num_episodes: int = 32,
                 detail: bool = False) -> dict[str, dict]:
    """A trained run against the baselines: `policy` a `Controller` whose `act` takes one seed's
    state as `aux`, `states` the run's states stacked on a leading `[num_seeds]` axis.

    `results["mappo"]` holds the means over seeds and `<metric>_per_seed` lists for the in-band
    rate, violations and return; the baselines run with seed 0's state as (ignored) `aux`.
    `detail`: each baseline also lists every episode's metrics (`per_episode`: metric ->
    `[num_episodes]`, `summarize`d over that episode alone) and mappo the same per seed (`per_seed`).
    """
    ctrls = {"mappo": policy, **controllers(env)}
    names = list(ctrls)
    run = make_rollout(env, [ctrls[n] for n in names], num_episodes, trace=True)
    seed = lambda i: jax.tree.map(lambda x: x[i], states)  # noqa: E731
    seed_runs = [run(key, 0, seed(i)) for i in range(num_seeds)]
    per_seed = [summarize(totals, trace["info"]) for totals, trace in seed_runs]
    mappo = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    for k in ("in_band_rate", "violations_per_episode", "return_per_episode"):
        mappo[f"{k}_per_seed"] = [m[k] for m in per_seed]
    if detail:
        mappo["per_seed"] = [per_episode(totals, trace["info"]) for totals, trace in seed_runs]
    results = {"mappo": mappo}
    for i, name in enumerate(names[1:], start=1):
        totals, trace = run(key, i, seed(0))
        results[name] = summarize(totals, trace["info"])
        if detail:
            results[name]["per_episode"] = per_episode(totals, trace["info"])
    return results


def per_episode(totals: dict, info: dict) -> dict[str, list]:
    """metric -> `[n]` values, each `summarize`d over one episode's totals `[n]` and infos `[n, steps]` alone."""
    n = len(np.asarray(info["f_min_hz"]))
    rows = [summarize({k: np.asarray(v)[j:j + 1] for k, v in totals.items()},
                      {k: np.asarray(v)[j:j + 1] for k, v in info.items()}) for j in range(n)]
    return {k: [r[k] for r in rows] for k in rows[0]}


def evaluate_policy(env, policy, states, num_seeds: int, key, num_episodes: int,
                    detail: bool = False) -> tuple[dict, str]:
    """`pgjax eval`'s hook for this family: `(results, table text)` of a trained run against the
    baselines (`evaluate_run`; `detail`: per-seed and per-episode metrics too)."""
    results = evaluate_run(env, policy, states, num_seeds, key, num_episodes, detail=detail)
    return results, table(results)


def table(results: dict[str, dict[str, float]]) -> str:
    """The metrics as a fixed-width text table, one row per controller."""
    head = f"{'controller':<12}" + "".join(f"{label:>14}" for _, label, _ in METRICS)
    rows = [head, "-" * len(head)]
    for name, m in results.items():
        rows.append(f"{name:<12}" + "".join(f"{fmt.format(m[k]):>14}" for k, _, fmt in METRICS))
    return "\n".join(rows)


def main(seed: int = 0, episodes: int = 16) -> None:
    """Print the baselines' table on the test split (`python -m pgjax.baselines.frequency_eval`)."""
    import pgjax
    env = pgjax.make("frequency_68bus", split="test")
    print(table(evaluate(env, controllers(env), jax.random.PRNGKey(seed), episodes)))


if __name__ == "__main__":
    main()

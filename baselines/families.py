"""Env families that bring their own baselines and metrics to `pgjax eval`.

`evaluator(env)` is `None` for compiled pgjax scenarios (evaluated against random,
do-nothing, rule-based and the oracle by `pgjax.commands.eval`) and, for a family of
`EVALUATORS`, a function `(env, policy, states, num_seeds, key, num_episodes, detail)
-> (results, table text)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

EVALUATORS: dict[str, str] = {"frequency_68bus": "pgjax.baselines.frequency_eval:evaluate_policy"}


def evaluator(env) -> Callable | None:
    """The family evaluator of `env` (by `env.name`), or None."""
    target = EVALUATORS.get(getattr(env, "name", None))
    if target is None:
        return None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)

"""Frequency control on the IEEE 68-bus system (the `frequency_68bus` scenario family).

- `dynamics`: linearized multi-machine swing equations with governors, Kron-reduced network,
  exact sub-step discretization (pure, jit / vmap-able);
- `ieee68`: the 68-bus plant linearized at its AC power flow (`pgjax.powerflow`);
- `env`: the 20-agent environment (`FrequencyEnv`, `make`), the same functional API as
  `pgjax.make(...)` environments;

Its reference controllers (no control, primary droop, AGC, random) and their evaluation with
the frequency metrics live with the other baselines: `pgjax.baselines.frequency`,
`pgjax.baselines.frequency_eval` (an env family does not import its controllers).
"""

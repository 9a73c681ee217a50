"""Frequency control on the IEEE 68-bus system (the `frequency_68bus` scenario family).

- `dynamics`: linearized multi-machine swing equations with governors, Kron-reduced network,
  exact sub-step discretization (pure, jit / vmap-able);
- `ieee68`: the 68-bus plant linearized at its AC power flow (`pgjax.powerflow`);
- `env`: the 20-agent environment (`FrequencyEnv`, `make`), the same functional API as
  `pgjax.make(...)` environments;
- `baselines`: no control, primary droop, AGC (PI on ACE) and random policies;
- `evaluate`: rollouts of those and of trained MAPPO runs, with the frequency metrics.
"""

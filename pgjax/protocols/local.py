"""Local controllers: droop (P-f, Q-V) and volt-var curves, as pure functions.

All functions are elementwise over `[n]` device arrays (jit / vmap friendly) and return
setpoints in MW / Mvar clipped to the given limits; `to_action` maps a setpoint back into
the device's [-1, 1] action range so a controller can stand in for an agent (rule-based
agents, baselines).

- `droop_pf`: `p = p_set - (f - f_nom) / (droop f_nom) * p_rated` outside a deadband
  (droop as a fraction, e.g. 0.05 = 5 %): frequency above nominal lowers output.
- `droop_qv`: `q = q_set - (v - v_ref) / droop_v * q_max` (droop_v in pu of voltage for a
  full `q_max` swing), outside a deadband: high voltage absorbs reactive power.
- `volt_var`: IEEE 1547-2018 style piecewise-linear curve through
  `(v1, q1), (v2, 0), (v3, 0), (v4, q4)` as fractions of the rating, flat outside
  (defaults: Category B, 0.92/0.98/1.02/1.08 pu, +-0.44).

They send no messages, so they are not registered protocols: a device type's `rule` or a
baseline controller calls them (the frequency task's governors use `droop_pf`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CATEGORY_B = ((0.92, 0.44), (0.98, 0.0), (1.02, 0.0), (1.08, -0.44))


def _deadband(x, db):
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - db, 0.0)


def droop_pf(f_hz, p_set_mw, p_rated_mw, p_min_mw, p_max_mw, f_nom_hz=50.0, droop=0.05, deadband_hz=0.0):
    """Active power from frequency (governor / inverter P-f droop)."""
    df = _deadband(f_hz - f_nom_hz, deadband_hz)
    return jnp.clip(p_set_mw - df / (droop * f_nom_hz) * p_rated_mw, p_min_mw, p_max_mw)


def droop_qv(v_pu, q_max_mvar, q_set_mvar=0.0, v_ref_pu=1.0, droop_v=0.05, deadband_pu=0.0):
    """Reactive power from voltage (Q-V droop), within `[-q_max, q_max]`."""
    dv = _deadband(v_pu - v_ref_pu, deadband_pu)
    return jnp.clip(q_set_mvar - dv / droop_v * q_max_mvar, -q_max_mvar, q_max_mvar)


def volt_var(v_pu, s_rated_mva, curve=CATEGORY_B):
    """Reactive power (Mvar, injection positive) from the piecewise-linear volt-var `curve`.

    `curve`: 4 `(v_pu, q_fraction_of_rating)` points with increasing voltages, as a tuple or
    an array `[4, 2]` (or `[n, 4, 2]` for per-device curves).
    """
    c = jnp.asarray(curve, jnp.result_type(v_pu, jnp.float32))
    v = jnp.asarray(v_pu)
    if c.ndim == 2:
        frac = jnp.interp(v, c[:, 0], c[:, 1])
    else:
        frac = jax.vmap(jnp.interp)(v, c[..., 0], c[..., 1])
    return frac * s_rated_mva


def to_action(setpoint, lo, hi):
    """Invert the devices' linear decode: the action in [-1, 1] giving `setpoint` in `[lo, hi]`."""
    span = jnp.maximum(hi - lo, 1e-12)
    return jnp.clip(2.0 * (setpoint - lo) / span - 1.0, -1.0, 1.0)

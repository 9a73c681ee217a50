"""Voltage unbalance of three-phase buses from their phase voltages (IEC 61000-4-30 / -2-2).

The voltage-unbalance factor is `VUF = |V2| / |V1| * 100` (%), with the positive- and
negative-sequence components of the three phase voltages

    V1 = (Va + a Vb + a^2 Vc) / 3,    V2 = (Va + a^2 Vb + a Vc) / 3,    a = exp(j 2 pi / 3).

Phase-to-neutral and phase-to-phase voltages give the same factor (the zero sequence drops
out of both components, and the line voltages' sequences are the phase voltages' times
`sqrt(3)` rotated by +-30 degrees).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def three_phase_buses(node_names) -> tuple[list[str], np.ndarray]:
    """`(bus names, nodes [n_3ph_bus, 3])`: every bus with phases 1, 2 and 3 among `node_names`
    (`bus.phase`, OpenDSS's order), and the node index of its phases a, b, c."""
    index = {n: i for i, n in enumerate(node_names)}
    buses = []
    for n in node_names:
        bus = n.rsplit(".", 1)[0]
        if bus not in buses and all(f"{bus}.{p}" in index for p in (1, 2, 3)):
            buses.append(bus)
    return buses, np.array([[index[f"{b}.{p}"] for p in (1, 2, 3)] for b in buses], np.int64).reshape(-1, 3)


def vuf_percent(v_re, v_im) -> jnp.ndarray:
    """Voltage-unbalance factor `[...]` % of phase voltages `v_re`, `v_im` `[..., 3]` (a, b, c;
    any common unit); 0 where the positive sequence is 0 (a dead bus)."""
    a = jnp.exp(2j * jnp.pi / 3).astype(jnp.result_type(v_re, jnp.complex64))
    v = v_re + 1j * v_im
    v1 = (v[..., 0] + a * v[..., 1] + a * a * v[..., 2]) / 3
    v2 = (v[..., 0] + a * a * v[..., 1] + a * v[..., 2]) / 3
    m1 = jnp.abs(v1)
    return jnp.where(m1 > 0, 100 * jnp.abs(v2) / jnp.where(m1 > 0, m1, 1), 0)

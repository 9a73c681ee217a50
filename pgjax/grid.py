"""A power network as a pytree of fixed-shape arrays.

`Grid` is what every pgjax function takes: buses, branches and injection tables, each a
`flax.struct` dataclass of arrays with a leading element axis. Shapes are the only static
information; topology (index arrays) and parameters are data, so grids of the same padded
shape batch with `jax.vmap` and padded entries change no result.

Conventions (the same as pandapower's):
- per-unit quantities are on the system base `sn_mva` and each bus's `vn_kv`;
- loads and storage consume (`p_mw > 0` draws power), static generators, generators and
  external grids inject;
- bus types follow MATPOWER: 1 PQ, 2 PV, 3 reference (slack), 4 isolated or padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.precision import require_x64

PQ, PV, REF, NONE = 1, 2, 3, 4


@struct.dataclass
class Buses:
    """Bus table, all `[n_bus]`."""

    vn_kv: jax.Array  # rated voltage, kV
    bus_type: jax.Array  # int: PQ=1, PV=2, REF=3, NONE=4 (isolated or padding)
    gs_mw: jax.Array  # fixed shunt conductance, MW consumed at 1 pu
    bs_mvar: jax.Array  # fixed shunt susceptance, Mvar injected at 1 pu
    mask: jax.Array  # bool: a real bus (False for padding)


@struct.dataclass
class Branches:
    """Lines, transformers and impedances as one pi model, all `[n_branch]`.

    The model is pandapower's (MATPOWER's with asymmetric extensions): a series admittance
    `1/(r + jx)` at the from end and `1/(r + r_asym + j(x + x_asym))` at the to end,
    charging `g + jb` (from) and `g + g_asym + j(b + b_asym)` (to), and an ideal
    transformer `tap * exp(j shift)` at the from end.
    """

    from_bus: jax.Array  # int
    to_bus: jax.Array  # int
    r_pu: jax.Array
    x_pu: jax.Array
    g_pu: jax.Array
    b_pu: jax.Array
    r_asym_pu: jax.Array
    x_asym_pu: jax.Array
    g_asym_pu: jax.Array
    b_asym_pu: jax.Array
    tap: jax.Array  # off-nominal ratio, 1 for lines
    shift_deg: jax.Array  # phase shift, degrees
    i_max_from_ka: jax.Array  # current rating at the from end (inf when unrated)
    i_max_to_ka: jax.Array  # current rating at the to end (inf when unrated)
    in_service: jax.Array  # bool (False for padding)


@struct.dataclass
class Injections:
    """A table of constant-power elements (loads, static generators, storage, wards).

    All `[n_elements]`; `p_mw`/`q_mvar` in the table's own sign convention, see `Grid`.
    """

    bus: jax.Array  # int, grid bus index
    p_mw: jax.Array
    q_mvar: jax.Array
    in_service: jax.Array  # bool (False for padding)


@struct.dataclass
class Generators:
    """Voltage-controlled generators (pandapower `gen`, PV buses), all `[n_gen]`."""

    bus: jax.Array  # int
    p_mw: jax.Array  # active power injected
    vm_pu: jax.Array  # voltage setpoint
    in_service: jax.Array  # bool


@struct.dataclass
class ExtGrids:
    """External grids (slack), all `[n_ext_grid]`."""

    bus: jax.Array  # int
    vm_pu: jax.Array
    va_deg: jax.Array
    slack_weight: jax.Array  # share of the bus's slack power when several sit at one bus
    in_service: jax.Array  # bool


@struct.dataclass
class Grid:
    """A network: `sn_mva` (scalar system base) and its tables.

    Sign conventions: `load`, `storage` and `ward` consume (positive `p_mw` is drawn from
    the grid); `sgen`, `gen` and `ext_grid` inject.
    """

    sn_mva: jax.Array  # [] system base, MVA
    bus: Buses
    branch: Branches
    load: Injections
    sgen: Injections
    storage: Injections
    ward: Injections
    gen: Generators
    ext_grid: ExtGrids

    @property
    def n_bus(self) -> int:
        return self.bus.vn_kv.shape[-1]

    @property
    def n_branch(self) -> int:
        return self.branch.from_bus.shape[-1]


# Value given to padded rows of each field; fields not listed pad with zeros / False.
_PAD_VALUES = {
    "bus_type": NONE,
    "vn_kv": 1.0,
    "x_pu": 1.0,
    "tap": 1.0,
    "i_max_from_ka": np.inf,
    "i_max_to_ka": np.inf,
    "vm_pu": 1.0,
}


def _pad_table(table, n: int, name: str):
    """Pad every array of a table along its last axis to length `n`."""

    def pad_field(field_name, value):
        value = np.asarray(value)
        have = value.shape[-1]
        if have > n:
            raise ValueError(f"pad: table '{name}' has {have} rows, more than the requested {n}")
        fill = _PAD_VALUES.get(field_name, 0)
        widths = [(0, 0)] * (value.ndim - 1) + [(0, n - have)]
        return np.pad(value, widths, constant_values=np.asarray(fill, dtype=value.dtype))

    return table.replace(**{k: pad_field(k, getattr(table, k)) for k in table.__dataclass_fields__})


TABLES = ("bus", "branch", "load", "sgen", "storage", "ward", "gen", "ext_grid")


def shape_of(grid: Grid) -> dict[str, int]:
    """Rows per table: `{"bus": n_bus, "branch": n_branch, "load": ..., ...}`."""
    return {t: int(np.shape(jax.tree.leaves(getattr(grid, t))[0])[-1]) for t in TABLES}


def pad(grid: Grid, **sizes: int) -> Grid:
    """Pad tables to the given row counts (`n_bus=..., n_branch=..., n_load=...`).

    Padded buses are isolated (`bus_type` NONE), padded branches and elements out of
    service; results on real entries are unchanged. Tables not named keep their size.
    """
    unknown = set(sizes) - {f"n_{t}" for t in TABLES}
    if unknown:
        raise ValueError(f"pad: unknown sizes {sorted(unknown)}; expected n_<table> for tables {TABLES}")
    current = shape_of(grid)
    tables = {t: _pad_table(getattr(grid, t), sizes.get(f"n_{t}", current[t]), t) for t in TABLES}
    return grid.replace(**tables)


def stack(grids: list[Grid]) -> Grid:
    """Pad grids to common sizes and stack them on a leading batch axis.

    The result feeds `jax.vmap(solve)`; padded entries change no result.
    """
    if not grids:
        raise ValueError("stack: no grids given")
    shapes = [shape_of(g) for g in grids]
    sizes = {f"n_{t}": max(s[t] for s in shapes) for t in TABLES}
    padded = [pad(g, **sizes) for g in grids]
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *padded)


def astype(grid: Grid, dtype) -> Grid:
    """Cast every floating-point array of the grid to `dtype` (float32 or float64).

    float64 needs JAX's 64-bit mode (`pgjax.precision.require_x64` raises otherwise).
    """
    require_x64(f"pgjax.grid.astype(grid, {np.dtype(dtype).name})", dtype)
    return jax.tree.map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else jnp.asarray(x),
        grid,
    )

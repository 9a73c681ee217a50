"""A three-phase (unbalanced) network as a pytree of fixed-shape arrays.

`Grid3ph` is the three-phase counterpart of `pgjax.grid.Grid`: one entry per *node* (a bus
conductor, OpenDSS's `bus.phase`), so a bus without phase b simply has no node for it. The
network between nodes is a list of primitive admittance blocks, one per power-delivery
element (line, switch, transformer or regulator winding set, capacitor, reactor), exactly as
OpenDSS builds its system matrix from `YPrim`; loads are separate nonlinear branches (wye:
phase to neutral, delta: phase to phase) with their OpenDSS model as voltage exponents.

Conventions:
- per-unit: every node has its own base `vbase_kv` (line-to-neutral kV, OpenDSS's
  `kVBase`); powers are on `s_base_kva` (per node, not per three phases). An admittance in
  siemens becomes per unit as `y_pu = y_S * vb_i * vb_j * 1e3 / s_base_kva` (kV, kVA);
- node index `n_node` is ground (and where padded conductors point): its voltage is 0;
- loads consume (`p_kw > 0` draws power); sources inject;
- float32: admittances are double-float32 pairs, `y = y_pu + y_lo_pu` (the remainder that
  rounding `y` to float32 drops, `astype`), so the host can prepare the ill-conditioned
  system matrix of a concrete float32 grid from the float64 network (`exact_float64`);
  float64 grids carry `y_lo_pu = 0`;
- padding: `mask = False` entries (nodes, elements, sources, loads) change no result, so
  feeders padded to one shape (`pad`) batch with `jax.vmap` (`stack`).

Shapes: `[n_node]`, `[n_elem, n_cond]`, `[n_elem, n_cond, n_cond]`, `[n_src, n_src_cond]`,
`[n_load]`. Only shapes are static; indices and values are data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgjax.errors import InputError
from pgjax.precision import require_x64

# Element kinds (`Elements3ph.kind`).
LINE, TRANSFORMER, CAPACITOR, REACTOR, OTHER = 0, 1, 2, 3, 4
KIND_NAMES = {"line": LINE, "transformer": TRANSFORMER, "capacitor": CAPACITOR, "reactor": REACTOR}


@struct.dataclass
class Nodes3ph:
    """Node table, all `[n_node]`."""

    vbase_kv: jax.Array  # line-to-neutral base voltage, kV
    mask: jax.Array  # bool: a real node (False for padding)
    fixed: jax.Array  # bool: voltage held at (v_set_re_pu, v_set_im_pu) (an ideal source)
    v_set_re_pu: jax.Array
    v_set_im_pu: jax.Array


@struct.dataclass
class Elements3ph:
    """Power-delivery elements as primitive admittance blocks (OpenDSS's `YPrim`).

    Conductors of every terminal in OpenDSS's order (terminal 1's conductors, then terminal
    2's); `node == n_node` for grounded and padded conductors.
    """

    y_re_pu: jax.Array  # [n_elem, n_cond, n_cond] primitive admittance, p.u.
    y_im_pu: jax.Array  # [n_elem, n_cond, n_cond]
    y_lo_re_pu: jax.Array  # [n_elem, n_cond, n_cond] what rounding to the grid's dtype dropped of y (astype)
    y_lo_im_pu: jax.Array  # [n_elem, n_cond, n_cond]
    node: jax.Array  # int [n_elem, n_cond]
    vbase_kv: jax.Array  # [n_elem, n_cond] base of each conductor's bus (for amperes), kV
    terminal: jax.Array  # int [n_elem, n_cond]: 0, 1, ... ; -1 for padding
    kind: jax.Array  # int [n_elem]: LINE, TRANSFORMER, CAPACITOR, REACTOR, OTHER
    mask: jax.Array  # bool [n_elem]


@struct.dataclass
class Sources3ph:
    """Thevenin sources (OpenDSS `Vsource`): EMF `e` behind admittance `y` to `node`."""

    y_re_pu: jax.Array  # [n_src, n_sc, n_sc] source admittance, p.u.
    y_im_pu: jax.Array
    node: jax.Array  # int [n_src, n_sc]
    e_re_pu: jax.Array  # [n_src, n_sc] internal EMF, p.u. of the node base
    e_im_pu: jax.Array
    mask: jax.Array  # bool [n_src]


@struct.dataclass
class Loads3ph:
    """Load branches, all `[n_load]` (one per phase of a load element).

    A branch draws `S = (p_kw + j q_kvar)` scaled as `P = p_kw (|u|/vnom)^exp_p`,
    `Q = q_kvar (|u|/vnom)^exp_q` where `u = V[node_a] - V[node_b]` (kV). OpenDSS models:
    1 constant PQ (0, 0), 2 constant Z (2, 2), 3 constant P quadratic Q (0, 2),
    4 CVR (cvrwatts, cvrvars), 5 constant current magnitude (1, 1).
    """

    node_a: jax.Array  # int
    node_b: jax.Array  # int (n_node: ground)
    p_kw: jax.Array  # consumption at vnom
    q_kvar: jax.Array
    vnom_kv: jax.Array  # voltage across the branch at which p_kw, q_kvar are drawn, kV
    exp_p: jax.Array
    exp_q: jax.Array
    mask: jax.Array  # bool


@struct.dataclass
class Grid3ph:
    """A three-phase network (see the module docstring for the conventions)."""

    node: Nodes3ph
    elem: Elements3ph
    source: Sources3ph
    load: Loads3ph
    s_base_kva: jax.Array  # [] power base, kVA

    @property
    def n_node(self) -> int:
        return self.node.vbase_kv.shape[-1]

    @property
    def n_elem(self) -> int:
        return self.elem.node.shape[-2]

    @property
    def n_load(self) -> int:
        return self.load.p_kw.shape[-1]


def _split(y, lo, dtype):
    """`(hi, lo)` in `dtype` with `hi + lo = y + lo_in` to twice `dtype`'s precision."""
    wide = np.promote_types(y.dtype, dtype)
    y_w, lo_w = y.astype(wide), lo.astype(wide)
    hi = (y_w + lo_w).astype(dtype)
    return hi, ((y_w - hi.astype(wide)) + lo_w).astype(dtype)


def astype(grid: Grid3ph, dtype) -> Grid3ph:
    """Cast every float leaf to `dtype` (float64 needs JAX's 64-bit mode for jnp leaves);
    element admittances keep what the cast rounds off in `y_lo_*_pu` (module docstring)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not all(isinstance(x, np.ndarray) for x in jax.tree.leaves(grid)):
        require_x64("pgjax.grid3ph.astype to float64")
    e = grid.elem
    (y_re, lo_re), (y_im, lo_im) = _split(e.y_re_pu, e.y_lo_re_pu, dtype), _split(e.y_im_pu, e.y_lo_im_pu, dtype)
    cast = jax.tree.map(lambda x: x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x, grid)
    return cast.replace(elem=cast.elem.replace(y_re_pu=y_re, y_im_pu=y_im, y_lo_re_pu=lo_re, y_lo_im_pu=lo_im))


def exact_float64(grid: Grid3ph) -> Grid3ph:
    """A concrete grid as numpy float64 leaves with the admittance remainders folded in
    (`y_lo_*_pu = 0`): the float64 network a float32 grid was rounded from."""
    return astype(jax.tree.map(np.asarray, grid), np.float64)


def _pad_axis(x, axis: int, size: int, fill):
    x = np.asarray(x)
    extra = size - x.shape[axis]
    if extra < 0:
        raise InputError(f"pad: axis {axis} has {x.shape[axis]} entries, more than the target {size}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths, constant_values=fill)


def pad(grid: Grid3ph, n_node: int, n_elem: int, n_cond: int, n_load: int,
        n_src: int | None = None, n_src_cond: int | None = None) -> Grid3ph:
    """Pad a (numpy-leaf) grid to the given sizes with entries that change no result.

    Padded nodes are isolated (`mask = False`, solved to 0 V); indices that pointed at
    ground (`n_node` before) are moved to the new ground index.
    """
    g = jax.tree.map(np.asarray, grid)
    old_ground, n_src = g.n_node, g.source.node.shape[0] if n_src is None else n_src
    n_src_cond = g.source.node.shape[1] if n_src_cond is None else n_src_cond

    def idx(a):
        a = np.where(a >= old_ground, n_node, a)
        return a

    nd = g.node
    node = Nodes3ph(*[_pad_axis(getattr(nd, f), 0, n_node, v) for f, v in
                      (("vbase_kv", 1.0), ("mask", False), ("fixed", False), ("v_set_re_pu", 0.0),
                       ("v_set_im_pu", 0.0))])
    e = g.elem
    pe = lambda x, fill, axes: _pad_axis(_pad_axis(x, 0, n_elem, fill), axes[0], n_cond, fill) if len(axes) == 1 \
        else _pad_axis(_pad_axis(_pad_axis(x, 0, n_elem, fill), 1, n_cond, fill), 2, n_cond, fill)
    elem = Elements3ph(*[pe(y, 0.0, (1, 2)) for y in (e.y_re_pu, e.y_im_pu, e.y_lo_re_pu, e.y_lo_im_pu)],
                       pe(idx(e.node), n_node, (1,)),
                       pe(e.vbase_kv, 1.0, (1,)), pe(e.terminal, -1, (1,)), _pad_axis(e.kind, 0, n_elem, OTHER),
                       _pad_axis(e.mask, 0, n_elem, False))
    s = g.source
    ps = lambda x, fill: _pad_axis(_pad_axis(x, 0, n_src, fill), 1, n_src_cond, fill)
    source = Sources3ph(_pad_axis(ps(s.y_re_pu, 0.0), 2, n_src_cond, 0.0), _pad_axis(ps(s.y_im_pu, 0.0), 2, n_src_cond, 0.0),
                        ps(idx(s.node), n_node), ps(s.e_re_pu, 0.0), ps(s.e_im_pu, 0.0), _pad_axis(s.mask, 0, n_src, False))
    ld = g.load
    pl = lambda x, fill: _pad_axis(x, 0, n_load, fill)
    load = Loads3ph(pl(idx(ld.node_a), n_node), pl(idx(ld.node_b), n_node), pl(ld.p_kw, 0.0), pl(ld.q_kvar, 0.0),
                    pl(ld.vnom_kv, 1.0), pl(ld.exp_p, 0.0), pl(ld.exp_q, 0.0), pl(ld.mask, False))
    return Grid3ph(node, elem, source, load, g.s_base_kva)


def stack(grids) -> Grid3ph:
    """Stack grids of one padded shape (`pad`) along a new leading axis for `jax.vmap`."""
    shapes = {tuple(x.shape for x in jax.tree.leaves(g)) for g in grids}
    if len(shapes) != 1:
        raise InputError("stack: the grids differ in shape; pad them to one shape first (pgjax.grid3ph.pad)")
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *grids)

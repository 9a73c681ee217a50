"""One set of operating points that pgjax, pandapower and lightsim2grid all see identically.

Every load and static generator P and Q is scaled by one factor per point:
- `load_factors`: the seeded factors;
- `scale_injections`, `operating_points`: the points as pgjax grids / bus injections;
- `base_net`, `scaled_net`, `base_values`: the same points as pandapower element values.

Nothing here changes a solver; engines are only timed and compared.
"""

from __future__ import annotations

import numpy as np


def load_factors(n_points: int, seed: int = 0, low: float = 0.7, high: float = 1.3) -> np.ndarray:
    """`[n_points]` factors, uniform in `[low, high]`, from a seeded numpy generator."""
    return np.random.default_rng(seed).uniform(low, high, size=n_points)


def scale_injections(grid, factor, scale_gen: bool = False):
    """The grid with every load and static generator `p_mw`, `q_mvar` multiplied by `factor`.

    With `scale_gen`, voltage-controlled generator `p_mw` too (a load-following dispatch,
    so that the slack does not take the whole change). Storage and wards are unchanged.
    Works traced (vmap).
    """
    load = grid.load.replace(p_mw=grid.load.p_mw * factor, q_mvar=grid.load.q_mvar * factor)
    sgen = grid.sgen.replace(p_mw=grid.sgen.p_mw * factor, q_mvar=grid.sgen.q_mvar * factor)
    grid = grid.replace(load=load, sgen=sgen)
    if scale_gen:
        grid = grid.replace(gen=grid.gen.replace(p_mw=grid.gen.p_mw * factor))
    return grid


def operating_points(grid, factors, scale_gen: bool = False):
    """pgjax bus injections `(p_mw, q_mvar)`, each `[n_points, n_bus]` numpy, one row per factor.

    Row k is `bus_injections(scale_injections(grid, factors[k], scale_gen))`.
    """
    import jax
    import jax.numpy as jnp

    from pgjax.powerflow import bus_injections

    factors = jnp.asarray(factors, dtype=jnp.asarray(grid.bus.gs_mw).dtype)
    p, q = jax.jit(jax.vmap(lambda f: bus_injections(scale_injections(grid, f, scale_gen))))(factors)
    return np.asarray(p), np.asarray(q)


def base_net(net, grid, netmap):
    """A copy of `net` whose element values equal the grid's (element `scaling` folded in)."""
    from pgjax.converters.pandapower import to_pandapower

    return to_pandapower(net, grid, netmap)


def scaled_net(net, factor: float, base=None, scale_gen: bool = False):
    """Set, in place, `net`'s load and sgen `p_mw`, `q_mvar` to `base` values times `factor`.

    `base` is `(load_p, load_q, sgen_p, sgen_q, gen_p)` numpy arrays in table order; by
    default the net's current values (so call it on a copy, or pass `base_values(net)`).
    With `scale_gen`, generator `p_mw` is scaled too (see `scale_injections`).
    """
    base = base_values(net) if base is None else base
    load_p, load_q, sgen_p, sgen_q, gen_p = base
    if scale_gen and len(net.gen):
        net.gen["p_mw"] = gen_p * factor
    if len(net.load):
        net.load["p_mw"] = load_p * factor
        net.load["q_mvar"] = load_q * factor
    if len(net.sgen):
        net.sgen["p_mw"] = sgen_p * factor
        net.sgen["q_mvar"] = sgen_q * factor
    return net


def base_values(net):
    """`(load_p, load_q, sgen_p, sgen_q, gen_p)`, copies of the net's current element values."""
    return (net.load.p_mw.to_numpy(float).copy(), net.load.q_mvar.to_numpy(float).copy(),
            net.sgen.p_mw.to_numpy(float).copy(), net.sgen.q_mvar.to_numpy(float).copy(),
            net.gen.p_mw.to_numpy(float).copy())


"""Reusable pieces of the power-flow benchmarks (`pgjax/commands/bench_powerflow.py`).

- `rate(fn, seconds)`: steady-state calls per second of a blocking callable.
- `load_factors`, `scale_injections`, `operating_points`: one set of operating points that
  pgjax, pandapower and lightsim2grid all see identically (every load and static generator
  P and Q scaled by one factor per point).
- `scaled_net`: the same point as pandapower element values.
- `LightSimBatch`: lightsim2grid's C++ batch computers (`TimeSeriesCPP`, `InjectionSweepCPP`)
  on one thread, driven with the same operating points.
- `machine_info`: CPU model, core count, library versions.
- `xla_flops`, `flop_count`: floating-point operations of a jitted call from XLA's own cost
  analysis, with every loop counted for the trips it really makes (`flop_count`).
- `gemm_peak`, `nominal_peak`: the machine's peak, measured now with a large GEMM, and the
  nominal figure from core count, clock and SIMD width (for context only).
- `random_radial_feeder`: a seeded random radial MV (or LV) feeder as a pandapower net.

Nothing here changes a solver; engines are only timed and compared.
"""

from __future__ import annotations

import copy
import os
import platform
import time
import warnings
from typing import NamedTuple

import numpy as np

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
}


def rate(fn, seconds: float, min_calls: int = 2, max_calls: int | None = None):
    """Time `fn()` (which must block until its work is done) repeatedly for about `seconds`.

    Returns `(calls_per_second, n_calls, elapsed_s)`. At least `min_calls` calls are made,
    so a slow `fn` is still measured; `max_calls` caps very fast ones.
    """
    n = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while n < min_calls or elapsed < seconds:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if max_calls is not None and n >= max_calls:
            break
    return n / elapsed, n, elapsed


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


def lightsim_net(net):
    """A copy of `net` that lightsim2grid's pandapower converter reproduces exactly.

    - closed bus-bus switches (which the converter ignores) are fused;
    - static generators become loads of opposite sign (`TimeSeriesCPP` can vary sgen P
      but not sgen Q, and a constant-power sgen is a negative constant-power load);
    - shunt `step` and rated voltage (which the converter ignores) are folded into
      `p_mw`/`q_mvar` (pandapower: `q_mvar * step * (bus vn_kv / shunt vn_kv)**2`);
    - out-of-service external grids (which the converter still makes slacks) are dropped;
    - buses are renumbered 0..n-1 in row order; `net.bus["orig_index"]` keeps the index
      of the original net.
    """
    import pandapower as pp
    import pandapower.toolbox as tb

    net = copy.deepcopy(net)
    net.bus["orig_index"] = net.bus.index.to_numpy()
    fused_into = {}
    if len(net.switch):
        bb = net.switch[(net.switch.et == "b") & net.switch.closed.astype(bool)]
        for _, sw in bb.iterrows():
            keep, drop = int(sw.bus), int(sw.element)
            while keep in fused_into:
                keep = fused_into[keep]
            fused_into[drop] = keep
            tb.fuse_buses(net, keep, drop)
        net.switch = net.switch.drop(bb.index.intersection(net.switch.index))
    if len(net.shunt):
        sh = net.shunt
        step = sh.step.to_numpy(float) if "step" in sh else np.ones(len(sh))
        ratio = (net.bus.vn_kv.loc[sh.bus].to_numpy(float) / sh.vn_kv.to_numpy(float)) ** 2
        net.shunt["p_mw"] = sh.p_mw.to_numpy(float) * step * ratio
        net.shunt["q_mvar"] = sh.q_mvar.to_numpy(float) * step * ratio
        net.shunt["step"] = 1
        net.shunt["vn_kv"] = net.bus.vn_kv.loc[sh.bus].to_numpy(float)
    net.ext_grid = net.ext_grid[net.ext_grid.in_service.astype(bool)]
    if len(net.sgen):
        for _, sg in net.sgen.iterrows():
            pp.create_load(net, bus=int(sg.bus), p_mw=-float(sg.p_mw) * float(sg.scaling),
                           q_mvar=-float(sg.q_mvar) * float(sg.scaling), in_service=bool(sg.in_service),
                           name=f"sgen {sg.name}")
        net.sgen = net.sgen.iloc[0:0]
    # lightsim2grid lays buses out in sorted index order; make that the row order.
    net.bus = net.bus.sort_index()
    tb.create_continuous_bus_index(net)
    net._fused_into = fused_into
    return net


class LightSimBatch:
    """lightsim2grid's C++ batch power flow (Newton-Raphson, KLU, one thread) on one grid.

    `kind="timeseries"` (`TimeSeriesCPP`: each point starts from the previous solution,
    its documented fastest path for many points) or `"sweep"` (`InjectionSweepCPP`: every
    point starts from the same voltage, independent like pgjax's points). Build it from
    `lightsim_net(base net)`; `set_points(factors)` sets load P/Q rows `factor * base`
    (and generator P with `scale_gen`). The start voltage is lightsim2grid's DC power flow
    of the base case (pandapower's and pgjax's `init="dc"`).
    """

    def __init__(self, ls_net, kind: str = "timeseries", tol: float = 1e-10, max_iter: int = 30,
                 scale_gen: bool = False):
        from lightsim2grid.algorithm import AlgorithmType
        from lightsim2grid.injectionSweep import InjectionSweepCPP
        from lightsim2grid.network import init_from_pandapower
        from lightsim2grid.timeSerie import TimeSeriesCPP

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = init_from_pandapower(ls_net, pp_orig_file="pandapower_v3")
        self.model.change_algorithm(AlgorithmType.NR_KLU)
        self.kind = kind
        self.tol, self.max_iter, self.scale_gen = tol, max_iter, scale_gen
        self.n_bus = len(ls_net.bus)
        self.load_p = ls_net.load.p_mw.to_numpy(float) * ls_net.load.scaling.to_numpy(float)
        self.load_q = ls_net.load.q_mvar.to_numpy(float) * ls_net.load.scaling.to_numpy(float)
        # generator rows: net.gen in table order, then the slack generators the converter adds
        self.gen_p = np.array([g.target_p_mw for g in self.model.get_generators()], float)
        self.n_net_gen = len(ls_net.gen)
        v_flat = np.full(self.model.total_bus(), self.model.get_init_vm_pu(), dtype=complex)
        v_dc = self.model.dc_pf(v_flat, max_iter, tol)
        self.v_init = v_dc if v_dc.shape[0] == v_flat.shape[0] else v_flat
        cls = TimeSeriesCPP if kind == "timeseries" else InjectionSweepCPP
        self.computer = cls(self.model)
        self.computer.change_algorithm(AlgorithmType.NR_KLU)
        if kind != "timeseries":
            self.computer.nb_thread = 1

    def set_points(self, factors):
        factors = np.asarray(factors, float)[:, None]
        n = factors.shape[0]
        gen_p = np.repeat(self.gen_p[None, :], n, axis=0)
        if self.scale_gen:
            gen_p[:, :self.n_net_gen] *= factors
        self.computer.modify_gen_p(np.ascontiguousarray(gen_p))
        self.computer.modify_load_p(np.ascontiguousarray(factors * self.load_p[None, :]))
        self.computer.modify_load_q(np.ascontiguousarray(factors * self.load_q[None, :]))

    def compute(self):
        """Solve every point set by `set_points`; returns the complex voltages `[n, n_bus]`."""
        self.computer.compute(self.v_init, self.max_iter, self.tol)
        return self.computer.get_voltages()

    def times(self) -> dict:
        """Seconds of the last `compute`: total, solver only, pre-processing."""
        c = self.computer
        return {"total_s": c.total_time(), "solver_s": c.solver_time(),
                "preprocessing_s": c.preprocessing_time()}

    def iterations(self) -> np.ndarray:
        return np.asarray(self.computer.get_row_nb_iter()).ravel()

    def converged(self) -> np.ndarray:
        return np.asarray(self.computer.converged_mask(), bool)


def machine_info() -> dict:
    """CPU model, logical core count, python / jax / numpy versions."""
    import jax

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "numpy": np.__version__,
            "jax_backend": jax.default_backend()}
    for mod in ("pandapower", "lightsim2grid", "numba"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional engines
            info[mod] = None
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        info["loadavg"] = None
    return info


# --------------------------------------------------------------------------- flop counts
#
# XLA's `cost_analysis()` counts the body of every loop (while, scan, fori_loop) exactly once,
# whatever its trip count. `flop_count` therefore also runs an instrumented copy of the
# function that counts the trips each loop makes on the given arguments, compiles each loop
# body on its own for its per-trip cost, and adds `(trips - 1) * per-trip cost` per loop.


def _cost(compiled) -> dict:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax: one dict per module
        ca = ca[0] if ca else {}
    return dict(ca or {})


def xla_flops(fn, *args, **kwargs) -> float:
    """XLA's flop count of `jax.jit(fn)(*args, **kwargs)`, every loop body counted once.

    This is the `'flops'` entry of `jax.jit(fn).lower(...).compile().cost_analysis()`:
    XLA's HloCostAnalysis after optimisation. A dot of `[m, k] x [k, n]` counts `2 m k n`
    (so an `n x n x n` matrix product is exactly `2 n^3`), elementwise arithmetic one per
    element; transcendentals (exp, log, sin, atan2, sqrt ...) are counted separately by
    XLA and are not included. Loops are counted for one trip; see `flop_count`.
    """
    import jax

    return float(_cost(jax.jit(fn).lower(*args, **kwargs).compile()).get("flops", 0.0))


def _closed_flops(closed) -> float:
    """XLA's flop count of a closed jaxpr compiled on its own (abstract inputs)."""
    import jax
    from jax.extend.core import jaxpr_as_fun

    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
    return xla_flops(jaxpr_as_fun(closed), *avals)


def _read(env, v):
    from jax.extend.core import Literal

    return v.val if isinstance(v, Literal) else env[v]


def _call_jaxpr(eqn):
    """The closed jaxpr a call-like equation evaluates in its forward pass, or None."""
    name = eqn.primitive.name
    if name in ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"):
        return eqn.params.get("jaxpr")
    if name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
        return eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
    return None


def _closed(j):
    from jax.extend.core import ClosedJaxpr

    return j if isinstance(j, ClosedJaxpr) else ClosedJaxpr(j, ())


def _loops(closed, path: str, parent, out: list) -> list:
    """Every loop reachable in the forward evaluation of `closed`, in `_eval` order.

    Appends dicts `{id, kind, body, cond, parent}`; `parent` is the nearest enclosing loop id.
    """
    for i, eqn in enumerate(closed.jaxpr.eqns):
        p = f"{path}.{i}"
        name = eqn.primitive.name
        sub = _call_jaxpr(eqn)
        if sub is not None:
            _loops(_closed(sub), p + ".0", parent, out)
        elif name == "custom_linear_solve":
            _loops(eqn.params["jaxprs"].solve, p + ".0", parent, out)
        elif name == "while":
            out.append({"id": p, "kind": "while", "body": eqn.params["body_jaxpr"],
                        "cond": eqn.params["cond_jaxpr"], "parent": parent})
            _loops(eqn.params["body_jaxpr"], p + ".0", p, out)
        elif name == "scan":
            out.append({"id": p, "kind": "scan", "body": _closed(eqn.params["jaxpr"]), "cond": None,
                        "parent": parent})
            _loops(_closed(eqn.params["jaxpr"]), p + ".0", p, out)
        elif name == "cond":
            for k, br in enumerate(eqn.params["branches"]):
                _loops(br, f"{p}.{k}", parent, out)
    return out


def _eval(closed, args, path: str):
    """Evaluate `closed` like `jaxpr_as_fun`, returning `(outputs, trips)`.

    `trips` maps each loop id of `_loops(closed, path)` to the number of times its body ran
    (a traced int32), summed over every execution of the enclosing code. Call-like
    equations (jit, custom_jvp/vjp, custom_linear_solve's forward solve) are inlined.
    """
    import jax
    import jax.numpy as jnp

    env = dict(zip(closed.jaxpr.constvars, closed.consts))
    env.update(zip(closed.jaxpr.invars, args))
    trips = {}

    def zeros(sub, p):
        return {d["id"]: jnp.zeros((), jnp.int32) for d in _loops(sub, p, None, [])}

    for i, eqn in enumerate(closed.jaxpr.eqns):
        p = f"{path}.{i}"
        vals = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _call_jaxpr(eqn)
        if sub is not None:
            outs, t = _eval(_closed(sub), vals, p + ".0")
            trips.update(t)
        elif name == "custom_linear_solve":
            lengths = eqn.params["const_lengths"]
            n_consts = sum(lengths)
            start = lengths.matvec + lengths.vecmat
            solve_consts = vals[start:start + lengths.solve]
            outs, t = _eval(eqn.params["jaxprs"].solve, solve_consts + vals[n_consts:], p + ".0")
            trips.update(t)
        elif name == "while":
            cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
            cj, bj = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
            cconsts, bconsts, init = vals[:cn], vals[cn:cn + bn], vals[cn + bn:]
            init = [jax.lax.convert_element_type(x, a.dtype) for x, a in zip(init, bj.in_avals[bn:])]

            def cond_fn(s, cj=cj, cconsts=cconsts):
                pred = _eval(cj, list(cconsts) + list(s[0]), "cond")[0][0]
                return jnp.any(pred)  # a batched (vmapped) predicate: XLA runs until all are done

            def body_fn(s, bj=bj, bconsts=bconsts, p=p):
                carry, n, nested = s
                outs, t = _eval(bj, list(bconsts) + list(carry), p + ".0")
                return list(outs), n + 1, {k: nested[k] + t[k] for k in nested}

            outs, n, nested = jax.lax.while_loop(
                cond_fn, body_fn, (init, jnp.zeros((), jnp.int32), zeros(bj, p + ".0")))
            trips[p] = n
            trips.update(nested)
        elif name == "scan":
            nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
            body = _closed(eqn.params["jaxpr"])
            consts, carry, xs = vals[:nc], vals[nc:nc + nk], vals[nc + nk:]
            carry = [jax.lax.convert_element_type(x, a.dtype) for x, a in zip(carry, body.in_avals[nc:nc + nk])]

            def step(c, x, body=body, consts=consts, nk=nk, p=p):
                carry, nested = c
                outs, t = _eval(body, list(consts) + list(carry) + list(x), p + ".0")
                return (list(outs[:nk]), {k: nested[k] + t[k] for k in nested}), list(outs[nk:])

            (carry, nested), ys = jax.lax.scan(step, (carry, zeros(body, p + ".0")), list(xs),
                                               length=eqn.params["length"], reverse=eqn.params["reverse"])
            outs = list(carry) + list(ys)
            trips[p] = jnp.asarray(eqn.params["length"], jnp.int32)
            trips.update(nested)
        elif name == "cond":
            branches = eqn.params["branches"]
            keys = {}
            for k, br in enumerate(branches):
                keys.update(zeros(br, f"{p}.{k}"))

            def branch_fn(ops, br=None, k=None):
                outs, t = _eval(br, list(ops), f"{p}.{k}")
                return list(outs), {**{key: jnp.zeros((), jnp.int32) for key in keys}, **t}

            fns = [lambda ops, br=br, k=k: branch_fn(ops, br, k) for k, br in enumerate(branches)]
            outs, t = jax.lax.switch(vals[0], fns, list(vals[1:]))
            trips.update(t)
        else:
            outs = eqn.primitive.bind(*vals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [_read(env, v) for v in closed.jaxpr.outvars], trips


class FlopCount(NamedTuple):
    """Result of `flop_count`.

    - `flops`: floating-point operations the call executes: XLA's count with every loop's
      body counted `trips` times (nested loops: their total trips over the whole call).
    - `xla_flops`: XLA's own count, every loop body once.
    - `transcendentals`: XLA's transcendental count (loops once; not part of `flops`).
    - `loops`: one dict per loop: `kind` (`while` / `scan`), `trips`, `flops_per_trip`
      (the body's own flops, nested loops excluded), `parent` (enclosing loop id or None).
    """

    flops: float
    xla_flops: float
    transcendentals: float
    loops: tuple


def flop_count(fn, *args, count_loops: bool = True, compiled=None) -> FlopCount:
    """Floating-point operations of one call `fn(*args)`, from XLA's cost analysis.

    `fn` is traced with `jax.make_jaxpr` (it may itself be jitted; static arguments must be
    closed over). XLA counts each loop body once (`xla_flops`; pass `compiled`, the
    `jax.jit(fn).lower(*args).compile()` executable the caller already has, to reuse its
    count instead of compiling again); with `count_loops`, an instrumented copy of `fn` (the
    same program with a trip counter in every loop) is compiled and run once on `args` to
    count how often each loop body really runs; each body is compiled alone for its
    per-trip count, and `flops = xla_flops + sum over loops (trips - 1) * per-trip flops`.

    Assumptions, stated so the figure can be judged:
    - the per-trip count is XLA's count of the body compiled on its own; XLA's
      loop-invariant code motion inside the full program can make the real body cheaper;
    - under `vmap` a while loop runs until every batch element has converged, with
      `select`s keeping finished elements unchanged: the trips counted are the executed
      ones (the batch's maximum), not the mean iteration count;
    - `lax.cond` branches: XLA's own convention (a loop inside a branch is counted for the
      trips it makes when that branch is taken);
    - transcendentals are not flops here (see `xla_flops`); a while loop's condition is
      not counted (a comparison or a reduction per trip).

    Costs one compile of the instrumented function and one per loop body.
    """
    import jax

    closed = jax.make_jaxpr(fn)(*args)
    if compiled is None:
        compiled = jax.jit(_as_fun(closed)).lower(*args_flat(args)).compile()
    cost = _cost(compiled)
    total = xla = float(cost.get("flops", 0.0))
    trans = float(cost.get("transcendentals", 0.0))
    loops = _loops(closed, "top", None, [])
    if not (count_loops and loops):
        return FlopCount(total, xla, trans, ())

    trips = jax.jit(lambda *a: _eval(closed, list(a), "top")[1])(*args_flat(args))
    trips = {k: int(v) for k, v in trips.items()}
    own = {}
    for d in loops:
        own[d["id"]] = _closed_flops(d["body"])
    full = dict(own)
    for d in loops:  # own cost of a loop: its full per-trip cost less one trip of each child
        if d["parent"] is not None:
            own[d["parent"]] -= full[d["id"]]
    out = []
    for d in loops:
        total += (trips[d["id"]] - 1) * own[d["id"]]
        out.append({"id": d["id"], "kind": d["kind"], "trips": trips[d["id"]],
                    "flops_per_trip": own[d["id"]], "parent": d["parent"]})
    return FlopCount(total, xla, trans, tuple(out))


def args_flat(args):
    """`args` flattened to the leaves `jax.make_jaxpr(fn)(*args)` takes as inputs."""
    import jax

    return jax.tree.leaves(args)


def _as_fun(closed):
    from jax.extend.core import jaxpr_as_fun

    return jaxpr_as_fun(closed)


# --------------------------------------------------------------------------- machine peak


def gemm_peak(dtype="float32", n: int = 2048, seconds: float = 1.0, min_calls: int = 3) -> dict:
    """The machine's peak as measured now: the rate of a jitted `jnp.dot` of two `n x n` matrices.

    Counts `2 n^3` flops per product (XLA's own count of it, see `xla_flops`) and returns
    the best rate of single timed calls over about `seconds` (a peak, not a mean: it is the
    ceiling the fraction-of-peak columns are measured against). The GEMM runs on XLA's CPU
    backend with all the threads XLA uses (Eigen / oneDNN contraction), in the same process
    and under the same load as the benchmark, so it is the attainable peak of this machine
    at this moment, not the vendor's nominal FMA peak (`nominal_peak`).

    Returns a dict: `dtype`, `n`, `flops` (per product), `best_s`, `gflops` (best rate,
    GFLOP/s), `median_gflops`, `calls`, `assumption` (a sentence to print).
    float64 needs `jax_enable_x64`.
    """
    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(dtype)
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("gemm_peak('float64') needs jax_enable_x64")
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), dt)
    b = jax.random.normal(kb, (n, n), dt)
    f = jax.jit(jnp.dot).lower(a, b).compile()
    flops = float(_cost(f).get("flops", 2.0 * n ** 3)) or 2.0 * n ** 3
    jax.block_until_ready(f(a, b))
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    best = min(times)
    med = float(np.median(times))
    return {"dtype": dt.name, "n": n, "flops": flops, "best_s": best, "gflops": flops / best / 1e9,
            "median_gflops": flops / med / 1e9, "calls": len(times),
            "assumption": (f"peak = best {dt.name} GEMM rate measured now: jit(jnp.dot) of {n}x{n} "
                           f"matrices, 2n^3 = {flops:.3g} flop per product, best of {len(times)} calls, "
                           f"XLA CPU threads as configured, same process and load as the benchmark")}


def nominal_peak(dtype="float32") -> dict:
    """The nominal FMA peak from /proc/cpuinfo (for context; fractions use `gemm_peak`).

    `cores x clock x lanes x 2 (FMA) x fma_units`, with lanes = vector bits / dtype bits
    (512 with avx512f, 256 with avx2/avx, else 128), fma_units = 2 assumed, clock = the
    current `cpu MHz` of the first core (turbo and throttling make this approximate), and
    cores = logical CPUs (on SMT machines two threads share one core's FMA units, so this
    overstates the peak by up to 2x).
    """
    bits = 128
    mhz = None
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        bits = 512 if " avx512f" in flags else 256 if (" avx2" in flags or " avx " in flags) else 128
        mhz_line = next((ln for ln in text.splitlines() if ln.startswith("cpu MHz")), None)
        mhz = float(mhz_line.split(":")[1]) if mhz_line else None
    except OSError:
        pass
    size = 64 if np.dtype(dtype) == np.float64 else 32
    lanes = bits // size
    cores = os.cpu_count() or 1
    ghz = (mhz or 0.0) / 1e3
    gflops = cores * ghz * lanes * 2 * 2
    return {"dtype": np.dtype(dtype).name, "gflops": gflops, "cores": cores, "ghz": ghz, "vector_bits": bits,
            "assumption": (f"nominal = {cores} logical cores x {ghz:.2f} GHz x {lanes} {np.dtype(dtype).name} "
                           f"lanes ({bits}-bit SIMD) x 2 (FMA) x 2 FMA units = {gflops:.0f} GFLOP/s")}


def peak_report(dtypes=("float32", "float64"), n: int = 2048, seconds: float = 1.0) -> dict:
    """`{dtype: gemm_peak(dtype)}` plus `nominal` entries, for the dtypes this process can run."""
    import jax

    out = {}
    for dt in dtypes:
        if np.dtype(dt) == np.float64 and not jax.config.jax_enable_x64:
            continue
        out[np.dtype(dt).name] = gemm_peak(dt, n=n, seconds=seconds)
        out[np.dtype(dt).name]["nominal"] = nominal_peak(dt)
    return out


def print_peaks(peaks: dict) -> None:
    """Print the measured GEMM peaks and their assumptions (one block per dtype)."""
    for dt, pk in peaks.items():
        print(f"peak {dt}: {pk['gflops']:.1f} GFLOP/s measured (median {pk['median_gflops']:.1f}); "
              f"{pk['assumption']}")
        if "nominal" in pk:
            print(f"     {dt} for context: {pk['nominal']['assumption']}")
    print("fraction of peak = (flops per call / seconds per call) / measured peak of the run's dtype; "
          "flops per call = XLA cost analysis with each loop counted for its executed trips "
          "(pgjax.benchmark.flop_count)")


# --------------------------------------------------------------------------- radial feeders

FEEDER_TYPES = {
    # voltage: (vn_kv, [(line std type, share of buses downstream at or above which it is used)],
    #           (min, max) line length km, (min, max) load MW before calibration)
    "mv": (20.0, [("NA2XS2Y 1x240 RM/25 12/20 kV", 0.3), ("NA2XS2Y 1x150 RM/25 12/20 kV", 0.08),
                  ("NA2XS2Y 1x95 RM/25 12/20 kV", 0.02), ("48-AL1/8-ST1A 20.0", 0.0)],
           (0.1, 0.6), (0.05, 0.4)),
    "lv": (0.4, [("NAYY 4x150 SE", 0.3), ("NAYY 4x120 SE", 0.08), ("NAYY 4x50 SE", 0.02),
                 ("24-AL1/4-ST1A 0.4", 0.0)],
           (0.01, 0.05), (0.002, 0.01)),
}


def random_radial_feeder(n_bus: int, seed: int = 0, voltage: str = "mv", load_fraction: float = 0.85,
                         v_min: float = 0.95, vm_slack: float = 1.03, lateral: float = 0.9,
                         max_loading: float = 80.0):
    """A seeded random radial feeder as a pandapower net (one ext_grid, lines only, loads).

    - topology: bus 0 carries the ext_grid (`vm_pu = vm_slack`); bus `i > 0` hangs from a
      parent drawn among the earlier buses: with probability `lateral` one of the three
      before it (long feeders and laterals), else uniformly (branching). A tree by
      construction: `n_bus - 1` lines, every bus connected.
    - lines: pandapower standard types of the `voltage` level (`"mv"`: 20 kV XLPE cables
      NA2XS2Y 240/150/95 mm^2 and 48 mm^2 overhead line; `"lv"`: 0.4 kV NAYY cables and
      overhead line), chosen by the share of the buses downstream of the line (trunk lines
      thick, far laterals thin), lengths uniform in the level's range (MV 0.1-0.6 km,
      LV 10-50 m). Cable charging capacitance is included (pandapower's std-type values).
    - loads: on about `load_fraction` of the buses other than bus 0, P uniform in the level's
      range, power factor uniform in [0.9, 0.98] lagging; then every load is scaled by one
      factor so that, in pandapower's solution, the lowest voltage is `v_min` or the most
      loaded line is at `max_loading` percent of its rating, whichever binds first (a
      heavily loaded but realistic feeder; the benchmark's load factors up to 1.3 push it
      further).

    The returned net solves in pandapower (`runpp`; calibrated with it). `net.name` records
    the parameters.
    """
    import pandapower as pp

    if voltage not in FEEDER_TYPES:
        raise ValueError(f"voltage must be one of {sorted(FEEDER_TYPES)}")
    vn_kv, types, (len_lo, len_hi), (p_lo, p_hi) = FEEDER_TYPES[voltage]
    rng = np.random.default_rng(seed)
    parent = np.full(n_bus, -1)
    for i in range(1, n_bus):
        if i > 1 and rng.random() < lateral:
            parent[i] = i - 1 - rng.integers(0, min(3, i))
        else:
            parent[i] = rng.integers(0, i)
    below = np.ones(n_bus, int)  # buses in the subtree of each bus (itself included)
    for i in range(n_bus - 1, 0, -1):
        below[parent[i]] += below[i]

    net = pp.create_empty_network(name=f"random_radial_feeder(n_bus={n_bus}, seed={seed}, voltage={voltage!r})")
    pp.create_buses(net, n_bus, vn_kv=vn_kv, name=[f"bus {i}" for i in range(n_bus)], index=list(range(n_bus)))
    pp.create_ext_grid(net, 0, vm_pu=vm_slack, va_degree=0.0)
    lengths = rng.uniform(len_lo, len_hi, n_bus)
    share = below / n_bus
    std = [next(t for t, s in types if share[i] >= s) for i in range(n_bus)]
    for t in dict.fromkeys(std[1:]):
        rows = [i for i in range(1, n_bus) if std[i] == t]
        pp.create_lines(net, [int(parent[i]) for i in rows], rows, length_km=lengths[rows].tolist(),
                        std_type=t, name=[f"line {i}" for i in rows])
    net.line = net.line.sort_values("to_bus")
    has_load = rng.random(n_bus) < load_fraction
    has_load[0] = False
    p = rng.uniform(p_lo, p_hi, n_bus)
    pf = rng.uniform(0.9, 0.98, n_bus)
    q = p * np.tan(np.arccos(pf))
    rows = np.flatnonzero(has_load)
    pp.create_loads(net, rows.tolist(), p_mw=p[rows].tolist(), q_mvar=q[rows].tolist(),
                    name=[f"load {i}" for i in rows])

    base_p, base_q = net.load.p_mw.to_numpy().copy(), net.load.q_mvar.to_numpy().copy()
    scale = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(8):  # drop and current are nearly linear in the load: a few secant steps
            net.load["p_mw"], net.load["q_mvar"] = base_p * scale, base_q * scale
            try:
                pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)
            except pp.LoadflowNotConverged:
                scale *= 0.3
                continue
            ratio = min((vm_slack - v_min) / (vm_slack - float(net.res_bus.vm_pu.min())),
                        max_loading / float(net.res_line.loading_percent.max()))
            if abs(ratio - 1.0) < 1e-3:
                break
            scale *= ratio
        net.load["p_mw"], net.load["q_mvar"] = base_p * scale, base_q * scale
        pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)  # raises if it does not solve
    return net


RADIAL_FEEDERS = {"radial300": 300, "radial1000": 1000}


def load_network(name: str, seed: int = 0):
    """A benchmark network by name: `radial300` / `radial1000` (`random_radial_feeder` of that
    size, MV, `seed`), `radial<N>` for any N, else `pgjax.networks.load(name)`."""
    if name.startswith("radial") and name[6:].isdigit():
        return random_radial_feeder(int(name[6:]), seed=seed)
    from pgjax.networks import load

    return load(name)

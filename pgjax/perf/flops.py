"""Floating-point operations of a jitted call, from XLA's own cost analysis.

- `xla_flops(fn, *args)`: XLA's count, every loop body counted once.
- `flop_count(fn, *args)`: the same with every loop (while, scan, fori_loop) counted for the
  trips it really makes on the given arguments (`FlopCount`).
- `xla_cost(compiled)`: the cost-analysis dict of a compiled executable.
"""

from __future__ import annotations

from typing import NamedTuple

# XLA's `cost_analysis()` counts the body of every loop (while, scan, fori_loop) exactly once,
# whatever its trip count. `flop_count` therefore also runs an instrumented copy of the
# function that counts the trips each loop makes on the given arguments, compiles each loop
# body on its own for its per-trip cost, and adds `(trips - 1) * per-trip cost` per loop.



def xla_cost(compiled) -> dict:
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

    return float(xla_cost(jax.jit(fn).lower(*args, **kwargs).compile()).get("flops", 0.0))


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


def _zero_trips(sub, path: str) -> dict:
    """`{loop id: 0}` (traced int32) for every loop of `sub` under `path`."""
    import jax.numpy as jnp

    return {d["id"]: jnp.zeros((), jnp.int32) for d in _loops(sub, path, None, [])}


def _eval(closed, args, path: str):
    """Evaluate `closed` like `jaxpr_as_fun`, returning `(outputs, trips)`.

    `trips` maps each loop id of `_loops(closed, path)` to the number of times its body ran
    (a traced int32), summed over every execution of the enclosing code. Call-like
    equations (jit, custom_jvp/vjp, custom_linear_solve's forward solve) are inlined.
    """
    env = dict(zip(closed.jaxpr.constvars, closed.consts))
    env.update(zip(closed.jaxpr.invars, args))
    trips = {}
    for i, eqn in enumerate(closed.jaxpr.eqns):
        p = f"{path}.{i}"
        vals = [_read(env, v) for v in eqn.invars]
        sub = _call_jaxpr(eqn)
        handler = _EVAL.get(eqn.primitive.name)
        if sub is not None:
            outs, t = _eval(_closed(sub), vals, p + ".0")
        elif handler is not None:
            outs, t = handler(eqn, vals, p)
        else:
            outs, t = eqn.primitive.bind(*vals, **eqn.params), {}
            if not eqn.primitive.multiple_results:
                outs = [outs]
        trips.update(t)
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [_read(env, v) for v in closed.jaxpr.outvars], trips


def _eval_linear_solve(eqn, vals, p):
    """`custom_linear_solve`: its forward `solve` jaxpr, inlined."""
    lengths = eqn.params["const_lengths"]
    n_consts = sum(lengths)
    start = lengths.matvec + lengths.vecmat
    solve_consts = vals[start:start + lengths.solve]
    return _eval(eqn.params["jaxprs"].solve, solve_consts + vals[n_consts:], p + ".0")


def _eval_while(eqn, vals, p):
    """A while loop with a trip counter (and its nested loops' counters) in the carry."""
    import jax
    import jax.numpy as jnp

    cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    cj, bj = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
    cconsts, bconsts, init = vals[:cn], vals[cn:cn + bn], vals[cn + bn:]
    init = [jax.lax.convert_element_type(x, a.dtype) for x, a in zip(init, bj.in_avals[bn:])]

    def cond_fn(s):
        pred = _eval(cj, list(cconsts) + list(s[0]), "cond")[0][0]
        return jnp.any(pred)  # a batched (vmapped) predicate: XLA runs until all are done

    def body_fn(s):
        carry, n, nested = s
        outs, t = _eval(bj, list(bconsts) + list(carry), p + ".0")
        return list(outs), n + 1, {k: nested[k] + t[k] for k in nested}

    outs, n, nested = jax.lax.while_loop(cond_fn, body_fn, (init, jnp.zeros((), jnp.int32), _zero_trips(bj, p + ".0")))
    return outs, {p: n, **nested}


def _eval_scan(eqn, vals, p):
    """A scan with its nested loops' trip counters in the carry; its own trips are its length."""
    import jax
    import jax.numpy as jnp

    nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
    body = _closed(eqn.params["jaxpr"])
    consts, carry, xs = vals[:nc], vals[nc:nc + nk], vals[nc + nk:]
    carry = [jax.lax.convert_element_type(x, a.dtype) for x, a in zip(carry, body.in_avals[nc:nc + nk])]

    def step(c, x):
        carry, nested = c
        outs, t = _eval(body, list(consts) + list(carry) + list(x), p + ".0")
        return (list(outs[:nk]), {k: nested[k] + t[k] for k in nested}), list(outs[nk:])

    (carry, nested), ys = jax.lax.scan(step, (carry, _zero_trips(body, p + ".0")), list(xs),
                                       length=eqn.params["length"], reverse=eqn.params["reverse"])
    return list(carry) + list(ys), {p: jnp.asarray(eqn.params["length"], jnp.int32), **nested}


def _eval_cond(eqn, vals, p):
    """`lax.cond` / `switch`: every branch returns every branch's loop counters (zeros when not taken)."""
    import jax

    branches = eqn.params["branches"]
    keys = {}
    for k, br in enumerate(branches):
        keys.update(_zero_trips(br, f"{p}.{k}"))

    def branch_fn(ops, br, k):
        outs, t = _eval(br, list(ops), f"{p}.{k}")
        return list(outs), {**_zero_trips_like(keys), **t}

    fns = [lambda ops, br=br, k=k: branch_fn(ops, br, k) for k, br in enumerate(branches)]
    return jax.lax.switch(vals[0], fns, list(vals[1:]))


def _zero_trips_like(keys: dict) -> dict:
    import jax.numpy as jnp

    return {key: jnp.zeros((), jnp.int32) for key in keys}


_EVAL = {"custom_linear_solve": _eval_linear_solve, "while": _eval_while, "scan": _eval_scan, "cond": _eval_cond}


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
    cost = xla_cost(compiled)
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

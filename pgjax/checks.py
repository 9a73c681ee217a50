"""Checks of arrays and pytrees at the public API edge (`powerflow.solve`, `Env`, the shim).

Shapes, dtypes and tree structures are static, so every check here is Python on them at
trace time: nothing is added to a compiled program and nothing runs per step under `jit`.
The value checks (`check_finite`) look at concrete arrays only and skip tracers. Every
failure raises `pgjax.errors.InputError` naming the argument (with its key path inside a
pytree), what was expected and what was given.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgjax.errors import InputError, brief


class MissingKeyError(InputError, KeyError):
    """An `InputError` that is also a `KeyError` (a missing or unknown mapping key)."""

    __str__ = Exception.__str__  # KeyError would quote the message


def is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def shape_dtype(name: str, x):
    """`(shape, dtype)` of an array-like without reading its values (lists become numpy)."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(x.shape), x.dtype
    if isinstance(x, (bool, int, float, complex, np.generic)):
        return (), np.asarray(x).dtype
    if isinstance(x, (list, tuple)):
        try:
            a = np.asarray(x)
        except (ValueError, TypeError):  # ragged, or holds tracers
            try:
                s = jax.eval_shape(jnp.asarray, x)
            except (ValueError, TypeError) as e:
                raise InputError(f"{name}: expected an array, got a {type(x).__name__} that is not one ({e})") from None
            return tuple(s.shape), s.dtype
        if a.dtype != object:
            return a.shape, a.dtype
    raise InputError(f"{name}: expected an array, got {type(x).__name__} {brief(x, 60)}")


def describe(x) -> str:
    """`shape (3, 2) float32`, or the type of a non-array."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(x.shape)} {x.dtype}"
    return type(x).__name__


def _kind(dtype) -> str:
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return "key"
    return np.dtype(dtype).kind


def check_real_array(name: str, x, shape: tuple, what: str = "") -> None:
    """`x` must have exactly `shape` (no broadcasting) and a real numeric dtype (not bool, not complex)."""
    got_shape, dtype = shape_dtype(name, x)
    doc = f" ({what})" if what else ""
    kind = _kind(dtype)
    if kind == "c":
        raise InputError(f"{name}: expected real values{doc}, got complex dtype {dtype} (shape {got_shape})")
    if kind not in "iuf":
        raise InputError(f"{name}: expected a real numeric array{doc}, got dtype {dtype} (shape {got_shape})")
    if got_shape != tuple(shape):
        raise InputError(f"{name}: expected shape {tuple(shape)}{doc}, got shape {got_shape}"
                         + (" (broadcasting is not applied)" if _broadcasts(got_shape, shape) else ""))


def _broadcasts(got, want) -> bool:
    try:
        return np.broadcast_shapes(tuple(got), tuple(want)) == tuple(want)
    except ValueError:
        return False


def check_key(name: str, key) -> None:
    """A single PRNG key: a typed key of shape `()` or a raw `uint32` key of shape `(2,)` / `(4,)`."""
    shape, dtype = shape_dtype(name, key)
    kind = _kind(dtype)
    if kind == "key":
        ok = shape == ()
    else:
        ok = np.dtype(dtype) == np.uint32 and len(shape) == 1 and shape[0] in (2, 4)
    if not ok:
        raise InputError(f"{name}: expected one PRNG key (jax.random.PRNGKey(seed): shape (2,) uint32, or "
                         f"jax.random.key(seed): shape ()), got shape {shape} {dtype}; vmap over batches of keys")


def check_finite(name: str, x, allow_inf: bool = False) -> None:
    """A concrete array must hold no NaN (and no inf unless `allow_inf`); tracers are skipped."""
    if is_traced(x):
        return
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.inexact):
        return
    bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {idx[0] if len(idx) == 1 else idx}" if idx else ""
        raise InputError(f"{name}: expected finite values{' (inf allowed)' if allow_inf else ''}, "
                         f"got {a[idx] if idx else a.item()}{where} ({int(bad.sum())} of {a.size} entries)")


def _paths(tree) -> dict:
    return {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_like(name: str, value, reference, free_leading: tuple = ()) -> None:
    """`value` must be a pytree like `reference`: same type, structure, leaf shapes and dtypes.

    `reference` may hold arrays or `jax.ShapeDtypeStruct`s. Leaves whose key path is in
    `free_leading` (e.g. `".profiles"`) may differ in their leading dimension only. Python
    scalars are accepted where the reference holds a `()` array of the same kind.
    """
    if type(value) is not type(reference):
        raise InputError(f"{name}: expected {type(reference).__name__}, got {type(value).__name__}")
    got, want = _paths(value), _paths(reference)
    if jax.tree.structure(value) != jax.tree.structure(reference):
        missing = [k for k in want if k not in got][:5]
        extra = [k for k in got if k not in want][:5]
        parts = ([f"missing {', '.join(name + k for k in missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(name + k for k in extra)}"] if extra else [])
        raise InputError(f"{name}: pytree structure differs from the expected {type(reference).__name__}: "
                         + ("; ".join(parts) if parts else "same leaves, different containers"))
    for path, ref in want.items():
        leaf = got[path]
        where = name + path
        r_shape, r_dtype = tuple(ref.shape), ref.dtype
        if isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic) and r_shape == ():
            ok_kind = (isinstance(leaf, bool) and _kind(r_dtype) == "b") or \
                      (not isinstance(leaf, bool) and _kind(r_dtype) in ("f" if isinstance(leaf, float) else "iuf"))
            if not ok_kind:
                raise InputError(f"{where}: expected dtype {r_dtype}, got Python {type(leaf).__name__} {leaf!r}")
            continue
        shape, dtype = shape_dtype(where, leaf)
        same_shape = shape == r_shape or (path in free_leading and shape[1:] == r_shape[1:] and len(shape) > 0)
        if not same_shape:
            free = " (leading dimension free)" if path in free_leading else ""
            raise InputError(f"{where}: expected shape {r_shape}{free}, got shape {shape}")
        if dtype != r_dtype:
            raise InputError(f"{where}: expected dtype {r_dtype}, got dtype {dtype} (shape {shape})")

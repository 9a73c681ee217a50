"""Modbus register codecs: physical values <-> 16-bit registers, SunSpec style.

A point has a data type and a power-of-ten scale factor `sf` (SunSpec's `*_SF`):
`physical = raw * 10**sf`. Types: `int16`, `uint16` (one register), `int32`, `float32`
(two registers, high word first: Modbus big-endian word order). The SunSpec "not
implemented" values read as NaN: 0x8000 (int16), 0xFFFF (uint16), 0x80000000 (int32),
and NaN itself for float32; `encode(nan)` writes them.
"""

from __future__ import annotations

import math
import struct

# dtype -> (registers, struct format of the big-endian value, raw min, raw max, "not implemented" raw value)
DTYPES = {
    "int16": (1, ">h", -32767, 32767, -32768),
    "uint16": (1, ">H", 0, 65534, 65535),
    "int32": (2, ">i", -2**31 + 1, 2**31 - 1, -2**31),
    "float32": (2, ">f", -3.4e38, 3.4e38, None),
}


def width(dtype: str) -> int:
    """Registers a value of `dtype` takes."""
    return DTYPES[dtype][0]


def raw_range(dtype: str, sf: int) -> tuple[float, float]:
    """Physical range a `(dtype, sf)` point can hold (its "not implemented" value excluded)."""
    _, _, lo, hi, _ = DTYPES[dtype]
    return (lo, hi) if dtype == "float32" else (lo * 10.0**sf, hi * 10.0**sf)


def encode(value: float, dtype: str, sf: int = 0) -> list[int]:
    """Registers holding `value` (rounded to the scale factor's resolution; NaN: "not implemented").
    A value outside `raw_range` raises ValueError (callers bound values first)."""
    n, fmt, lo, hi, nan_raw = DTYPES[dtype]
    if dtype == "float32":
        raw = float(value)
    elif math.isnan(value):
        raw = nan_raw
    else:
        raw = round(value / 10.0**sf)
        if not lo <= raw <= hi:
            raise ValueError(f"{value} does not fit a {dtype} register with scale factor {sf} "
                             f"(range {raw_range(dtype, sf)})")
    data = struct.pack(fmt, raw)
    return [int.from_bytes(data[2 * k:2 * k + 2], "big") for k in range(n)]


def decode(registers, dtype: str, sf: int = 0) -> float:
    """The physical value of `registers` (NaN for the "not implemented" value)."""
    n, fmt, _, _, nan_raw = DTYPES[dtype]
    if len(registers) != n:
        raise ValueError(f"a {dtype} value takes {n} register(s), got {len(registers)}")
    raw = struct.unpack(fmt, b"".join(int(r).to_bytes(2, "big") for r in registers))[0]
    if dtype == "float32":
        return float(raw)
    return math.nan if raw == nan_raw else raw * 10.0**sf


def quantize(value: float, dtype: str, sf: int = 0) -> float:
    """`value` as it reads back from a register (`decode(encode(value))`)."""
    return decode(encode(value, dtype, sf), dtype, sf)


def scale_factor_for(max_abs: float, dtype: str = "int16") -> int:
    """The finest scale factor whose `dtype` range holds `[-max_abs, max_abs]`."""
    hi = DTYPES[dtype][3]
    return math.ceil(math.log10(max(max_abs, 1e-12) / hi))


def bounded(value: float, point) -> float:
    """`value` clipped to the point's [min, max] and quantized to its register, never outside [min, max]."""
    step = 10.0 ** point.sf
    lo = math.ceil(point.min / step - 1e-9) * step if math.isfinite(point.min) else -math.inf
    hi = math.floor(point.max / step + 1e-9) * step if math.isfinite(point.max) else math.inf
    q = quantize(min(max(value, point.min), point.max), point.dtype, point.sf)
    return min(max(q, lo), hi)

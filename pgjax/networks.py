"""Registry of named pandapower networks: shipped JSON files and `pandapower.networks`.

`load(name)` returns a fresh pandapower net (a shipped file is parsed once per process, then
copied: parsing ieee68's JSON takes seconds, a deep copy milliseconds). Shipped files (see `pgjax/data/networks/README.md`
for sources) are looked up first, then any builder in `pandapower.networks` by its function
name (`case118`, `create_cigre_network_mv`, ...), then a path to a pandapower JSON file.
A JSON file that is missing, too large, not UTF-8, not JSON (truncated) or not a pandapower
network raises `pgjax.errors.DataError` naming the file (and the line and column of a
JSON syntax error); its element tables are checked when it is converted
(`pgjax.converters.pandapower.from_pandapower`).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from pgjax.errors import DataError, brief

DATA = Path(__file__).resolve().parent / "data" / "networks"
MAX_FILE_BYTES = 512 * 2**20

SHIPPED = {
    "ieee13": "ieee13_balanced.json",
    "ieee34": "ieee34_balanced.json",
    "ieee123": "ieee123_balanced.json",
    "cigre_lv_der": "cigre_lv_der.json",
    "ieee34_3x_ieee13": "ieee34_3x_ieee13_microgrids.json",
    "ieee68": "ieee68.json",
}


def names() -> list[str]:
    """Names of the shipped networks."""
    return sorted(SHIPPED)


def load(name: str):
    """A new pandapower net for a shipped name, a `pandapower.networks` builder or a JSON path."""
    import pandapower as pp
    import pandapower.networks as pn

    if name in SHIPPED:
        return copy.deepcopy(_shipped(SHIPPED[name]))
    builder = getattr(pn, name, None)
    if callable(builder):
        return builder()
    path = Path(name)
    if path.suffix == ".json":
        return from_json(path)
    raise DataError(
        f"network {brief(name)} unknown: not a shipped network {names()}, not a function of "
        "pandapower.networks and not a pandapower .json file")


@functools.lru_cache(maxsize=None)
def _shipped(filename: str):
    """The parsed shipped file (never handed out: `load` returns copies)."""
    import pandapower as pp

    return pp.from_json(str(DATA / filename))


def from_json(path: str | Path):
    """The pandapower net of a JSON file; `DataError` naming the file for anything else."""
    import pandapower as pp

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such network file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, more than {MAX_FILE_BYTES} for a network file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "expected a pandapower JSON file") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (truncated?): {e.msg} at line {e.lineno}, column {e.colno}") from None
    tables = parsed.get("_object", parsed) if isinstance(parsed, dict) else None
    if not isinstance(tables, dict) or "bus" not in tables:
        raise DataError(f"{path}: valid JSON but not a pandapower network (no 'bus' table)")
    try:
        net = pp.from_json_string(text)
    except Exception as e:  # noqa: BLE001 (pandapower's reader raises many kinds)
        raise DataError(f"{path}: not a pandapower network ({type(e).__name__}: {brief(str(e), 200)})") from None
    if not isinstance(net, pp.pandapowerNet):
        raise DataError(f"{path}: not a pandapower network (read as {type(net).__name__})")
    return net

"""Registry of named pandapower networks: shipped JSON files and `pandapower.networks`.

`load(name)` returns a fresh pandapower net. Shipped files (see `pgjax/data/networks/README.md`
for sources) are looked up first, then any builder in `pandapower.networks` by its function
name (`case118`, `create_cigre_network_mv`, ...), then a path to a pandapower JSON file.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "networks"

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
        return pp.from_json(str(DATA / SHIPPED[name]))
    builder = getattr(pn, name, None)
    if callable(builder):
        return builder()
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return pp.from_json(str(path))
    raise ValueError(
        f"network '{name}' unknown: not a shipped network {names()}, not a function of "
        "pandapower.networks and not an existing pandapower .json file")

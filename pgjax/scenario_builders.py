"""Generated scenarios: `multi_microgrid` scaled to any number of microgrids.

    env = pgjax.make("multi_microgrid_large", n_microgrids=120)   # 120 learned agents

The network is the shipped 72-bus composite (`ieee34_3x_ieee13`) with its three IEEE 13
microgrids replaced by `n_microgrids` copies of the first one, attached in turn at the three
original tie points (DSO buses 822, 848 and 856 through the original tie lines). To keep
the feeder's operating point, every copy's loads and devices are scaled by
`s = min(1, 3 / n_microgrids)`: the feeder carries the same total demand, split among more
controllers. Devices scale with it (power, energy and ramp ratings, no-load and start-up
costs by `s`; the quadratic fuel coefficient by `1 / s` so marginal costs at the same share
of output are unchanged). Microgrid `k` (1-based) copies the devices, profiles and cost
data of the shipped scenario's microgrid `(k - 1) % 3 + 1` (so prices, load areas and
renewable hubs rotate over PG&E, SCE and SDG&E as in `multi_microgrid`).

`multi_microgrid_network(n_microgrids)` builds the pandapower network (the scenario's
`network: {builder: multi_microgrid_network, kwargs: {n_microgrids: n}}`);
`multi_microgrid(n_microgrids)` returns the raw scenario mapping.
"""

from __future__ import annotations

import copy
import re

import pandas as pd
import yaml

TEMPLATES = 3
SCALED_POWER = re.compile(r"^(p_|q_|s_max|e_|import_max|export_max|ramp_|cost_a|startup_cost)")


def _scale(n_microgrids: int) -> float:
    if not isinstance(n_microgrids, int) or isinstance(n_microgrids, bool) or n_microgrids < 1:
        raise ValueError(f"n_microgrids must be an integer >= 1, got {n_microgrids!r}")
    return min(1.0, TEMPLATES / n_microgrids)


def _ties(base):
    """`(tie line index, DSO-side bus index)` of microgrids 1..3 in the shipped composite."""
    names = base.bus.name.astype(str)
    dso = base.bus.index[names.str.startswith("DSO ")]
    lines = [base.line.index[base.line.to_bus.isin(base.bus.index[names.str.startswith(f"MG{j} ")])
                             & base.line.from_bus.isin(dso)][0] for j in range(1, TEMPLATES + 1)]
    return lines, [int(base.line.at[i, "from_bus"]) for i in lines]


def multi_microgrid_network(n_microgrids: int = 12):
    """The composite feeder with `n_microgrids` copies of microgrid 1 (see the module docstring)."""
    from pandapower.toolbox import drop_buses

    from pgjax import networks

    s = _scale(n_microgrids)
    base = networks.load("ieee34_3x_ieee13")
    names = base.bus.name.astype(str)
    tie_lines, tie_from = _ties(base)
    template_buses = base.bus.index[names.str.startswith("MG1 ")]
    net = copy.deepcopy(base)
    for j in range(1, TEMPLATES + 1):  # the feeder's own loads and shunts at tie point j move to its DSO end
        mg_j = base.bus.index[names.str.startswith(f"MG{j} ")]
        for table in ("load", "shunt"):
            own = net[table].bus.isin(mg_j) & ~net[table].name.astype(str).str.startswith("MG")
            net[table].loc[own, "bus"] = tie_from[j - 1]
    drop_buses(net, base.bus.index[names.str.match(r"^MG\d+ ")], drop_elements=True)
    for k in range(1, n_microgrids + 1):
        offset = int(net.bus.index.max()) + 1 - int(template_buses.min())
        bus_map = {int(b): int(b) + offset for b in template_buses}
        for table, columns in (("bus", ()), ("line", ("from_bus", "to_bus")), ("trafo", ("hv_bus", "lv_bus")),
                               ("switch", ("bus", "element")), ("load", ("bus",)), ("sgen", ("bus",)),
                               ("storage", ("bus",))):
            src = base[table]
            rows = src.loc[src.index.isin(template_buses)] if table == "bus" else src.loc[
                src[columns[0]].isin(template_buses) & src["name"].astype(str).str.startswith("MG1 ")]
            if table == "line":
                rows = rows[rows.to_bus.isin(template_buses)]
            rows = rows.copy()
            if table == "bus":
                rows.index = rows.index.map(bus_map)
            else:
                for col in columns:
                    rows[col] = rows[col].map(lambda b: bus_map.get(int(b), int(b)))
                start = int(net[table].index.max()) + 1 if len(net[table]) else 0
                rows.index = pd.RangeIndex(start, start + len(rows))
            rows["name"] = rows["name"].astype(str).str.replace(r"^MG1 ", f"MG{k} ", regex=True)
            if table == "load":
                rows[["p_mw", "q_mvar"]] *= s
            net[table] = pd.concat([net[table], rows]) if len(net[table]) else rows
        tie = base.line.loc[[tie_lines[0]]].copy()
        tie["from_bus"] = tie_from[(k - 1) % TEMPLATES]
        tie["to_bus"] = bus_map[int(base.line.at[tie_lines[0], "to_bus"])]
        tie["name"] = f"MG{k} Tie"
        tie.index = [int(net.line.index.max()) + 1]
        net.line = pd.concat([net.line, tie])
    net.ext_grid = net.ext_grid[net.ext_grid.bus.isin(net.bus.index)]
    return net


def multi_microgrid(n_microgrids: int = 12) -> dict:
    """Raw scenario mapping of `multi_microgrid_large` with `n_microgrids` learned microgrids."""
    from pgjax.scenario import SCENARIO_DIR

    base = yaml.safe_load((SCENARIO_DIR / "multi_microgrid.yaml").read_text())
    s = _scale(n_microgrids)
    raw = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("agents", "variants")}
    raw.update(name="multi_microgrid_large", description=f"multi_microgrid with {n_microgrids} microgrids",
               network={"builder": "multi_microgrid_network", "kwargs": {"n_microgrids": n_microgrids}})
    templates = {a["id"]: a for a in base["agents"]}
    dso = copy.deepcopy(templates["DSO"])
    from pgjax import networks

    net = networks.load("ieee34_3x_ieee13")
    tie_lines, tie_from = _ties(net)
    moved = {str(net.bus.at[int(net.line.at[i, "to_bus"]), "name"]): str(net.bus.at[b, "name"])
             for i, b in zip(tie_lines, tie_from)}  # feeder devices at a tie point move to its DSO end
    for d in dso["devices"]:
        if "bus" in d:
            d["bus"] = moved.get(d["bus"], d["bus"])
    agents, load_rules = [dso], []
    for k in range(1, n_microgrids + 1):
        j = (k - 1) % TEMPLATES + 1
        mg = copy.deepcopy(templates[f"MG{j}"])
        mg["id"], mg["buses"] = f"MG{k}", [f"MG{k} *"]
        for d in mg["devices"]:
            d["name"] = re.sub(r"^mg\d+", f"mg{k}", d["name"])
            if "bus" in d:
                d["bus"] = re.sub(r"^MG\d+", f"MG{k}", d["bus"])
            if "branch" in d:
                d["branch"] = {kind: re.sub(r"^MG\d+", f"MG{k}", ref) for kind, ref in d["branch"].items()}
            for key in list(d):
                if isinstance(d[key], (int, float)) and not isinstance(d[key], bool) and SCALED_POWER.match(key):
                    d[key] = float(d[key]) * s
                elif key == "cost_c_per_mw2h":
                    d[key] = float(d[key]) / s
        agents.append(mg)
        rule = next(r for r in base["profiles"]["loads"] if r["match"] == f"MG{j} *")
        load_rules.append({"match": f"MG{k} *", "series": rule["series"]})
    raw["profiles"]["loads"] = load_rules + [r for r in base["profiles"]["loads"] if r["match"] == "*"]
    raw["agents"] = agents
    return raw


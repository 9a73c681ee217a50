"""Generated scenarios: `multi_microgrid` scaled to any number of microgrids.

    env = pgjax.make("multi_microgrid_large", n_microgrids=120)   # 120 learned agents (stress test)
    env = pgjax.make("multi_microgrid_xl")      # 250 microgrids: 3,283 buses, 250 learned agents

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

`multi_microgrid_xl` is the scale scenario: the same construction with 250 microgrids by
default (33 feeder buses + 250 x 13 = 3,283 buses, 2,529 lines, 250 transformers; 250
learned agents, one per microgrid, with 9 action columns each). It is registered as
`large` (`pgjax.scenario.names(large=True)`), so the tests that run every registered
scenario for thousands of steps leave it out; `tests/scenario/test_scenario_builders.py` checks it
against pandapower (DistFlow, float64, 1e-8 p.u.) and steps it.
"""

from __future__ import annotations

import copy
import re

import pandas as pd
import yaml

from pgjax.errors import brief
from pgjax.scenario.registry import SCENARIO_DIR, register

TEMPLATES = 3
SCALED_POWER = re.compile(r"^(p_|q_|s_max|e_|import_max|export_max|ramp_|cost_a|startup_cost)")


MAX_MICROGRIDS = 5000  # ~13 buses and 6 devices each: a bound on the network a call may build


def _scale(n_microgrids: int) -> float:
    if not isinstance(n_microgrids, int) or isinstance(n_microgrids, bool) or not 1 <= n_microgrids <= MAX_MICROGRIDS:
        raise ValueError(f"n_microgrids must be an integer in [1, {MAX_MICROGRIDS}], got {brief(n_microgrids)}")
    return min(1.0, TEMPLATES / n_microgrids)


def _ties(base):
    """`(tie line index, DSO-side bus index)` of microgrids 1..3 in the shipped composite."""
    names = base.bus.name.astype(str)
    dso = base.bus.index[names.str.startswith("DSO ")]
    lines = [base.line.index[base.line.to_bus.isin(base.bus.index[names.str.startswith(f"MG{j} ")])
                             & base.line.from_bus.isin(dso)][0] for j in range(1, TEMPLATES + 1)]
    return lines, [int(base.line.at[i, "from_bus"]) for i in lines]


# copied tables and their bus columns
TABLES = (("bus", ()), ("line", ("from_bus", "to_bus")), ("trafo", ("hv_bus", "lv_bus")),
          ("switch", ("bus", "element")), ("load", ("bus",)), ("sgen", ("bus",)), ("storage", ("bus",)))


def _template(base, template_buses) -> dict:
    """Microgrid 1's rows per table of `TABLES`: its buses and the `MG1 ...` elements on them."""
    template = {}
    for table, columns in TABLES:
        src = base[table]
        rows = src.loc[src.index.isin(template_buses)] if table == "bus" else src.loc[
            src[columns[0]].isin(template_buses) & src["name"].astype(str).str.startswith("MG1 ")]
        if table == "line":
            rows = rows[rows.to_bus.isin(template_buses)]
        template[table] = rows
    return template


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
    # the template's rows per table, taken once; every copy shifts them (one concat per table at
    # the end: appending copy by copy is quadratic in n_microgrids)
    template = _template(base, template_buses)
    nxt = {t: int(net[t].index.max()) + 1 if len(net[t]) else 0 for t, _ in TABLES}
    pieces = {t: [] for t, _ in TABLES}
    tie_row = base.line.loc[[tie_lines[0]]]
    tie_to = int(base.line.at[tie_lines[0], "to_bus"])
    lo, hi = int(template_buses.min()), int(template_buses.max())
    in_template = {int(b) for b in template_buses}
    for k in range(1, n_microgrids + 1):
        offset = nxt["bus"] - lo
        nxt["bus"] = hi + offset + 1
        for table, columns in TABLES:
            rows = template[table].copy()
            if table == "bus":
                rows.index = rows.index + offset
            else:
                for col in columns:
                    rows[col] = [int(b) + offset if int(b) in in_template else int(b) for b in rows[col]]
                rows.index = pd.RangeIndex(nxt[table], nxt[table] + len(rows))
                nxt[table] += len(rows)
            rows["name"] = rows["name"].astype(str).str.replace(r"^MG1 ", f"MG{k} ", regex=True)
            if table == "load":
                rows[["p_mw", "q_mvar"]] *= s
            pieces[table].append(rows)
        tie = tie_row.copy()
        tie["from_bus"] = tie_from[(k - 1) % TEMPLATES]
        tie["to_bus"] = tie_to + offset
        tie["name"] = f"MG{k} Tie"
        tie.index = [nxt["line"]]
        nxt["line"] += 1
        pieces["line"].append(tie)
    for table, _ in TABLES:
        parts = [net[table]] if len(net[table]) else []
        net[table] = pd.concat(parts + pieces[table])
    net.ext_grid = net.ext_grid[net.ext_grid.bus.isin(net.bus.index)]
    return net


XL_MICROGRIDS = 250


def multi_microgrid_xl(n_microgrids: int = XL_MICROGRIDS) -> dict:
    """Raw scenario mapping of `multi_microgrid_xl`: `multi_microgrid_large` at 250 microgrids by default."""
    raw = multi_microgrid(n_microgrids)
    raw.update(name="multi_microgrid_xl", description=f"scale scenario: multi_microgrid with {n_microgrids} microgrids")
    return raw


def multi_microgrid(n_microgrids: int = 12) -> dict:
    """Raw scenario mapping of `multi_microgrid_large` with `n_microgrids` learned microgrids."""

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


register("multi_microgrid_large-v0", multi_microgrid)
register("multi_microgrid_xl-v0", multi_microgrid_xl, large=True)  # 3,283 buses, 250 agents

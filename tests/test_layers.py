"""The package's import graph: layers that only import downwards, no circles, no env family
importing the baselines.

Every `import` and `from ... import` of a pgjax module (module level or inside a function)
is read from the source with `ast`, nothing is imported. Layers, lowest first (`LAYERS`):
a module imports only modules of its own or a lower layer; the `pgjax` package itself
(`pgjax.make`, `pgjax.Grid`) is a facade at the environment's layer, so wrappers, baselines
and commands may use it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"pgjax": ROOT / "pgjax", "pgjax.baselines": ROOT / "baselines", "pgjax.converters": ROOT / "converters"}

LAYERS = (  # lowest first; a top-level module or package of pgjax per entry
    ("pgjax.errors", "pgjax.precision", "pgjax.registry", "pgjax.checks", "pgjax.watchdog", "pgjax.runio",
     "pgjax.distributed", "pgjax.splits", "pgjax.networks", "pgjax.profiles"),
    ("pgjax.grid", "pgjax.grid3ph"),
    ("pgjax.powerflow",),
    ("pgjax.converters", "pgjax.verification", "pgjax.verification3ph", "pgjax.verification3ph_pandapower"),
    ("pgjax.devices",),
    ("pgjax.protocols",),
    ("pgjax.scenario",),
    ("pgjax.env", "pgjax"),
    ("pgjax.frequency",),
    ("pgjax.wrappers", "pgjax.baselines", "pgjax.perf"),
    ("pgjax.deploy",),
    ("pgjax.commands", "pgjax.cli"),
)
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
ENV_FAMILIES = ("pgjax.env", "pgjax.frequency")


def _modules() -> dict[str, Path]:
    mods = {}
    for package, folder in SOURCES.items():
        for file in folder.rglob("*.py"):
            parts = [p for p in file.relative_to(folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = file
    return mods


MODULES = _modules()


def _imports(name: str, file: Path) -> set[str]:
    """The pgjax modules `name` imports (a `from pkg import sub` names the submodule)."""
    out = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            out.update(subs)
            if len(subs) < len(node.names):  # names defined in the module itself
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES and m != name and not m.startswith(name + ".")}


GRAPH = {name: _imports(name, file) for name, file in MODULES.items()}


def unit_of(module: str) -> str:
    """The layer entry a module belongs to (its top-level module or package under pgjax)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_every_module_has_a_layer():
    assert {unit_of(m) for m in MODULES} <= set(LAYER), sorted({unit_of(m) for m in MODULES} - set(LAYER))


def test_imports_run_down_the_layers():
    upward = [f"{m} ({unit_of(m)}, layer {LAYER[unit_of(m)]}) imports {d} (layer {LAYER[unit_of(d)]})"
              for m, deps in GRAPH.items() for d in deps if LAYER[unit_of(d)] > LAYER[unit_of(m)]]
    assert not upward, "\n".join(upward)


def test_no_env_family_imports_the_baselines_or_the_commands():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if unit_of(m) in ENV_FAMILIES
           for d in deps if unit_of(d) in ("pgjax.baselines", "pgjax.commands", "pgjax.wrappers", "pgjax.deploy")]
    assert not bad, bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circles():
    assert not _cycles(GRAPH)


@pytest.mark.parametrize("graph, expected", [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
                                             ({"a": {"b"}, "b": {"c"}, "c": set()}, [])])
def test_the_circle_finder_finds_circles(graph, expected):
    assert _cycles(graph) == expected

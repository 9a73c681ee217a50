"""The IEEE 68-bus (NETS-NYPS) system as a `dynamics.Plant`, linearized at its AC power flow.

`build(config)` loads the shipped network (`pgjax.networks.load("ieee68")`), solves its AC
power flow with `pgjax.powerflow.solve` (Newton; float64 when JAX's 64-bit mode is on,
else float32), reads the 16 machines from `pgjax/data/ieee68/generators.csv` (see the
README there: source and known flaws) and returns a `System68`: the `Plant` (numpy float64),
the operating point and the host-side tables the environment places its agents with.

Modelling choices (stated here, not in the data):
- machine constants on the machine bases of the CSV (`M = 2H`, `D`, `x'_d`), converted to
  the system base `S_base` (100 MVA) by `S_rated / S_base`;
- every machine has a turbine-governor with droop `R = governor_droop` on its machine base
  and time constant `governor_t_s` (one value for all: the data has none);
- loads are frequency sensitive with `load_damping` pu power per pu frequency of their
  operating-point power;
- contingency candidates (host-side, `trip_candidates`): branches whose outage leaves the
  network connected, and machines whose operating-point power is at most `max_trip_mw`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pgjax.errors import DataError
from pgjax.frequency.dynamics import Plant

MACHINE_CSV = Path(__file__).resolve().parent.parent / "data" / "ieee68" / "generators.csv"
COLUMNS = ("gen_no", "bus", "s_rated_mva", "xd_pu", "xd_transient_pu", "M_2H_s", "D_pu")


class PlantConfig(NamedTuple):
    governor_droop: float = 0.05  # R, pu frequency per pu power on the machine base
    governor_t_s: float = 5.0  # turbine-governor lag
    load_damping: float = 1.5  # pu load change per pu frequency change
    max_trip_mw: float = 550.0  # largest machine considered for an N-1 trip


class OperatingPoint(NamedTuple):
    """The AC power flow the dynamics are linearized at (grid bus order)."""

    vm_pu: np.ndarray  # [n_bus]
    va_deg: np.ndarray  # [n_bus]
    p_gen_mw: np.ndarray  # [n_m] machine active power (the slack machine's from the solution)
    q_gen_mvar: np.ndarray  # [n_m]
    converged: bool


class System68(NamedTuple):
    plant: Plant  # numpy float64 arrays
    op: OperatingPoint
    s_base_mva: float
    load_bus: np.ndarray  # [n_load] grid bus of each load
    load_p_mw: np.ndarray  # [n_load] operating-point active power
    branch_candidates: np.ndarray  # [n_c] branch indices that may trip
    machine_candidates: np.ndarray  # [n_g] machine indices that may trip
    adjacency: np.ndarray  # [n_bus, n_bus] bool, buses joined by a branch


def read_machines(path: Path = MACHINE_CSV) -> dict[str, np.ndarray]:
    """The machine table, one `[n_m]` array per column; `DataError` naming file, row and column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or tuple(rows[0].keys()) != COLUMNS:
        raise DataError(f"{path}: expected columns {COLUMNS}, got {tuple(rows[0].keys()) if rows else 'no rows'}")
    out = {c: [] for c in COLUMNS}
    for r, row in enumerate(rows, start=2):
        for c in COLUMNS:
            try:
                v = float(row[c])
            except (TypeError, ValueError):
                raise DataError(f"{path}: line {r}, column {c}: expected a number, got {row[c]!r}") from None
            if not np.isfinite(v) or (c != "gen_no" and c != "bus" and v <= 0):
                raise DataError(f"{path}: line {r}, column {c}: expected a positive finite number, got {row[c]!r}")
            out[c].append(v)
    return {c: np.asarray(v) for c, v in out.items()}


def solver_grid(grid):
    """`grid` as JAX arrays: float64 when JAX's 64-bit mode is on, else float32."""
    import jax
    import jax.numpy as jnp

    from pgjax.grid import astype

    return astype(grid, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def operating_point(grid, machine_bus: np.ndarray) -> OperatingPoint:
    """The AC power flow of `grid` (a `solver_grid`) by `pgjax.powerflow.solve`, machines at `machine_bus`."""
    import jax

    from pgjax.powerflow import solve

    res = jax.device_get(solve(grid))
    gen_bus, eg_bus = np.asarray(grid.gen.bus), np.asarray(grid.ext_grid.bus)
    p, q = np.full(len(machine_bus), np.nan), np.full(len(machine_bus), np.nan)
    for k, b in enumerate(machine_bus):
        if b in gen_bus:
            i = int(np.flatnonzero(gen_bus == b)[0])
            p[k], q[k] = float(grid.gen.p_mw[i]), float(res.gen_q_mvar[i])
        elif b in eg_bus:
            i = int(np.flatnonzero(eg_bus == b)[0])
            p[k], q[k] = float(res.slack_p_mw[i]), float(res.slack_q_mvar[i])
        else:
            raise DataError(f"{MACHINE_CSV}: machine at grid bus {b} has no generator or external grid in ieee68")
    return OperatingPoint(np.asarray(res.vm_pu, np.float64), np.asarray(res.va_deg, np.float64), p, q,
                          bool(res.converged))


def _connected(n_bus: int, f: np.ndarray, t: np.ndarray) -> bool:
    """All `n_bus` buses in one component of the branches `f - t`."""
    parent = np.arange(n_bus)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(f, t):
        parent[root(a)] = root(b)
    return len({root(i) for i in range(n_bus)}) == 1


def build(config: PlantConfig = PlantConfig()) -> System68:
    """The 68-bus `System68` (see the module docstring)."""
    from pgjax import networks
    from pgjax.converters.pandapower import from_pandapower
    from pgjax.powerflow.network import branch_admittances

    net = networks.load("ieee68")
    mach = read_machines()
    name_to_row = {str(n): i for i, n in enumerate(net.bus.name.values)}
    missing = [int(b) for b in mach["bus"] if str(int(b)) not in name_to_row]
    if missing:
        raise DataError(f"{MACHINE_CSV}: column bus: buses {missing} are not in the ieee68 network")
    grid, netmap = from_pandapower(net)
    grid = solver_grid(grid)
    machine_bus = np.asarray(netmap.bus_lookup)[[name_to_row[str(int(b))] for b in mach["bus"]]].astype(np.int64)
    op = operating_point(grid, machine_bus)
    if not op.converged:
        raise DataError("ieee68: the AC power flow did not converge")
    s_base = float(grid.sn_mva)
    ratio = mach["s_rated_mva"] / s_base
    xd = mach["xd_transient_pu"] / ratio
    vm, va = op.vm_pu, np.deg2rad(op.va_deg)
    v_t = vm[machine_bus] * np.exp(1j * va[machine_bus])
    s_gen = (op.p_gen_mw + 1j * op.q_gen_mvar) / s_base
    e = v_t + 1j * xd * np.conj(s_gen / v_t)
    c_machine = np.abs(e) * np.abs(v_t) * np.cos(np.angle(e) - va[machine_bus]) / xd

    y_ff, y_ft, y_tf, y_tt = (np.asarray(y) for y in branch_admittances(grid))
    f, t = np.asarray(grid.branch.from_bus), np.asarray(grid.branch.to_bus)
    b_series = 0.5 * (y_ft.imag + y_tf.imag)  # y_ft = -1 / (r + jx): Im = x / |z|^2
    c_branch = vm[f] * vm[t] * b_series * np.cos(va[f] - va[t])
    on = np.asarray(grid.branch.in_service, bool)
    c_branch = np.where(on, c_branch, 0.0)

    n_bus = int(grid.bus.vn_kv.shape[0])
    load_bus = np.asarray(grid.load.bus)
    load_p = np.asarray(grid.load.p_mw, np.float64) * np.asarray(grid.load.in_service)
    load_damping = config.load_damping * np.bincount(load_bus, load_p, n_bus) / s_base
    plant = Plant(
        m_s=mach["M_2H_s"] * ratio, d_pu=mach["D_pu"] * ratio,
        inv_r_pu=ratio / config.governor_droop, t_gov_s=np.full(len(ratio), config.governor_t_s),
        c_machine_pu=c_machine, machine_bus=machine_bus.astype(np.int32), p0_pu=op.p_gen_mw / s_base,
        branch_from=f.astype(np.int32), branch_to=t.astype(np.int32), c_branch_pu=c_branch,
        load_damping_pu=load_damping, f0_hz=np.asarray(float(net.f_hz)))
    cand = [k for k in np.flatnonzero(on) if _connected(n_bus, f[on & (np.arange(len(f)) != k)],
                                                         t[on & (np.arange(len(t)) != k)])]
    adjacency = np.zeros((n_bus, n_bus), bool)
    adjacency[f[on], t[on]] = adjacency[t[on], f[on]] = True
    return System68(plant=plant, op=op, s_base_mva=s_base, load_bus=load_bus, load_p_mw=load_p,
                    branch_candidates=np.asarray(cand, np.int32),
                    machine_candidates=np.flatnonzero(op.p_gen_mw <= config.max_trip_mw).astype(np.int32),
                    adjacency=adjacency)


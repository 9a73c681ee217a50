"""Linearized multi-machine frequency dynamics: swing equations, governors, Kron-reduced network.

Conventions: per unit on the system base `S_base` (MVA) and the nominal frequency `f0`
(Hz); time in seconds; every state is a deviation from the AC operating point.

State per machine k (`FreqState`, each `[n_machine]`):

    d(delta_k)/dt     = omega0 * dw_k                                   (rad; omega0 = 2 pi f0)
    M_k d(dw_k)/dt    = dpm_k - dpe_k - D_k dw_k                         (dw: pu of f0; M = 2H, s)
    T_k d(dpm_k)/dt   = -dpm_k - dw_k / R_k                              (turbine-governor lag, droop R)

so a single machine with a constant load step `dP` (pu) settles at
`dw = -dP / (D + 1/R)` and starts with `d(dw)/dt = -dP / M = -dP / (2H)`.

Network (`Plant`): classical machines, an internal EMF `E'_k` behind `x'_d` connected to
its terminal bus; buses joined by branches. Active power is linearized around the AC
operating point with voltage magnitudes held and conductances neglected (lossless,
"DC-like" but with the operating point's voltages and angles): each link carries
`c (dtheta_i - dtheta_j)` with `c = V_i V_j B_ij cos(theta_i - theta_j)` for branches and
`c = E'_k V_k cos(delta_k - theta_k) / x'_d` for the machine links. With the Laplacian
`K` over `[buses | internal nodes]` and bus injection deviations `dp_bus` (MW / S_base,
generation positive), bus angles are eliminated (Kron reduction):

    dtheta = S ddelta + K_bb^-1 dp_bus,  S = -K_bb^-1 K_bg  [n_bus, n_machine] (rows sum to 1)
    dpe    = K_red ddelta - S^T dp_bus,  K_red = K_gg + K_gb S   (lossless: sum(dpe) = -sum(dp_bus))

Bus frequencies are `dw_bus = S dw` (the derivative of the angle part; the injection part
changes stepwise and is left out). Loads are frequency sensitive: a bus draws
`load_damping_pu[i] * dw_bus[i]` more (pu), which enters `dpe` as the damping matrix
`S^T diag(load_damping) S`.

Contingencies are fixed-shape masks (`Topology`): a branch out of service drops its link
from `K`; a tripped machine drops its internal link, its state derivatives are zero (it
is disconnected) and its operating-point power `p0_pu` is lost at its bus (the caller adds
`-p0_pu` to `dp_bus`, `lost_injection`). A trip must leave every bus connected to a machine
in service (`K_bb` nonsingular); choose contingencies on the host (`pgjax.frequency.ieee68`).

Integration: the equations are linear with inputs held over a sub-step, so each sub-step
of length `h` is the exact zero-order-hold map `x' = Phi x + Gamma w`
(`Phi, Gamma` from one matrix exponential, `discretize`), `w = S^T dp_bus` the machine-side
share of the bus injections. `simulate` runs the sub-steps by `lax.scan`. Assumptions:
small deviations (linear model, no governor limits or deadbands), voltages constant, no
AVR / PSS / sub-transient dynamics, losses neglected in the dynamics. All functions are
pure, shape-static and jit / vmap-able.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Plant(NamedTuple):
    """Physical data of the linearized system (arrays; shapes static)."""

    m_s: jax.Array  # [n_m] M = 2H on the system base, s
    d_pu: jax.Array  # [n_m] damping on the system base, pu power / pu speed
    inv_r_pu: jax.Array  # [n_m] governor gain 1/R on the system base (0: no governor)
    t_gov_s: jax.Array  # [n_m] turbine-governor time constant, s
    c_machine_pu: jax.Array  # [n_m] synchronizing coefficient of the machine link, pu / rad
    machine_bus: jax.Array  # [n_m] int, terminal bus
    p0_pu: jax.Array  # [n_m] electrical power at the operating point (lost on a trip)
    branch_from: jax.Array  # [n_br] int
    branch_to: jax.Array  # [n_br] int
    c_branch_pu: jax.Array  # [n_br] synchronizing coefficient of each branch, pu / rad
    load_damping_pu: jax.Array  # [n_bus] extra load per pu frequency, pu
    f0_hz: jax.Array  # [] nominal frequency


class Topology(NamedTuple):
    """Which branches and machines are in service (the contingency masks)."""

    branch_on: jax.Array  # [n_br] bool
    machine_on: jax.Array  # [n_m] bool


class FreqState(NamedTuple):
    """Deviations of the machines from the operating point, each `[n_m]`."""

    delta_rad: jax.Array  # rotor angle
    dw_pu: jax.Array  # speed, pu of f0
    dpm_pu: jax.Array  # mechanical power, pu of S_base


class Reduced(NamedTuple):
    """The network reduced to the internal machine nodes."""

    s: jax.Array  # [n_bus, n_m] bus angle (and frequency) per machine angle
    k_red: jax.Array  # [n_m, n_m] reduced synchronizing matrix, pu / rad


class Discrete(NamedTuple):
    """One sub-step of the linear system: `x' = phi x + gamma w`, `x = [delta | dw | dpm]`."""

    phi: jax.Array  # [3 n_m, 3 n_m]
    gamma: jax.Array  # [3 n_m, n_m]
    a: jax.Array  # [3 n_m, 3 n_m] the continuous system matrix
    b: jax.Array  # [3 n_m, n_m] its input matrix
    red: Reduced


def all_in_service(plant: Plant) -> Topology:
    return Topology(jnp.ones(plant.branch_from.shape, bool), jnp.ones(plant.m_s.shape, bool))


def zero_state(plant: Plant) -> FreqState:
    z = jnp.zeros_like(plant.m_s)
    return FreqState(z, z, z)


def laplacian(plant: Plant, topo: Topology) -> jax.Array:
    """`K [n_bus + n_m, n_bus + n_m]`: buses first, then the internal machine nodes."""
    n_bus, n_m = plant.load_damping_pu.shape[0], plant.m_s.shape[0]
    c_br = jnp.where(topo.branch_on, plant.c_branch_pu, 0.0)
    c_m = jnp.where(topo.machine_on, plant.c_machine_pu, 0.0)
    i = jnp.concatenate([plant.branch_from, plant.machine_bus])
    j = jnp.concatenate([plant.branch_to, n_bus + jnp.arange(n_m)])
    c = jnp.concatenate([c_br, c_m])
    n = n_bus + n_m
    k = jnp.zeros((n, n), c.dtype).at[i, j].add(-c).at[j, i].add(-c)
    return k.at[i, i].add(c).at[j, j].add(c)


def reduce(plant: Plant, topo: Topology) -> Reduced:
    """Kron reduction of `laplacian` onto the machines (see the module docstring)."""
    n_bus = plant.load_damping_pu.shape[0]
    k = laplacian(plant, topo)
    k_bb, k_bg, k_gb, k_gg = k[:n_bus, :n_bus], k[:n_bus, n_bus:], k[n_bus:, :n_bus], k[n_bus:, n_bus:]
    s = -jnp.linalg.solve(k_bb, k_bg)
    return Reduced(s=s, k_red=k_gg + k_gb @ s)


def system(plant: Plant, topo: Topology, red: Reduced) -> tuple[jax.Array, jax.Array]:
    """Continuous `(A [3n, 3n], B [3n, n])` of `x = [delta | dw | dpm]`, input `w = S^T dp_bus`."""
    n = plant.m_s.shape[0]
    on = topo.machine_on.astype(plant.m_s.dtype)
    omega0 = 2 * jnp.pi * plant.f0_hz
    inv_m = on / plant.m_s
    load_d = red.s.T @ (plant.load_damping_pu[:, None] * red.s)  # [n, n]
    zero = jnp.zeros((n, n), plant.m_s.dtype)
    a = jnp.block([
        [zero, omega0 * jnp.diag(on), zero],
        [-inv_m[:, None] * red.k_red, -inv_m[:, None] * (load_d + jnp.diag(plant.d_pu)), jnp.diag(inv_m)],
        [zero, -jnp.diag(on * plant.inv_r_pu / plant.t_gov_s), -jnp.diag(on / plant.t_gov_s)],
    ])
    b = jnp.concatenate([zero, jnp.diag(inv_m), zero])
    return a, b


def discretize(plant: Plant, topo: Topology, substep_s) -> Discrete:
    """The exact zero-order-hold map of one sub-step of `substep_s` seconds (one `expm`)."""
    red = reduce(plant, topo)
    a, b = system(plant, topo, red)
    n3, n = b.shape
    aug = jnp.zeros((n3 + n, n3 + n), a.dtype).at[:n3, :n3].set(a).at[:n3, n3:].set(b)
    e = jax.scipy.linalg.expm(aug * substep_s)
    return Discrete(phi=e[:n3, :n3], gamma=e[:n3, n3:], a=a, b=b, red=red)


def lost_injection(plant: Plant, topo: Topology, n_bus: int) -> jax.Array:
    """`[n_bus]` injection deviation (pu) of the tripped machines: minus their operating-point power."""
    lost = jnp.where(topo.machine_on, 0.0, plant.p0_pu)
    return -jax.ops.segment_sum(lost, plant.machine_bus, n_bus)


def pack(x: FreqState) -> jax.Array:
    return jnp.concatenate([x.delta_rad, x.dw_pu, x.dpm_pu])


def unpack(v: jax.Array) -> FreqState:
    n = v.shape[0] // 3
    return FreqState(v[:n], v[n:2 * n], v[2 * n:])


def derivative(disc: Discrete, x: FreqState, w: jax.Array) -> FreqState:
    """`dx/dt` of the continuous system for input `w [n_m]` (e.g. the RoCoF `d(dw)/dt`)."""
    return unpack(disc.a @ pack(x) + disc.b @ w)


def electrical_power(plant: Plant, red: Reduced, x: FreqState, dp_bus: jax.Array) -> jax.Array:
    """`dpe [n_m]` (pu) for bus injection deviations `dp_bus [n_bus]`, with frequency-sensitive loads."""
    dw_bus = red.s @ x.dw_pu
    return red.k_red @ x.delta_rad - red.s.T @ (dp_bus - plant.load_damping_pu * dw_bus)


def coi_speed(plant: Plant, topo: Topology, dw_pu: jax.Array) -> jax.Array:
    """Centre-of-inertia speed deviation (pu) of the machines in service, `[...]` for `dw_pu [..., n_m]`."""
    m = jnp.where(topo.machine_on, plant.m_s, 0.0)
    return dw_pu @ m / jnp.sum(m)


class Trace(NamedTuple):
    """Per sub-step outputs of `simulate`, leading axis `[n_sub]`."""

    dw_pu: jax.Array  # [n_sub, n_m] machine speeds at the end of each sub-step
    dw_bus_pu: jax.Array  # [n_sub, n_bus] bus frequencies at the end of each sub-step
    rocof_pu_s: jax.Array  # [n_sub, n_m] d(dw)/dt at the start of each sub-step


def simulate(disc: Discrete, x: FreqState, w_seq: jax.Array) -> tuple[FreqState, Trace]:
    """Run `w_seq [n_sub, n_m]` (input held over each sub-step) from `x`; `lax.scan` over sub-steps."""
    def body(v, w):
        rocof = unpack(disc.a @ v + disc.b @ w).dw_pu
        v = disc.phi @ v + disc.gamma @ w
        dw = unpack(v).dw_pu
        return v, (dw, disc.red.s @ dw, rocof)

    v, (dw, dw_bus, rocof) = jax.lax.scan(body, pack(x), w_seq)
    return unpack(v), Trace(dw, dw_bus, rocof)


def recentre(plant: Plant, topo: Topology, x: FreqState) -> FreqState:
    """`x` with the centre-of-inertia angle removed (exact: `K_red` annihilates a common angle)."""
    return x._replace(delta_rad=x.delta_rad - coi_speed(plant, topo, x.delta_rad))

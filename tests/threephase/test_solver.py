"""The three-phase power flow's own properties: the balanced solver's answer on a balanced
grid, vmap against point-by-point solves, implicit gradients against finite differences,
padding and the `pgjax.powerflow.solve` entry point, and errors that name what is wrong."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandapower.networks as pn
import pytest

pytest.importorskip("opendssdirect")

from pgjax import grid3ph, powerflow  # noqa: E402
from pgjax.converters import opendss  # noqa: E402
from pgjax.converters.pandapower import from_pandapower  # noqa: E402
from pgjax.errors import DataError, InputError  # noqa: E402
from pgjax.powerflow import threephase  # noqa: E402
from pgjax.verification3ph import DATA, FEEDERS  # noqa: E402

SOLVE = jax.jit(lambda g, p, q: threephase.solve(g, p, q, max_iter=200))
SOLVE_GRID = jax.jit(lambda g: threephase.solve(g, max_iter=200))


@pytest.fixture(scope="module")
def ieee13():
    dss = opendss.compile_file(DATA / FEEDERS["ieee13"])
    opendss.pin_taps(dss)
    return opendss.from_engine(dss)


@pytest.mark.parametrize("make_net", [pn.case33bw, pytest.param(pn.create_cigre_network_mv, marks=pytest.mark.slow)],
                         ids=["case33bw", "cigre_mv"])
def test_balanced_grid_equals_the_balanced_solver(make_net):
    grid, _ = from_pandapower(make_net())
    ref = jax.jit(lambda g: powerflow.solve(g, method="newton", tol=1e-12))(grid)
    res = SOLVE_GRID(threephase.from_balanced(grid))
    assert bool(ref.converged) and bool(res.converged)
    vm, va = np.asarray(res.vm_pu).reshape(-1, 3), np.asarray(res.va_deg).reshape(-1, 3)
    for k, shift in enumerate((0.0, -120.0, 120.0)):
        np.testing.assert_allclose(vm[:, k], ref.vm_pu, atol=1e-8)
        np.testing.assert_allclose((va[:, k] - shift - ref.va_deg + 180) % 360 - 180, 0, atol=1e-6)
    np.testing.assert_allclose(float(res.p_loss_kw) / 1e3, float(ref.p_loss_mw), rtol=1e-8)


def test_vmap_over_perturbed_loads_equals_point_by_point(ieee13):
    grid, _ = ieee13
    scale = 1 + 0.3 * jax.random.uniform(jax.random.PRNGKey(0), (4, grid.n_load), minval=-1)
    p, q = scale * grid.load.p_kw, scale * grid.load.q_kvar
    batch = jax.vmap(SOLVE, in_axes=(None, 0, 0))(grid, p, q)
    assert bool(jnp.all(batch.converged))
    for b in range(p.shape[0]):  # equal to the tolerance (a batch iterates until its last point converges)
        one = SOLVE(grid, p[b], q[b])
        for field in ("v_re_pu", "v_im_pu"):
            np.testing.assert_allclose(getattr(batch, field)[b], getattr(one, field), atol=1e-9)
        i_max = float(jnp.max(jnp.abs(one.i_re_a)))
        np.testing.assert_allclose(batch.i_re_a[b], one.i_re_a, atol=1e-6 * i_max)
        for field in ("p_loss_kw", "source_p_kw"):
            np.testing.assert_allclose(getattr(batch, field)[b], getattr(one, field), rtol=1e-8)


def test_gradients_equal_finite_differences(ieee13):
    """Implicit gradients (custom_root) of a voltage and the losses with respect to load powers
    and an element parameter, against central differences (step 1 kW on loads of 20-1155 kW;
    the solution itself is exact to ~1e-10 p.u., hence the absolute slack)."""
    grid, netmap = ieee13
    node = netmap.node_names.index("675.1")

    @jax.jit
    def objective(p, q, y_scale):
        g = grid.replace(elem=grid.elem.replace(y_re_pu=grid.elem.y_re_pu * y_scale))
        r = threephase.solve(g, p, q, max_iter=200)
        return r.vm_pu[node] + 1e-4 * r.p_loss_kw

    p0, q0, s0 = jnp.asarray(grid.load.p_kw), jnp.asarray(grid.load.q_kvar), jnp.asarray(1.0)
    grads = jax.grad(objective, argnums=(0, 1, 2))(p0, q0, s0)
    h = 1.0
    for k in (0, 2, 8, grid.n_load - 1):  # delta constant-PQ, wye constant-I and constant-Z branches
        e = jnp.zeros_like(p0).at[k].set(h)
        fd_p = (objective(p0 + e, q0, s0) - objective(p0 - e, q0, s0)) / (2 * h)
        fd_q = (objective(p0, q0 + e, s0) - objective(p0, q0 - e, s0)) / (2 * h)
        np.testing.assert_allclose(grads[0][k], fd_p, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(grads[1][k], fd_q, rtol=1e-4, atol=1e-9)
    fd_s = (objective(p0, q0, s0 + 1e-2) - objective(p0, q0, s0 - 1e-2)) / 2e-2
    np.testing.assert_allclose(grads[2], fd_s, rtol=1e-4)


def test_padded_grid_and_entry_point_give_the_same_solution(ieee13):
    grid, _ = ieee13
    one = SOLVE_GRID(grid)
    padded = grid3ph.pad(grid, grid.n_node + 5, grid.n_elem + 3, grid.elem.node.shape[1] + 2, grid.n_load + 4)
    res = SOLVE_GRID(padded)
    np.testing.assert_allclose(res.v_re_pu[:grid.n_node], one.v_re_pu, atol=1e-12)
    np.testing.assert_allclose(res.vm_pu[grid.n_node:], 0, atol=1e-12)
    np.testing.assert_allclose(res.p_loss_kw, one.p_loss_kw, rtol=1e-8)
    entry = jax.jit(lambda g, p, q: powerflow.solve(g, p, q, max_iter=200))(grid, grid.load.p_kw / 1e3,
                                                                           grid.load.q_kvar / 1e3)
    np.testing.assert_allclose(entry.v_re_pu, one.v_re_pu, atol=1e-12)


def test_stacked_feeders_solve_under_vmap(ieee13):
    grid, _ = ieee13
    g4, _ = opendss.from_opendss(DATA / FEEDERS["4bus_yy"])
    sizes = [max(a, b) for a, b in zip((grid.n_node, grid.n_elem, grid.elem.node.shape[1], grid.n_load),
                                      (g4.n_node, g4.n_elem, g4.elem.node.shape[1], g4.n_load))]
    stacked = grid3ph.stack([grid3ph.pad(g, *sizes) for g in (grid, g4)])
    batch = jax.vmap(lambda g: threephase.solve(g, max_iter=200))(stacked)
    for b, g in enumerate((grid, g4)):
        alone = SOLVE_GRID(g)
        np.testing.assert_allclose(batch.v_re_pu[b, :g.n_node], alone.v_re_pu, atol=1e-10)


def test_node_names_are_opendss_bus_phase_names(ieee13):
    _, netmap = ieee13
    assert netmap.node_names[:3] == ("sourcebus.1", "sourcebus.2", "sourcebus.3")
    assert "611.3" in netmap.node_names and "611.1" not in netmap.node_names  # a single-phase lateral


def test_unsupported_elements_are_named(tmp_path):
    path = tmp_path / "gen.dss"
    path.write_text("clear\nnew circuit.t basekv=12.47 bus1=src\nnew line.l1 bus1=src bus2=b1 length=1\n"
                    "new generator.g1 bus1=b1 kv=12.47 kw=100\nnew pvsystem.pv1 bus1=b1 kv=12.47 pmpp=100\n")
    with pytest.raises(InputError, match=r"Generator\.g1.*PVSystem\.pv1"):
        opendss.from_opendss(path)


@pytest.mark.parametrize("line, match", [
    ("new line.l1 bus1=src bus2=b1 linecode=nosuchcode length=1", r"(?s)nosuchcode.*line: 3"),
    ("new line.l1 bus1=src bus2=b1 length=1 foo=3", r'(?s)"foo".*Line\.l1.*line: 3'),
])
def test_malformed_dss_names_the_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad.dss"
    path.write_text(f"clear\nnew circuit.t basekv=12.47 bus1=src\n{line}\n")
    with pytest.raises(DataError, match=match) as err:
        opendss.from_opendss(path)
    assert "bad.dss" in str(err.value)


def test_missing_file_and_wrong_inputs(ieee13, tmp_path):
    with pytest.raises(DataError, match="no such .dss file"):
        opendss.from_opendss(tmp_path / "absent.dss")
    grid, _ = ieee13
    with pytest.raises(InputError, match=r"p_kw: expected shape"):
        threephase.solve(grid, jnp.zeros(3), None)
    with pytest.raises(InputError, match="three-phase grid"):
        powerflow.solve(grid, method="distflow")


def test_a_prepared_grid_gives_the_same_solution(ieee13):
    grid, _ = ieee13
    g = jax.tree.map(jnp.asarray, grid)
    prepared = threephase.prepare(g)
    with_prep = jax.jit(lambda p, pr: threephase.solve(grid, p, None, max_iter=200, prepared=pr))(
        g.load.p_kw * 1.1, prepared)
    without = SOLVE(grid, g.load.p_kw * 1.1, g.load.q_kvar)
    np.testing.assert_allclose(with_prep.v_re_pu, without.v_re_pu, atol=1e-10)
    with pytest.raises(InputError, match="prepared: expected"):
        threephase.solve(grid, prepared=prepared.v0)


def test_unmodelled_load_model_is_named(tmp_path):
    path = tmp_path / "zip.dss"
    path.write_text("clear\nnew circuit.t basekv=12.47 bus1=src\nnew line.l1 bus1=src bus2=b1 length=1\n"
                    "new load.zip1 bus1=b1 kv=12.47 kw=100 kvar=20 model=8 zipv=[0.2 0.3 0.5 0.2 0.3 0.5 0.5]\n")
    with pytest.raises(InputError, match=r"load\.zip1.*model 8"):
        opendss.from_opendss(path)


def test_float32_grid_keeps_the_float64_admittances(ieee13):
    """`astype` to float32 keeps what rounding drops of each admittance, so the float64
    network comes back to ~1e-14 (float32 alone: ~1e-8), through padding too."""
    g, _ = ieee13
    g32 = grid3ph.astype(g, np.float32)
    assert g32.elem.y_re_pu.dtype == np.float32 and np.any(g32.elem.y_lo_re_pu != 0)
    back = grid3ph.exact_float64(grid3ph.pad(g32, g.n_node + 2, g.n_elem + 1, g.elem.node.shape[1], g.n_load))
    y = g.elem.y_re_pu + 1j * g.elem.y_im_pu
    y_back = back.elem.y_re_pu[:g.n_elem] + 1j * back.elem.y_im_pu[:g.n_elem]
    scale = np.max(np.abs(y))
    assert np.max(np.abs(y_back - y)) <= 1e-13 * scale
    assert np.max(np.abs(g32.elem.y_re_pu.astype(float) - y.real)) > 1e-9 * scale
    assert not np.any(back.elem.y_lo_re_pu)


def test_angle_equals_numpy_arctan2_to_two_ulp():
    """`va_deg`'s vectorized atan2 (Cephes' rational atan) against numpy on random points
    of magnitudes 1e-3 .. 1e3 in every octant, on the diagonals, the axes and signed zeros."""
    rng = np.random.default_rng(0)
    y, x = (rng.normal(size=200_000) * 10.0 ** rng.uniform(-3, 3, 200_000) for _ in range(2))
    x[:100], y[100:200], x[200:300], x[300:400] = 0, 0, y[200:300], -y[300:400]
    zeros = np.array([0.0, -0.0, 0.0, -0.0]), np.array([0.0, 0.0, -0.0, -0.0])
    y, x = np.concatenate([y, zeros[0]]), np.concatenate([x, zeros[1]])
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(threephase._atan2)(y, x))
    ref = np.arctan2(y, x)
    np.testing.assert_array_equal(np.signbit(got[-4:]), np.signbit(ref[-4:]))
    assert np.max(np.abs(got - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))) <= 2

"""Malformed inputs at the array API edge: `powerflow.solve`, `Env.reset` / `step` / `step_env`
and the PettingZoo shim each raise `pgjax.errors.InputError` naming the argument, the
expected and the actual shape / dtype / type, at trace time; non-finite injections under
`jit` give a flagged, finite power flow; clipped actions are counted in `info`.

The corpus (`POWERFLOW`, `ENV`, `SHIM`) is a list of `(id, call, fragments)`: `call(ctx)`
must raise an `InputError` whose message holds every fragment. Nothing is compiled to
raise: the checks run in Python before any computation (under `jit` while tracing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandapower.networks as pn
import pytest

import pgjax
from pgjax.converters.pandapower import from_pandapower
from pgjax.errors import InputError
from pgjax.grid import stack
from pgjax.powerflow import bus_injections, solve
from pgjax.wrappers import pettingzoo as pz

SCENARIO = "multi_microgrid"


class Ctx:
    """Everything the corpus calls on, built once per module (no step is compiled here)."""

    def __init__(self):
        self.grid, _ = from_pandapower(pn.case9())
        self.p, self.q = (np.asarray(x) for x in bus_injections(self.grid))
        self.env = env = pgjax.make(SCENARIO)
        self.params = env.default_params
        self.key = jax.random.PRNGKey(0)
        self.state = jax.eval_shape(env.reset, self.key, self.params)[1]  # shapes only: enough for the checks
        self.freq = pgjax.make("frequency_68bus")
        self.freq_state = jax.eval_shape(self.freq.reset, self.key)[1]
        self.acts = np.zeros((env.num_agents, env.act_dim), np.float32)
        self.shim = pz.parallel_env(SCENARIO)
        self.shim.reset(seed=0)
        self.sizes = {a: self.shim.action_space(a).shape[0] for a in self.shim.agents}
        self.agents = list(self.shim.agents)

    def shim_acts(self, **replace):
        acts = {a: np.zeros(n, np.float32) for a, n in self.sizes.items()}
        acts.update(replace)
        return acts


@pytest.fixture(scope="module")
def ctx():
    return Ctx()


def _branch(grid, **fields):
    new = {k: v(np.asarray(getattr(grid.branch, k))) for k, v in fields.items()}
    return grid.replace(branch=grid.branch.replace(**new))


def _set(a, i, v):
    a = np.array(a)
    a[i] = v
    return a


# ------------------------------------------------------------------------- powerflow.solve

POWERFLOW = [
    ("p_short", lambda c: solve(c.grid, c.p[:3], c.q), ["p_mw", "(9,)", "(3,)"]),
    ("p_scalar_broadcasts", lambda c: solve(c.grid, 0.0, c.q), ["p_mw", "(9,)", "shape ()", "broadcast"]),
    ("p_one_broadcasts", lambda c: solve(c.grid, c.p[:1], c.q), ["p_mw", "(9,)", "(1,)", "broadcast"]),
    ("p_column", lambda c: solve(c.grid, c.p[:, None], c.q), ["p_mw", "(9,)", "(9, 1)"]),
    ("p_batched_without_vmap", lambda c: solve(c.grid, np.stack([c.p, c.p]), c.q), ["p_mw", "(9,)", "(2, 9)"]),
    ("q_long", lambda c: solve(c.grid, c.p, np.zeros(10)), ["q_mvar", "(9,)", "(10,)"]),
    ("p_complex", lambda c: solve(c.grid, c.p + 1j, c.q), ["p_mw", "complex"]),
    ("p_bool", lambda c: solve(c.grid, c.p > 0, c.q), ["p_mw", "bool", "(9,)"]),
    ("p_string", lambda c: solve(c.grid, "zero", c.q), ["p_mw", "expected an array", "str"]),
    ("p_strings_list", lambda c: solve(c.grid, ["a"] * 9, c.q), ["p_mw", "dtype <U1"]),
    ("p_ragged_list", lambda c: solve(c.grid, [1.0, [2.0]], c.q), ["p_mw", "expected an array", "list"]),
    ("p_nan", lambda c: solve(c.grid, _set(c.p, 4, np.nan), c.q), ["p_mw", "finite", "nan", "index 4"]),
    ("q_inf", lambda c: solve(c.grid, c.p, _set(c.q, 2, np.inf), method="newton"),
     ["q_mvar", "finite", "inf", "index 2"]),
    ("grid_batched", lambda c: solve(stack([c.grid, c.grid])), ["grid", "unbatched", "(2,)", "vmap"]),
    ("grid_dict", lambda c: solve({"bus": c.grid.bus}), ["grid", "Grid", "dict"]),
    ("grid_none", lambda c: solve(None, c.p, c.q), ["grid", "Grid", "NoneType"]),
    ("grid_table_batched", lambda c: solve(c.grid.replace(bus=jax.tree.map(lambda x: np.stack([x, x]), c.grid.bus))),
     ["grid.bus.vn_kv", "unbatched", "(2, 9)"]),
    ("grid_ragged_table", lambda c: solve(c.grid.replace(bus=c.grid.bus.replace(gs_mw=np.zeros(8)))),
     ["grid.bus", "gs_mw", "8", "vn_kv", "9"]),
    ("grid_complex_field", lambda c: solve(_branch(c.grid, r_pu=lambda r: r + 0j)), ["grid.branch.r_pu", "complex"]),
    ("grid_nan_r", lambda c: solve(_branch(c.grid, r_pu=lambda r: _set(r, 1, np.nan))),
     ["grid.branch.r_pu", "finite", "nan", "index 1"]),
    ("grid_inf_x", lambda c: solve(_branch(c.grid, x_pu=lambda x: _set(x, 0, np.inf))), ["grid.branch.x_pu", "inf"]),
    ("grid_nan_rating", lambda c: solve(_branch(c.grid, i_max_from_ka=lambda x: _set(x, 0, np.nan))),
     ["grid.branch.i_max_from_ka", "nan", "inf allowed"]),
    ("grid_inf_vn", lambda c: solve(c.grid.replace(bus=c.grid.bus.replace(vn_kv=_set(c.grid.bus.vn_kv, 3, np.inf)))),
     ["grid.bus.vn_kv", "inf", "index 3"]),
    ("grid_nan_sn", lambda c: solve(c.grid.replace(sn_mva=np.float64(np.nan))), ["grid.sn_mva", "nan"]),
    ("method_unknown", lambda c: solve(c.grid, method="gauss"), ["method", "gauss", "newton"]),
    ("jacobian_unknown", lambda c: solve(c.grid, jacobian="broyden"), ["jacobian", "broyden", "chord"]),
    ("init_wrong_shape", lambda c: solve(c.grid, init=(np.ones(3), np.zeros(3))), ["init", "(9,)", "(3,)"]),
    ("jit_p_short", lambda c: jax.jit(solve)(c.grid, c.p[:3], c.q), ["p_mw", "(9,)", "(3,)"]),
    ("jit_p_batched", lambda c: jax.jit(solve)(c.grid, np.stack([c.p] * 4), c.q), ["p_mw", "(9,)", "(4, 9)"]),
    ("vmap_p_wrong_inner", lambda c: jax.vmap(solve, in_axes=(None, 0, 0))(c.grid, np.zeros((2, 8)), np.zeros((2, 8))),
     ["p_mw", "(9,)", "(8,)"]),
]

# ------------------------------------------------------------------------- Env reset / step


DEFAULT = object()


def _step(c, key=DEFAULT, state=DEFAULT, actions=DEFAULT, params=DEFAULT, fn="step"):
    """`env.<fn>` called directly (it raises in its checks, before any computation)."""
    key = c.key if key is DEFAULT else key
    state = c.state if state is DEFAULT else state
    actions = c.acts if actions is DEFAULT else actions
    params = c.params if params is DEFAULT else params
    return getattr(c.env, fn)(key, state, actions, params)


def _params(c, **fields):
    return c.params.replace(**fields)


def _state(c, **fields):
    return c.state.replace(**{k: v(getattr(c.state, k)) for k, v in fields.items()})


ENV = [
    ("actions_flat", lambda c: _step(c, actions=np.zeros(c.env.num_agents)), ["actions", "(3, 9)", "(3,)"]),
    ("actions_scalar_broadcasts", lambda c: _step(c, actions=0.0), ["actions", "(3, 9)", "shape ()", "broadcast"]),
    ("actions_row_broadcasts", lambda c: _step(c, actions=np.zeros((1, c.env.act_dim))),
     ["actions", "(3, 9)", "(1, 9)", "broadcast"]),
    ("actions_column_broadcasts", lambda c: _step(c, actions=np.zeros((c.env.num_agents, 1))),
     ["actions", "(3, 9)", "(3, 1)", "broadcast"]),
    ("actions_too_narrow", lambda c: _step(c, actions=np.zeros((3, 5))), ["actions", "(3, 9)", "(3, 5)"]),
    ("actions_batched_without_vmap", lambda c: _step(c, actions=np.zeros((8, 3, 9))),
     ["actions", "(3, 9)", "(8, 3, 9)"]),
    ("actions_complex", lambda c: _step(c, actions=c.acts + 0.5j), ["actions", "complex", "(3, 9)"]),
    ("actions_bool", lambda c: _step(c, actions=c.acts > 0), ["actions", "bool"]),
    ("actions_strings", lambda c: _step(c, actions=[["a", "b"]] * 3), ["actions", "dtype <U1"]),
    ("actions_none", lambda c: _step(c, actions=None), ["actions", "expected an array", "NoneType"]),
    ("actions_dict", lambda c: _step(c, actions={"MG1": np.zeros(2)}), ["actions", "expected an array", "dict"]),
    ("step_env_actions", lambda c: _step(c, actions=np.zeros((3, 1)), fn="step_env"), ["actions", "(3, 9)", "(3, 1)"]),
    ("jit_step_actions", lambda c: jax.eval_shape(jax.jit(c.env.step), c.key, c.state, np.zeros((1, 2)), c.params),
     ["actions", "(3, 9)", "(1, 2)"]),
    ("key_batched", lambda c: _step(c, key=jax.random.split(c.key, 3)), ["key", "(3, 2)", "vmap"]),
    ("key_float", lambda c: _step(c, key=np.zeros(2, np.float32)), ["key", "(2,)", "float32"]),
    ("key_int_seed", lambda c: _step(c, key=0), ["key", "PRNGKey", "shape ()"]),
    ("reset_key_batched", lambda c: c.env.reset(jax.random.split(c.key, 2)), ["key", "(2, 2)"]),
    ("state_params_swapped", lambda c: _step(c, state=c.params), ["state", "EnvState", "EnvParams"]),
    ("state_tuple", lambda c: _step(c, state=(c.state,)), ["state", "EnvState", "tuple"]),
    ("state_batched", lambda c: _step(c, state=jax.eval_shape(jax.vmap(c.env.reset, in_axes=(0, None)),
                                                              jax.random.split(c.key, 4), c.params)[1]),
     ["state", "expected shape ()", "(4,)"]),
    ("state_vm_short", lambda c: _step(c, state=_state(c, vm_pu=lambda v: jnp.zeros(v.shape[0] - 1, v.dtype))),
     ["state.vm_pu", "expected shape", "got shape"]),
    ("state_t_float", lambda c: _step(c, state=_state(c, t=lambda t: jnp.zeros((), jnp.float32))),
     ["state.t", "int32", "float32"]),
    ("state_devices_missing", lambda c: _step(c, state=c.state.replace(devices={})), ["state", "structure", "missing",
                                                                                      "state.devices"]),
    ("params_dict", lambda c: _step(c, params={"grid": c.params.grid}), ["params", "EnvParams", "dict"]),
    ("params_vm_min_vector", lambda c: _step(c, params=_params(c, vm_min_pu=jnp.full(3, 0.95))),
     ["params.vm_min_pu", "expected shape ()", "(3,)"]),
    ("params_profiles_series", lambda c: _step(c, params=_params(c, profiles=c.params.profiles[:, :2])),
     ["params.profiles", "leading dimension free", "got shape"]),
    ("params_profiles_int", lambda c: _step(c, params=_params(c, profiles=c.params.profiles.astype(jnp.int32))),
     ["params.profiles", "dtype", "int32"]),
    ("params_starts_float", lambda c: _step(c, params=_params(c, starts=c.params.starts.astype(jnp.float32))),
     ["params.starts", "float32"]),
    ("params_penalty_str", lambda c: _step(c, params=_params(c, penalty="high")), ["params.penalty", "str"]),
    ("params_load_series_scalar", lambda c: _step(c, params=_params(c, load_series=1.5)),
     ["params.load_series", "expected shape"]),
    ("params_other_grid", lambda c: _step(c, params=_params(c, grid=c.grid)), ["params.grid.", "expected", "got"]),
    ("params_tree_added", lambda c: _step(c, params=_params(c, devices={**c.params.devices, "extra": jnp.zeros(2)})),
     ["params", "structure", "unexpected", "extra"]),
    ("params_vm_bounds_crossed", lambda c: _step(c, params=_params(c, vm_min_pu=c.params.vm_max_pu + 0.1)),
     ["params.vm_min_pu", "vm_max_pu", "vm_min_pu < vm_max_pu"]),
    ("params_penalty_nan", lambda c: _step(c, params=_params(c, penalty=jnp.asarray(jnp.nan, c.env.dtype))),
     ["params.penalty", "finite", "nan"]),
    ("params_grid_r_inf", lambda c: _step(c, params=_params(c, grid=_branch(c.params.grid, r_pu=lambda r: jnp.asarray(
        _set(r, 0, np.inf), r.dtype)))), ["params.grid.branch.r_pu", "finite", "inf"]),
    ("params_starts_out_of_range", lambda c: _step(c, params=_params(c, starts=c.params.starts + 10 ** 6)),
     ["params.starts", "episode starts", "steps"]),
    ("params_load_series_out_of_range", lambda c: _step(c, params=_params(c, load_series=c.params.load_series + 99)),
     ["params.load_series", "profile columns"]),
    ("params_dt_zero", lambda c: _step(c, params=_params(c, dt_h=jnp.zeros((), c.env.dtype))),
     ["params.dt_h", "positive"]),
    ("params_penalty_negative", lambda c: _step(c, params=_params(c, penalty=-c.params.penalty - 1)),
     ["params.penalty", "penalty weight >= 0", "got -"]),
    ("params_reward_scale_zero", lambda c: _step(c, params=_params(c, reward_scale=c.params.reward_scale * 0)),
     ["params.reward_scale", "> 0", "got 0.0"]),
    ("params_loading_limit_negative", lambda c: c.env.reset(c.key, _params(c, loading_max_percent=-c.params.loading_max_percent)),
     ["params.loading_max_percent", "> 0 %"]),
    ("params_vm_min_zero", lambda c: c.env.reset(c.key, _params(c, vm_min_pu=c.params.vm_min_pu * 0)),
     ["params.vm_min_pu", "> 0 pu"]),
    ("freq_params_band_crossed", lambda c: c.freq.reset(c.key, c.freq.default_params.replace(
        f_low_hz=c.freq.default_params.f_high_hz + 1)), ["params.f_low_hz", "f_high_hz", "f0_hz (60.0)"]),
    ("freq_params_probability", lambda c: c.freq.step(c.key, c.freq_state, np.zeros((20, 1)), c.freq.default_params.replace(
        p_machine_trip=c.freq.default_params.p_machine_trip + 1)), ["params.p_machine_trip", "probability in [0, 1]"]),
    ("freq_params_weight_negative", lambda c: c.freq.reset(c.key, c.freq.default_params.replace(
        w_violation=-c.freq.default_params.w_violation)), ["params.w_violation", "weight >= 0"]),
    ("freq_params_rho_one", lambda c: c.freq.reset(c.key, c.freq.default_params.replace(
        load_rho=c.freq.default_params.load_rho * 0 + 1)), ["params.load_rho", "AR(1) coefficient in [0, 1)"]),
    ("freq_actions_none", lambda c: c.freq.step(c.key, c.freq_state, None), ["actions", "NoneType"]),
    ("freq_state_none", lambda c: c.freq.step(c.key, None, np.zeros((20, 1))), ["state", "FreqEnvState", "NoneType"]),
    ("freq_params_shape", lambda c: c.freq.reset(c.key, c.freq.default_params.replace(cap_mw=jnp.ones(3))),
     ["params.cap_mw", "expected shape"]),
    ("reset_params_wrong", lambda c: c.env.reset(c.key, _params(c, hour0=jnp.zeros(2, c.env.dtype))),
     ["params.hour0", "expected shape ()", "(2,)"]),
    ("reset_params_other_env", lambda c: c.env.reset(c.key, pgjax.make("voltage_control_33bw").default_params),
     ["params", "structure"]),
]

# ------------------------------------------------------------------------- PettingZoo shim

SHIM = [
    ("shim_list", lambda c: c.shim.step([np.zeros(n) for n in c.sizes.values()]), ["actions", "dict", "list"]),
    ("shim_array", lambda c: c.shim.step(np.zeros((3, 2))), ["actions", "dict", "ndarray"]),
    ("shim_none", lambda c: c.shim.step(None), ["actions", "dict", "NoneType"]),
    ("shim_missing_agent", lambda c: c.shim.step({a: np.zeros(n) for a, n in list(c.sizes.items())[1:]}),
     ["actions", "no action for agent", "MG1"]),
    ("shim_unknown_agent", lambda c: c.shim.step(c.shim_acts(MG9=np.zeros(2))), ["actions", "unknown agents", "MG9"]),
    ("shim_long", lambda c: c.shim.step(c.shim_acts(MG1=np.zeros(c.sizes["MG1"] + 1))),
     ["actions['MG1']", "expected shape", "entries", "got shape"]),
    ("shim_row", lambda c: c.shim.step(c.shim_acts(MG2=np.zeros((1, c.sizes["MG2"])))), ["actions['MG2']", "(1, "]),
    ("shim_scalar", lambda c: c.shim.step(c.shim_acts(MG1=0.0)), ["actions['MG1']", "shape ()", "broadcast"]),
    ("shim_complex", lambda c: c.shim.step(c.shim_acts(MG3=np.zeros(c.sizes["MG3"], complex))),
     ["actions['MG3']", "complex"]),
    ("shim_agent_none", lambda c: c.shim.step(c.shim_acts(MG1=None)),
     ["actions['MG1']", "expected an array", "NoneType"]),
    ("shim_agent_str", lambda c: c.shim.step(c.shim_acts(MG1="up")), ["actions['MG1']", "expected an array", "str"]),
]

CORPUS = POWERFLOW + ENV + SHIM


def test_corpus_size():
    assert len(CORPUS) >= 80, len(CORPUS)


@pytest.mark.parametrize("call, fragments", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_malformed_input_raises_input_error(ctx, call, fragments):
    with pytest.raises(InputError) as err:
        call(ctx)
    msg = str(err.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert len(msg) < 400, msg  # bounded: no values dumped


def test_shim_missing_agent_is_a_key_error_too(ctx):
    with pytest.raises(KeyError, match="MG1"):
        ctx.shim.step({a: np.zeros(n) for a, n in list(ctx.sizes.items())[1:]})


def test_vector_env_actions_need_the_batch_axis(ctx):
    venv = pz.vector_env(SCENARIO, num_envs=2)
    venv._state = object()  # past the reset guard: the actions are checked before any step
    with pytest.raises(InputError, match=r"actions\['MG1'\]: expected shape \(2, 9\).*got shape \(9,\)"):
        venv.step({a: np.zeros(n) for a, n in ctx.sizes.items()})
    with pytest.raises(InputError, match="actions: expected a dict"):
        venv.step(np.zeros((2, 3, 2)))


# ------------------------------------------------------------------------- finite results, counts

def test_non_finite_injections_and_parameters_flagged_finite_under_jit(ctx):
    grid, p, q = ctx.grid, ctx.p, ctx.q
    bad_p = np.stack([p, _set(p, 4, np.nan), p, p])
    bad_q = np.stack([q, q, _set(q, 1, np.inf), q])
    bad_r = np.stack([np.asarray(grid.branch.r_pu)] * 3 + [_set(grid.branch.r_pu, 2, np.nan)])
    grids = jax.tree.map(lambda x: np.stack([np.asarray(x)] * 4), grid)
    grids = grids.replace(branch=grids.branch.replace(r_pu=bad_r))
    out = jax.jit(jax.vmap(solve))(grids, bad_p, bad_q)
    np.testing.assert_array_equal(np.asarray(out.converged), [True, False, False, False])
    for leaf in jax.tree.leaves(out):
        assert np.isfinite(np.asarray(leaf, float)).all()
    assert float(out.vm_pu[0].min()) > 0.9  # the finite row solves as before
    assert float(jnp.abs(out.vm_pu[1:]).max()) == 0.0  # the documented flagged result: zeros


def test_clipped_actions_counted(ctx):
    env = ctx.env
    _, state = env.reset(ctx.key)
    mask = np.asarray(env.action_mask)
    acts = np.zeros((env.num_agents, env.act_dim), env.dtype)
    acts[0, 0], acts[1, 0], acts[2, 0] = 2.0, -np.inf, np.nan
    acts[~mask] = 5.0  # padding: not a real entry, not counted
    _, _, _, _, _, info = jax.jit(env.step)(ctx.key, state, acts, ctx.params)
    assert int(info["clipped_actions"]) == 2 and int(info["nan_actions"]) == 1


def test_checks_add_nothing_to_the_step_program(ctx):
    """The checks are Python at trace time: the traced step holds no callback to the host."""
    jaxpr = str(jax.make_jaxpr(ctx.env.step)(ctx.key, ctx.state, ctx.acts, ctx.params))
    assert "callback" not in jaxpr

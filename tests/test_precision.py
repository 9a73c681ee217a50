"""Importing pgjax changes no JAX setting; float64 is asked for, and refused clearly without x64.

The suite itself runs with JAX's 64-bit mode on (conftest), so these checks run in a fresh
interpreter without it: `import pgjax` leaves `jax_enable_x64` off, a float32 environment
steps, and every request for float64 (a float64 environment, `astype`, the converter's
`dtype`, solving a float64 grid) raises a `ValueError` that names the request and says how
to enable the mode instead of computing in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from pgjax.precision import is_64bit, require_x64

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    import pgjax
    from pgjax.converters.pandapower import from_pandapower
    from pgjax import networks
    from pgjax.grid import astype
    from pgjax.powerflow import solve

    out = {"x64_after_import": bool(jax.config.jax_enable_x64)}
    env = pgjax.make("multi_microgrid", dtype="float32")
    obs, state = env.reset(jax.random.PRNGKey(0))
    acts = jnp.zeros((env.num_agents, env.act_dim), env.dtype)
    obs, state, reward, _, _, info = jax.jit(env.step)(jax.random.PRNGKey(1), state, acts)
    out["float32_step"] = {"obs_dtype": str(obs.dtype), "finite": bool(jnp.isfinite(obs).all()
                           & jnp.isfinite(reward).all()), "nonconverged": float(info["nonconverged"])}

    grid, netmap = from_pandapower(networks.load("case9"))
    r = solve(astype(grid, np.float32))
    out["float32_solve"] = {"converged": bool(r.converged), "dtype": str(r.vm_pu.dtype)}

    def error(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    from pgjax import scenario
    from pgjax.wrappers.jaxmarl import PgjaxMultiAgentEnv
    from pgjax.wrappers.pettingzoo import parallel_env

    out["default_dtypes"] = {n: np.dtype(pgjax.make(n).dtype).name for n in [*scenario.names(), "frequency_68bus"]}
    shim = parallel_env("multi_microgrid")
    shim_obs, _ = shim.reset(seed=0)
    out["pettingzoo_obs_dtype"] = str(next(iter(shim_obs.values())).dtype)
    marl_obs, _ = PgjaxMultiAgentEnv("multi_microgrid").reset(jax.random.PRNGKey(0))
    out["jaxmarl_obs_dtype"] = str(next(iter(marl_obs.values())).dtype)

    out["errors"] = {
        "make float64": error(lambda: pgjax.make("multi_microgrid", dtype="float64")),
        "astype float64": error(lambda: astype(grid, np.float64)),
        "from_pandapower float64": error(lambda: from_pandapower(networks.load("case9"), dtype="float64")),
        "solve float64 grid": error(lambda: solve(grid)),
    }
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def fresh():
    """What the script above finds in a fresh interpreter with JAX's 64-bit mode off."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return {**json.loads(line[len("RESULT "):]), "output": proc.stdout + proc.stderr}


def test_import_leaves_x64_off(fresh):
    assert fresh["x64_after_import"] is False


def test_float32_env_steps_and_solves_without_x64(fresh):
    assert fresh["float32_step"] == {"obs_dtype": "float32", "finite": True, "nonconverged": 0.0}
    assert fresh["float32_solve"] == {"converged": True, "dtype": "float32"}


def test_defaults_are_float32_without_x64_and_silent(fresh):
    """`pgjax.make(name)` for every shipped scenario and env family, and the PettingZoo and JaxMARL
    shims with no dtype, work in a fresh process without x64, in float32; nothing warns
    (pandapower's "numba cannot be imported" included)."""
    assert set(fresh["default_dtypes"].values()) == {"float32"}, fresh["default_dtypes"]
    assert fresh["pettingzoo_obs_dtype"] == fresh["jaxmarl_obs_dtype"] == "float32"
    assert "numba" not in fresh["output"] and "Warning" not in fresh["output"], fresh["output"][-2000:]


def test_default_dtype_is_float32_with_x64_on_too():
    import pgjax

    assert np.dtype(pgjax.make("voltage_control_33bw").dtype) == np.float32
    assert np.dtype(pgjax.make("voltage_control_33bw", dtype="float64").dtype) == np.float64


@pytest.mark.parametrize("request_", ["make float64", "astype float64", "from_pandapower float64",
                                      "solve float64 grid"])
def test_float64_without_x64_raises_a_clear_error(fresh, request_):
    message = fresh["errors"][request_]
    assert message is not None, f"{request_}: no error (JAX would have computed in float32)"
    assert "float64" in message and "jax_enable_x64" in message and "JAX_ENABLE_X64=1" in message, message


def test_require_x64_passes_float32_and_names_the_request():
    assert is_64bit(np.float64) and is_64bit("complex128") and not is_64bit("float32") and not is_64bit(np.int64)
    require_x64("anything", np.float32)  # never raises
    require_x64("anything", np.float64)  # the suite runs with x64 on
    with jax.enable_x64(False):
        require_x64("anything", np.float32)
        with pytest.raises(ValueError, match=r"my request asks for float64.*jax_enable_x64"):
            require_x64("my request", "float64")

"""Several processes (or hosts) as one JAX program: `jax.distributed` set-up and host/global arrays.

    pgjax train --distributed --coordinator 10.0.0.1:12355 --num-processes 2 --process-id 0   # host 0
    pgjax train --distributed --coordinator 10.0.0.1:12355 --num-processes 2 --process-id 1   # host 1

`initialize` calls `jax.distributed.initialize` with the coordinator address, process count
and process id from its arguments, else from the environment variables
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, else from JAX's own cluster
detection (SLURM, Open MPI, Kubernetes, ...). It must run before anything else touches JAX's
devices. Where the processes have no accelerator, their CPU devices exchange collectives
through Gloo (`jax_cpu_collectives_implementation`).

`batch_mesh` is the 1-D mesh every batch is split along (`pgjax train --devices`, episodes
of `pgjax eval` / `pgjax compare`). After `initialize`, `jax.devices()` lists every process's
devices; a `Mesh` over them makes one SPMD program that every process runs on its own devices (multi-controller): `global_arrays` turns a
pytree that every process holds in full (same seed, same computation) into global arrays of
the given shardings, each process supplying its own shards; `host_arrays` gathers global
arrays back into full numpy arrays on every process (a collective: all processes call it).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pgjax.errors import InputError

BATCH_AXIS = "batch"  # the mesh axis batches (environments, episodes) are split along
ENV_VARS = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
            "process_id": "JAX_PROCESS_ID"}


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"environment variable {name}: expected an integer, got {text!r}") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> None:
    """`jax.distributed.initialize` from the arguments, the environment or cluster detection (module docstring)."""
    coordinator = coordinator or os.environ.get(ENV_VARS["coordinator"])
    num_processes = num_processes if num_processes is not None else _env_int(ENV_VARS["num_processes"])
    process_id = process_id if process_id is not None else _env_int(ENV_VARS["process_id"])
    if num_processes is not None and num_processes < 1:
        raise InputError(f"num_processes: expected 1 or more, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise InputError(f"process_id: expected 0..{num_processes - 1} (num_processes={num_processes}), "
                         f"got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)


def parse_devices(text: str) -> int | str:
    """A `--devices` value: `"all"` or a positive count."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--devices: expected a positive count or 'all', got {text!r}")
    return value


def batch_mesh(devices: int | str | None, batch: int, what: str = "batch") -> Mesh | None:
    """A 1-D `Mesh` (axis `BATCH_AXIS`) of the first `devices` local devices (`"all"`: every one),
    or None for 1; with several processes (`initialize`) of every process's devices. The
    batch (`what`, of size `batch`) must split evenly over them."""
    local = jax.local_devices()
    n = len(local) if devices == "all" else (1 if devices is None else int(devices))
    if not 1 <= n <= len(local):
        raise ValueError(f"devices: expected 1..{len(local)} (the local {local[0].platform} devices; "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count=N makes N CPU devices), got {devices}")
    if jax.process_count() > 1 and n != len(local):
        raise ValueError(f"devices: with {jax.process_count()} processes every local device takes part; expected "
                         f"'all' or {len(local)}, got {devices}")
    mesh_devices = np.array(jax.devices() if jax.process_count() > 1 else local[:n])
    if batch % mesh_devices.size:
        raise ValueError(f"devices: {what}={batch} does not split over {mesh_devices.size} devices; choose "
                         f"{what} a multiple of {mesh_devices.size}")
    return None if mesh_devices.size == 1 else Mesh(mesh_devices, (BATCH_AXIS,))


def split_batch(mesh: Mesh | None, x):
    """Inside `jit`: `x` (leading batch axis) laid out split along `BATCH_AXIS` of `mesh` (as is without one)."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))


def is_writer() -> bool:
    """True in the one process that writes shared files (process 0)."""
    return jax.process_index() == 0


def global_arrays(tree, shardings):
    """`tree` (the same full values in every process) as global arrays laid out as `shardings`."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    host = jax.device_get(tree)
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
                        host, shardings)


def host_arrays(tree):
    """Full numpy values of a pytree of (possibly global) arrays, in every process (a collective)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
    """Wait until every process reaches `barrier(name)` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

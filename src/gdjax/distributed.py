"""Several processes (hosts), one program: a thin layer over ``jax.distributed``.

Every process runs the same script. :func:`initialize` connects it to the
others through a coordinator (process 0's address); afterwards
``jax.devices()`` lists the devices of all processes, :func:`global_mesh`
spans them, and the data-parallel :func:`gdjax.train.make_step` /
:func:`gdjax.train.fit` (``mesh=global_mesh()``) and the sweeps of
:mod:`gdjax.landscape` run over all of them. Each process passes the same
global arrays (e.g. loaded from the same files); only process 0 writes files
(:func:`is_main_process`).

Where the arguments come from, first match wins:

1. the arguments of :func:`initialize`;
2. the environment variables ``GDJAX_COORDINATOR`` (``host:port`` of process
   0), ``GDJAX_NUM_PROCESSES`` and ``GDJAX_PROCESS_ID``;
3. JAX's own detection (``jax.distributed.initialize()`` with no arguments:
   SLURM, Open MPI, Kubernetes, Cloud TPU, or JAX's ``JAX_COORDINATOR_ADDRESS``,
   ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).

On CPU the cross-process collectives need an implementation: :func:`initialize`
sets ``jax_cpu_collectives_implementation = "gloo"`` (before
``jax.distributed.initialize``, as JAX requires) unless ``cpu_collectives``
says otherwise. Example, two processes on one machine::

    # process i of 2 (i = 0, 1)
    from gdjax import distributed, train
    distributed.initialize("127.0.0.1:12345", num_processes=2, process_id=i)
    step = train.make_step(model, "mse", "sgd", mesh=distributed.global_mesh(),
                           learning_rate=0.1)
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh

__all__ = [
    "initialize",
    "is_initialized",
    "process_index",
    "process_count",
    "global_mesh",
    "is_main_process",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
]

ENV_COORDINATOR = "GDJAX_COORDINATOR"
ENV_NUM_PROCESSES = "GDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GDJAX_PROCESS_ID"


def _int_arg(name: str, env: str, value) -> int | None:
    if value is None and os.environ.get(env, "").strip():
        raw = os.environ[env].strip()
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name}: expected an integer in ${env}, got {raw!r}.") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {value!r}.")
    return int(value)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    **kwargs,
) -> None:
    """Join the group of processes: ``jax.distributed.initialize`` with gdjax's defaults.

    Call it once per process, before any other JAX call that touches devices.
    Arguments left ``None`` come from ``GDJAX_COORDINATOR``,
    ``GDJAX_NUM_PROCESSES`` and ``GDJAX_PROCESS_ID``, then from JAX's own
    cluster detection (see the module docstring).

    Args:
      coordinator_address: ``"host:port"`` of process 0 (it listens there).
      num_processes: the number of processes P.
      process_id: this process's index in ``0 … P−1``.
      cpu_collectives: the CPU cross-process collectives to use (``"gloo"``;
        ``"mpi"`` needs an MPI library); ``None`` leaves JAX's setting alone.
      **kwargs: passed to ``jax.distributed.initialize`` (e.g.
        ``local_device_ids``, ``initialization_timeout``).

    Raises:
      ValueError: a malformed argument or environment variable, or a
        ``process_id`` outside ``[0, num_processes)``.
    """
    if coordinator_address is None:
        coordinator_address = os.environ.get(ENV_COORDINATOR) or None
    if coordinator_address is not None and (
        not isinstance(coordinator_address, str) or ":" not in coordinator_address
    ):
        raise ValueError(
            f"coordinator_address: expected 'host:port' of process 0, got {coordinator_address!r}."
        )
    num_processes = _int_arg("num_processes", ENV_NUM_PROCESSES, num_processes)
    process_id = _int_arg("process_id", ENV_PROCESS_ID, process_id)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes: expected a positive integer, got {num_processes}.")
    if process_id is not None and (
        process_id < 0 or (num_processes is not None and process_id >= num_processes)
    ):
        raise ValueError(
            f"process_id: expected an integer in [0, {num_processes}) (num_processes = "
            f"{num_processes}), got {process_id}."
        )
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )


def is_initialized() -> bool:
    """True once :func:`initialize` (or ``jax.distributed.initialize``) has run."""
    return bool(jax.distributed.is_initialized())


def process_index() -> int:
    """This process's index, ``0 … process_count() − 1`` (0 without :func:`initialize`)."""
    return jax.process_index()


def process_count() -> int:
    """The number of processes (1 without :func:`initialize`)."""
    return jax.process_count()


def is_main_process() -> bool:
    """True on process 0, the one that writes files and prints."""
    return jax.process_index() == 0


def global_mesh(axis: str = "data") -> Mesh:
    """A 1-D mesh over every device of every process, with axis name ``axis``.

    Devices are ordered by process, then by id, so process p's devices form one
    contiguous block of the axis (each process holds a contiguous row block of
    a batch split over it).

    >>> global_mesh().axis_names
    ('data',)
    """
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis: expected a non-empty axis name, got {axis!r}.")
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis,))

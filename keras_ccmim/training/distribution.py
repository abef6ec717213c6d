"""Data parallelism across the visible accelerators, per Keras backend.

* TensorFlow: `tf.distribute.MirroredStrategy`. Build and compile the model
  inside `setup.scope()`; `fit` splits each global batch over the replicas.
  Each replica computes the loss on its own share of the batch, so the
  contrastive loss draws its negatives from that share only (the loss does
  not gather across replicas).
* JAX: `keras.distribution.DataParallel`, active inside `setup.scope()`.
  The batch axis is sharded over the devices but the loss is one program over
  the global batch, so contrastive negatives come from every device.
  With several processes (`initialize_processes`, JAX only), the mesh holds
  every device of every process; each process feeds its own share of each
  global batch (`DistributionSetup.shard`), so Keras' own auto-sharding of
  the dataset is turned off.
* TensorFlow, several workers: `"multi_worker"`,
  `tf.distribute.MultiWorkerMirroredStrategy` configured by `TF_CONFIG`
  (Keras's `fit` has failed under it in the versions tried; see the README).
* torch: single device only. Keras has no `keras.distribution` backend for
  torch and its torch trainer no DDP (the README names the version
  checked); asking for `"mirrored"` or `"data_parallel"` raises an error,
  and `"auto"` with several GPUs uses the first and warns.

Under `tf.distribute` the contrastive loss gathers the embeddings of every
replica (`backend_specific.cross_replica_gather`), so its negatives come
from the global batch as under JAX, and the projector's BatchNorm is
synchronised across replicas.

`distribution` values: `"auto"` (data parallel when more than one GPU/TPU is
visible or several processes run, else a single device), `"none"`,
`"mirrored"` and `"multi_worker"` (TensorFlow) and `"data_parallel"` (JAX).
An explicit choice with only CPUs uses every visible (logical) CPU device,
which is how the tests run it on one machine.

This is the one module of `keras_ccmim.training` that imports a backend; each
backend's lines are in a function named after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any, Literal, get_args

import keras

Distribution = Literal["auto", "none", "mirrored", "multi_worker", "data_parallel"]
DISTRIBUTIONS = get_args(Distribution)
_BACKEND_CHOICE = {"tensorflow": "mirrored", "jax": "data_parallel"}
_BACKEND_KINDS = {"tensorflow": ("mirrored", "multi_worker"), "jax": ("data_parallel",)}
# The environment variables `keras.distribution.initialize` reads.
PROCESS_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DistributionSetup:
    """The chosen distribution.

    Attributes:
        kind: `"none"`, `"mirrored"`, `"multi_worker"` or `"data_parallel"`.
        devices: tuple of device names used.
        handle: the `tf.distribute.Strategy` or `keras.distribution.DataParallel`
            (None for a single device).
    """

    kind: str
    devices: tuple[str, ...]
    handle: Any = None

    @property
    def num_replicas(self) -> int:
        return max(len(self.devices), 1)

    @property
    def shard(self) -> tuple[int, int]:
        """`(index, count)`: the share of each global batch this process
        feeds (`make_dataset(..., shard=...)`); `(0, 1)` in one process."""
        return process_index(), process_count()

    def scope(self) -> contextlib.AbstractContextManager:
        """Context to build, compile and fit the model in."""
        if self.handle is None:
            return contextlib.nullcontext()
        return self.handle.scope()


def _tensorflow_devices(accelerators_only):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus or accelerators_only:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _tensorflow_mirrored(devices):
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(devices))


@functools.lru_cache(maxsize=None)
def _tensorflow_multi_worker():
    # One per process: TensorFlow configures its collectives once.
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return strategy, tuple(f"replica:{i}" for i in range(strategy.num_replicas_in_sync))


def _jax_devices(accelerators_only):
    import jax

    # `jax.devices()` lists the devices of every process.
    devices = [d for d in jax.devices() if d.platform != "cpu"]
    if devices or accelerators_only:
        return [f"{d.platform}:{d.id}" for d in devices]
    return [f"cpu:{d.id}" for d in jax.devices("cpu")]


def _jax_process():
    import jax

    return jax.process_index(), jax.process_count()


def _jax_initialize(coordinator_address, num_processes, process_id):
    import jax

    if jax.distributed.is_initialized():
        return
    # `keras.distribution.initialize` reads the KERAS_DISTRIBUTION_*
    # variables for the arguments left None and calls
    # `jax.distributed.initialize` (CPU collectives: gloo, JAX's default).
    keras.distribution.initialize(coordinator_address, num_processes, process_id)


def _jax_barrier(name):
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _jax_multi_process():
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def wants_processes(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Whether these arguments or the `KERAS_DISTRIBUTION_*` variables ask
    for several processes."""
    values = (coordinator_address, num_processes, process_id)
    return any(v is not None for v in values) or any(name in os.environ for name in PROCESS_ENV)


def initialize_processes(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins this process to a multi-process JAX run (`keras.distribution.
    initialize`), from the arguments or the `KERAS_DISTRIBUTION_*`
    environment variables; nothing when neither asks for it.

    Call it before anything touches a JAX device. Raises a `ValueError` on
    another backend, or with an incomplete set of arguments.
    """
    if not wants_processes(coordinator_address, num_processes, process_id):
        return False
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"Several processes (coordinator_address / num_processes / process_id or the "
            f"KERAS_DISTRIBUTION_* variables) run through keras.distribution on the JAX "
            f"backend only, not {backend}. Use KERAS_BACKEND=jax; on TensorFlow use "
            "distribution='multi_worker' with TF_CONFIG (see the README)."
        )
    env = os.environ
    address = coordinator_address or env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    count = num_processes if num_processes is not None else env.get(
        "KERAS_DISTRIBUTION_NUM_PROCESSES")
    index = process_id if process_id is not None else env.get("KERAS_DISTRIBUTION_PROCESS_ID")
    if address is None or count is None or index is None:
        raise ValueError(
            "A multi-process run needs the coordinator address, the number of processes "
            "and this process's id (--coordinator_address=host:port --num_processes=N "
            "--process_id=i, or KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and "
            f"_PROCESS_ID); got address={address!r}, processes={count!r}, id={index!r}."
        )
    count, index = int(count), int(index)
    if not 0 <= index < count:
        raise ValueError(
            f"process_id must be in [0, num_processes), got {index} of {count} processes."
        )
    _jax_initialize(address, count, index)
    return True


def process_index() -> int:
    """This process's index in a multi-process run (0 otherwise)."""
    if keras.backend.backend() == "jax":
        return _jax_process()[0]
    return 0


def process_count() -> int:
    if keras.backend.backend() == "jax":
        return _jax_process()[1]
    return 1


def is_primary() -> bool:
    """True in the process that writes the run's files (process 0)."""
    return process_index() == 0


@contextlib.contextmanager
def outside_distribution() -> Iterator[None]:
    """A context without the active `keras.distribution`, for what process 0
    does alone (saving): Keras' saving creates scratch variables, which under
    a multi-process distribution would be placed across every process and so
    wait for the others. The model's variables are replicated: each process
    reads them locally."""
    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def barrier(name: str) -> None:
    """Waits until every process of a multi-process run reaches `name`."""
    if keras.backend.backend() == "jax" and _jax_multi_process():
        _jax_barrier(name)


def _torch_accelerator_count():
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _visible_devices(backend, accelerators_only):
    if backend == "tensorflow":
        return _tensorflow_devices(accelerators_only)
    if backend == "jax":
        return _jax_devices(accelerators_only)
    return []


def check_distribution_name(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Unknown distribution {distribution!r}; choose one of "
            f"{', '.join(DISTRIBUTIONS)}."
        )


def plan_distribution(distribution: Distribution = "auto") -> tuple[str, tuple[str, ...]]:
    """`(kind, devices)` that `setup_distribution` would use, without side
    effects: raises a `ValueError` for a name or backend that does not fit.
    """
    check_distribution_name(distribution)
    backend = keras.backend.backend()
    processes = process_count()
    if processes > 1 and distribution in ("none", "mirrored"):
        raise ValueError(
            f"distribution={distribution!r} cannot train {processes} processes together; "
            "use distribution='data_parallel' (or 'auto')."
        )
    if distribution == "none":
        return "none", ()
    if distribution == "auto":
        if processes > 1:
            return "data_parallel", tuple(_visible_devices(backend, accelerators_only=False))
        if backend == "torch":
            if _torch_accelerator_count() > 1:
                logger.warning(
                    "Several GPUs are visible but the torch backend trains on one "
                    "device here; use KERAS_BACKEND=jax or tensorflow for data "
                    "parallelism."
                )
            return "none", ()
        devices = _visible_devices(backend, accelerators_only=True)
        if len(devices) <= 1:
            return "none", ()
        return _BACKEND_CHOICE[backend], tuple(devices)
    expected = _BACKEND_CHOICE.get(backend)
    if distribution not in _BACKEND_KINDS.get(backend, ()):
        if backend == "torch":
            raise ValueError(
                f"distribution={distribution!r} is not supported on the torch "
                "backend, which trains on a single device here. Use "
                "distribution='none' (or 'auto'), or run with "
                "KERAS_BACKEND=jax (data_parallel) or KERAS_BACKEND=tensorflow "
                "(mirrored). Keras's torch trainer has no multi-device support."
            )
        raise ValueError(
            f"distribution={distribution!r} does not run on the {backend} "
            f"backend; use distribution={expected!r} (or 'auto')."
        )
    if distribution == "multi_worker":
        return distribution, ()  # the workers and their devices come from TF_CONFIG
    return distribution, tuple(_visible_devices(backend, accelerators_only=False))


def setup_distribution(distribution: Distribution = "auto") -> DistributionSetup:
    """Chooses data parallelism for the running backend.

    Call it before any model is built (TensorFlow logical devices and the JAX
    device mesh must be fixed first), then build, compile and fit inside
    `setup.scope()`.

    Args:
        distribution: one of `DISTRIBUTIONS`.

    Returns:
        A `DistributionSetup`.
    """
    kind, devices = plan_distribution(distribution)
    if kind == "none":
        return DistributionSetup("none", ())
    if kind == "mirrored":
        return DistributionSetup("mirrored", devices, _tensorflow_mirrored(devices))
    if kind == "multi_worker":
        strategy, replicas = _tensorflow_multi_worker()
        return DistributionSetup("multi_worker", replicas, strategy)
    # Each process feeds its own share of the global batch (see `shard`),
    # so Keras must not shard the dataset again.
    return DistributionSetup(
        "data_parallel",
        devices,
        keras.distribution.DataParallel(devices=list(devices), auto_shard_dataset=False),
    )

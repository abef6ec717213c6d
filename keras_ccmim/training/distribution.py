"""Data parallelism across the visible accelerators, per Keras backend.

* TensorFlow: `tf.distribute.MirroredStrategy`. Build and compile the model
  inside `setup.scope()`; `fit` splits each global batch over the replicas.
  Each replica computes the loss on its own share of the batch, so the
  contrastive loss draws its negatives from that share only (the loss does
  not gather across replicas).
* JAX: `keras.distribution.DataParallel`, active inside `setup.scope()`.
  The batch axis is sharded over the devices but the loss is one program over
  the global batch, so contrastive negatives come from every device.
* torch: single device only. Multi-device torch training (DDP) needs one
  process per device, which this library does not launch; asking for
  `"mirrored"` or `"data_parallel"` raises an error, and `"auto"` with several
  GPUs uses the first and warns.

`distribution` values: `"auto"` (data parallel when more than one GPU/TPU is
visible, else a single device), `"none"`, `"mirrored"` (TensorFlow) and
`"data_parallel"` (JAX). An explicit choice with only CPUs uses every visible
(logical) CPU device, which is how the tests run it on one machine.

This is the one module of `keras_ccmim.training` that imports a backend; each
backend's lines are in a function named after it.
"""

import contextlib
import dataclasses
import logging

import keras

DISTRIBUTIONS = ("auto", "none", "mirrored", "data_parallel")
_BACKEND_CHOICE = {"tensorflow": "mirrored", "jax": "data_parallel"}

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DistributionSetup:
    """The chosen distribution.

    Attributes:
        kind: `"none"`, `"mirrored"` or `"data_parallel"`.
        devices: tuple of device names used.
        handle: the `tf.distribute.Strategy` or `keras.distribution.DataParallel`
            (None for a single device).
    """

    kind: str
    devices: tuple
    handle: object = None

    @property
    def num_replicas(self):
        return max(len(self.devices), 1)

    def scope(self):
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


def _jax_devices(accelerators_only):
    import jax

    devices = [d for d in jax.devices() if d.platform != "cpu"]
    if devices or accelerators_only:
        return [f"{d.platform}:{d.id}" for d in devices]
    return [f"cpu:{d.id}" for d in jax.devices("cpu")]


def _torch_accelerator_count():
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _visible_devices(backend, accelerators_only):
    if backend == "tensorflow":
        return _tensorflow_devices(accelerators_only)
    if backend == "jax":
        return _jax_devices(accelerators_only)
    return []


def check_distribution_name(distribution):
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Unknown distribution {distribution!r}; choose one of "
            f"{', '.join(DISTRIBUTIONS)}."
        )


def plan_distribution(distribution="auto"):
    """`(kind, devices)` that `setup_distribution` would use, without side
    effects: raises a `ValueError` for a name or backend that does not fit.
    """
    check_distribution_name(distribution)
    backend = keras.backend.backend()
    if distribution == "none":
        return "none", ()
    if distribution == "auto":
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
    if distribution != expected:
        if backend == "torch":
            raise ValueError(
                f"distribution={distribution!r} is not supported on the torch "
                "backend, which trains on a single device here. Use "
                "distribution='none' (or 'auto'), or run with "
                "KERAS_BACKEND=jax (data_parallel) or KERAS_BACKEND=tensorflow "
                "(mirrored)."
            )
        raise ValueError(
            f"distribution={distribution!r} does not run on the {backend} "
            f"backend; use distribution={expected!r} (or 'auto')."
        )
    return distribution, tuple(_visible_devices(backend, accelerators_only=False))


def setup_distribution(distribution="auto"):
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
    return DistributionSetup(
        "data_parallel", devices, keras.distribution.DataParallel(devices=list(devices))
    )

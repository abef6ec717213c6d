"""The only module of the library that knows which Keras backend runs it.

Everything else is written with `keras` and `keras.ops`. What lives here:

* `no_grad()`: a context in which the work is never differentiated. On torch
  `keras.ops.stop_gradient` only detaches an output, and the computation that
  led to it is still recorded by autograd (memory and time for nothing), so the
  ccMIM scoring and teacher passes run under `torch.no_grad()`. TensorFlow and
  JAX build no gradient work for a stop-gradient branch that nothing
  differentiates (XLA prunes it), so there it is a no-op.
"""

import contextlib

import keras


def backend_name():
    return keras.backend.backend()


def no_grad():
    """Context manager under which no autograd graph is recorded (torch)."""
    if backend_name() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def is_grad_recording(tensor):
    """True when `tensor` is part of a recorded autograd graph (torch only).

    Used by tests to prove the no-gradient passes record nothing. Always
    False on TensorFlow and JAX, which record no graph eagerly per tensor.
    """
    if backend_name() == "torch":
        return bool(getattr(tensor, "requires_grad", False))
    return False

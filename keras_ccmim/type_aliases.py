"""The names the public API's type hints use for what has no type of its own.

Hints only: nothing checks them at run time, and none imports a backend.
"""

import os
from typing import Any

# A tensor of the running Keras backend (a `tf.Tensor`, a `jax.Array`, a
# `torch.Tensor`), a symbolic `keras.KerasTensor`, or what `keras.ops`
# converts to one (a NumPy array); in the `tf.data` pipelines a `tf.Tensor`.
# `Any`: the backends' tensor classes share no base class.
Tensor = Any

# A file or folder given as a string or a path object (`pathlib.Path`).
PathLike = str | os.PathLike

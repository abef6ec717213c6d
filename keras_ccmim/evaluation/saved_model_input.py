"""An encoder SavedModel (what `export_saved_model` writes) read back as the
input of an evaluation: the folder checked, loaded, its image size read."""

from __future__ import annotations

import os
from typing import Any

from keras_ccmim.evaluation.export_target import SAVED_MODEL_PROTOS
from keras_ccmim.type_aliases import PathLike


def check_saved_model_input(path: PathLike) -> None:
    """`path` is a folder with a `saved_model.pb` (what evaluate/export.py
    writes); checks the files only (no TensorFlow import).

    Raises:
        ValueError: naming the path, what is wrong and the fix.
    """
    fix = (
        "Pass the folder evaluate/export.py wrote (its --saved_model), or the "
        "pretraining run with --workdir."
    )
    if not os.path.exists(path):
        raise ValueError(f"--saved_model {path!r} does not exist. {fix}")
    if not os.path.isdir(path):
        raise ValueError(f"--saved_model {path!r} is a file, not a SavedModel folder. {fix}")
    if not any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_PROTOS):
        raise ValueError(
            f"--saved_model {path!r} is not a SavedModel: it has no saved_model.pb. {fix}"
        )


def load_saved_model(path: PathLike) -> Any:
    """`tf.saved_model.load(path)`; a damaged SavedModel is a ValueError
    naming the path and the fix."""
    import tensorflow as tf

    check_saved_model_input(path)
    try:
        return tf.saved_model.load(path)
    except Exception as error:  # protobuf, TensorFlow and OS errors alike
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise ValueError(
            f"--saved_model {path!r} cannot be loaded ({reason}). It is damaged or not "
            "a SavedModel; write it again with evaluate/export.py."
        ) from error


def saved_model_image_size(saved_model: Any) -> int:
    """The image size a SavedModel's `serve` endpoint takes."""
    try:
        spec = saved_model.serve.concrete_functions[0].structured_input_signature[0][0]
        return int(spec.shape[1])
    except (AttributeError, IndexError, TypeError) as error:
        raise ValueError(
            "The --saved_model has no `serve` endpoint taking [B, H, W, 3] images; it is "
            "not an encoder export. Write one with evaluate/export.py."
        ) from error

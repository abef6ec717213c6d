"""Writes a converted MAE / ccMIM model as a preset and reads it back."""

import os

from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.mae_architecture import listing
from keras_ccmim.models.preset_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_from_preset,
    save_to_preset,
)
from keras_ccmim.models.vit_encoder import ViTEncoder


def save_converted(model, folder, overwrite=False):
    """Writes `model` to `folder` as a preset (`config.json`,
    `model.weights.h5`, `metadata.json`, `preprocessing.json`; see
    `keras_ccmim.models.preset_files`).

    Args:
        model: a converted `ViTEncoder` or `CCMIMPretrainer`.
        folder: the output folder (created when missing).
        overwrite: replace those two files when they exist.

    Returns:
        `{"weights": path, "config": path}`.
    """
    folder = os.fspath(folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    config = os.path.join(folder, CONFIG_FILE)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--output {folder!r} is a file; pass a folder for the converted model.")
    existing = [p for p in (weights, config) if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(
            f"{listing(existing)} already exist; choose another output folder or pass "
            "overwrite=True (the binary's --overwrite)."
        )
    save_to_preset(model, folder)  # keras-hub's layout, with metadata.json
    return {"weights": weights, "config": config}


def load_converted(folder):
    """The model `save_converted` wrote to `folder` (a preset), built, with
    its weights."""
    return load_from_preset(folder, (ViTEncoder, CCMIMPretrainer))

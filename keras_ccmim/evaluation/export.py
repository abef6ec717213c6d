"""Exporting the encoder alone as a TensorFlow SavedModel.

The SavedModel needs nothing from this package (nor Keras) to run:

    model = tf.saved_model.load(path)
    out = model.serve(images)          # float32 [B, H, W, 3] in [0, 1]
    out = model.serve_uint8(images)    # uint8 [B, H, W, 3] in [0, 255]
    out["cls"], out["mean_patch"]      # [B, D]
    out["patch_tokens"]                # [B, N, D]

ImageNet normalisation happens inside. Both endpoints are also serving
signatures (`signatures["serve"]`, `["serve_uint8"]`; `"serving_default"` is
`serve`), with the input named `images`. The batch size is free; the image
size is the encoder's, and another size is refused at the call: the
functions by their input signature, the signatures (which check only the
dtype) by an assertion in the graph, an `InvalidArgumentError` naming both
sizes.

Two ways to write it (`method`):

* `"archive"`: `keras.export.ExportArchive` in this process. On TensorFlow
  the result is a plain TF graph; on JAX it is jax2tf's native
  serialization (an `XlaCallModule` op holding StableHLO, runnable on the
  platform it was exported on).
* `"tensorflow_subprocess"`: the encoder's weights go to a temporary folder
  and a TensorFlow-backend subprocess rebuilds the same encoder from them
  (weights load across backends) and exports it with the archive: a plain TF
  graph from any backend.

`"auto"` (default) uses the archive on TensorFlow and the subprocess on JAX
and torch, so every backend gives the same plain TF graph, whose size check
is the one-line message above. (Keras cannot write a SavedModel from torch
without `torch_xla`; jax2tf's graph refuses another size only with XLA's
shape-refinement error, and runs only where its StableHLO can be read.)

The export never deletes what it did not write: it writes beside the target
and renames the finished SavedModel into place, and the next export cleans
up after a killed one (`keras_ccmim.evaluation.export_target`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Literal, get_args

import keras

from keras_ccmim import backend_specific
from keras_ccmim.evaluation.export_target import (
    STAGED,
    check_export_target,
    move_into_place,
    remove_leftovers,
    staging_folder,
)
from keras_ccmim.evaluation.features import EncoderFeatures
from keras_ccmim.models.vit_encoder import ViTEncoder, load_encoder
from keras_ccmim.type_aliases import PathLike

ENDPOINTS = {"serve": "float32", "serve_uint8": "uint8"}
ExportMethod = Literal["auto", "archive", "tensorflow_subprocess"]
METHODS = get_args(ExportMethod)


def _check_encoder(encoder):
    if not isinstance(encoder, ViTEncoder):
        raise TypeError(f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}.")
    if not encoder.built:
        encoder.build()


def _export_in_process(encoder, path, verbose):
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise ValueError(
            f"method='archive' needs the tensorflow or jax backend, not "
            f"{keras.backend.backend()!r}; use method='tensorflow_subprocess' (or 'auto')."
        )
    features = EncoderFeatures(encoder, input_format="unit", name="encoder_features")
    features.build()
    height, width = encoder.image_size
    shape = (None, height, width, encoder.num_channels)
    wrong_size = (
        f"This encoder takes images [B, {height}, {width}, {encoder.num_channels}], and these "
        f"are not {height}x{width} (x: their height and width, y: the encoder's). Resize "
        "them, or export the encoder again at their size (load it with "
        "ViTEncoder.from_preset(preset, image_size=...))."
    )
    archive = keras.export.ExportArchive()
    archive.track(features)
    for name, dtype in ENDPOINTS.items():

        def serve(images):
            images = backend_specific.checked_image_size(images, (height, width), wrong_size)
            return features(images)

        archive.add_endpoint(
            name, serve, input_signature=[keras.InputSpec(shape=shape, dtype=dtype)]
        )
    archive.write_out(path, verbose=verbose)


def _export_in_subprocess(encoder, path, timeout):
    """Writes the SavedModel at `path` (which must not exist) from a
    TensorFlow-backend subprocess."""
    with tempfile.TemporaryDirectory(prefix="ccmim_export_") as folder:
        encoder.save_to_preset(folder)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        code = "import sys; from keras_ccmim.evaluation.export import main; main(sys.argv)"
        command = [sys.executable, "-c", code, folder, path]
        process = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout
        )
    if process.returncode != 0:
        raise RuntimeError(
            "Exporting through a TensorFlow-backend subprocess failed. Alternatively "
            "save the encoder with encoder.save_to_preset(folder) and run "
            "evaluate/export.py with KERAS_BACKEND=tensorflow. Subprocess output:\n"
            f"{process.stderr[-4000:]}"
        )


def export_saved_model(
    encoder: ViTEncoder,
    path: PathLike,
    method: ExportMethod = "auto",
    verbose: bool = False,
    timeout: float = 600,
    overwrite: bool = False,
    protected: Sequence[PathLike | None] = (),
) -> str:
    """Writes `encoder` as a standalone TensorFlow SavedModel (see module doc).

    Args:
        encoder: a `ViTEncoder` (built here if needed).
        path: output folder: new, empty, or (with `overwrite`) an existing
            SavedModel and nothing else.
        method: `"auto"`, `"archive"` or `"tensorflow_subprocess"`.
        verbose: print the endpoints (in-process archive only).
        timeout: seconds allowed for the TensorFlow subprocess.
        overwrite: replace an existing SavedModel at `path`.
        protected: folders the target must not be, hold or lie inside (the
            pretraining workdir); None entries are skipped.

    Returns:
        `path` (absolute, symbolic links resolved).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    _check_encoder(encoder)
    target = check_export_target(path, overwrite=overwrite, protected=protected)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    remove_leftovers(target)
    target = check_export_target(path, overwrite=overwrite, protected=protected)  # put back?
    # Everything below is written inside `staging`, a folder this call
    # creates; only that folder (and a killed export's, `remove_leftovers`)
    # is ever deleted.
    with staging_folder(target) as staging:
        staged = os.path.join(staging, STAGED)
        _write(encoder, staged, method, verbose, timeout)
        move_into_place(staged, target, staging, overwrite, protected)
    return target


def _write(encoder, path, method, verbose, timeout):
    """Writes the SavedModel at `path`, a new path inside this call's
    staging folder."""
    if method == "auto":
        backend = keras.backend.backend()
        method = "archive" if backend == "tensorflow" else "tensorflow_subprocess"
    if method == "archive":
        _export_in_process(encoder, path, verbose)
    else:
        _export_in_subprocess(encoder, path, timeout)


def main(argv: Sequence[str]) -> None:
    """`[_, ENCODER_PRESET, SAVED_MODEL_PATH]`: exports an encoder preset
    (`ViTEncoder.save_to_preset`) to a new path (the subprocess of
    `method="tensorflow_subprocess"`; the caller checks and places it)."""
    if len(argv) != 3:
        raise SystemExit("arguments: ENCODER_PRESET SAVED_MODEL_PATH")
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Export a saved encoder with KERAS_BACKEND=tensorflow.")
    _export_in_process(load_encoder(argv[1]), argv[2], verbose=False)

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
size is the encoder's.

Two ways to write it (`method`):

* `"archive"`: `keras.export.ExportArchive` in this process. On TensorFlow
  the result is a plain TF graph; on JAX it is jax2tf's native
  serialization (an `XlaCallModule` op holding StableHLO, runnable on the
  platform it was exported on).
* `"tensorflow_subprocess"`: the encoder's weights go to a temporary folder
  and a TensorFlow-backend subprocess rebuilds the same encoder from them
  (weights load across backends) and exports it with the archive: a plain TF
  graph from any backend.

`"auto"` (default) uses the archive on TensorFlow, the subprocess on torch
(Keras cannot write a SavedModel from torch without `torch_xla`), and on JAX
the archive, checked by loading the result and running it once; when that
fails it warns and uses the subprocess. (With this repository's JAX GELU,
`jax.lax.erf` lowers to a StableHLO `composite` op that TensorFlow 2.21 cannot
deserialize, so JAX currently takes the subprocess.)

The export never deletes what it did not write. The target must be new, an
empty folder, or, with `overwrite=True`, a folder holding a SavedModel and
nothing else (`saved_model.pb`, `fingerprint.pb`, `variables/`, `assets/`,
...); anything else is refused. The SavedModel is written to a hidden
temporary folder beside the target (`.NAME.export-*`) and renamed into place
only once complete, so an interrupted export leaves an existing SavedModel
as it was (a killed one may leave that temporary folder behind). The target
may not be, hold, or lie inside a folder passed as `protected`: the binary
passes the pretraining workdir, so its checkpoints and encoder are never
touched.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np

from keras_ccmim.evaluation.features import EncoderFeatures
from keras_ccmim.file_errors import nearest_existing
from keras_ccmim.models.vit_encoder import ViTEncoder

ENDPOINTS = {"serve": "float32", "serve_uint8": "uint8"}
METHODS = ("auto", "archive", "tensorflow_subprocess")
SAVED_MODEL_PROTOS = ("saved_model.pb", "saved_model.pbtxt")
# Everything TensorFlow (or Keras) writes at the top of a SavedModel folder.
SAVED_MODEL_FILES = SAVED_MODEL_PROTOS + ("fingerprint.pb", "keras_metadata.pb")
SAVED_MODEL_FOLDERS = ("variables", "assets", "assets.extra")


def is_saved_model(path):
    """Whether `path` is a folder with a `saved_model.pb` (or `.pbtxt`)."""
    path = os.fspath(path)
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_PROTOS
    )


def holds_only_saved_model(path):
    """Whether folder `path` holds a SavedModel and nothing else: the files
    and folders TensorFlow writes there, `variables/` holding only
    `variables.index` and `variables.data-*`. Only such a folder is replaced
    by `export_saved_model(..., overwrite=True)`."""
    path = os.fspath(path)
    if os.path.islink(path) or not is_saved_model(path):
        return False
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if os.path.islink(entry):
            return False
        if name in SAVED_MODEL_FILES:
            if not os.path.isfile(entry):
                return False
        elif name in SAVED_MODEL_FOLDERS:
            if not os.path.isdir(entry):
                return False
        else:
            return False
    variables = os.path.join(path, "variables")
    if os.path.isdir(variables):
        for name in os.listdir(variables):
            entry = os.path.join(variables, name)
            if os.path.islink(entry) or not os.path.isfile(entry):
                return False
            if name != "variables.index" and not name.startswith("variables.data-"):
                return False
    return True


def _within(path, folder):
    """Whether `path` is `folder` or lies inside it (both absolute, real)."""
    return os.path.commonpath([path, folder]) == folder


def check_export_target(path, overwrite=False, protected=()):
    """Checks that `export_saved_model` may write `path` (see module doc).

    Args:
        path: the target folder.
        overwrite: whether an existing SavedModel there may be replaced.
        protected: folders (e.g. the pretraining workdir) that must not be
            the target, contain it, or lie inside it.

    Returns:
        The target as an absolute path with symbolic links resolved.

    Raises:
        ValueError: naming the problem and the fix.
    """
    given = os.fspath(path)
    if not given:
        raise ValueError("The SavedModel path is empty; pass the folder to write.")
    target = os.path.realpath(given)
    for folder in protected:
        if folder is None:
            continue
        folder_path = os.path.realpath(os.fspath(folder))
        if _within(target, folder_path) or _within(folder_path, target):
            relation = (
                "is"
                if target == folder_path
                else "is inside" if _within(target, folder_path) else "contains"
            )
            raise ValueError(
                f"The SavedModel folder {given!r} {relation} the workdir {folder!r}; the "
                "export never writes into (or over) a run's folder, its checkpoints or "
                f"its encoder. Pass a folder outside it, e.g. "
                f"--saved_model={folder_path.rstrip(os.sep)}_saved_model."
            )
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ValueError(
            f"The SavedModel path {given!r} is a file, not a folder; the export does not "
            "replace it. Pass a new folder path."
        )
    existing = nearest_existing(os.path.dirname(target))  # where the staging folder goes
    if not os.path.isdir(existing):
        raise ValueError(
            f"The SavedModel folder {given!r} cannot be created: {existing!r} is a file, "
            "not a folder. Pass a path whose parents are folders."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"The SavedModel folder {given!r} cannot be written: {existing!r} is read-only "
            "(its permissions or a read-only file system). Pass a folder in a writable "
            "location."
        )
    if os.path.isdir(target) and os.listdir(target):
        if not overwrite:
            what = "a SavedModel" if is_saved_model(target) else "files"
            raise ValueError(
                f"The SavedModel folder {given!r} already holds {what}. Pass --overwrite "
                "(overwrite=True) to replace a SavedModel there, or choose a new folder."
            )
        if not holds_only_saved_model(target):
            raise ValueError(
                f"The SavedModel folder {given!r} holds files that are not a SavedModel's "
                "(--overwrite replaces only a folder holding a SavedModel and nothing "
                "else). Choose a new folder, or move those files away first."
            )
    return target


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
    shape = (None,) + tuple(encoder.image_size) + (encoder.num_channels,)
    archive = keras.export.ExportArchive()
    archive.track(features)
    for name, dtype in ENDPOINTS.items():

        def serve(images):
            return features(images)

        archive.add_endpoint(
            name, serve, input_signature=[keras.InputSpec(shape=shape, dtype=dtype)]
        )
    archive.write_out(path, verbose=verbose)


def _check_runs(encoder, path):
    """Loads the SavedModel with TensorFlow and runs `serve` once."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    images = np.zeros((1,) + tuple(encoder.image_size) + (encoder.num_channels,), "float32")
    loaded.serve(tf.constant(images))["cls"].numpy()


def _export_in_subprocess(encoder, path, timeout):
    """Writes the SavedModel at `path` (which must not exist) from a
    TensorFlow-backend subprocess."""
    from keras_ccmim.models.preset_files import save_to_preset

    with tempfile.TemporaryDirectory(prefix="ccmim_export_") as folder:
        save_to_preset(encoder, folder)
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
    encoder, path, method="auto", verbose=False, timeout=600, overwrite=False, protected=()
):
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
            pretraining workdir).

    Returns:
        `path` (absolute, symbolic links resolved).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    _check_encoder(encoder)
    target = check_export_target(path, overwrite=overwrite, protected=protected)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    # Everything below is written inside `staging`, a folder this call
    # creates; only that folder is ever deleted.
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.export-", dir=parent)
    try:
        staged = os.path.join(staging, "saved_model")
        _write(encoder, staged, method, verbose, timeout)
        _move_into_place(staged, target, staging, overwrite, protected)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write(encoder, path, method, verbose, timeout):
    """Writes the SavedModel at `path`, a new path inside this call's
    staging folder."""
    backend = keras.backend.backend()
    if method == "auto":
        method = "tensorflow_subprocess" if backend == "torch" else "archive"
        if backend == "jax":
            try:
                _export_in_process(encoder, path, verbose)
                _check_runs(encoder, path)
                return
            except Exception as error:  # jax2tf / StableHLO incompatibilities
                warnings.warn(
                    "The JAX export (jax2tf) does not run in this TensorFlow "
                    f"({type(error).__name__}: {' '.join(str(error).split())[:400]}); "
                    "exporting through a TensorFlow-backend subprocess instead."
                )
                shutil.rmtree(path, ignore_errors=True)  # the staged copy only
                method = "tensorflow_subprocess"
    if method == "archive":
        _export_in_process(encoder, path, verbose)
    else:
        _export_in_subprocess(encoder, path, timeout)


def _move_into_place(staged, target, staging, overwrite, protected):
    """Renames the finished SavedModel `staged` to `target`; an existing
    SavedModel there is first moved into `staging` (deleted with it) and
    put back if the rename fails."""
    check_export_target(target, overwrite=overwrite, protected=protected)  # unchanged?
    replaced = None
    if os.path.isdir(target) and os.listdir(target):
        replaced = os.path.join(staging, "replaced")
        os.rename(target, replaced)
    elif os.path.isdir(target):
        os.rmdir(target)  # an empty folder
    try:
        os.rename(staged, target)
    except BaseException:
        if replaced is not None:
            os.rename(replaced, target)
        raise


def main(argv):
    """`[_, ENCODER_PRESET, SAVED_MODEL_PATH]`: exports an encoder preset
    (`ViTEncoder.save_to_preset`) to a new path (the subprocess of
    `method="tensorflow_subprocess"`; the caller checks and places it)."""
    if len(argv) != 3:
        raise SystemExit("arguments: ENCODER_PRESET SAVED_MODEL_PATH")
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Export a saved encoder with KERAS_BACKEND=tensorflow.")
    from keras_ccmim.models.vit_encoder import load_encoder

    _export_in_process(load_encoder(argv[1]), argv[2], verbose=False)

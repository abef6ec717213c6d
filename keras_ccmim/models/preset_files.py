"""Presets of trained models in keras-hub's file layout.

A preset is a folder (or a `kaggle://` / `hf://` handle of one) holding:

    config.json         `keras.saving.serialize_keras_object(model)`: module,
                        class_name, config and registered_name (no build or
                        compile config), as `keras_hub` writes it
    model.weights.h5    `model.save_weights(...)`
    metadata.json       keras and keras-ccmim versions, parameter count, date
    preprocessing.json  the input contract, as the serialized
                        `ImageNormalization` that maps raw images to the
                        model's input (mean, std, value range, image size,
                        channel order), as keras-hub keeps its
                        `image_converter.json`

keras-hub itself is not a dependency: installing it pulls in
tensorflow-text, which requires the full `tensorflow` wheel next to the
`tensorflow-cpu` this project installs, plus tokenizer and hub clients.
The layout is simple enough to write here, and a keras-hub user can read
it: the config is a plain Keras serialization of a registered class.

Loading deserializes with Keras `safe_mode` on (no Python code from the
file runs) and only accepts the classes asked for.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_ccmim.file_io import write_json_atomically
from keras_ccmim.layers.image_normalization import ImageNormalization
from keras_ccmim.models.presets import ALIASES, PRESETS
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PREPROCESSING_FILE = "preprocessing.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, PREPROCESSING_FILE)

KAGGLE_PREFIX = "kaggle://"
HF_PREFIX = "hf://"


def _image_encoder(model):
    """The model's image encoder: the model itself (a `ViTEncoder`) or its
    `encoder` (a `CCMIMPretrainer`, a `ViTClassifier`)."""
    return getattr(model, "encoder", model)


def save_to_preset(model: keras.Model, preset_dir: PathLike) -> str:
    """Writes `model` (built) as a preset folder; returns the folder.

    `preprocessing.json` records the input contract of this package's
    encoders (`keras_ccmim.input_contract`) at the model's image size.
    """
    from keras_ccmim import __version__

    preset_dir = os.fspath(preset_dir)
    if not model.built:
        raise ValueError(f"Build {model.name!r} (model.build()) before saving it as a preset.")
    os.makedirs(preset_dir, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    for key in ("build_config", "compile_config"):
        config.pop(key, None)
    write_json_atomically(os.path.join(preset_dir, CONFIG_FILE), config)
    model.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    preprocessing = ImageNormalization(image_size=_image_encoder(model).image_size)
    write_json_atomically(
        os.path.join(preset_dir, PREPROCESSING_FILE),
        keras.saving.serialize_keras_object(preprocessing),
    )
    write_json_atomically(
        os.path.join(preset_dir, METADATA_FILE),
        {
            "keras_version": keras.__version__,
            "keras_ccmim_version": __version__,
            "saved_with_backend": keras.backend.backend(),
            "parameter_count": int(model.count_params()),
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        },
    )
    return preset_dir


def is_preset_dir(path: PathLike) -> bool:
    """Whether `path` is a folder holding a preset's config and weights."""
    path = os.fspath(path)
    return all(os.path.exists(os.path.join(path, n)) for n in (CONFIG_FILE, WEIGHTS_FILE))


def _unreadable(path, error):
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return ValueError(
        f"Cannot read {path} ({reason}): the file is unreadable or damaged. Check its "
        "permissions; if it is damaged and belongs to a pretraining workdir, rerun the "
        "pretraining command of this workdir (train/pretrain.py with the same flags), "
        "which writes the encoder preset again from the last checkpoint."
    )


def resolve_preset(preset: PathLike) -> str:
    """The local folder of `preset`: a folder as is; `kaggle://<owner>/<model>/
    keras/<variant>[/<version>]` through `kagglehub.model_download`;
    `hf://<owner>/<repo>` through `huggingface_hub.snapshot_download`
    (both cache what they fetch)."""
    preset = os.fspath(preset)
    if preset.startswith(KAGGLE_PREFIX):
        try:
            import kagglehub
        except ImportError as error:
            raise ImportError(
                f"Loading {preset!r} needs the kagglehub package: pip install kagglehub."
            ) from error
        return kagglehub.model_download(preset[len(KAGGLE_PREFIX):])
    if preset.startswith(HF_PREFIX):
        try:
            import huggingface_hub
        except ImportError as error:
            raise ImportError(
                f"Loading {preset!r} needs the huggingface_hub package: pip install "
                "huggingface_hub."
            ) from error
        return huggingface_hub.snapshot_download(repo_id=preset[len(HF_PREFIX):])
    if not os.path.isdir(preset):
        raise ValueError(
            f"Preset {preset!r} is neither a folder nor a kaggle:// or hf:// handle. Pass the "
            "folder save_to_preset wrote (the main job writes <workdir>/encoder), or a "
            "handle such as kaggle://<owner>/<model>/keras/<variant>."
        )
    return preset


def _refuse_architecture_name(preset, cls):
    """An architecture name (`keras_ccmim.models.presets`) is not a preset of
    trained weights: its model comes from `from_architecture`, which says
    its weights are random."""
    if isinstance(preset, str) and (preset in PRESETS or preset in ALIASES):
        if not os.path.isdir(preset):
            raise ValueError(
                f"{preset!r} is an architecture name, not a preset of trained weights: "
                f"{cls.__name__}.from_architecture({preset!r}) builds it with random "
                "weights. A preset is a folder save_to_preset wrote (a pretraining run "
                "writes <workdir>/encoder) or a kaggle:// or hf:// handle of one."
            )


def load_from_preset(
    preset: PathLike,
    classes: type[keras.Model] | tuple[type[keras.Model], ...],
    config_overrides: Mapping[str, Any] | None = None,
) -> keras.Model:
    """The model a preset holds, built, with its weights.

    Args:
        preset: a preset folder or handle (see `resolve_preset`).
        classes: the accepted model classes (a class or a tuple).
        config_overrides: optional dict of constructor arguments to change,
            e.g. `{"image_size": 48}` for a `ViTEncoder` (weights that do
            not depend on them load as they are).

    Raises:
        ValueError: a missing or unreadable file, or another class, naming
            the file and the fix.
    """
    classes = classes if isinstance(classes, tuple) else (classes,)
    _refuse_architecture_name(preset, classes[0])
    folder = resolve_preset(preset)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not os.path.exists(os.path.join(folder, n))]
    if missing:
        raise ValueError(
            f"Preset {preset!r} has no {' or '.join(missing)}: it is not a preset folder "
            f"(one holds {', '.join(PRESET_FILES)}). Pass the folder save_to_preset wrote."
        )
    config_path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise _unreadable(config_path, error) from error
    names = {c.__name__ for c in classes}
    if not isinstance(config, dict) or config.get("class_name") not in names:
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f"Preset {preset!r} holds a {found!r}, not a {' or '.join(sorted(names))}: pass a "
            "preset of the model asked for."
        )
    if config_overrides:
        config = dict(config, config=dict(config.get("config") or {}, **config_overrides))
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except (ValueError, TypeError, KeyError) as error:
        raise _unreadable(config_path, error) from error
    if not model.built:
        model.build()
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    try:
        model.load_weights(weights_path)
    except (OSError, ValueError, KeyError) as error:
        raise _unreadable(weights_path, error) from error
    return model


def upload_preset(uri: str, preset_dir: PathLike) -> Any:
    """Uploads a preset folder: `kaggle://<owner>/<model>/keras/<variant>`
    with `kagglehub.model_upload`, `hf://<owner>/<repo>` with
    `huggingface_hub.HfApi().upload_folder` (credentials as those tools
    take them)."""
    preset_dir = os.fspath(preset_dir)
    if not is_preset_dir(preset_dir):
        raise ValueError(f"{preset_dir!r} is not a preset folder (needs {', '.join(PRESET_FILES)}).")
    if uri.startswith(KAGGLE_PREFIX):
        import kagglehub

        return kagglehub.model_upload(uri[len(KAGGLE_PREFIX):], preset_dir)
    if uri.startswith(HF_PREFIX):
        import huggingface_hub

        api = huggingface_hub.HfApi()
        repo_id = uri[len(HF_PREFIX):]
        api.create_repo(repo_id, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=preset_dir)
    raise ValueError(f"Upload URI {uri!r} must start with {KAGGLE_PREFIX} or {HF_PREFIX}.")


# The main job's preset of its final encoder, inside the workdir.
ENCODER_PRESET = "encoder"


def encoder_preset(source: PathLike) -> str:
    """The encoder preset of `source`: a pretraining workdir (its `encoder/`
    preset), a preset folder, or a `kaggle://` / `hf://` handle (as is).

    Raises:
        ValueError: `source` is missing, a file, or holds no encoder preset,
            naming the fix.
    """
    source = os.fspath(source)
    if source.startswith((KAGGLE_PREFIX, HF_PREFIX)):
        return source
    if os.path.exists(source) and not os.path.isdir(source):
        raise ValueError(
            f"workdir {source!r} is a file, not a folder. Pass a pretraining workdir "
            "(the --workdir given to train/pretrain.py) or an encoder preset folder."
        )
    if not os.path.isdir(source):
        raise ValueError(
            f"workdir {source!r} does not exist: pass a pretraining workdir or an encoder "
            "preset."
        )
    if is_preset_dir(source):
        return source
    inner = os.path.join(source, ENCODER_PRESET)
    if is_preset_dir(inner):
        return inner
    if os.path.exists(os.path.join(source, "encoder.weights.h5")):
        raise ValueError(
            f"{source!r} holds an encoder in the format of an earlier version "
            "(encoder.weights.h5 + encoder_config.json). Rerun its pretraining "
            "command (train/pretrain.py with the same flags): a finished run only "
            f"rewrites its outputs, {ENCODER_PRESET}/ among them."
        )
    raise ValueError(
        f"{source!r} holds no encoder preset ({ENCODER_PRESET}/ with "
        f"{', '.join(PRESET_FILES)}). It is written when a pretraining run "
        "(train/pretrain.py) finishes; rerun the same command to finish an "
        "interrupted run, or evaluate with --random_init."
    )


def load_preprocessing(
    preset: PathLike, image_size: int | Sequence[int] | None = None
) -> ImageNormalization:
    """The `ImageNormalization` a preset records (`preprocessing.json`).

    A preset written before presets recorded it gets this package's input
    contract (`keras_ccmim.input_contract`), which every encoder it trains
    or converts has (with no image size of its own: the encoder checks
    that), and a log line saying so.

    Args:
        preset: a preset folder or handle (see `resolve_preset`).
        image_size: optional int or `(H, W)` replacing the recorded size
            (an encoder loaded at another size).
    """
    folder = resolve_preset(preset)
    path = os.path.join(folder, PREPROCESSING_FILE)
    if not os.path.exists(path):
        logger.warning(
            "Preset %s records no %s (written by an earlier version); using this "
            "package's input contract: RGB in [0, 255], ImageNet mean and std.",
            preset, PREPROCESSING_FILE,
        )
        return ImageNormalization(image_size=image_size)
    try:
        with open(path) as f:
            config = json.load(f)
        if not isinstance(config, dict) or config.get("class_name") != "ImageNormalization":
            raise ValueError("it holds no ImageNormalization")
        if image_size is not None:
            config = dict(config, config=dict(config.get("config") or {}, image_size=image_size))
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise _unreadable(path, error) from error

"""Where evaluated encoders come from: a workdir, a preset or a fresh init.

A pretraining workdir (see `keras_ccmim.training.pretrain`) holds the final
encoder as the preset `encoder/` (keras-hub's layout, see
`keras_ccmim.models.preset_files`) and the whole pretrainer as
`pretrainer.keras`. The encoder is all k-NN, probing, fine-tuning and export
need (from a workdir or any encoder preset); the reconstruction pictures
need the pretrainer.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any

import keras

from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.presets import get_preset
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import PathLike

PRETRAINER = "pretrainer.keras"


def _check_workdir(workdir, names):
    workdir = os.fspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(
            f"workdir {workdir!r} is a file, not a folder. Pass the folder of a "
            "pretraining run (the --workdir given to train/pretrain.py)."
        )
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} does not exist.")
    missing = [name for name in names if not os.path.exists(os.path.join(workdir, name))]
    if missing:
        raise ValueError(
            f"workdir {workdir!r} has no {', '.join(missing)}. It is written when a "
            "pretraining run (train/pretrain.py) finishes; rerun the same command to "
            "finish an interrupted run, or evaluate with --random_init."
        )
    return workdir


def _one_line(error):
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def _cannot_rebuild(path, error):
    """The ValueError for a `.keras` file Keras reads but cannot rebuild the
    model of (a `TypeError`: a class or function it names is not defined
    here, or the arguments of one do not fit)."""
    missing = re.search(r"Could not locate (class|function) '([^']+)'", str(error))
    if missing:
        reason = (
            f"it names the {missing.group(1)} {missing.group(2)!r}, which this version "
            "of keras_ccmim does not define"
        )
    else:
        reason = _one_line(error)
    return ValueError(
        f"Cannot rebuild the model in {path}: {reason} (the file was written by another "
        "version, or edited). Rerun the pretraining command of this workdir "
        "(train/pretrain.py with the same flags) with this version, which writes it again."
    )


def load_pretrainer(workdir: PathLike) -> CCMIMPretrainer:
    """The final `CCMIMPretrainer` of a pretraining workdir (`pretrainer.keras`).

    Raises:
        ValueError: one line naming the file and the fix, for a missing,
            unreadable or damaged file and for one whose model cannot be
            rebuilt here.
    """
    workdir = _check_workdir(workdir, (PRETRAINER,))
    path = os.path.join(workdir, PRETRAINER)
    try:
        model = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Cannot read {path} ({_one_line(error)}): the file is unreadable or damaged. "
            "Check its permissions; if it is damaged, rerun the pretraining command of "
            "this workdir (train/pretrain.py with the same flags), which writes it again."
        ) from error
    except TypeError as error:
        raise _cannot_rebuild(path, error) from error
    if not isinstance(model, CCMIMPretrainer):
        raise ValueError(f"{workdir}/{PRETRAINER} does not hold a CCMIMPretrainer.")
    return model


def _encoder_config(preset, overrides):
    config = dict(get_preset(preset)["encoder"])
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def random_encoder(
    preset: str = "vit_tiny_patch4_32", seed: int = 0, **overrides: Any
) -> ViTEncoder:
    """A randomly initialised `ViTEncoder`, built: the baseline of every protocol.

    Args:
        preset: preset name or alias (`keras_ccmim.models.presets`).
        seed: seeds the initialisation (sets Keras' global seed).
        **overrides: encoder arguments (`image_size`, `hidden_dim`, ...);
            `None` values keep the preset's.
    """
    keras.utils.set_random_seed(int(seed))
    encoder = ViTEncoder(**_encoder_config(preset, overrides), name="encoder")
    encoder.build()
    return encoder


def random_pretrainer(
    preset: str = "vit_tiny_patch4_32",
    seed: int = 0,
    encoder_overrides: dict[str, Any] | None = None,
    **kwargs: Any,
) -> CCMIMPretrainer:
    """A randomly initialised `CCMIMPretrainer`, built (for pictures)."""
    keras.utils.set_random_seed(int(seed))
    overrides = {k: v for k, v in (encoder_overrides or {}).items() if v is not None}
    model = CCMIMPretrainer.from_architecture(
        preset, encoder_overrides=overrides, seed=seed, **kwargs
    )
    model.build()
    return model

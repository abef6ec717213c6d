"""Frozen-encoder features: [CLS], mean patch embedding, patch tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import keras
import numpy as np
from keras import ops

from keras_ccmim.layers.image_normalization import ImageNormalization
from keras_ccmim.layers.token_ops import pool_tokens
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import Tensor

# The image features the protocols (k-NN, linear probe) take.
Feature = Literal["mean_patch", "cls"]
FEATURE_NAMES = get_args(Feature)
# What `EncoderFeatures` can return.
OutputName = Literal["cls", "mean_patch", "patch_tokens"]
OUTPUT_NAMES = get_args(OutputName)
InputFormat = Literal["normalized", "unit"]
INPUT_FORMATS = get_args(InputFormat)


@keras.saving.register_keras_serializable(package="keras_ccmim")
class EncoderFeatures(keras.Model):
    """The image features of a frozen `ViTEncoder` (always `training=False`).

    Args:
        encoder: a `ViTEncoder`.
        input_format: `"normalized"`: ImageNet-normalised float images, as
            `keras_ccmim.data.make_dataset` yields them; `"unit"`: uint8
            images in `[0, 255]` (scaled to `[0, 1]`) or float images in
            `[0, 1]`, ImageNet-normalised inside.
        names: features to return, a subset of `("cls", "mean_patch",
            "patch_tokens")`.

    Call: `images [B, H, W, C]` -> dict with
        `cls [B, D]` (the [CLS] output), `mean_patch [B, D]` (the mean of
        the normalised patch tokens, ccMIM's image feature) and
        `patch_tokens [B, N, D]`, restricted to `names`. They come from the
        encoder's stages, whatever its `pooling`.
    """

    def __init__(
        self,
        encoder: ViTEncoder,
        input_format: InputFormat = "normalized",
        names: Sequence[OutputName] = OUTPUT_NAMES,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, ViTEncoder):
            raise TypeError(
                f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}."
            )
        if input_format not in INPUT_FORMATS:
            raise ValueError(
                f"Unknown input_format {input_format!r}; choose one of {', '.join(INPUT_FORMATS)}."
            )
        names = tuple(names)
        if not names or set(names) - set(OUTPUT_NAMES):
            raise ValueError(f"names must be a non-empty subset of {OUTPUT_NAMES}, got {names}.")
        self.encoder = encoder
        self.input_format = input_format
        self.names = names
        # "unit": uint8 images in [0, 255], float images in [0, 1].
        self.from_uint8 = ImageNormalization(value_range=(0, 255), name="from_uint8")
        self.from_unit = ImageNormalization(value_range=(0, 1), name="from_unit")
        if encoder.built:
            self.built = True

    def build(self, input_shape: Any = None) -> None:
        if not self.encoder.built:
            self.encoder.build()
        self.built = True

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in `input_format` -> the encoder's normalised float input."""
        if self.input_format == "normalized":
            return ops.cast(images, "float32")
        if "int" in keras.backend.standardize_dtype(images.dtype):
            return self.from_uint8(images)
        return self.from_unit(images)

    def call(self, images: Tensor) -> dict[str, Tensor]:
        encoder = self.encoder
        tokens = encoder.encode(encoder.embed(self.preprocess(images)), training=False)
        everything = {
            "cls": pool_tokens(tokens, "cls"),
            "mean_patch": pool_tokens(tokens, "mean"),
            "patch_tokens": tokens[:, 1:],
        }
        return {name: everything[name] for name in self.names}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "input_format": self.input_format,
                "names": list(self.names),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EncoderFeatures:
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def whole_batch_size(num_images: int | None, batch_size: int) -> int:
    """A batch size that covers a split of `num_images` without remainder.

    `make_dataset` drops the last partial batch (every batch has a static
    shape); for evaluation this returns the largest divisor of `num_images`
    not above `batch_size`, or `batch_size` itself (dropping fewer than
    `batch_size` images) when that divisor is below `batch_size // 8` or the
    size is unknown.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if not num_images:
        return batch_size
    if num_images <= batch_size:
        return int(num_images)
    divisor = next(d for d in range(batch_size, 0, -1) if num_images % d == 0)
    return divisor if divisor >= max(1, batch_size // 8) else batch_size


def check_feature_name(feature: str) -> None:
    if feature not in FEATURE_NAMES:
        raise ValueError(
            f"Unknown feature {feature!r}; choose 'mean_patch' (ccMIM's image feature, "
            "the default) or 'cls'."
        )


def _to_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _iterate(dataset, max_batches):
    if max_batches is not None and int(max_batches) <= 0:
        raise ValueError(f"max_batches must be positive or None, got {max_batches}.")
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= int(max_batches):
            return
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                "The dataset must yield (images, extras) pairs with extras['label'], "
                "as keras_ccmim.data.make_dataset does."
            )
        images, extras = batch
        labels = extras["label"] if isinstance(extras, dict) else extras
        yield _to_numpy(images), _to_numpy(labels).astype("int32").reshape(-1)


def _collect(batches):
    features, labels = [], []
    for batch_features, batch_labels in batches:
        features.append(np.asarray(batch_features, dtype="float32"))
        labels.append(batch_labels)
    if not features:
        raise ValueError("The dataset yielded no batch: nothing to extract features from.")
    return np.concatenate(features), np.concatenate(labels)


def extract_features(
    encoder: ViTEncoder,
    dataset: Iterable[Any],
    feature: Feature = "mean_patch",
    max_batches: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features of every image of a dataset, as numpy arrays.

    Args:
        encoder: a `ViTEncoder` (its weights are not changed).
        dataset: an iterable of `(images, extras)` batches with normalised
            images and `extras["label"]`, e.g. `make_dataset(...,
            training=False)` or a list of numpy pairs.
        feature: `"mean_patch"` (default) or `"cls"`.
        max_batches: optional cap on the batches read.

    Returns:
        `(features [M, D] float32, labels [M] int32)`.
    """
    check_feature_name(feature)
    model = EncoderFeatures(encoder, names=(feature,))
    model.build()

    def batches():
        for images, labels in _iterate(dataset, max_batches):
            outputs = model.predict_on_batch(images.astype("float32"))
            yield ops.convert_to_numpy(outputs[feature]), labels

    return _collect(batches())


def extract_saved_model_features(
    saved_model: str | Any,
    dataset: Iterable[Any],
    feature: Feature = "mean_patch",
    max_batches: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like `extract_features`, from an encoder exported by `export_saved_model`.

    Args:
        saved_model: a SavedModel directory or the object
            `tf.saved_model.load` returned.
        dataset: yields `(normalised images, extras)`; the images are mapped
            back to `[0, 1]` (the exported model normalises them again).
        feature: `"mean_patch"` or `"cls"`.
        max_batches: optional cap on the batches read.

    Returns:
        `(features [M, D] float32, labels [M] int32)`.
    """
    import tensorflow as tf

    from keras_ccmim.data import unnormalize

    check_feature_name(feature)
    if isinstance(saved_model, str):
        saved_model = tf.saved_model.load(saved_model)
    if not hasattr(saved_model, "serve"):
        raise ValueError(
            "The SavedModel has no 'serve' endpoint; export the encoder with "
            "keras_ccmim.evaluation.export_saved_model (evaluate/export.py)."
        )

    def batches():
        for images, labels in _iterate(dataset, max_batches):
            unit = unnormalize(images.astype("float32"), clip=False)
            outputs = saved_model.serve(tf.constant(unit, tf.float32))
            yield outputs[feature].numpy(), labels

    return _collect(batches())

"""Raw images to an encoder's input: the preprocessing a preset records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import keras
import numpy as np
from keras import ops

from keras_ccmim.input_contract import CHANNEL_ORDER, IMAGENET_MEAN, IMAGENET_STD, VALUE_RANGE
from keras_ccmim.type_aliases import Tensor

ChannelOrder = Literal["rgb", "bgr"]
CHANNEL_ORDERS = get_args(ChannelOrder)


def check_image_shape(
    shape: Sequence[int | None], image_size: Sequence[int], num_channels: int, owner: str
) -> None:
    """Checks the static `[B, H, W, C]` `shape` against `image_size` and
    `num_channels`; unknown (None) sizes pass.

    Raises:
        ValueError: naming both sizes and how to load an encoder at the
            images' size.
    """
    if len(shape) != 4:
        raise ValueError(f"{owner} takes images [B, H, W, C], got shape {tuple(shape)}.")
    _, height, width, channels = shape
    if channels is not None and int(channels) != num_channels:
        raise ValueError(
            f"{owner} takes images with {num_channels} channels, got {channels} "
            f"(shape {tuple(shape)})."
        )
    if (height, width) == (None, None):
        return
    expected = tuple(image_size)
    got = (expected[0] if height is None else height, expected[1] if width is None else width)
    if tuple(int(s) for s in got) != expected:
        raise ValueError(
            f"{owner} takes {expected[0]}x{expected[1]} images, got "
            f"{got[0]}x{got[1]}. Resize the images to {expected[0]}x{expected[1]}, or load "
            f"the encoder at their size: ViTEncoder.from_preset(preset, "
            f"image_size=({got[0]}, {got[1]})) (its weights do not depend on the image size)."
        )


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ImageNormalization(keras.layers.Layer):
    """Raw images -> an encoder's normalised float input.

    Maps `value_range` to `[0, 1]` and normalises each channel:
    `((images - low) / (high - low) - mean) / std`. The defaults are the
    input contract of every encoder of this package
    (`keras_ccmim.input_contract`): uint8 RGB images in `[0, 255]` and
    ImageNet's mean and std, what `keras_ccmim.data.normalize` computes.
    A preset records its encoder's instance (`preprocessing.json`), and
    `ViTEncoder.from_preset(preset, preprocessing=True)` puts it in front of
    the encoder.

    Args:
        mean: per-channel mean, in `[0, 1]` units.
        std: per-channel standard deviation, positive.
        value_range: `(low, high)` of the input values, e.g. `(0, 255)` for
            uint8 images or `(0, 1)` for float images in `[0, 1]`.
        image_size: optional `(H, W)` (or int) the images must have, the
            encoder's; another static size is a ValueError.
        channel_order: the input's channel order, `"rgb"` (the encoders')
            or `"bgr"` (reversed to RGB first, e.g. OpenCV's images).

    Call: `images [B, H, W, C]` of any real dtype -> float32
        `[B, H, W, C]`.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        value_range: Sequence[float] = VALUE_RANGE,
        image_size: int | Sequence[int] | None = None,
        channel_order: ChannelOrder = CHANNEL_ORDER,
        **kwargs: Any,
    ):
        kwargs.setdefault("autocast", False)  # float32 from raw values under any policy
        super().__init__(**kwargs)
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
        if not mean or len(mean) != len(std):
            raise ValueError(
                f"mean and std need one value per channel, got {len(mean)} and {len(std)}."
            )
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}.")
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}.")
        if image_size is not None:
            image_size = (
                (int(image_size), int(image_size))
                if isinstance(image_size, int)
                else tuple(int(s) for s in image_size)
            )
            if len(image_size) != 2 or min(image_size) < 1:
                raise ValueError(f"image_size must be positive (H, W), got {image_size}.")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"Unknown channel_order {channel_order!r}; choose one of "
                f"{', '.join(CHANNEL_ORDERS)}."
            )
        self.mean = mean
        self.std = std
        self.value_range = (low, high)
        self.image_size = image_size
        self.channel_order = channel_order

    def call(self, images: Tensor) -> Tensor:
        if self.image_size is not None:
            check_image_shape(
                images.shape, self.image_size, len(self.mean), f"ImageNormalization {self.name!r}"
            )
        images = ops.cast(images, "float32")
        if self.channel_order == "bgr":
            images = ops.flip(images, axis=-1)
        low, high = self.value_range
        if low:
            images = images - low
        images = images / (high - low)
        mean = ops.convert_to_tensor(np.asarray(self.mean, "float32"))
        std = ops.convert_to_tensor(np.asarray(self.std, "float32"))
        return (images - mean) / std

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "mean": list(self.mean),
                "std": list(self.std),
                "value_range": list(self.value_range),
                "image_size": None if self.image_size is None else list(self.image_size),
                "channel_order": self.channel_order,
            }
        )
        return config

"""`ViTSegmenter`: semantic segmentation over a `ViTEncoder` (dense transfer).

The design is ViTDet's simple feature pyramid with a light FPN head:

* features are taken after 4 evenly spaced blocks (`feature_blocks`; with
  fewer than 4 blocks some are used twice), each normalised by its own
  LayerNorm (the last block's after the encoder's final norm, so it is the
  encoder's output) and laid out on the patch grid `[B, H/p, W/p, D]`;
* the pyramid, relative to the patch grid: two stride-2 transposed
  convolutions (4x up, `D/4` channels), one (2x up, `D/2`), identity (1x,
  `D`) and a 2x2 max pool (0.5x, `D`): strides 4, 8, 16 and 32 of the input
  for patch 16;
* an FPN: 1x1 lateral convolutions to `head_dim`, a top-down pathway
  (coarser levels resized and added), a 3x3 convolution per level, then
  every level resized to the finest and summed (Panoptic FPN's semantic
  branch, light), a 3x3 convolution + LayerNorm + GELU and a 1x1 classifier;
* the logits are resized (bilinear) to the input size.

`head="linear"` is the dense analogue of a linear probe instead: the
feature blocks' outputs (each once), normalised without learned scale or
shift and concatenated, and one linear map from a patch's features to the
logits of each of its `p x p` pixels (a 1x1 convolution to `p * p *
num_classes` channels, laid out on the pixels). Its only weights are that
map's, so over a frozen encoder (`encoder.trainable = False`) training it is
a convex problem (multinomial logistic regression per pixel position), whose
optimum does not depend on the initialisation: the sturdy way to compare two
encoders' features in a short run.

Every shape is static (a function of the encoder's `image_size`), and one
code path of `keras.ops` serves all backends. The encoder's `image_size` is
the segmenter's input size; `resized_encoder` makes a copy of a pretrained
encoder at another size (the sin-cos position table is recomputed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import keras
from keras import ops

from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import Tensor

# The head over the encoder's features (`ViTSegmenter(head=...)`).
SegmentationHead = Literal["fpn", "linear"]


def feature_blocks(num_layers: int, count: int = 4) -> list[int]:
    """`count` evenly spaced block indices ending at the last block:
    `[2, 5, 8, 11]` for 12 blocks, `[0, 0, 1, 1]` for 2."""
    return [
        max(int(math.floor((k + 1) * num_layers / count + 0.5)) - 1, 0) for k in range(count)
    ]


def resized_encoder(
    encoder: ViTEncoder,
    image_size: int | Sequence[int] | None = None,
    drop_path_rate: float | None = None,
) -> ViTEncoder:
    """A built copy of `encoder` with its weights, at `image_size` (default
    its own) and with `drop_path_rate` (default its own). The position
    table is a function of the grid, so it is computed for the new size;
    every other weight is copied."""
    config = encoder.get_config()
    if image_size is not None:
        config["image_size"] = image_size
    if drop_path_rate is not None:
        config["drop_path_rate"] = float(drop_path_rate)
    copy = ViTEncoder.from_config(config)
    copy.build()
    copy.built = True
    table = copy.position_embedding.embedding.path
    for target, source in zip(copy.weights, encoder.weights):
        if target.path != table:
            target.assign(ops.convert_to_numpy(source))  # a copy: fit may donate buffers
    return copy


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ViTSegmenter(keras.Model):
    """Per-pixel class logits from a `ViTEncoder` (see the module docstring).

    Args:
        encoder: a `ViTEncoder`; its `image_size` is the input size and its
            `drop_path_rate` the stochastic depth used while fine-tuning.
        num_classes: int >= 2, classes of the logits (background included).
        feature_layers: 4 block indices; default `feature_blocks`.
        head_dim: channels of the FPN head.
        head: `"fpn"` (the pyramid and FPN head) or `"linear"` (a linear
            map per pixel position from its patch's features).

    Call: `images [B, H, W, C]` (normalised) -> float32 logits
    `[B, H, W, num_classes]`.
    """

    HEADS = get_args(SegmentationHead)

    def __init__(
        self,
        encoder: ViTEncoder,
        num_classes: int,
        feature_layers: Sequence[int] | None = None,
        head_dim: int = 64,
        head: SegmentationHead = "fpn",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, ViTEncoder):
            raise TypeError(
                f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}."
            )
        if int(num_classes) < 2:
            raise ValueError(
                f"num_classes must be >= 2 (background counts as a class), got {num_classes}."
            )
        layers = feature_blocks(encoder.num_layers) if feature_layers is None else feature_layers
        layers = [int(i) for i in layers]
        if len(layers) != 4 or min(layers) < 0 or max(layers) >= encoder.num_layers:
            raise ValueError(
                f"feature_layers must be 4 block indices in [0, {encoder.num_layers}), got "
                f"{feature_layers}; leave it unset for evenly spaced blocks."
            )
        if int(head_dim) < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}.")
        if head not in self.HEADS:
            raise ValueError(f"head must be one of {self.HEADS}, got {head!r}.")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.feature_layers = layers
        self.head_dim = int(head_dim)
        self.head = head
        policy = self.dtype_policy
        if head == "linear":
            self.linear_layers = sorted(set(layers))
            self.feature_norms = [
                keras.layers.LayerNormalization(epsilon=1e-6, center=False, scale=False,
                                                dtype=policy, name=f"feature_norm_{i}")
                for i in range(len(self.linear_layers))
            ]
            pixels = encoder.patch_size * encoder.patch_size
            self.classifier = keras.layers.Conv2D(pixels * self.num_classes, 1, dtype=policy,
                                                  name="classifier")
            return
        dim = encoder.hidden_dim

        def norm(name):
            return keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name=name)

        def conv(filters, size, name):
            return keras.layers.Conv2D(filters, size, padding="same", dtype=policy, name=name)

        def up(filters, name):
            return keras.layers.Conv2DTranspose(filters, 2, strides=2, dtype=policy, name=name)

        self.feature_norms = [norm(f"feature_norm_{i}") for i in range(4)]
        self.up4_first = up(dim // 2, "up4_first")
        self.up4_norm = norm("up4_norm")
        self.up4_second = up(dim // 4, "up4_second")
        self.up2 = up(dim // 2, "up2")
        self.down2 = keras.layers.MaxPooling2D(2, strides=2, padding="same", dtype=policy,
                                               name="down2")
        self.laterals = [conv(self.head_dim, 1, f"lateral_{i}") for i in range(4)]
        self.fpn_convs = [conv(self.head_dim, 3, f"fpn_{i}") for i in range(4)]
        self.fuse_conv = conv(self.head_dim, 3, "fuse_conv")
        self.fuse_norm = norm("fuse_norm")
        self.classifier = conv(self.num_classes, 1, "classifier")

    def level_sizes(self) -> list[tuple[int, int]]:
        """`(rows, cols)` of the 4 pyramid levels: 4x, 2x, 1x and 0.5x the
        patch grid (the last rounded up)."""
        rows, cols = self.encoder.grid_size
        return [(4 * rows, 4 * cols), (2 * rows, 2 * cols), (rows, cols),
                (-(-rows // 2), -(-cols // 2))]

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if not self.encoder.built:
            self.encoder.build()
            self.encoder.built = True
        dim = self.encoder.hidden_dim
        rows, cols = self.encoder.grid_size

        def build(layer, *shape):
            if not layer.built:  # a layer already called keeps its weights
                layer.build((None, *shape))

        if self.head == "linear":
            for layer in self.feature_norms:
                build(layer, rows, cols, dim)
            build(self.classifier, rows, cols, dim * len(self.linear_layers))
            self.built = True
            return
        for layer in self.feature_norms:
            build(layer, rows, cols, dim)
        build(self.up4_first, rows, cols, dim)
        build(self.up4_norm, 2 * rows, 2 * cols, dim // 2)
        build(self.up4_second, 2 * rows, 2 * cols, dim // 2)
        build(self.up2, rows, cols, dim)
        sizes = self.level_sizes()
        for size, channels, lateral, out in zip(
            sizes, (dim // 4, dim // 2, dim, dim), self.laterals, self.fpn_convs
        ):
            build(lateral, *size, channels)
            build(out, *size, self.head_dim)
        build(self.fuse_conv, *sizes[0], self.head_dim)
        build(self.fuse_norm, *sizes[0], self.head_dim)
        build(self.classifier, *sizes[0], self.head_dim)
        self.built = True

    @staticmethod
    def _resize(x, size):
        if tuple(x.shape[1:3]) == tuple(size):
            return x
        return ops.image.resize(x, size, interpolation="bilinear")

    def _block_features(self, images, layers, training):
        """The blocks' patch-token maps, each through its own norm; when the
        last index is the last block, that map first gets the encoder's final
        norm (it is then the encoder's output). A frozen encoder runs in
        inference mode (no drop path)."""
        training = training and self.encoder.trainable
        features = self.encoder.block_features(images, layers, training=training)
        if layers[-1] == self.encoder.num_layers - 1:
            features[-1] = self.encoder.norm(features[-1])
        return [norm(f) for norm, f in zip(self.feature_norms, features)]

    def pyramid(self, images: Tensor, training: bool | None = None) -> list[Tensor]:
        """The 4 pyramid levels, finest first (see `level_sizes`)."""
        if self.head != "fpn":
            raise ValueError(f"pyramid() belongs to the fpn head; this segmenter's is "
                             f"{self.head!r}.")
        features = self._block_features(images, self.feature_layers, training)
        finest = self.up4_second(ops.gelu(self.up4_norm(self.up4_first(features[0]))))
        return [finest, self.up2(features[1]), features[2], self.down2(features[3])]

    def _linear_logits(self, images, training):
        """Per-pixel logits of the linear head: `[B, g, g, p*p*C]` laid out
        on the pixels, `[B, g*p, g*p, C]`."""
        features = ops.concatenate(self._block_features(images, self.linear_layers, training),
                                   axis=-1)
        rows, cols = self.encoder.grid_size
        p, c = self.encoder.patch_size, self.num_classes
        x = ops.reshape(self.classifier(features), (-1, rows, cols, p, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.cast(ops.reshape(x, (-1, rows * p, cols * p, c)), "float32")

    def call(self, images: Tensor, training: bool | None = None) -> Tensor:
        if self.head == "linear":
            return self._linear_logits(images, training)
        levels = [lateral(x) for lateral, x in zip(self.laterals, self.pyramid(images, training))]
        for i in (2, 1, 0):
            levels[i] = levels[i] + self._resize(levels[i + 1], levels[i].shape[1:3])
        finest = levels[0].shape[1:3]
        fused = None
        for conv, x in zip(self.fpn_convs, levels):
            x = self._resize(conv(x), finest)
            fused = x if fused is None else fused + x
        x = ops.gelu(self.fuse_norm(self.fuse_conv(fused)))
        logits = self._resize(self.classifier(x), self.encoder.image_size)
        return ops.cast(logits, "float32")

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (input_shape[0], *self.encoder.image_size, self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes,
                "feature_layers": list(self.feature_layers),
                "head_dim": self.head_dim,
                "head": self.head,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ViTSegmenter:
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

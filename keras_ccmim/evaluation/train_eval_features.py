"""The features and labels of a training and an evaluation split, from an
encoder or its SavedModel: the input of the k-NN and linear-probe protocols."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from keras_ccmim.data import describe_dataset, make_dataset
from keras_ccmim.evaluation.features import (
    Feature,
    extract_features,
    extract_saved_model_features,
    whole_batch_size,
)
from keras_ccmim.evaluation.saved_model_input import saved_model_image_size
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import PathLike

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_ccmim.data.dataset_info import DatasetInfo


def evaluation_batches(
    dataset: str,
    *,
    split: str,
    batch_size: int,
    image_size: int,
    data_dir: PathLike | None = None,
    num_images: int | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """`(batches, info)`: `split` of `dataset` unaugmented, in batches of
    `whole_batch_size` (every image once), and its `describe_dataset`."""
    info = describe_dataset(dataset, split=split, data_dir=data_dir, num_images=num_images,
                            image_size=image_size)
    batches = make_dataset(
        dataset, split=split, batch_size=whole_batch_size(info.num_images, batch_size),
        image_size=image_size, data_dir=data_dir, training=False, num_images=num_images)
    return batches, info


def train_and_eval_features(
    dataset: str,
    *,
    encoder: ViTEncoder | None = None,
    saved_model: Any = None,
    feature: Feature = "mean_patch",
    train_split: str = "train",
    eval_split: str = "test",
    train_num_images: int | None = None,
    eval_num_images: int | None = None,
    data_dir: PathLike | None = None,
    batch_size: int = 256,
) -> types.SimpleNamespace:
    """Features and labels of `train_split` and `eval_split` of `dataset`.

    Args:
        dataset, data_dir: as in `keras_ccmim.data.make_dataset`.
        encoder: a `ViTEncoder`, or
        saved_model: an encoder SavedModel (`load_saved_model`); exactly one.
        feature: one of `FEATURE_NAMES`.
        train_split, eval_split: split strings (TFDS slicing allowed).
        train_num_images, eval_num_images: `num_images` of each split.
        batch_size: the batch size (see `whole_batch_size`).

    Returns:
        A namespace with `train_x`, `train_y`, `eval_x`, `eval_y` (numpy),
        `image_size` and `num_classes` (from the dataset description, None
        when unknown).
    """
    if (encoder is None) == (saved_model is None):
        raise ValueError("Pass exactly one of encoder= and saved_model=.")
    if saved_model is not None:
        image_size = saved_model_image_size(saved_model)

        def extract(batches):
            return extract_saved_model_features(saved_model, batches, feature)

    else:
        image_size = encoder.image_size[0]

        def extract(batches):
            return extract_features(encoder, batches, feature)

    arrays = []
    for split, num_images in ((train_split, train_num_images), (eval_split, eval_num_images)):
        batches, info = evaluation_batches(dataset, split=split, batch_size=batch_size,
                                           image_size=image_size, data_dir=data_dir,
                                           num_images=num_images)
        arrays.extend(extract(batches))
    train_x, train_y, eval_x, eval_y = arrays
    return types.SimpleNamespace(
        train_x=train_x,
        train_y=train_y,
        eval_x=eval_x,
        eval_y=eval_y,
        image_size=image_size,
        num_classes=info.num_classes,
    )

"""Dataset names and the sources behind them: `describe_dataset`,
`load_source` and the image-folder manifests of `"folder:..."` datasets.

Dataset names:
- `"synthetic_objects"`: built-in shapes with foreground masks; splits
  `"train"` and `"test"` are different fixed sets (see
  `load_synthetic_objects`).
- `"folder:/path/to/images"`: an image folder; one split, `"train"`,
  sliced for held-out sets (see `load_image_folder`).
- anything else: a TFDS dataset prepared under `data_dir` (`"cifar10_jpeg"`,
  `"imagenet2012"`).

Splits accept TFDS slicing everywhere: `"train[:90%]"`, `"train[45000:]"`.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.folder_manifest import (
    read_image_folder_manifest,
    write_image_folder_manifest,
)
from keras_ccmim.data.image_folder import describe_image_folder, load_image_folder
from keras_ccmim.data.image_header import DEFAULT_MAX_PIXELS, check_max_pixels
from keras_ccmim.data.synthetic_objects import (
    describe_synthetic_objects,
    load_synthetic_objects,
)
from keras_ccmim.data.tfds_source import describe_tfds, load_tfds
from keras_ccmim.type_aliases import PathLike

if TYPE_CHECKING:
    import tensorflow as tf

SYNTHETIC_OBJECTS = "synthetic_objects"
FOLDER_PREFIX = "folder:"


def check_positive_int(argument: str, value: Any) -> None:
    """Raises a ValueError naming `argument` unless `value` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"{argument} must be a positive integer, got {value!r}. Pass e.g. "
            f"{argument}=32."
        )


def folder_path(name: str) -> str:
    """The path of a `"folder:<path>"` dataset name."""
    path = name[len(FOLDER_PREFIX) :]
    if not path:
        raise ValueError(
            "Dataset name 'folder:' has no path. Write 'folder:/path/to/images'."
        )
    return path


def check_name(name: Any) -> None:
    """Raises a ValueError unless `name` is a non-empty string."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Dataset name must be a non-empty string, got {name!r}. Use "
            "'synthetic_objects', 'folder:/path/to/images' or a TFDS name."
        )


def is_folder(name: Any) -> bool:
    """Whether `name` names an image folder (`"folder:<path>"`)."""
    return isinstance(name, str) and name.startswith(FOLDER_PREFIX)


def write_dataset_manifest(
    name: str, path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> str | None:
    """Writes the manifest of a `"folder:..."` dataset's image folder (its
    readable files with labels, the count and names of the skipped ones)
    as JSON to `path`, from this process's scan of the folder with cap
    `max_pixels` (the run's, as given to `make_dataset`).

    Returns:
        `path`, or None for datasets that are not image folders (nothing to
        scan) and for a `path` inside the image folder (never written to).
    """
    if not is_folder(name):
        return None
    return write_image_folder_manifest(folder_path(name), path, max_pixels)


def read_dataset_manifest(name: str, path: PathLike) -> bool:
    """Lets this process reuse the manifest `write_dataset_manifest` wrote
    to `path` for a `"folder:..."` dataset, while the folder is unchanged.

    Returns:
        bool, whether it was taken (False for other datasets, and for a
        missing, damaged or outdated manifest: the folder is scanned).
    """
    if not is_folder(name) or not name[len(FOLDER_PREFIX) :]:
        return False
    return read_image_folder_manifest(path)


def describe_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: PathLike | None = None,
    num_images: int | None = None,
    image_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DatasetInfo:
    """Describes a split of a dataset without building a pipeline.

    Args:
        name: str, see the module docstring.
        split: str, split with optional slicing.
        data_dir: str, folder of prepared TFDS datasets (TFDS names only).
        num_images: optional int, as in `make_dataset`.
        image_size: optional int, recorded as the image shape of
            `synthetic_objects` (generated at that size).
        max_pixels: int > 0, as in `make_dataset` (image folders skip
            files over it; pass the same value to both).

    Returns:
        A `DatasetInfo` with the image count (`num_images`), `num_classes`
        and `class_names` (`None` when unlabelled) and `has_foreground`.
        Image folders are fully scanned (each file decoded once per
        process; see `scan_image_folder`).
    """
    check_name(name)
    max_pixels = check_max_pixels(max_pixels)
    if name == SYNTHETIC_OBJECTS:
        return describe_synthetic_objects(split, num_images, image_size)
    if name.startswith(FOLDER_PREFIX):
        return describe_image_folder(
            folder_path(name), split=split, num_images=num_images, name=name,
            max_pixels=max_pixels,
        )
    return describe_tfds(name, split=split, data_dir=data_dir, num_images=num_images)


def load_source(
    name: str,
    *,
    split: str = "train",
    data_dir: PathLike | None = None,
    image_size: int = 32,
    num_images: int | None = None,
    shuffle_files: bool = False,
    seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Reads a split of a dataset, unbatched and untransformed.

    Args:
        name: str, see the module docstring.
        split: str, split with optional slicing.
        data_dir: str, folder of prepared TFDS datasets (TFDS names only).
        image_size: int, size `synthetic_objects` images are drawn at.
        num_images: optional int; for `synthetic_objects`, the images
            generated for the split before slicing; otherwise a cap on the
            images kept after slicing.
        shuffle_files: bool, read TFDS files / folder images in a seeded
            random order.
        seed: int, seed of that order.
        max_pixels: int > 0, image folders skip files whose header shows
            more pixels (see `scan_image_folder`).

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts with `"image"`
        (uint8 `[H, W, 3]` or tf.string encoded bytes), `"label"` (int32
        scalar, -1 when unlabelled) and, for `synthetic_objects`,
        `"foreground"` (uint8 `[H, W]`); and its `DatasetInfo`.
    """
    check_name(name)
    if num_images is not None:
        check_positive_int("num_images", num_images)
    if name == SYNTHETIC_OBJECTS:
        return load_synthetic_objects(
            split=split, image_size=image_size, num_images=num_images
        )
    if name.startswith(FOLDER_PREFIX):
        return load_image_folder(
            folder_path(name),
            split=split,
            num_images=num_images,
            shuffle_files=shuffle_files,
            seed=seed,
            name=name,
            max_pixels=max_pixels,
        )
    return load_tfds(
        name,
        split=split,
        data_dir=data_dir,
        shuffle_files=shuffle_files,
        seed=seed,
        num_images=num_images,
    )

"""Sources of segmentation examples: images with per-pixel class labels.

Each source gives a `tf.data.Dataset` of `{"image": uint8 [H, W, 3],
"mask": uint8 [H, W]}` and a `SegmentationInfo`. Mask values are class ids
in `[0, num_classes)` or `IGNORE_LABEL` (255: not scored, no loss).

* `synthetic_objects`: built in, deterministic; background 0, the shape
  class + 1 on the shape (11 classes, see
  `synthetic_objects_segmentation`).
* `synthetic_objects_foreground`: the same images, 2 classes (background 0,
  object 1): figure-ground segmentation, learnt in far fewer steps than the
  shapes' classes.
* `oxford_iiit_pet` (TFDS): the trimap's 1 (pet) is class 1, 2
  (background) class 0 and 3 (the uncertain border) is ignored, the usual
  binary pet/background protocol (2 classes).
* `scene_parse150` (TFDS; `ade20k` is an alias): ADE20K's 150 classes.
  Annotation 0 ("other") is ignored and `k` becomes class `k - 1`
  (mmsegmentation's `reduce_zero_label`).
* `folder:<root>`: `<root>/images/*.jpg|png` with `<root>/masks/<stem>.png`
  (or `<root>/<split>/images` and `<root>/<split>/masks`), single-channel
  PNGs of class ids; `num_classes` must be given. Every mask is checked
  before training (its size against its image, its labels against
  `num_classes`) and a bad one is named with the fix.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_ccmim.data.splits import parse_split, split_bounds
from keras_ccmim.type_aliases import PathLike

IGNORE_LABEL = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclasses.dataclass(frozen=True)
class SegmentationInfo:
    """What a segmentation source holds: `num_images` of the split and the
    classes (`class_names` may be None for a folder)."""

    name: str
    split: str
    num_images: int
    num_classes: int
    class_names: tuple[str, ...] | None = None


def oxford_pet_labels(trimap):
    """Oxford-IIIT Pet trimap values -> labels: 1 (pet) -> 1, 2 (background)
    -> 0, 3 (border) and anything else -> `IGNORE_LABEL`."""
    table = tf.constant([IGNORE_LABEL, 1, 0, IGNORE_LABEL], tf.uint8)
    return tf.gather(table, tf.clip_by_value(tf.cast(trimap, tf.int32), 0, 3))


def ade20k_labels(annotation):
    """ADE20K (SceneParse150) annotation values -> labels: 0 ("other") ->
    `IGNORE_LABEL`, `k` in 1..150 -> `k - 1`, anything above -> ignored."""
    annotation = tf.cast(annotation, tf.int32)
    valid = (annotation >= 1) & (annotation <= 150)
    return tf.cast(tf.where(valid, annotation - 1, IGNORE_LABEL), tf.uint8)


# TFDS datasets with per-pixel labels: their mask feature and its mapping.
TFDS_SEGMENTATION = {
    "oxford_iiit_pet": dict(
        mask_key="segmentation_mask", num_classes=2, class_names=("background", "pet"),
        to_labels=oxford_pet_labels,
    ),
    "scene_parse150": dict(
        mask_key="annotation", num_classes=150, class_names=None, to_labels=ade20k_labels,
    ),
}
TFDS_ALIASES = {"ade20k": "scene_parse150"}


def tfds_segmentation_spec(name):
    """`(tfds name, spec)` of a supported TFDS segmentation dataset (the
    name may carry a config or version: `oxford_iiit_pet:4.0.0`)."""
    base = name.split(":")[0]
    tfds_name = TFDS_ALIASES.get(base, base) + name[len(base):]
    base = TFDS_ALIASES.get(base, base)
    if base not in TFDS_SEGMENTATION:
        raise ValueError(
            f"Dataset {name!r} has no supported per-pixel labels. Segmentation reads "
            f"'synthetic_objects', 'folder:<root>' (images/ + masks/) or the TFDS datasets "
            f"{sorted(TFDS_SEGMENTATION) + sorted(TFDS_ALIASES)}."
        )
    return tfds_name, TFDS_SEGMENTATION[base]


def decode_tfds_example(example, spec, image_key="image"):
    """One TFDS record (image and mask kept encoded) -> `{"image", "mask"}`
    with the dataset's label mapping applied."""
    image = tf.io.decode_image(example[image_key], channels=3, expand_animations=False)
    mask = tf.io.decode_png(example[spec["mask_key"]], channels=0)[..., 0]
    image = tf.ensure_shape(image, [None, None, 3])
    return {"image": image, "mask": spec["to_labels"](mask)}


def load_tfds_segmentation(name, *, split, data_dir, num_images=None, shuffle_files=False,
                           seed=0):
    """A prepared TFDS segmentation dataset (nothing is downloaded)."""
    import tensorflow_datasets as tfds

    from keras_ccmim.data.tfds_source import tfds_builder

    tfds_name, spec = tfds_segmentation_spec(name)
    builder = tfds_builder(tfds_name, data_dir)
    splits = builder.info.splits
    if parse_split(split)[0] not in splits:
        raise ValueError(
            f"Split {split!r} not found in TFDS dataset {tfds_name!r}; its splits are "
            f"{sorted(splits.keys())}."
        )
    count = splits[split].num_examples
    if num_images is not None:
        count = min(count, int(num_images))
    skip = tfds.decode.SkipDecoding()
    dataset = builder.as_dataset(
        split=split, shuffle_files=shuffle_files,
        decoders={"image": skip, spec["mask_key"]: skip},
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    dataset = dataset.map(lambda e: decode_tfds_example(e, spec),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if num_images is not None:
        dataset = dataset.take(count)
    return dataset, SegmentationInfo(name, split, count, spec["num_classes"],
                                     spec["class_names"])


def _folder_dirs(root, split):
    base = parse_split(split)[0]
    for folder in (os.path.join(root, base), root):
        images, masks = os.path.join(folder, "images"), os.path.join(folder, "masks")
        if os.path.isdir(images):
            if not os.path.isdir(masks):
                raise ValueError(
                    f"Segmentation folder {folder!r} has images/ but no masks/. Put one PNG "
                    "of class ids per image in masks/, named as the image (a.jpg -> "
                    "masks/a.png)."
                )
            return images, masks
    raise ValueError(
        f"Segmentation folder {root!r} has no images/ (nor {base}/images/). Lay it out as "
        "<root>/images/<name>.jpg with <root>/masks/<name>.png (or <root>/<split>/images "
        "and <root>/<split>/masks)."
    )


def check_mask(mask_path, image_size, num_classes):
    """Reads one mask PNG and checks it against its image's `(width,
    height)` and `num_classes`; returns it as uint8 `[H, W]`.

    Raises:
        ValueError: naming the file, the problem and the fix.
    """
    from PIL import Image

    with Image.open(mask_path) as mask:
        if mask.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"Mask {mask_path!r} is a {mask.mode} image, not class ids: save each mask "
                "as a single-channel PNG (mode L or P) whose pixel values are the classes."
            )
        if mask.size != tuple(image_size):
            raise ValueError(
                f"Mask {mask_path!r} is {mask.size[0]}x{mask.size[1]} but its image is "
                f"{image_size[0]}x{image_size[1]} (width x height): masks must have their "
                "image's size; resize it with nearest-neighbour interpolation."
            )
        values = np.asarray(mask).astype(np.int64)
    bad = values[(values != IGNORE_LABEL) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        raise ValueError(
            f"Mask {mask_path!r} holds label {int(bad.max())}, outside [0, {num_classes}) "
            f"(num_classes={num_classes}; {IGNORE_LABEL} means ignore). Pass the right "
            "num_classes (--num_classes), or fix the mask."
        )
    return values.astype(np.uint8)


def segmentation_folder_pairs(root, split, num_classes, num_images=None):
    """`(image paths, masks)` of a split of a segmentation folder: the
    sorted images, sliced by `split`, each with its checked mask."""
    from PIL import Image

    if num_classes is None or int(num_classes) < 2:
        raise ValueError(
            f"A segmentation folder needs num_classes >= 2 (background included), got "
            f"{num_classes!r}; pass --num_classes."
        )
    images_dir, masks_dir = _folder_dirs(root, split)
    names = sorted(n for n in os.listdir(images_dir)
                   if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"Segmentation folder {images_dir!r} holds no JPEG or PNG image.")
    _, start, stop = split_bounds(split, len(names))
    names = names[start:stop][:num_images]
    paths, masks = [], []
    for name in names:
        mask_path = os.path.join(masks_dir, os.path.splitext(name)[0] + ".png")
        if not os.path.isfile(mask_path):
            raise ValueError(
                f"Image {os.path.join(images_dir, name)!r} has no mask: expected "
                f"{mask_path!r}. Add it, or remove the image."
            )
        path = os.path.join(images_dir, name)
        with Image.open(path) as image:
            size = image.size
        masks.append(check_mask(mask_path, size, int(num_classes)))
        paths.append(path)
    return paths, masks


def load_segmentation_folder(root, *, split="train", num_classes=None, num_images=None):
    """A segmentation folder (see the module docstring) as a dataset."""
    from PIL import Image

    paths, masks = segmentation_folder_pairs(root, split, num_classes, num_images)

    def examples():
        for path, mask in zip(paths, masks):
            with Image.open(path) as image:
                yield {"image": np.asarray(image.convert("RGB")), "mask": mask}

    dataset = tf.data.Dataset.from_generator(examples, output_signature={
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "mask": tf.TensorSpec([None, None], tf.uint8),
    })
    return dataset, SegmentationInfo(f"folder:{root}", split, len(paths), int(num_classes))


def load_synthetic_segmentation(*, split="train", image_size=32, num_images=None,
                                foreground_only=False):
    """`synthetic_objects` with its per-pixel labels; `foreground_only`
    (`synthetic_objects_foreground`) keeps two classes, background and
    object (figure-ground segmentation, as the Pets protocol)."""
    from keras_ccmim.data.synthetic_objects import (
        SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES,
        synthetic_objects_arrays,
        synthetic_objects_segmentation,
    )

    data, info = synthetic_objects_arrays(split=split, image_size=image_size,
                                          num_images=num_images)
    masks = synthetic_objects_segmentation(data["label"], data["foreground"])
    classes, name = SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES, "synthetic_objects"
    if foreground_only:
        masks = np.minimum(masks, 1)
        classes, name = ("background", "object"), "synthetic_objects_foreground"
    dataset = tf.data.Dataset.from_tensor_slices({"image": data["image"], "mask": masks})
    return dataset, SegmentationInfo(name, split, info.num_images, len(classes), classes)


def load_segmentation_source(
    name: str,
    *,
    split: str = "train",
    data_dir: PathLike | None = None,
    image_size: int = 32,
    num_images: int | None = None,
    num_classes: int | None = None,
    shuffle_files: bool = False,
    seed: int = 0,
) -> tuple[tf.data.Dataset, SegmentationInfo]:
    """`(dataset, info)` of any source above (`image_size` is the size
    `synthetic_objects` is drawn at; other sources keep their own)."""
    if name in ("synthetic_objects", "synthetic_objects_foreground"):
        return load_synthetic_segmentation(split=split, image_size=image_size,
                                           num_images=num_images,
                                           foreground_only=name != "synthetic_objects")
    if name.startswith("folder:"):
        return load_segmentation_folder(name[len("folder:"):], split=split,
                                        num_classes=num_classes, num_images=num_images)
    return load_tfds_segmentation(name, split=split, data_dir=data_dir, num_images=num_images,
                                  shuffle_files=shuffle_files, seed=seed)

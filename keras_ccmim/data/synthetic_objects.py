"""`synthetic_objects`: procedurally drawn shapes on textured backgrounds.

Each image holds one filled shape; its class is the shape. Position, size
and colour are random, and the background is a two-colour checkerboard,
stripe or blocky-noise texture. Every background colour differs from the
shape's colour by at least 64 levels in each channel, so the shape is always
visible, and the foreground mask (1 on the shape) is exact. The shape covers
10-35% of the image whatever its class, so area does not give the class away
and "foreground lift" of a masking strategy is measurable.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.splits import parse_split, split_bounds
from keras_ccmim.type_aliases import Tensor

SYNTHETIC_OBJECTS_CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "plus",
    "ring",
    "diamond",
    "horizontal_bar",
    "vertical_bar",
    "x_cross",
    "star",
)

# The data of each split is fixed: it is generated from the split's seed.
SYNTHETIC_OBJECTS_SPLIT_SEEDS = {"train": 0, "test": 1}
# Images generated for a split when `num_images` is not given.
SYNTHETIC_OBJECTS_DEFAULT_SIZES = {"train": 10_000, "test": 2_000}

# Fraction of the image area covered by the shape, drawn uniformly per image.
_AREA_FRACTION_RANGE = (0.10, 0.35)
# Smallest per-channel distance between shape and background colours.
_MIN_COLOUR_DISTANCE = 64
# Per-pixel noise added to the whole image, in grey levels.
_PIXEL_JITTER = 8
# Pixels generated per chunk, to bound memory for large images.
_CHUNK_PIXELS = 1 << 22


def _shape_mask(class_index, u, v):
    """Rasterises one shape class in unit coordinates.

    The shape fits in `|u| <= 1, |v| <= 1`, with `v` pointing down.

    Args:
        class_index: int, index into `SYNTHETIC_OBJECTS_CLASS_NAMES`.
        u: float array, horizontal offset from the shape centre over its
            radius.
        v: float array of the same shape, vertical offset.

    Returns:
        A bool array of the same shape, True inside the shape.
    """
    name = SYNTHETIC_OBJECTS_CLASS_NAMES[class_index]
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(au, av) <= 0.8
    if name == "triangle":
        # Apex at the top (v = -1), base at v = 0.8 spanning u in [-1, 1].
        return (v <= 0.8) & (au <= (v + 1.0) / 1.8)
    if name == "plus":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if name == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.55**2)
    if name == "diamond":
        return au + av <= 1.0
    if name == "horizontal_bar":
        return (au <= 1.0) & (av <= 0.35)
    if name == "vertical_bar":
        return (au <= 0.35) & (av <= 1.0)
    if name == "x_cross":
        a = np.abs(u + v) / np.sqrt(2.0)
        b = np.abs(u - v) / np.sqrt(2.0)
        return ((a <= 0.25) & (b <= 1.0)) | ((b <= 0.25) & (a <= 1.0))
    if name == "star":
        # Five points, one pointing up; the radius swings between 0.38 and 1.
        theta = np.arctan2(v, u) + np.pi / 2.0
        radius = 0.38 + 0.62 * ((1.0 + np.cos(5.0 * theta)) / 2.0) ** 2
        return u * u + v * v <= radius * radius
    raise ValueError(f"Unknown shape class {class_index}.")


@functools.cache
def _unit_areas():
    """Area of each shape at radius 1, measured on a fine grid."""
    grid = (np.arange(512, dtype=np.float64) + 0.5) / 256.0 - 1.0
    u, v = np.meshgrid(grid, grid)
    return np.array(
        [
            _shape_mask(index, u, v).mean() * 4.0
            for index in range(len(SYNTHETIC_OBJECTS_CLASS_NAMES))
        ]
    )


def _draw_parameters(rng, num_images, image_size):
    """Draws every per-image random choice up front."""
    num_classes = len(SYNTHETIC_OBJECTS_CLASS_NAMES)
    size = float(image_size)
    labels = rng.permutation(np.arange(num_images) % num_classes)
    area = rng.uniform(*_AREA_FRACTION_RANGE, size=num_images)
    radius = size * np.sqrt(area / _unit_areas()[labels])
    radius = np.minimum(radius, size / 2.0)
    centre = radius[:, None] + rng.uniform(size=(num_images, 2)) * (
        size - 2.0 * radius[:, None]
    )
    foreground_colour = rng.integers(0, 256, size=(num_images, 3), dtype=np.int16)
    offsets = rng.integers(
        _MIN_COLOUR_DISTANCE,
        256 - _MIN_COLOUR_DISTANCE + 1,
        size=(2, num_images, 3),
        dtype=np.int16,
    )
    background_colours = (foreground_colour[None] + offsets) % 256
    scale = max(size / 32.0, 1.0)
    return {
        "label": labels.astype(np.int32),
        "radius": radius,
        "centre": centre,
        "foreground_colour": foreground_colour,
        "background_colours": background_colours,
        "texture": rng.integers(0, 3, size=num_images),
        "cell": np.round(rng.uniform(2.0, 6.0, size=num_images) * scale),
        "noise_cell": np.round(rng.uniform(1.0, 4.0, size=num_images) * scale),
        "period": rng.uniform(3.0, 10.0, size=num_images) * scale,
        "angle": rng.uniform(0.0, np.pi, size=num_images),
        "phase": rng.uniform(size=(num_images, 2)),
    }


def _texture(params, rng, image_size):
    """Binary texture in {0, 1}: 0 picks the first background colour.

    Returns:
        bool array `[n, image_size, image_size]`.
    """
    n = params["label"].shape[0]
    params = {
        key: value.astype(np.float32) if value.dtype == np.float64 else value
        for key, value in params.items()
    }
    pixels = np.arange(image_size, dtype=np.float32)
    yy = pixels[None, :, None]
    xx = pixels[None, None, :]

    cell = params["cell"][:, None, None]
    offset = params["phase"] * params["cell"][:, None]
    checker = (
        np.floor((xx + offset[:, 0, None, None]) / cell)
        + np.floor((yy + offset[:, 1, None, None]) / cell)
    ) % 2 == 1

    angle = params["angle"][:, None, None]
    position = (xx * np.cos(angle) + yy * np.sin(angle)) / params["period"][
        :, None, None
    ]
    stripes = (position + params["phase"][:, 0, None, None]) % 1.0 < 0.5

    bits = rng.integers(0, 2, size=(n, image_size, image_size), dtype=np.uint8) == 1
    noise_cell = params["noise_cell"][:, None, None].astype(np.int64)
    index = np.arange(image_size)
    rows = (index[None, :, None] // noise_cell) * noise_cell
    cols = (index[None, None, :] // noise_cell) * noise_cell
    noise = bits[np.arange(n)[:, None, None], rows, cols]

    texture = params["texture"][:, None, None]
    return np.where(texture == 0, checker, np.where(texture == 1, stripes, noise))


def _foreground(params, image_size):
    """Shape masks, bool `[n, image_size, image_size]`."""
    pixels = np.arange(image_size, dtype=np.float32) + 0.5
    radius = params["radius"][:, None, None].astype(np.float32)
    centre = params["centre"].astype(np.float32)
    u = (pixels[None, None, :] - centre[:, 0, None, None]) / radius
    v = (pixels[None, :, None] - centre[:, 1, None, None]) / radius
    u, v = np.broadcast_arrays(u, v)
    mask = np.zeros(u.shape, dtype=bool)
    for class_index in range(len(SYNTHETIC_OBJECTS_CLASS_NAMES)):
        rows = np.flatnonzero(params["label"] == class_index)
        if rows.size:
            mask[rows] = _shape_mask(class_index, u[rows], v[rows])
    return mask


def _render(params, rng, image_size):
    """Draws the images and masks for one chunk of parameters."""
    texture = _texture(params, rng, image_size)
    foreground = _foreground(params, image_size)
    first, second = params["background_colours"]
    background = np.where(
        texture[..., None], second[:, None, None, :], first[:, None, None, :]
    )
    image = np.where(
        foreground[..., None],
        params["foreground_colour"][:, None, None, :],
        background,
    )
    jitter = rng.integers(
        -_PIXEL_JITTER, _PIXEL_JITTER + 1, size=image.shape, dtype=np.int16
    )
    image += jitter
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), foreground.astype(np.uint8)


def make_synthetic_objects(
    num_images: int, image_size: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
    """Generates the `synthetic_objects` images, labels and foreground masks.

    Deterministic for a given `(num_images, image_size, seed)`. Classes are
    balanced (each appears `num_images // 10` or one more times) and listed in
    `SYNTHETIC_OBJECTS_CLASS_NAMES`.

    Args:
        num_images: int, number of images to generate.
        image_size: int, height and width of the square images.
        seed: int, seed of the generator.

    Returns:
        A dict of numpy arrays:
        - `"image"`: uint8 `[num_images, image_size, image_size, 3]`.
        - `"label"`: int32 `[num_images]`, the shape class in `[0, 10)`.
        - `"foreground"`: uint8 `[num_images, image_size, image_size]`, 1 on
            the shape's pixels and 0 elsewhere.
    """
    if int(num_images) != num_images or num_images < 0:
        raise ValueError(
            f"num_images must be a non-negative integer, got {num_images!r}."
        )
    if int(image_size) != image_size or image_size < 4:
        raise ValueError(
            f"image_size must be an integer >= 4, got {image_size!r}."
        )
    num_images, image_size = int(num_images), int(image_size)
    params = _draw_parameters(np.random.default_rng(seed), num_images, image_size)
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    foreground = np.empty((num_images, image_size, image_size), dtype=np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for chunk_index, start in enumerate(range(0, num_images, chunk)):
        stop = min(start + chunk, num_images)
        chunk_params = {key: value[start:stop] for key, value in params.items()}
        chunk_params["background_colours"] = params["background_colours"][
            :, start:stop
        ]
        rng = np.random.default_rng([seed, chunk_index])
        images[start:stop], foreground[start:stop] = _render(
            chunk_params, rng, image_size
        )
    return {"image": images, "label": params["label"], "foreground": foreground}


def _split_size(split, num_images):
    base = parse_split(split)[0]
    if base not in SYNTHETIC_OBJECTS_SPLIT_SEEDS:
        raise ValueError(
            f"Invalid split {split!r} for synthetic_objects: its splits are "
            f"{sorted(SYNTHETIC_OBJECTS_SPLIT_SEEDS)} (optionally sliced, e.g. "
            "'train[:90%]')."
        )
    if num_images is None:
        num_images = SYNTHETIC_OBJECTS_DEFAULT_SIZES[base]
    _, start, stop = split_bounds(split, num_images)
    return base, num_images, start, stop


def describe_synthetic_objects(
    split: str = "train", num_images: int | None = None, image_size: int | None = None
) -> DatasetInfo:
    """A `DatasetInfo` for a split of `synthetic_objects` (draws nothing)."""
    _, _, start, stop = _split_size(split, num_images)
    return DatasetInfo(
        name="synthetic_objects",
        split=split,
        num_images=stop - start,
        num_classes=len(SYNTHETIC_OBJECTS_CLASS_NAMES),
        class_names=SYNTHETIC_OBJECTS_CLASS_NAMES,
        has_foreground=True,
        image_shape=(image_size, image_size, 3) if image_size else None,
    )


def load_synthetic_objects(
    *, split: str = "train", image_size: int = 32, num_images: int | None = None
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Generates a split of `synthetic_objects` as a dataset.

    `"train"` and `"test"` are different sets (generated with the seeds in
    `SYNTHETIC_OBJECTS_SPLIT_SEEDS`), each of `num_images` images (default
    `SYNTHETIC_OBJECTS_DEFAULT_SIZES`), drawn at `image_size`. A slice
    (`"train[:90%]"`) then selects from that set.

    Args:
        split: str, `"train"` or `"test"`, optionally sliced.
        image_size: int, size of the generated images.
        num_images: optional int, images generated for the split before
            slicing.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts `{"image": uint8
        [image_size, image_size, 3], "label": int32 scalar, "foreground":
        uint8 [image_size, image_size]}` and its `DatasetInfo`.
    """
    import tensorflow as tf  # here alone: the numpy generator runs without TensorFlow

    data, info = synthetic_objects_arrays(
        split=split, image_size=image_size, num_images=num_images
    )
    return tf.data.Dataset.from_tensor_slices(data), info


def synthetic_objects_arrays(
    *, split: str = "train", image_size: int = 32, num_images: int | None = None
) -> tuple[dict[str, np.ndarray], DatasetInfo]:
    """The examples of `load_synthetic_objects` as numpy arrays (for reading
    them by index): `(data, info)`, `data` a dict of arrays with the
    examples along the first axis."""
    base, total, start, stop = _split_size(split, num_images)
    data = make_synthetic_objects(
        total, image_size=image_size, seed=SYNTHETIC_OBJECTS_SPLIT_SEEDS[base]
    )
    data = {key: value[start:stop] for key, value in data.items()}
    return data, describe_synthetic_objects(split, total, image_size)


# The classes of the segmentation labels: background, then the shapes.
SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES = ("background",) + SYNTHETIC_OBJECTS_CLASS_NAMES


def synthetic_objects_segmentation(labels: Tensor, foreground: Tensor) -> np.ndarray:
    """Per-pixel labels of `synthetic_objects` images (deterministic, as the
    images are): 0 on the background and `label + 1` on the shape, so the
    shape classes (0-9 as image labels) are 1-10 here and background is 0;
    `SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES` names them.

    Args:
        labels: int `[n]`, the image labels.
        foreground: 0/1 `[n, H, W]`, the exact shape masks.

    Returns:
        uint8 `[n, H, W]` in `[0, 11)`.
    """
    labels = np.asarray(labels).astype(np.int64)
    foreground = np.asarray(foreground)
    if foreground.ndim != 3 or labels.shape != foreground.shape[:1]:
        raise ValueError(
            f"labels must be [n] and foreground [n, H, W]; got {labels.shape} and "
            f"{foreground.shape}."
        )
    return (foreground.astype(np.int64) * (labels[:, None, None] + 1)).astype(np.uint8)

import numpy as np
import pytest

from keras_ccmim.data import (
    SYNTHETIC_OBJECTS_CLASS_NAMES,
    describe_dataset,
    load_synthetic_objects,
    make_synthetic_objects,
)


@pytest.fixture(scope="module")
def objects():
    return make_synthetic_objects(200, image_size=32, seed=0)


def _class(name):
    return SYNTHETIC_OBJECTS_CLASS_NAMES.index(name)


def _bounding_box(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_shapes_and_dtypes(objects):
    assert objects["image"].shape == (200, 32, 32, 3)
    assert objects["image"].dtype == np.uint8
    assert objects["label"].shape == (200,)
    assert objects["label"].dtype == np.int32
    assert objects["foreground"].shape == (200, 32, 32)
    assert objects["foreground"].dtype == np.uint8
    assert set(np.unique(objects["foreground"])) <= {0, 1}
    np.testing.assert_array_equal(np.bincount(objects["label"]), [20] * 10)


def test_deterministic_for_a_seed(objects):
    again = make_synthetic_objects(200, image_size=32, seed=0)
    for key in objects:
        np.testing.assert_array_equal(objects[key], again[key])
    other = make_synthetic_objects(200, image_size=32, seed=1)
    assert not np.array_equal(objects["image"], other["image"])
    assert not np.array_equal(objects["foreground"], other["foreground"])


def test_foreground_covers_a_minority(objects):
    fraction = objects["foreground"].mean(axis=(1, 2))
    assert fraction.min() > 0.05
    assert fraction.max() < 0.45
    # Area is drawn independently of the class.
    per_class = [fraction[objects["label"] == c].mean() for c in range(10)]
    assert max(per_class) - min(per_class) < 0.08


def test_mask_marks_the_shape_colour(objects):
    images = objects["image"].astype(np.int32)
    for image, mask in zip(images, objects["foreground"].astype(bool)):
        shape_colour = np.median(image[mask], axis=0)
        inside = np.abs(image[mask] - shape_colour).max()
        outside = np.abs(image[~mask] - shape_colour).max(axis=-1).min()
        assert inside <= 16  # two jitters
        assert outside >= 64 - 16


def test_mask_geometry_matches_label(objects):
    for mask, label in zip(objects["foreground"], objects["label"]):
        top, bottom, left, right = _bounding_box(mask)
        height, width = bottom - top, right - left
        fill = mask[top:bottom, left:right].mean()
        name = SYNTHETIC_OBJECTS_CLASS_NAMES[label]
        if name == "horizontal_bar":
            assert width > 2 * height
        elif name == "vertical_bar":
            assert height > 2 * width
        elif name == "square":
            assert fill > 0.95 and abs(height - width) <= 1
        elif name == "diamond":
            assert 0.4 < fill < 0.7
        elif name == "circle":
            assert 0.7 < fill < 0.88
        elif name == "ring":
            assert mask[(top + bottom) // 2, (left + right) // 2] == 0
        elif name == "triangle":
            rows = mask[top:bottom].sum(axis=1)
            assert rows[0] < rows[-1]


def test_load_splits_are_different_and_sliceable():
    train, train_info = load_synthetic_objects(split="train", num_images=20)
    test, _ = load_synthetic_objects(split="test", num_images=20)
    head, head_info = load_synthetic_objects(split="train[:75%]", num_images=20)
    tail, _ = load_synthetic_objects(split="train[75%:]", num_images=20)
    assert train_info.num_images == 20 and head_info.num_images == 15
    assert train_info.has_foreground and train_info.num_classes == 10
    first = lambda ds: next(iter(ds))["image"].numpy()
    assert not np.array_equal(first(train), first(test))
    np.testing.assert_array_equal(first(train), first(head))
    assert head.cardinality().numpy() + tail.cardinality().numpy() == 20
    info = describe_dataset("synthetic_objects", split="test[:10]")
    assert info.num_images == 10 and info.class_names == SYNTHETIC_OBJECTS_CLASS_NAMES


def test_bad_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="'test', 'train'"):
        load_synthetic_objects(split="validation")


def test_other_image_sizes():
    data = make_synthetic_objects(20, image_size=48, seed=3)
    assert data["image"].shape == (20, 48, 48, 3)
    assert (data["foreground"].sum(axis=(1, 2)) > 0).all()

"""Segmentation data: synthetic labels, TFDS label mappings, the mask
folder's checks, joint augmentation and resumable batches."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_ccmim.data.augment import unnormalize
from keras_ccmim.data.segmentation_pipeline import (
    joint_random_crop_flip,
    make_segmentation_dataset,
)
from keras_ccmim.data.segmentation_sources import (
    IGNORE_LABEL,
    ade20k_labels,
    decode_tfds_example,
    load_segmentation_folder,
    load_segmentation_source,
    oxford_pet_labels,
    tfds_segmentation_spec,
)
from keras_ccmim.data.synthetic_objects import (
    SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES,
    make_synthetic_objects,
    synthetic_objects_segmentation,
)


def test_synthetic_labels_are_class_plus_one_on_the_shape():
    data = make_synthetic_objects(20, image_size=16, seed=3)
    masks = synthetic_objects_segmentation(data["label"], data["foreground"])
    assert masks.dtype == np.uint8 and masks.shape == (20, 16, 16)
    for mask, label, foreground in zip(masks, data["label"], data["foreground"]):
        assert set(np.unique(mask)) <= {0, label + 1}
        np.testing.assert_array_equal(mask > 0, foreground == 1)
    again = make_synthetic_objects(20, image_size=16, seed=3)
    np.testing.assert_array_equal(
        masks, synthetic_objects_segmentation(again["label"], again["foreground"]))
    assert len(SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES) == 11
    assert SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES[0] == "background"
    binary, info = load_segmentation_source("synthetic_objects_foreground", split="train",
                                            image_size=16, num_images=20)
    assert info.num_classes == 2 and info.class_names == ("background", "object")
    first = next(iter(binary))
    training = make_synthetic_objects(20, image_size=16, seed=0)  # the train split's seed
    np.testing.assert_array_equal(first["mask"].numpy(), training["foreground"][0])


def test_tfds_label_mappings():
    trimap = tf.constant([[1, 2, 3, 0]], tf.uint8)
    np.testing.assert_array_equal(oxford_pet_labels(trimap), [[1, 0, 255, 255]])
    annotation = tf.constant([[0, 1, 150, 151]], tf.uint8)
    np.testing.assert_array_equal(ade20k_labels(annotation), [[255, 0, 149, 255]])
    assert tfds_segmentation_spec("ade20k")[0] == "scene_parse150"
    assert tfds_segmentation_spec("oxford_iiit_pet:4.0.0")[0] == "oxford_iiit_pet:4.0.0"
    with pytest.raises(ValueError, match="no supported per-pixel labels"):
        tfds_segmentation_spec("cifar10")


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["oxford_iiit_pet", "scene_parse150"])
def test_a_tfds_like_record_decodes_to_mapped_labels(name):
    _, spec = tfds_segmentation_spec(name)
    image = np.full((4, 6, 3), 100, np.uint8)
    raw = np.array([[1, 2, 3, 0, 1, 2]] * 4, np.uint8)
    mask = raw[..., None] if name == "oxford_iiit_pet" else np.repeat(raw[..., None], 3, -1)
    record = {"image": tf.constant(_png(image)), spec["mask_key"]: tf.constant(_png(
        mask[..., 0] if mask.shape[-1] == 1 else mask))}
    example = decode_tfds_example(record, spec)
    assert example["image"].shape == (4, 6, 3)
    np.testing.assert_array_equal(example["mask"], spec["to_labels"](tf.constant(raw)))


def _write_folder(root, masks, image_sizes=None, mode="L"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index, mask in enumerate(masks):
        height, width = (image_sizes or [mask.shape])[index % len(image_sizes or [1])][:2]
        Image.fromarray(np.full((height, width, 3), 40 * index, np.uint8)).save(
            root / "images" / f"im{index}.jpg")
        Image.fromarray(mask).convert(mode).save(root / "masks" / f"im{index}.png")


def test_mask_folder_loads(tmp_path):
    masks = [np.array([[0, 1], [2, 255]], np.uint8)] * 3
    _write_folder(tmp_path, masks)
    dataset, info = load_segmentation_folder(str(tmp_path), split="train[:2]", num_classes=3)
    examples = list(dataset.as_numpy_iterator())
    assert info.num_images == 2 and len(examples) == 2 and info.num_classes == 3
    np.testing.assert_array_equal(examples[0]["mask"], masks[0])
    assert examples[0]["image"].shape == (2, 2, 3)


def test_mask_of_the_wrong_size_is_named(tmp_path):
    _write_folder(tmp_path, [np.zeros((4, 4), np.uint8)], image_sizes=[(4, 5)])
    with pytest.raises(ValueError, match=r"im0\.png.* is 4x4 but its image is 5x4.*nearest"):
        load_segmentation_folder(str(tmp_path), num_classes=2)


def test_label_out_of_range_is_named(tmp_path):
    _write_folder(tmp_path, [np.array([[0, 7]], np.uint8)])
    with pytest.raises(ValueError, match=r"im0\.png.* holds label 7, outside \[0, 3\).*"
                                         r"--num_classes"):
        load_segmentation_folder(str(tmp_path), num_classes=3)


def test_rgb_mask_missing_mask_and_missing_classes(tmp_path):
    _write_folder(tmp_path / "rgb", [np.zeros((2, 2), np.uint8)], mode="RGB")
    with pytest.raises(ValueError, match=r"im0\.png.* is a RGB image.*single-channel"):
        load_segmentation_folder(str(tmp_path / "rgb"), num_classes=2)
    _write_folder(tmp_path / "gone", [np.zeros((2, 2), np.uint8)])
    (tmp_path / "gone" / "masks" / "im0.png").unlink()
    with pytest.raises(ValueError, match=r"im0\.jpg.* has no mask.*im0\.png"):
        load_segmentation_folder(str(tmp_path / "gone"), num_classes=2)
    with pytest.raises(ValueError, match="--num_classes"):
        load_segmentation_folder(str(tmp_path / "gone"), num_classes=None)


def test_joint_crop_and_flip_keep_image_and_mask_aligned():
    # 12 seeds: a flip of the image alone, or of the mask alone, would show.
    # Four quadrants, each of one colour and one label (the last one ignored).
    labels = np.zeros((32, 32), np.uint8)
    labels[:16, 16:], labels[16:, :16], labels[16:, 16:] = 1, 2, IGNORE_LABEL
    colours = {0: (250, 0, 0), 1: (0, 250, 0), 2: (0, 0, 250), IGNORE_LABEL: (250, 250, 250)}
    image = np.zeros((32, 32, 3), np.uint8)
    for label, colour in colours.items():
        image[labels == label] = colour
    for seed in range(12):
        out_image, out_mask = joint_random_crop_flip(tf.constant(image), tf.constant(labels),
                                                     tf.constant([seed, 5]), 16)
        out_image, out_mask = unnormalize(out_image.numpy()) * 255, out_mask.numpy()
        assert out_mask.dtype == np.int32 and out_mask.shape == (16, 16)
        assert set(np.unique(out_mask)) <= set(colours)  # nearest: no blended labels
        expected = np.array([colours[v] for v in out_mask.ravel()]).reshape(16, 16, 3)
        # Away from the quadrant borders (bicubic blends there) colours match labels.
        agree = np.all(np.abs(out_image - expected) < 60, axis=-1)
        assert agree.mean() > 0.8, seed
        again = joint_random_crop_flip(tf.constant(image), tf.constant(labels),
                                       tf.constant([seed, 5]), 16)[1].numpy()
        np.testing.assert_array_equal(out_mask, again)


def test_batches_resume_at_start_batch():
    kwargs = dict(split="train", batch_size=4, image_size=16, training=True, seed=3,
                  num_images=40)
    stream, info = make_segmentation_dataset("synthetic_objects", **kwargs)
    batches = [(x.numpy(), y.numpy()) for x, y in stream.take(4)]
    assert info.num_classes == 11
    assert batches[0][0].shape == (4, 16, 16, 3) and batches[0][1].shape == (4, 16, 16)
    resumed, _ = make_segmentation_dataset("synthetic_objects", start_batch=3, **kwargs)
    x, y = next(iter(resumed))
    np.testing.assert_array_equal(y.numpy(), batches[3][1])
    np.testing.assert_allclose(x.numpy(), batches[3][0])
    evaluation, _ = make_segmentation_dataset("synthetic_objects", split="test", batch_size=8,
                                              image_size=16, training=False, num_images=12)
    sizes = [int(y.shape[0]) for _, y in evaluation]
    assert sizes == [8, 4]

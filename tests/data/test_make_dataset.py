import keras
import numpy as np
import pytest

from keras_ccmim.data import make_dataset, unnormalize


def _synthetic(**kwargs):
    args = dict(batch_size=8, image_size=16, num_images=32)
    args.update(kwargs)
    return make_dataset("synthetic_objects", **args)


def test_batches_have_static_shapes_and_foreground():
    ds = _synthetic(num_images=36)  # 36 = 4 full batches + 4 dropped
    images_spec, extras_spec = ds.element_spec
    assert images_spec.shape == (8, 16, 16, 3)
    assert extras_spec["label"].shape == (8,)
    assert extras_spec["foreground"].shape == (8, 16, 16)
    assert ds.cardinality().numpy() == 4
    for images, extras in ds.as_numpy_iterator():
        assert images.dtype == np.float32 and extras["label"].dtype == np.int32
        assert extras["foreground"].dtype == np.float32
        assert set(np.unique(extras["foreground"])) <= {0.0, 1.0}
        assert 0.0 < extras["foreground"].mean() < 0.6


def test_deterministic_for_a_seed():
    first = [x for x, _ in _synthetic(seed=3).as_numpy_iterator()]
    again = [x for x, _ in _synthetic(seed=3).as_numpy_iterator()]
    other = [x for x, _ in _synthetic(seed=4).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_evaluation_is_ordered_and_unaugmented():
    ds = _synthetic(training=False, split="test", num_images=16)
    a = list(ds.as_numpy_iterator())
    b = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(a[0][0], b[0][0])
    np.testing.assert_array_equal(a[1][1]["label"], b[1][1]["label"])
    pixels = unnormalize(a[0][0])
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_repeat_is_infinite():
    ds = _synthetic(num_images=10, batch_size=4, repeat=True)
    assert ds.cardinality().numpy() == -1  # tf.data.INFINITE_CARDINALITY
    assert len(list(ds.take(5))) == 5


def test_feeds_model_fit_on_active_backend():
    ds = _synthetic(num_images=16, batch_size=4, image_size=8)
    for images, extras in ds.take(1):
        images = keras.ops.convert_to_tensor(images.numpy())
        labels = keras.ops.convert_to_tensor(extras["label"].numpy())
        assert tuple(images.shape) == (4, 8, 8, 3)
        assert keras.backend.standardize_dtype(images.dtype) == "float32"
        assert keras.backend.standardize_dtype(labels.dtype) == "int32"
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labelled = ds.map(lambda images, extras: (images, extras["label"]))
    history = model.fit(labelled, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=0), "image_size must be a positive integer"),
        (dict(image_size=-4), "image_size must be a positive integer"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=2.5), "batch_size must be a positive integer"),
        (dict(shuffle_buffer=-1), "shuffle_buffer must be a non-negative"),
        (dict(num_images=0), "num_images must be a positive integer"),
        (dict(batch_size=64), "fewer than batch_size=64"),
        (dict(split="train[:5"), "Invalid split"),
        (dict(crop_scale=(0.5, 0.2)), "crop_scale must satisfy"),
        (dict(crop_fraction=1.5), "crop_fraction must be in"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _synthetic(**kwargs)


def test_bad_names():
    with pytest.raises(ValueError, match="non-empty string"):
        make_dataset("", batch_size=1, image_size=8)

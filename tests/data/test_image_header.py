"""The pixels read from an image's header are the pixels the decoder
allocates, for every format `tf.io.decode_image` reads; the check refuses
an image over the cap, or of an unknown size, before decoding it."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_ccmim.data.image_header import check_decoded_pixels, decoded_pixels


def _encoded(image, fmt, frames=(), **options):
    buffer = io.BytesIO()
    first = Image.fromarray(image)
    if frames:
        options.update(save_all=True, append_images=[Image.fromarray(f) for f in frames])
    first.save(buffer, fmt, **options)
    return buffer.getvalue()


def _random(height, width, channels=3, seed=0):
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


STILL = {
    "jpeg": (_random(37, 51), "JPEG", {}),
    "progressive jpeg": (_random(37, 51), "JPEG", {"progressive": True}),
    "png": (_random(37, 51), "PNG", {}),
    "grayscale png": (_random(20, 9, channels=0), "PNG", {}),
    "bmp": (_random(37, 51), "BMP", {}),
    "gif": (_random(37, 51), "GIF", {}),
    "lossy webp": (_random(37, 51), "WEBP", {}),
    "lossless webp": (_random(37, 51), "WEBP", {"lossless": True}),
    "webp with alpha (VP8X)": (_random(33, 47, channels=4), "WEBP", {}),
}

pixels_of = tf.function(decoded_pixels)


@pytest.mark.parametrize("kind", sorted(STILL))
def test_header_pixels_are_the_decoded_pixels(kind):
    image, fmt, options = STILL[kind]
    encoded = _encoded(image, fmt, **options)
    decoded = tf.io.decode_image(encoded, expand_animations=False)
    assert int(pixels_of(tf.constant(encoded))) == decoded.shape[0] * decoded.shape[1]


def test_an_animated_gif_counts_every_frame():
    frames = [_random(20, 30, seed=s) for s in range(3)]
    encoded = _encoded(frames[0], "GIF", frames=frames[1:])
    assert tf.io.decode_gif(encoded).shape == (3, 20, 30, 3)
    assert int(pixels_of(tf.constant(encoded))) == 3 * 20 * 30


def test_unknown_sizes_count_minus_one():
    animated = _encoded(_random(8, 8), "WEBP", frames=[_random(8, 8, seed=1)])
    for encoded in (animated, b"not an image", b"", b"GIF89a\x08\x00"):
        assert int(pixels_of(tf.constant(encoded))) == -1, encoded[:12]


def test_the_check_refuses_before_decoding():
    small = _encoded(_random(8, 8), "PNG")
    large = _encoded(_random(8, 9), "PNG")

    @tf.function
    def decoded_shape(encoded, max_pixels):
        checked = check_decoded_pixels(encoded, max_pixels)
        return tf.shape(tf.io.decode_image(checked, channels=3, expand_animations=False))

    assert decoded_shape(tf.constant(small), 64).numpy().tolist() == [8, 8, 3]
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=64"):
        decoded_shape(tf.constant(large), 64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG, PNG"):
        decoded_shape(tf.constant(b"GIF89a\x08\x00"), 64)

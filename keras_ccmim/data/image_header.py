"""The pixels an encoded image decodes to, read from its header before any
decoding: the cap on them keeps a small file from exhausting memory (a
decompression bomb: a 16000x16000 PNG of a few hundred kB).

`decoded_pixels` reads the size `tf.io.decode_image` would allocate:
JPEG (`tf.image.extract_jpeg_shape`), PNG (its IHDR chunk), BMP (its info
header) and still WebP (its VP8, VP8L or VP8X header) state it in a few
bytes; GIF's decoder reads every frame, so a GIF counts the areas of all its
frames (or its canvas, the largest frame width by the largest height, if
that is more), found by walking its blocks. Any other content (animated
WebP, JPEG XL, not an image) counts -1: it is treated as unreadable, as its
size cannot be checked before decoding. Formats other than JPEG are read in
Python (`struct`), JPEG in the graph.
"""

import numbers
import struct

import numpy as np
import tensorflow as tf

# Pillow's `Image.MAX_IMAGE_PIXELS`: 256 MiB of 8-bit RGB, about 89 million
# pixels (9459x9459).
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def check_max_pixels(max_pixels):
    """`max_pixels` as an int (None: `DEFAULT_MAX_PIXELS`); a ValueError
    naming the fix unless it is an int > 0."""
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, numbers.Integral)
        or max_pixels <= 0
    ):
        raise ValueError(
            f"max_pixels must be a positive integer (the most pixels, height times "
            f"width, an image may decode to), got {max_pixels!r}. Pass e.g. "
            f"max_pixels={DEFAULT_MAX_PIXELS} (the default)."
        )
    return int(max_pixels)


def _gif_pixels(data):
    """The pixels giflib decodes for GIF bytes `data`: the sum of its
    frames' areas, or its canvas if larger; -1 when the blocks cannot be
    walked (the decoder fails on those too)."""
    if len(data) < 13:
        return -1

    def skip_sub_blocks(position):
        while position < len(data):
            size = data[position]
            position += 1 + size
            if size == 0:
                return position
        return -1

    flags, position = data[10], 13
    if flags & 0x80:  # global colour table
        position += 3 * (2 << (flags & 7))
    total = widest = tallest = 0
    while 0 <= position < len(data):
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            position = skip_sub_blocks(position + 2)
        elif block == 0x2C and position + 10 <= len(data):  # image descriptor
            width, height = struct.unpack_from("<HH", data, position + 5)
            flags, position = data[position + 9], position + 10
            if flags & 0x80:  # local colour table
                position += 3 * (2 << (flags & 7))
            position = skip_sub_blocks(position + 1)  # after the LZW code size
            total += width * height
            widest, tallest = max(widest, width), max(tallest, height)
        else:
            return -1
    if position < 0 or not total:
        return -1
    return max(total, widest * tallest)


def _signed(value):
    return value - 2**32 if value >= 2**31 else value


def _other_pixels(data):
    """`decoded_pixels` of the bytes of anything but a JPEG, read in Python
    (kept out of the graph, where an untaken branch still costs every
    JPEG some time)."""
    data = bytes(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:  # IHDR first
        width, height = struct.unpack_from(">II", data, 16)
    elif data.startswith(b"GIF8"):
        return _gif_pixels(data)
    elif data.startswith(b"BM") and len(data) >= 26:
        if struct.unpack_from("<I", data, 14)[0] == 12:  # BITMAPCOREHEADER
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = (abs(_signed(v)) for v in struct.unpack_from("<II", data, 18))
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
        elif chunk == b"VP8L":
            (bits,) = struct.unpack_from("<I", data, 21)
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif chunk == b"VP8X" and not data[20] & 2:  # still (not animated)
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
        else:
            return -1
    else:
        return -1
    return width * height


def decoded_pixels(encoded):
    """The pixels (height times width, all frames of a GIF) that
    `tf.io.decode_image` allocates for `encoded`, from its header.

    Args:
        encoded: tf.string scalar, the encoded image.

    Returns:
        int64 scalar; -1 for content whose size cannot be read (see the
        module docstring). A JPEG whose header is damaged raises
        `InvalidArgumentError`, as decoding it would.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)
        return shape[0] * shape[1]

    def other():
        pixels = tf.numpy_function(
            lambda data: np.int64(_other_pixels(data)), [encoded], tf.int64, stateful=False
        )
        return tf.ensure_shape(pixels, [])

    # A JPEG in few ops (most images are JPEGs), the rest in one.
    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def check_decoded_pixels(encoded, max_pixels):
    """`encoded`, once its header shows it decodes to at most `max_pixels`
    pixels (see `decoded_pixels`); raises `InvalidArgumentError` otherwise,
    before anything is decoded.

    Args:
        encoded: tf.string scalar, the encoded image.
        max_pixels: int > 0, the cap.

    Returns:
        `encoded`, to decode next.
    """
    pixels = decoded_pixels(encoded)
    checked = tf.debugging.Assert(
        (pixels >= 0) & (pixels <= max_pixels),
        [
            f"Image refused before decoding: not a JPEG, PNG, BMP, GIF or still WebP "
            f"image (-1 pixels), or larger than max_pixels={max_pixels} pixels. Its "
            "pixels:",
            pixels,
        ],
    )
    with tf.control_dependencies([checked]):
        return tf.identity(encoded)

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
size cannot be checked before decoding.
"""

import numbers
import struct

import tensorflow as tf

# Pillow's `Image.MAX_IMAGE_PIXELS`: 256 MiB of 8-bit RGB, about 89 million
# pixels (9459x9459).
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# The header bytes the size is read from (zero-padded when the file is
# shorter).
_HEADER_BYTES = 32
_JPEG, _PNG, _GIF, _BMP, _WEBP, _OTHER = range(6)


def check_max_pixels(max_pixels):
    """`max_pixels` as an int; a ValueError naming the fix unless it is an
    int > 0."""
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


def _format(header):
    """The format index of a header (uint8 `[_HEADER_BYTES]`), by the
    signatures `tf.io.decode_image` tells formats apart by."""

    def starts_with(signature, offset=0):
        expected = tf.constant(list(signature), tf.uint8)
        return tf.reduce_all(tf.equal(header[offset : offset + len(signature)], expected))

    return tf.case(
        [
            (starts_with(b"\xff\xd8\xff"), lambda: _JPEG),
            (starts_with(b"\x89PNG\r\n\x1a\n"), lambda: _PNG),
            (starts_with(b"GIF8"), lambda: _GIF),
            (starts_with(b"BM"), lambda: _BMP),
            (starts_with(b"RIFF") & starts_with(b"WEBP", 8), lambda: _WEBP),
        ],
        default=lambda: _OTHER,
        exclusive=False,
    )


def _little_endian(header, offset, length):
    values = tf.cast(header[offset : offset + length], tf.int64)
    return tf.reduce_sum(values * tf.constant([256**i for i in range(length)], tf.int64))


def _big_endian(header, offset, length):
    return _little_endian(tf.reverse(header[offset : offset + length], [0]), 0, length)


def _bmp_pixels(header):
    def signed(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    core = tf.equal(_little_endian(header, 14, 4), 12)  # BITMAPCOREHEADER: 16-bit sizes
    width = tf.where(core, _little_endian(header, 18, 2), signed(_little_endian(header, 18, 4)))
    height = tf.where(core, _little_endian(header, 20, 2), signed(_little_endian(header, 22, 4)))
    return width * height


def _webp_pixels(header):
    chunk = header[12:16]

    def is_chunk(name):
        return tf.reduce_all(tf.equal(chunk, tf.constant(list(name), tf.uint8)))

    lossy = (_little_endian(header, 26, 2) % 2**14) * (_little_endian(header, 28, 2) % 2**14)
    bits = _little_endian(header, 21, 4)
    lossless = (bits % 2**14 + 1) * ((bits // 2**14) % 2**14 + 1)
    extended = (_little_endian(header, 24, 3) + 1) * (_little_endian(header, 27, 3) + 1)
    animated = tf.not_equal(tf.bitwise.bitwise_and(header[20], 2), 0)
    return tf.case(
        [
            (is_chunk(b"VP8 "), lambda: lossy),
            (is_chunk(b"VP8L"), lambda: lossless),
            (is_chunk(b"VP8X") & ~animated, lambda: extended),
        ],
        default=lambda: tf.constant(-1, tf.int64),
        exclusive=False,
    )


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
    start = tf.strings.substr(encoded, 0, _HEADER_BYTES)
    padded = tf.strings.join([start, tf.constant(b"\0" * _HEADER_BYTES)])
    header = tf.io.decode_raw(padded, tf.uint8)[:_HEADER_BYTES]

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)
        return shape[0] * shape[1]

    def gif():
        pixels = tf.py_function(lambda data: _gif_pixels(data.numpy()), [encoded], tf.int64)
        return tf.ensure_shape(pixels, [])

    return tf.switch_case(
        _format(header),
        [
            jpeg,
            lambda: _big_endian(header, 16, 4) * _big_endian(header, 20, 4),
            gif,
            lambda: _bmp_pixels(header),
            lambda: _webp_pixels(header),
            lambda: tf.constant(-1, tf.int64),
        ],
    )


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

"""Decoding and cropping: the training crop, the evaluation centre crop, and the one decode path.

Convention (one for the whole project): the pipeline hands the model RGB images, NHWC, with
values in [0, 255] (uint8, or float32 after batch mixing). The model normalises them itself with
:data:`MEAN_RGB` / :data:`STDDEV_RGB` (ImageNet statistics scaled to [0, 255]), so a SavedModel
takes raw pixels and nothing outside the model needs to know the statistics.

Decoding handles JPEG (baseline, progressive, grayscale and CMYK; libjpeg converts all of them to
RGB), PNG (8 or 16 bit; grayscale is replicated to RGB, an alpha channel is dropped without
compositing), BMP and GIF (first frame). JPEGs are decoded and cropped in one step
(``decode_and_crop_jpeg``), which skips the pixels outside the crop.
"""

from __future__ import annotations

import tensorflow as tf

#: Per-channel mean and standard deviation of ImageNet, on the [0, 255] scale (used inside models).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

#: Evaluation crops ``size / (size + CROP_PADDING)`` of the short side (0.875 at 224 px).
CROP_PADDING = 32


def _decode_other(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


#: The most pixels (height x width, from the file's header) an image may claim before it is
#: decoded: 8192 x 8192 (192 MiB as RGB uint8). A few-KB PNG can claim 20000 x 20000 and make the
#: decoder allocate gigabytes; such a file is refused by name instead. Set
#: ``input_pipeline.max_image_pixels`` to change it.
MAX_IMAGE_PIXELS = 8192 * 8192


def _bytes_at(encoded: tf.Tensor, pos: int, n: int) -> tf.Tensor:
    """``n`` header bytes from ``pos`` as int64 (zeros when the file is shorter)."""
    long_enough = tf.strings.length(encoded) >= pos + n
    raw = tf.cond(long_enough, lambda: tf.strings.substr(encoded, pos, n), lambda: tf.constant(b"\0" * n))
    return tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)


def header_size(encoded: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) as the header of a JPEG, PNG, GIF or BMP says; ``[0, 0]`` if unknown.

    Read from a few header bytes, without decoding any pixel.
    """
    magic = tf.cond(tf.strings.length(encoded) >= 4, lambda: tf.strings.substr(encoded, 0, 4),
                    lambda: tf.constant(b""))

    def be32(b):  # big-endian
        return b[0] * 16777216 + b[1] * 65536 + b[2] * 256 + b[3]

    def png():
        b = _bytes_at(encoded, 16, 8)
        return tf.stack([be32(b[4:8]), be32(b[0:4])])

    def gif():
        b = _bytes_at(encoded, 6, 4)
        return tf.stack([b[2] + b[3] * 256, b[0] + b[1] * 256])

    def bmp():
        b = _bytes_at(encoded, 18, 8)
        w = b[0] + b[1] * 256 + b[2] * 65536 + b[3] * 16777216
        h = b[4] + b[5] * 256 + b[6] * 65536 + b[7] * 16777216
        h = tf.where(h >= 2**31, 2**32 - h, h)  # negative height: a top-down BMP
        w = tf.where(w >= 2**31, 2**32 - w, w)
        return tf.stack([h, w])

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    def unknown():
        return tf.zeros([2], tf.int64)

    return tf.case([
        (tf.io.is_jpeg(encoded), jpeg),
        (tf.equal(magic, b"\x89PNG"), png),
        (tf.equal(magic, b"GIF8"), gif),
        (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
    ], default=unknown, exclusive=False)


def check_image_size(encoded: tf.Tensor, max_pixels: int | None = None) -> tf.Tensor:
    """An assertion (for control dependencies) that the header's height x width <= ``max_pixels``.

    ``max_pixels`` defaults to ``input_pipeline.max_image_pixels``.
    """
    if max_pixels is None:
        from effnet.data.options import pipeline_options

        max_pixels = pipeline_options().max_image_pixels
    hw = header_size(encoded)
    pixels = hw[0] * hw[1]
    message = tf.strings.format(
        "image claims {}x{} pixels, more than input_pipeline.max_image_pixels=" + str(int(max_pixels))
        + " allow (refused before decoding)", (hw[1], hw[0]))
    return tf.debugging.Assert(pixels <= int(max_pixels), [message], summarize=1)


def decode_and_crop(encoded: tf.Tensor, crop_window_fn, max_pixels: int | None = None) -> tf.Tensor:
    """Decode ``encoded`` and crop it to ``crop_window_fn(hw) -> [y, x, h, w]`` (int32).

    For JPEGs only the crop is decoded; other formats are decoded whole and sliced. An image whose
    header claims more than ``max_pixels`` (default ``input_pipeline.max_image_pixels``) fails
    before any pixel is decoded.
    """
    with tf.control_dependencies([check_image_size(encoded, max_pixels)]):
        encoded = tf.identity(encoded)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        window = crop_window_fn(shape[:2])
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = _decode_other(encoded)
        window = crop_window_fn(tf.shape(image)[:2])
        return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def center_crop_window(hw: tf.Tensor, image_size: int, crop_fraction: float | None = None) -> tf.Tensor:
    """A square centre window of ``crop_fraction`` (default ``size/(size+32)``) of the short side."""
    if crop_fraction is None:
        crop_fraction = image_size / (image_size + CROP_PADDING)
    h, w = hw[0], hw[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * float(crop_fraction), tf.int32)
    side = tf.maximum(side, 1)
    y = (h - side + 1) // 2
    x = (w - side + 1) // 2
    return tf.stack([y, x, side, side])


def resize_uint8(image: tf.Tensor, image_size: int, method: str = "bilinear") -> tf.Tensor:
    """Resize to ``image_size`` square and return uint8 (rounded, clipped)."""
    image = tf.image.resize(image, [image_size, image_size], method=method)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    image.set_shape([image_size, image_size, 3])
    return image


def decode_for_eval(encoded: tf.Tensor, image_size: int, crop_fraction: float | None = None,
                    method: str = "bilinear", whole_frame: bool = False) -> tf.Tensor:
    """Encoded image bytes -> uint8 ``[image_size, image_size, 3]``: centre crop, bilinear resize.

    Graph-compatible (usable in a SavedModel signature via ``tf.map_fn``). ``crop_fraction``
    defaults to ``image_size / (image_size + 32)`` of the short side; 1.0 keeps the whole short side.
    ``whole_frame`` keeps the whole image (no crop; a non-square image is resized to a square).
    """
    if whole_frame:
        def window(hw):
            return tf.stack([0, 0, hw[0], hw[1]])
    else:
        def window(hw):
            return center_crop_window(hw, image_size, crop_fraction)
    image = decode_and_crop(encoded, window)
    return resize_uint8(image, image_size, method)


def decode_for_train(encoded: tf.Tensor, image_size: int, seed: tf.Tensor, *, min_object_covered: float = 0.1,
                     aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.05, 1.0), max_attempts: int = 100,
                     random_flip: bool = True, method: str = "bilinear") -> tf.Tensor:
    """The training crop of the seed: a random distorted box, decoded, flipped, resized (uint8).

    The box covers at least ``min_object_covered`` of the whole image (there are no object boxes),
    with aspect ratio and area in the given ranges. When no box is found in ``max_attempts`` the
    crop falls back to the evaluation centre crop, as the reference does.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    def window(hw):
        shape = tf.concat([hw, [3]], 0)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
            min_object_covered=min_object_covered, aspect_ratio_range=list(aspect_ratio_range),
            area_range=list(area_range), max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
        found = tf.stack([begin[0], begin[1], size[0], size[1]])
        failed = tf.reduce_all(tf.equal(size[:2], hw))
        return tf.where(failed, center_crop_window(hw, image_size), found)

    image = decode_and_crop(encoded, window)
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return resize_uint8(image, image_size, method)


__all__ = [
    "CROP_PADDING",
    "MEAN_RGB",
    "STDDEV_RGB",
    "center_crop_window",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "decode_and_crop",
    "header_size",
    "decode_for_eval",
    "decode_for_train",
    "resize_uint8",
]

"""Image operations of AutoAugment/RandAugment on uint8 ``[H, W, 3]`` tensors (TensorFlow graph code).

Semantics follow the EfficientNet(V2) reference (PIL-equivalent ops, magnitude on a 0-10 scale,
fill value 128 for uncovered pixels, nearest-neighbour geometry). Randomness is stateless: ops
that need it take an int32 ``[2]`` seed.

Why not ``keras.layers.RandAugment`` and friends: Keras's layers draw randomness from a stateful
``SeedGenerator`` (or one fixed int), so they cannot be keyed per example by (seed, epoch,
position), which our deterministic, resumable, parallelism-independent pipeline needs; and their
op set and magnitude scale (a [0, 1] factor with randomly drawn per-op strength) differ from the
EfficientNetV2 recipe's 16 ops at a fixed magnitude M. The benchmark compares the two for speed.
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_LEVEL = 10.0
FILL = 128.0


def blend(image1, image2, factor):
    """``image1 + factor * (image2 - image1)``, clipped to [0, 255] (PIL ImageEnhance)."""
    a = tf.cast(image1, tf.float32)
    b = tf.cast(image2, tf.float32)
    return tf.cast(tf.clip_by_value(a + factor * (b - a), 0.0, 255.0), tf.uint8)


def _transform(image, matrix, fill=FILL):
    """Projective transform (output -> input coordinates), nearest, constant fill."""
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.reshape(tf.cast(matrix, tf.float32), [1, 8]), output_shape=shape[:2],
        fill_value=tf.constant(fill, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def rotate(image, degrees, fill=FILL):
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    c, s = tf.cos(radians), tf.sin(radians)
    x_offset = ((w - 1) - (c * (w - 1) - s * (h - 1))) / 2.0
    y_offset = ((h - 1) - (s * (w - 1) + c * (h - 1))) / 2.0
    return _transform(image, tf.stack([c, -s, x_offset, s, c, y_offset, 0.0, 0.0]), fill)


def translate_x(image, pixels, fill=FILL):
    pixels = tf.cast(pixels, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]), fill)


def translate_y(image, pixels, fill=FILL):
    pixels = tf.cast(pixels, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]), fill)


def shear_x(image, level, fill=FILL):
    level = tf.cast(level, tf.float32)
    return _transform(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), fill)


def shear_y(image, level, fill=FILL):
    level = tf.cast(level, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]), fill)


def autocontrast(image):
    """Stretch each channel to [0, 255] (channels with one value stay as they are)."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    return tf.cast(tf.clip_by_value((x - offset) * scale, 0.0, 255.0), tf.uint8)


def equalize(image):
    """PIL's ImageOps.equalize per channel."""
    channels = []
    for c in range(3):
        values = tf.cast(image[:, :, c], tf.int32)
        histo = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
        nonzero = tf.gather(histo, tf.reshape(tf.where(histo > 0), [-1]))
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        safe = tf.maximum(step, 1)
        lut = (tf.cumsum(histo) + safe // 2) // safe
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        channels.append(tf.where(step > 0, tf.gather(lut, values), values))
    return tf.cast(tf.stack(channels, -1), tf.uint8)


def invert(image):
    return 255 - image


def posterize(image, bits):
    """Keep the ``bits`` high bits of every value (0 bits: black)."""
    bits = int(bits)
    if bits >= 8:
        return image
    if bits <= 0:
        return tf.zeros_like(image)
    shift = 8 - bits
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    """Invert the values at or above ``threshold`` (>= 256: nothing changes)."""
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.where(x < threshold, x, 255 - x), tf.uint8)


def solarize_add(image, addition, threshold=128):
    x = tf.cast(image, tf.int32)
    added = tf.clip_by_value(x + addition, 0, 255)
    return tf.cast(tf.where(x < threshold, added, x), tf.uint8)


def color(image, factor):
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    """PIL's ImageEnhance.Contrast: blend with the mean grey level.

    The TF reference implementation divides the pixel *count* by 256 instead of averaging the
    grey levels (a known bug); we use the mean grey level as PIL does.
    """
    gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
    mean = tf.round(tf.reduce_mean(gray))
    degenerate = tf.fill(tf.shape(image), tf.cast(mean, tf.uint8))
    return blend(degenerate, image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """PIL's ImageEnhance.Sharpness: blend with a 3x3 smoothed copy (borders unchanged)."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.cast(tf.clip_by_value(tf.round(smooth), 0.0, 255.0), tf.uint8)
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    inner = tf.pad(tf.ones([h - 2, w - 2, 3], tf.bool), [[1, 1], [1, 1], [0, 0]], constant_values=False)
    degenerate = tf.where(inner, smooth, image)
    return blend(degenerate, image, factor)


def cutout(image, pad_size, seed, fill=128):
    """Fill a ``2*pad_size`` square centred at a random pixel (clipped at the borders)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    cy = tf.random.stateless_uniform([], seed, 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), 0, w, dtype=tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    inside = (ys >= cy - pad_size) & (ys < cy + pad_size) & (xs >= cx - pad_size) & (xs < cx + pad_size)
    return tf.where(inside[:, :, None], tf.cast(fill, image.dtype), image)


def random_sign(value, seed):
    """``value`` or ``-value`` with probability 1/2 each."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, -value, value)


# name -> function(image, level, seed, hparams) with level on the 0..10 reference scale.
def _enhance(level):
    return level / MAX_LEVEL * 1.8 + 0.1


OPS = {
    "AutoContrast": lambda im, level, seed, hp: autocontrast(im),
    "Equalize": lambda im, level, seed, hp: equalize(im),
    "Invert": lambda im, level, seed, hp: invert(im),
    "Rotate": lambda im, level, seed, hp: rotate(im, random_sign(level / MAX_LEVEL * 30.0, seed), hp["fill"]),
    "Posterize": lambda im, level, seed, hp: posterize(im, int(level / MAX_LEVEL * 4)),
    "Solarize": lambda im, level, seed, hp: solarize(im, int(level / MAX_LEVEL * 256)),
    "SolarizeAdd": lambda im, level, seed, hp: solarize_add(im, int(level / MAX_LEVEL * 110)),
    "Color": lambda im, level, seed, hp: color(im, _enhance(level)),
    "Contrast": lambda im, level, seed, hp: contrast(im, _enhance(level)),
    "Brightness": lambda im, level, seed, hp: brightness(im, _enhance(level)),
    "Sharpness": lambda im, level, seed, hp: sharpness(im, _enhance(level)),
    "ShearX": lambda im, level, seed, hp: shear_x(im, random_sign(level / MAX_LEVEL * 0.3, seed), hp["fill"]),
    "ShearY": lambda im, level, seed, hp: shear_y(im, random_sign(level / MAX_LEVEL * 0.3, seed), hp["fill"]),
    "TranslateX": lambda im, level, seed, hp: translate_x(
        im, random_sign(level / MAX_LEVEL * hp["translate_const"], seed), hp["fill"]),
    "TranslateY": lambda im, level, seed, hp: translate_y(
        im, random_sign(level / MAX_LEVEL * hp["translate_const"], seed), hp["fill"]),
    "Cutout": lambda im, level, seed, hp: cutout(im, int(level / MAX_LEVEL * hp["cutout_const"]), seed, hp["fill"]),
}

#: RandAugment's op list in the EfficientNetV2 recipe, in its order.
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")

#: AutoAugment's ImageNet policy "v0": 25 sub-policies of (op, probability, level).
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

POLICIES = {"v0": POLICY_V0}

"""Grad-CAM explanations: where in the image the evidence for a class lies (Selvaraju et al. 2017).

The feature map explained is found from the model's structure, not per variant: the last layer
(in the functional graph's order) whose output is 4-D, ``(batch, height, width, channels)`` with a
spatial extent, i.e. the final convolutional map before global pooling and the classifier. This
holds for every built-in EfficientNet V1/V2 (``top_activation``), a fine-tune of one, and the
exported ``.keras`` model. A model without such a layer (or not a functional graph) is a
one-line error naming what is missing.

For the class ``c`` the map is ``relu(sum_k a_k * A_k)`` with ``A`` the feature map and ``a_k``
the spatial mean of ``d logit_c / d A_k``, scaled to [0, 1] per image and drawn over the image the
model saw (the evaluation crop).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effnet.errors import UserError


def _rank4_spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError, RuntimeError):  # a layer called several times has no single output
        return False
    if len(shape) != 4:
        return False
    h, w = shape[1], shape[2]
    return (h is None or h > 1) or (w is None or w > 1)


def feature_layer(model):
    """The layer Grad-CAM explains (see the module docstring), or a UserError naming what is missing."""
    name = getattr(model, "name", type(model).__name__)
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise UserError(f"model {name!r} is not a functional Keras graph (no inputs/outputs to trace), so Grad-CAM "
                        f"cannot find its feature map; build the model plugin with keras.Model(inputs, outputs)")
    import keras

    found = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer) and _rank4_spatial(layer)]
    if not found:
        raise UserError(f"model {name!r} has no layer with a 4-D (batch, height, width, channels) output, the "
                        f"convolutional feature map Grad-CAM explains; --explain needs a model with one before its "
                        f"classifier")
    return found[-1]


class GradCAM:
    """Grad-CAM maps of a model for chosen classes: ``GradCAM(model)(images, classes)``."""

    def __init__(self, model, layer=None):
        import keras
        import tensorflow as tf

        self.layer = layer or feature_layer(model)
        self._model = keras.Model(model.inputs, [self.layer.output, model.outputs[0]])

        @tf.function(reduce_retracing=True)
        def maps(images, classes):
            with tf.GradientTape() as tape:
                features, logits = self._model(images, training=False)
                features = tf.cast(features, tf.float32)
                score = tf.reduce_sum(tf.gather(tf.cast(logits, tf.float32), classes, batch_dims=1))
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            return tf.math.divide_no_nan(cam, peak), logits

        self._maps = maps

    def __call__(self, images, classes):
        """``images`` [N,H,W,3] in [0, 255]; ``classes`` [N] ints -> maps [N,h,w] in [0, 1] (float32)."""
        import tensorflow as tf

        maps, _ = self._maps(tf.cast(tf.convert_to_tensor(images), tf.float32),
                             tf.convert_to_tensor(np.asarray(classes, np.int32)))
        return maps.numpy()


def _jet(values):
    """A jet-like colour map of values in [0, 1] (no matplotlib needed): blue -> cyan -> yellow -> red."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def overlay(image, cam, alpha: float = 0.45):
    """The image (uint8 HxWx3) with the map resized onto it, as uint8."""
    import tensorflow as tf

    h, w = image.shape[:2]
    heat = tf.image.resize(np.asarray(cam, np.float32)[..., None], (h, w), method="bilinear").numpy()[..., 0]
    mixed = (1 - alpha) * np.asarray(image, np.float32) + alpha * 255.0 * _jet(heat)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def write_png(image, path) -> Path:
    import tensorflow as tf

    from effnet.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(tf.io.encode_png(np.asarray(image, np.uint8)).numpy())
    return path


def safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))
    return keep.strip("._")[:60] or "class"


__all__ = ["GradCAM", "feature_layer", "overlay", "safe_name", "write_png"]

"""A test-only plugin: a model whose training forward pass turns non-finite after N steps, and a model
with an op no converter has (TensorFlow's BesselI0e: not in tf2onnx, OpenVINO's frontend or TFLite's built-ins).

Loaded through EFFNET_PLUGINS by the tests, like any plugin module.
"""

import gin

import effnet


@gin.configurable
def nan_after(num_classes, after=5):
    import keras
    import tensorflow as tf

    class NanAfter(keras.layers.Layer):
        def build(self, input_shape):
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

        def call(self, x, training=False):
            if training:
                self.calls.assign_add(1.0)
            return tf.where(self.calls > after, tf.fill(tf.shape(x), float("nan")), x)

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(num_classes, dtype="float32")(x)
    return keras.Model(inputs, NanAfter(dtype="float32")(x), name="nan_after")


@gin.configurable
def onnx_unconvertible(num_classes):
    import keras
    import tensorflow as tf

    class BesselI0e(keras.layers.Layer):  # a real TensorFlow op (tf.math.special.bessel_i0e) with no ONNX equivalent
        def call(self, x):
            return tf.math.special.bessel_i0e(x)

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = BesselI0e()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(num_classes, dtype="float32")(x)
    return keras.Model(inputs, x, name="onnx_unconvertible")


@effnet.hookimpl
def effnet_models():
    return {"nan_after": nan_after, "onnx_unconvertible": onnx_unconvertible}

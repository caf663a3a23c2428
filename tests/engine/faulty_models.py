"""A test-only plugin: a model whose training forward pass turns non-finite after N steps.

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


@effnet.hookimpl
def effnet_models():
    return {"nan_after": nan_after}

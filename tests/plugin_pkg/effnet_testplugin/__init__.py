"""A separate plugin package, installed by effnet's tests through pip like any third-party plugin.

It registers a model (``tiny_cnn``), an optimizer (``plain_sgd``) and ships an experiment
(``testplugin_exp.gin``) through the ``effnet_gin_paths`` hook.
"""

import importlib.resources

import gin

import effnet


@gin.configurable
def tiny_cnn(num_classes, width=8):
    """A two-layer convnet: enough to train on the demo data in seconds."""
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(width, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@gin.configurable
def plain_sgd(learning_rate, momentum=0.0):
    import keras

    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)


@effnet.hookimpl
def effnet_models():
    return {"tiny_cnn": tiny_cnn}


@effnet.hookimpl
def effnet_optimizers():
    return {"plain_sgd": plain_sgd}


@effnet.hookimpl
def effnet_gin_paths():
    return [str(importlib.resources.files("effnet_testplugin") / "gin")]

import pytest


def _tiny_model(seed=0, classes=3, batchnorm=False):
    """A small conv net without dropout; deterministic weights for a seed."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def tiny_model():
    return _tiny_model


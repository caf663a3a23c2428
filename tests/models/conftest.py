"""Keras state reset around every model test."""

import pytest


@pytest.fixture(autouse=True)
def _keras_state():
    """Float32 policy and a fresh Keras session around every test (layer names, memory)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()

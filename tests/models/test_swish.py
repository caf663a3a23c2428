"""The models' swish: tf.nn.silu's values and gradients, with the forward sigmoid reused in backprop."""

import numpy as np
import pytest


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_same_values_and_gradients_as_tf_silu(dtype, tol):
    import tensorflow as tf

    from effnet.plugins.models.layers import swish

    rng = np.random.default_rng(0)
    x = tf.cast(tf.constant(rng.normal(0, 4, (5, 7, 3)).astype("float32")), dtype)
    dy = tf.cast(tf.constant(rng.normal(0, 1, (5, 7, 3)).astype("float32")), dtype)
    results = []
    for fn in (swish, tf.nn.silu):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        results.append((y, tape.gradient(y, x, output_gradients=dy)))
    (y, g), (y_ref, g_ref) = results
    assert y.dtype == y_ref.dtype == g.dtype
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32), atol=tol, rtol=tol)
    np.testing.assert_allclose(tf.cast(g, tf.float32), tf.cast(g_ref, tf.float32), atol=tol, rtol=tol)


def test_models_use_it_for_swish_and_keep_other_activations(tmp_path):
    import keras
    import tensorflow as tf

    from effnet.plugins.models import efficientnet
    from effnet.plugins.models.blocks import Block
    from effnet.plugins.models.layers import swish

    model = efficientnet("efficientnet_v2_b0", num_classes=3, width=0.25, depth=0.25)
    blocks = [layer for layer in model.layers if isinstance(layer, Block)]
    assert blocks and all(block._act is swish for block in blocks)
    assert model.get_layer("top_activation").activation is swish
    relu = efficientnet("efficientnet_v2_b0", num_classes=3, width=0.25, depth=0.25, activation="relu")
    assert relu.get_layer("top_activation").activation is keras.activations.relu
    # a saved model names it and loads it back
    x = tf.random.uniform([2, 32, 32, 3], 0, 255, seed=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("top_activation").activation is swish
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)

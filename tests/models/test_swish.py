"""The models' swish: tf.nn.silu's values and gradients; a plain forward graph and a one-kernel XLA gradient."""

import numpy as np
import pytest
from modeltest_utils import graph_nodes


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("bfloat16", 2e-2), ("float16", 2e-3)])
def test_same_values_and_gradients_as_tf_silu(dtype, tol, graph):
    import tensorflow as tf

    from effnet.plugins.models.layers import swish

    rng = np.random.default_rng(0)
    x = tf.cast(tf.constant(rng.normal(0, 4, (5, 7, 3)).astype("float32")), dtype)
    dy = tf.cast(tf.constant(rng.normal(0, 1, (5, 7, 3)).astype("float32")), dtype)
    results = []
    for fn in (swish, tf.nn.silu):
        def value_and_grad(x, fn=fn):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return y, tape.gradient(y, x, output_gradients=dy)

        results.append(tf.function(value_and_grad)(x) if graph else value_and_grad(x))
    (y, g), (y_ref, g_ref) = results
    assert y.dtype == y_ref.dtype == g.dtype
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32), atol=tol, rtol=tol)
    np.testing.assert_allclose(tf.cast(g, tf.float32), tf.cast(g_ref, tf.float32), atol=tol, rtol=tol)


def test_forward_graph_is_plain_ops_and_the_gradient_one_xla_call():
    """Inference graphs (exports, frozen serving graphs) see only Sigmoid and Mul; training adds one XLA call."""
    import tensorflow as tf

    from effnet.plugins.models.layers import swish

    spec = tf.TensorSpec([2, 4, 4, 3], tf.bfloat16)
    forward = tf.function(swish).get_concrete_function(spec).graph.as_graph_def()
    assert sorted(node.op for node in graph_nodes(forward) if node.op not in ("Placeholder", "Identity", "IdentityN")) == ["Mul", "Sigmoid"]

    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = swish(x)
        return tape.gradient(y, x)

    graph = tf.function(train).get_concrete_function(spec).graph.as_graph_def()
    compiled = [f for f in graph.library.function if f.attr["_XlaMustCompile"].b]
    assert len(compiled) == 1 and "Sigmoid" in [node.op for node in compiled[0].node_def]
    outside = [node.op for node in graph.node] + [
        node.op for f in graph.library.function if not f.attr["_XlaMustCompile"].b for node in f.node_def]
    assert outside.count("Sigmoid") == 1  # the forward's; the gradient recomputes its own inside XLA


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

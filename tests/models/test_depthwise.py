"""The models' DepthwiseConv2D: Keras' values, and in bfloat16 on a CPU float32 gradients for the slow kernel shapes."""

import numpy as np
import pytest
from modeltest_utils import graph_nodes


def _layer(kernel, stride, dtype, cls=None):
    from effnet.plugins.models.layers import DepthwiseConv2D

    layer = (cls or DepthwiseConv2D)(kernel, stride, padding="same", use_bias=False, dtype=dtype)
    layer.build((None, None, None, 6))
    layer.kernel.assign(np.random.default_rng(1).normal(0, 0.5, (kernel, kernel, 6, 1)).astype("float32"))
    return layer


def _value_and_grads(layer, x, dy):
    import tensorflow as tf

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        dx, dk = tape.gradient(y, [x, layer.kernel], output_gradients=tf.cast(dy, y.dtype))
        return y, dx, dk

    return run, [np.asarray(tf.cast(t, tf.float32)) for t in run(x)]


def _grad_kernel_dtypes(run, x):
    """{op type: dtype enum} of the depthwise gradient kernels in run's graph (and its functions)."""
    nodes = graph_nodes(run.get_concrete_function(x).graph.as_graph_def())
    return {node.op: node.attr["T"].type for node in nodes if node.op.startswith("DepthwiseConv2dNativeBackprop")}


def _data(dtype):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(0, 1, (2, 9, 9, 6)).astype("float32"), dtype)
    dy = rng.normal(0, 1, (2, 9, 9, 6)).astype("float32")
    return x, dy


@pytest.mark.parametrize("kernel, stride", [(5, 1), (3, 2), (5, 2)])
def test_bfloat16_gradients_are_float32_gradients_of_the_same_inputs(kernel, stride):
    import keras
    import tensorflow as tf

    layer = _layer(kernel, stride, "mixed_bfloat16")
    x, dy = _data(tf.bfloat16)
    dy = dy[:, ::stride, ::stride]
    run, (y, dx, dk) = _value_and_grads(layer, x, dy)
    # the float32 path was taken: both gradient kernels run in float32
    assert _grad_kernel_dtypes(run, x) == {"DepthwiseConv2dNativeBackpropInput": tf.float32.as_datatype_enum,
                     "DepthwiseConv2dNativeBackpropFilter": tf.float32.as_datatype_enum}
    # reference: Keras' own layer in float32 on the same (bfloat16-rounded) input and kernel
    ref = _layer(kernel, stride, "float32", cls=keras.layers.DepthwiseConv2D)
    ref.kernel.assign(tf.cast(tf.cast(layer.kernel, tf.bfloat16), tf.float32))
    _, (y_ref, _, _) = _value_and_grads(ref, tf.cast(x, tf.float32), dy)
    np.testing.assert_allclose(y, y_ref, rtol=2e-2, atol=2e-2)
    # with dy rounded to bfloat16 as the layer receives it, the float32 gradients differ from the
    # float32 reference only by the final rounding of dx and dk to bfloat16 (the kernel's compute
    # dtype, as with Keras' own layer): within 2^-8 relative
    dy_rounded = np.asarray(tf.cast(tf.cast(dy, tf.bfloat16), tf.float32))
    _, (_, dx_exact, dk_exact) = _value_and_grads(ref, tf.cast(x, tf.float32), dy_rounded)
    for got, exact in ((dx, dx_exact), (dk, dk_exact)):
        np.testing.assert_allclose(got, exact, rtol=2 ** -8, atol=1e-6)


@pytest.mark.parametrize("kernel, stride, dtype", [(3, 1, "mixed_bfloat16"), (5, 2, "float32")])
def test_keras_path_where_it_is_fast_or_not_bfloat16(kernel, stride, dtype):
    import keras
    import tensorflow as tf

    layer = _layer(kernel, stride, dtype)
    x, dy = _data(layer.compute_dtype)
    run, (y, dx, dk) = _value_and_grads(layer, x, dy[:, ::stride, ::stride])
    want = tf.as_dtype(layer.compute_dtype).as_datatype_enum
    assert _grad_kernel_dtypes(run, x) == {"DepthwiseConv2dNativeBackpropInput": want, "DepthwiseConv2dNativeBackpropFilter": want}
    ref = _layer(kernel, stride, dtype, cls=keras.layers.DepthwiseConv2D)
    _, expected = _value_and_grads(ref, x, dy[:, ::stride, ::stride])
    for got, want in zip((y, dx, dk), expected):
        np.testing.assert_array_equal(got, want)


def test_mbconv_blocks_use_it():
    from effnet.plugins.models import efficientnet
    from effnet.plugins.models.blocks import MBConv
    from effnet.plugins.models.layers import DepthwiseConv2D

    model = efficientnet("efficientnet_b0", num_classes=3, width=0.25, depth=0.25)
    blocks = [layer for layer in model.layers if isinstance(layer, MBConv)]
    assert blocks and all(type(block.dwconv) is DepthwiseConv2D for block in blocks)


def test_weights_saved_with_keras_depthwise_layer_load_unchanged(tmp_path, monkeypatch):
    """Checkpoints and .keras files from before this layer (Keras' own class in the blocks) load into it."""
    import keras
    import tensorflow as tf

    import effnet.plugins.models.blocks as blocks
    from effnet.plugins.models import efficientnet
    from effnet.plugins.models.layers import DepthwiseConv2D

    x = tf.random.uniform([2, 32, 32, 3], 0, 255, seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(blocks, "DepthwiseConv2D", keras.layers.DepthwiseConv2D)
        old = efficientnet("efficientnet_b0", num_classes=3, width=0.25, depth=0.25)
    for i, v in enumerate(old.weights):
        v.assign(tf.random.stateless_normal(v.shape, (i, 0), stddev=0.1) + (1.0 if "variance" in v.path else 0.0))
    old.save_weights(tmp_path / "old.weights.h5")
    checkpoint = tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt" / "old"))
    old.save(tmp_path / "old.keras")
    want = old(x, training=False)

    from_h5 = efficientnet("efficientnet_b0", num_classes=3, width=0.25, depth=0.25)
    assert type(from_h5.get_layer("block2a").dwconv) is DepthwiseConv2D
    from_h5.load_weights(tmp_path / "old.weights.h5")
    from_ckpt = efficientnet("efficientnet_b0", num_classes=3, width=0.25, depth=0.25)
    tf.train.Checkpoint(model=from_ckpt).read(checkpoint).assert_existing_objects_matched()
    from_keras = keras.saving.load_model(tmp_path / "old.keras")
    for model in (from_h5, from_ckpt, from_keras):
        np.testing.assert_array_equal(model(x, training=False), want)

"""Squeeze-excitation's squeeze: the mean over height and width, in bfloat16 without a float32 copy."""

import numpy as np
import pytest
from modeltest_utils import training_step_nodes


@pytest.mark.parametrize("shape", [(2, 56, 56, 32), (3, 7, 9, 40), (1, 1, 1, 8)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float16"])
def test_same_values_and_gradients_as_keras_mean(shape, dtype):
    """Bit-identical to Keras' ops.mean (which casts to float32 first): TF's bfloat16 reduction accumulates in float32."""
    import tensorflow as tf
    from keras import ops

    from effnet.plugins.models.blocks import _spatial_mean

    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(0.5, 3.0, shape).astype("float32"), dtype)
    dy = tf.cast(rng.normal(0, 1, (shape[0], 1, 1, shape[3])).astype("float32"), dtype)
    results = []
    for fn in (_spatial_mean, lambda x: ops.mean(x, axis=(1, 2), keepdims=True)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        results.append((y, tape.gradient(y, x, output_gradients=dy)))
    (y, g), (y_ref, g_ref) = results
    assert y.dtype == y_ref.dtype == g.dtype == x.dtype and y.shape == (shape[0], 1, 1, shape[3])
    np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))
    np.testing.assert_array_equal(tf.cast(g, tf.float32), tf.cast(g_ref, tf.float32))


@pytest.mark.parametrize("dtype, mean_dtype", [("bfloat16", "bfloat16"), ("float16", "float32")])
def test_a_bf16_block_reduces_the_bf16_activation_without_a_float32_copy(dtype, mean_dtype):
    """A float32 copy of every SE block's activation cost more than the mean itself (docs/performance.md
    item 13); float16 keeps it (its sums overflow)."""
    import keras
    import tensorflow as tf

    from effnet.plugins.models.blocks import MBConv

    keras.mixed_precision.set_global_policy("mixed_" + dtype)
    block = MBConv(8, 8, kernel=3, stride=1, expand=4, se_ratio=0.25, name="block")
    block.build((None, 8, 8, 8))
    means = [node for node in training_step_nodes(block, tf.TensorSpec([2, 8, 8, 8], dtype)) if node.op == "Mean"]
    assert len(means) == 1
    assert tf.dtypes.as_dtype(means[0].attr["T"].type).name == mean_dtype

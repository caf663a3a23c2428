"""Stochastic depth as one per-sample multiply: Keras' dropout with a per-sample noise shape, bit for bit."""

import numpy as np
import pytest
from modeltest_utils import training_step_nodes


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float16"])
@pytest.mark.parametrize("rate", [0.5, 0.2 * 7 / 40])
def test_same_samples_values_and_gradients_as_keras_dropout(dtype, rate):
    import keras
    import tensorflow as tf

    from effnet.plugins.models.blocks import _drop_path

    rng = np.random.default_rng(1)
    x = tf.cast(rng.normal(0, 2, (64, 5, 6, 8)).astype("float32"), dtype)
    dy = tf.cast(rng.normal(0, 1, (64, 5, 6, 8)).astype("float32"), dtype)
    results = []
    for fn in (_drop_path, lambda x, rate, seed: keras.random.dropout(x, rate, noise_shape=(None, 1, 1, 1), seed=seed)):
        seed = keras.random.SeedGenerator(11)

        @tf.function
        def step(x, fn=fn, seed=seed):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x, rate, seed) + x  # as the residual uses it
            return y, tape.gradient(y, x, output_gradients=dy)

        results.append([step(x) for _ in range(3)])  # three draws: the generator advances alike
    for (y, g), (y_ref, g_ref) in zip(*results):
        assert y.dtype == y_ref.dtype == g.dtype
        np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))
        np.testing.assert_array_equal(tf.cast(g, tf.float32), tf.cast(g_ref, tf.float32))
    branch = (results[0][0][0] - x).numpy().astype("float32")  # y - x: each sample dropped or kept whole
    dropped = np.all(branch == 0, axis=(1, 2, 3))
    assert 0 < dropped.sum() < 64 and not np.any(branch[~dropped] == 0)


def test_the_training_graph_multiplies_once_per_sample_and_selects_nothing():
    import tensorflow as tf

    from effnet.plugins.models.blocks import MBConv

    block = MBConv(8, 8, kernel=3, expand=2, drop_path_rate=0.3, block_fraction=1.0, name="block")
    block.build((None, 8, 8, 8))
    ops = [node.op for node in training_step_nodes(block, tf.TensorSpec([4, 8, 8, 8], tf.float32))]
    assert "SelectV2" not in ops and "Select" not in ops
    assert ops.count("StatelessRandomUniformV2") == 1

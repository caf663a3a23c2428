"""FusedBatchNorm computes what keras.layers.BatchNormalization computes, with TF's fused kernel."""

import numpy as np
import pytest
from modeltest_utils import graph_nodes


def _pair(channels=6, momentum=0.9, seed=0, rank=4, **kwargs):
    import keras

    from effnet.plugins.models.layers import FusedBatchNorm

    ref = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3, **kwargs)
    fused = FusedBatchNorm(momentum=momentum, epsilon=1e-3, **kwargs)
    shape = (None,) * (rank - 1) + (channels,) if kwargs.get("axis", -1) == -1 else (None, channels) + (None,) * (rank - 2)
    ref.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(seed)
    values = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in ref.weights]
    ref.set_weights(values)
    fused.set_weights(values)
    return ref, fused, rng


def _run(layer, x, r, training):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(tf.cast(x, layer.compute_dtype), training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * r)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


@pytest.mark.parametrize("policy, tol, channels", [("float32", 1e-5, 6), ("mixed_bfloat16", 2e-2, 6), ("mixed_bfloat16", 2e-2, 16)])
@pytest.mark.parametrize("training", [False, True])
def test_same_outputs_gradients_and_moving_statistics_as_keras(policy, tol, channels, training):
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    ref, fused, rng = _pair(channels)
    x = tf.constant(rng.normal(0.3, 2.0, (3, 5, 7, channels)).astype("float32"))
    r = tf.constant(rng.normal(0, 1, (3, 5, 7, channels)).astype("float32"))
    y_ref, g_ref = _run(ref, x, r, training)
    y_fused, g_fused = _run(fused, x, r, training)
    assert y_fused.dtype == y_ref.dtype
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_ref, tf.float32), atol=tol, rtol=tol)
    for a, b in zip(g_fused, g_ref):
        scale = float(tf.reduce_max(tf.abs(b)))
        np.testing.assert_allclose(a / scale, b / scale, atol=tol)
    # moving statistics: unchanged in inference, the same biased-variance update in training
    for a, b in zip(fused.non_trainable_weights, ref.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    if training:
        assert not np.allclose(fused.moving_mean.numpy(), rng.uniform(0.5, 1.5, channels))  # it did move


@pytest.mark.parametrize("channels, kernel_dtype", [(24, "float32"), (40, "float32"), (16, "bfloat16"), (32, "bfloat16")])
def test_bfloat16_kernels_only_for_channel_counts_where_they_are_fast(channels, kernel_dtype):
    """Under bf16 on a CPU, 24 or 40 channels normalise in float32 (both passes); the output stays bf16."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    _, fused, rng = _pair(channels)
    x = tf.cast(rng.normal(0.3, 2.0, (2, 4, 4, channels)).astype("float32"), tf.bfloat16)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fused(x, training=True)
        return y, tape.gradient(y, x, output_gradients=tf.ones_like(y))

    y, dx = step(x)
    assert y.dtype == dx.dtype == tf.bfloat16
    nodes = graph_nodes(step.get_concrete_function(x).graph.as_graph_def())
    kernels = {node.op: tf.as_dtype(node.attr["T"].type).name for node in nodes if node.op.startswith("FusedBatchNorm")}
    assert kernels == {"FusedBatchNormV3": kernel_dtype, "FusedBatchNormGradV3": kernel_dtype}


def test_frozen_layer_uses_moving_statistics_in_training():
    import tensorflow as tf

    ref, fused, rng = _pair()
    ref.trainable = fused.trainable = False
    x = tf.constant(rng.normal(0, 2.0, (2, 4, 4, 6)).astype("float32"))
    before = [w.numpy().copy() for w in fused.non_trainable_weights]
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=1e-5)
    for a, b in zip(fused.non_trainable_weights, before):
        np.testing.assert_array_equal(a.numpy(), b)


def test_what_the_kernel_cannot_do_falls_back_to_keras():
    import tensorflow as tf

    # channels-first axis and a rank-2 input take Keras' own path and still agree with it
    ref, fused, rng = _pair(axis=1)
    x = tf.constant(rng.normal(0, 2.0, (2, 6, 4, 4)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=1e-5)
    ref, fused, rng = _pair(rank=2)
    x = tf.constant(rng.normal(0, 2.0, (5, 6)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), atol=1e-6)


def test_same_weights_and_config_and_serialisable():
    import keras

    from effnet.plugins.models.layers import FusedBatchNorm

    ref, fused, _ = _pair()
    assert [w.path.split("/")[-1] for w in fused.weights] == [w.path.split("/")[-1] for w in ref.weights]
    assert isinstance(fused, keras.layers.BatchNormalization)  # weight decay and freezing treat it as BN
    config = fused.get_config()
    assert {k: v for k, v in config.items() if k != "name"} == {k: v for k, v in ref.get_config().items() if k != "name"}
    clone = keras.layers.deserialize(keras.layers.serialize(fused))
    assert type(clone) is FusedBatchNorm


def test_fused_bn_is_the_default_and_false_opts_every_batchnorm_out():
    import keras

    from effnet.plugins.models import efficientnet
    from effnet.plugins.models.builder import weighted_layers
    from effnet.plugins.models.layers import FusedBatchNorm

    def batchnorms(model):
        return [layer for layer in weighted_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]

    fused = batchnorms(efficientnet("efficientnet_v2_s", num_classes=5, width=0.25, depth=0.1))
    assert fused and all(type(layer) is FusedBatchNorm for layer in fused)
    plain = batchnorms(efficientnet("efficientnet_v2_s", num_classes=5, width=0.25, depth=0.1, fused_bn=False))
    assert plain and not any(isinstance(layer, FusedBatchNorm) for layer in plain)


@pytest.mark.parametrize("policy, tol", [("float32", 1e-5), ("mixed_bfloat16", 0.1)])
def test_inference_with_batchnorm_folded_equals_conv_then_batchnorm(policy, tol):
    import keras
    import tensorflow as tf
    from modeltest_utils import images, randomize

    from effnet.plugins.models import efficientnet

    keras.mixed_precision.set_global_policy(policy)
    knobs = {"num_classes": 7, "width": 0.25, "depth": 0.1, "dropout_rate": 0.0, "drop_path_rate": 0.0}
    folded = randomize(efficientnet("efficientnet_v2_s", **knobs), seed=3)
    plain = efficientnet("efficientnet_v2_s", fold_bn=False, **knobs)
    plain.set_weights(folded.get_weights())
    x = tf.constant(images(batch=2, size=64))
    expected = plain(x, training=False)
    got = folded(x, training=False)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * float(tf.reduce_max(tf.abs(expected))))
    # training never folds: the batch statistics are used and the moving ones updated as before
    train_tol = 1e-4 if policy == "float32" else tol
    np.testing.assert_allclose(folded(x, training=True), plain(x, training=True), rtol=train_tol, atol=train_tol)
    for a, b in zip(folded.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=train_tol, atol=train_tol)


def test_a_whole_model_trains_along_the_same_path_as_with_keras_batchnorm():
    """Twelve optimizer steps of a whole model from the same weights on the same batches: losses,
    weights and moving statistics stay together (a stable learning rate, so rounding differences
    between the two kernels are not amplified the way a chaotic recipe amplifies any change)."""
    import keras
    import tensorflow as tf

    from effnet.plugins.models import efficientnet

    keras.mixed_precision.set_global_policy("float32")
    kwargs = dict(num_classes=4, width=0.25, depth=0.25, dropout_rate=0.0, drop_path_rate=0.0, bn_momentum=0.9)
    ref = efficientnet("efficientnet_v2_b0", fused_bn=False, **kwargs)
    fused = efficientnet("efficientnet_v2_b0", fused_bn=True, **kwargs)
    fused.set_weights(ref.get_weights())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    labels = np.arange(48) % 4
    images[labels == 1] *= 0.5  # learnable classes, so the loss really moves
    images[labels == 2, :16] = 0.0

    def stepper(model):
        optimizer = keras.optimizers.RMSprop(2e-4, rho=0.9, momentum=0.9, epsilon=1e-3)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return step

    step_ref, step_fused = stepper(ref), stepper(fused)
    losses = []
    for _ in range(12):
        idx = rng.choice(48, 12, replace=False)
        losses.append((float(step_ref(images[idx], labels[idx])), float(step_fused(images[idx], labels[idx]))))
    assert losses[-1][0] < 0.7 * losses[0][0]  # it learned
    np.testing.assert_allclose([b for _, b in losses], [a for a, _ in losses], rtol=2e-3)
    for a, b in zip(fused.weights, ref.weights):
        scale = max(1.0, float(np.max(np.abs(b.numpy()))))
        np.testing.assert_allclose(a.numpy() / scale, b.numpy() / scale, atol=2e-3, err_msg=a.path)

"""The training step: accumulation equivalence, skipping non-finite updates, weight-decay targets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.step import TrainStep, decayed_variables
from effnet.assembly import build_optimizer
from effnet.trainer import TrainConfig


def make_batch(n, classes=3, size=8, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    if nan:
        images[0, 0, 0, 0] = np.nan
    labels = tf.one_hot(rng.integers(0, classes, n), classes)
    return {"image": tf.constant(images), "label": labels}


def optimizer_for(model, name="rmsprop", precision="fp32", **train):
    import gin

    gin.bind_parameter("train.model_dir", "unused")
    cfg = TrainConfig(model="m", dataset="d", optimizer=name, precision=precision, **train)
    schedule = keras.optimizers.schedules.PolynomialDecay(0.05, 10, 0.01)
    return build_optimizer(cfg, model, schedule)


def weights(model):
    return [np.array(v.value) for v in model.weights]


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd", "nvlamb"])
def test_accumulation_equals_one_large_batch(tiny_model, optimizer):
    big = tiny_model(seed=1)
    acc = tiny_model(seed=1)
    for a, b in zip(big.weights, acc.weights):
        np.testing.assert_array_equal(a.value, b.value)
    opt_big, opt_acc = optimizer_for(big, optimizer), optimizer_for(acc, optimizer)
    step_big = TrainStep(big, opt_big, global_batch=8, weight_decay=1e-3, label_smoothing=0.1)
    step_acc = TrainStep(acc, opt_acc, global_batch=8, weight_decay=1e-3, label_smoothing=0.1, accumulation_steps=4)
    for update in range(3):
        batch = make_batch(8, seed=update)
        step_big.apply(batch)
        micro = [{k: v[i * 2:(i + 1) * 2] for k, v in batch.items()} for i in range(4)]
        for m in micro[:3]:
            step_acc.accumulate(m)
            # nothing is applied before the last micro-batch (the seed applied after the first)
            assert int(opt_acc.iterations.numpy()) == update
        step_acc.apply(micro[3])
    assert int(opt_big.iterations.numpy()) == int(opt_acc.iterations.numpy()) == 3  # the LR schedule counts updates
    for a, b, v in zip(weights(big), weights(acc), big.weights):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=v.path)
    # and the update was not trivial
    assert not np.allclose(weights(big)[0], weights(tiny_model(seed=1))[0])
    ma, mb = step_big.read_metrics(), step_acc.read_metrics()
    assert ma["examples"] == mb["examples"] == 24
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)


def test_non_finite_update_is_skipped_and_counted_fp32(tiny_model):
    model = tiny_model(seed=2)
    opt = optimizer_for(model)
    step = TrainStep(model, opt, global_batch=4)
    before = weights(model)
    assert not bool(step.apply(make_batch(4, nan=True)).numpy())
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(step.updates_skipped.numpy()) == 1 and int(step.consecutive_nonfinite.numpy()) == 1
    assert int(opt.iterations.numpy()) == 0
    assert bool(step.apply(make_batch(4)).numpy())
    assert int(step.consecutive_nonfinite.numpy()) == 0 and int(opt.iterations.numpy()) == 1


def test_loss_scaling_skips_nan_step_and_lowers_scale(tiny_model):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model(seed=3)
        opt = optimizer_for(model, precision="amp")
        assert isinstance(opt, keras.mixed_precision.LossScaleOptimizer)
        step = TrainStep(model, opt, global_batch=4)
        scale = float(opt.dynamic_scale.numpy())
        before = weights(model)
        step.apply(make_batch(4, nan=True))
        assert float(opt.dynamic_scale.numpy()) == scale / 2
        assert int(step.updates_skipped.numpy()) == 1 and int(opt.iterations.numpy()) == 0
        for a, b in zip(before, weights(model)):
            np.testing.assert_array_equal(a, b)
        step.apply(make_batch(4))
        assert int(opt.iterations.numpy()) == 1 and int(step.updates_skipped.numpy()) == 1
        assert model(make_batch(1)["image"]).dtype == "float32"  # logits stay float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_weight_decay_targets_only_kernels(tiny_model):
    model = tiny_model(seed=4, batchnorm=True)
    chosen = {v.path for v in decayed_variables(model)}
    assert chosen == {"conv/kernel", "logits/kernel"}
    assert {v.path for v in decayed_variables(model, decay_bias=True)} == {"conv/kernel", "logits/kernel", "conv/bias", "logits/bias"}
    assert {"bn/gamma", "bn/beta"} <= {v.path for v in decayed_variables(model, decay_norm=True)}
    # optimizers with decoupled decay get the same exclusions
    opt = optimizer_for(model, "adamw")
    used = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    assert used == {"conv/kernel", "logits/kernel"}


def test_l2_term_moves_only_decayed_variables(tiny_model):
    """With a zero learning signal from the data, only decayed variables change."""
    model = tiny_model(seed=5, batchnorm=True)
    opt = optimizer_for(model, "sgd")
    step = TrainStep(model, opt, global_batch=4, weight_decay=0.5)
    # labels equal to the softmax output would give ~zero data gradient; instead compare with wd=0 run
    twin = tiny_model(seed=5, batchnorm=True)
    twin_step = TrainStep(twin, optimizer_for(twin, "sgd"), global_batch=4, weight_decay=0.0)
    batch = make_batch(4)
    step.apply(batch)
    twin_step.apply(batch)
    for v, t in zip(model.trainable_variables, twin.trainable_variables):
        differs = not np.allclose(v.value, t.value, atol=1e-7)
        assert differs == (v.path in ("conv/kernel", "logits/kernel")), v.path


@pytest.mark.parametrize("optimizer, precision", [("rmsprop", "fp32"), ("sgd", "fp32"), ("rmsprop", "amp")])
def test_weight_decay_update_equals_the_l2_term_in_the_loss(tiny_model, optimizer, precision):
    """The step adds ``weight_decay * w`` to each decayed kernel's gradient once per update; that is the
    update of the recipe's loss with ``weight_decay * sum(||w||^2 / 2)`` in it, through the optimizer's
    preconditioning too (RMSprop), over several updates; with loss scaling (amp) as well."""
    keras.mixed_precision.set_global_policy("mixed_float16" if precision == "amp" else "float32")
    try:
        _check_weight_decay_against_the_loss_term(tiny_model, optimizer, precision)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _check_weight_decay_against_the_loss_term(tiny_model, optimizer, precision):
    wd = 0.05
    model, twin = tiny_model(seed=6, batchnorm=True), tiny_model(seed=6, batchnorm=True)
    step = TrainStep(model, optimizer_for(model, optimizer, precision), global_batch=4, weight_decay=wd,
                     label_smoothing=0.1)
    twin_opt = optimizer_for(twin, optimizer, precision)
    decayed = decayed_variables(twin)
    assert {v.path for v in decayed} == {"conv/kernel", "logits/kernel"}
    for update in range(3):
        batch = make_batch(4, seed=10 + update)
        step.apply(batch)
        with tf.GradientTape() as tape:
            logits = twin(batch["image"], training=True)
            ce = keras.losses.categorical_crossentropy(batch["label"], logits, from_logits=True, label_smoothing=0.1)
            loss = tf.reduce_sum(ce) / 4 + wd * tf.add_n([tf.nn.l2_loss(v) for v in decayed])
            if precision == "amp":
                loss = twin_opt.scale_loss(loss)
        twin_opt.apply(tape.gradient(loss, twin.trainable_variables), twin.trainable_variables)
    tol = 1e-5 if precision == "fp32" else 2e-3  # float16 activations round differently per ordering
    for a, b, v in zip(weights(model), weights(twin), model.weights):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol / 10, err_msg=v.path)
    # the decay mattered: without it the kernels end elsewhere
    plain = tiny_model(seed=6, batchnorm=True)
    plain_step = TrainStep(plain, optimizer_for(plain, optimizer), global_batch=4, weight_decay=0.0, label_smoothing=0.1)
    for update in range(3):
        plain_step.apply(make_batch(4, seed=10 + update))
    assert not np.allclose(plain.get_layer("conv").kernel.numpy(), model.get_layer("conv").kernel.numpy(), atol=1e-5)


def test_class_weights_weight_each_examples_loss(tiny_model):
    """Weights (1, 0, 3): class-1 examples add nothing, class-2 examples count three times; the
    reported loss stays the unweighted cross-entropy."""
    batch = make_batch(12, seed=4)
    labels = np.argmax(batch["label"].numpy(), axis=1)
    assert set(labels) == {0, 1, 2}
    # the same update by hand: class 0 once, class 2 three times, class 1 left out, over the same batch size
    keep = np.concatenate([np.flatnonzero(labels == 0), *[np.flatnonzero(labels == 2)] * 3])
    by_hand = {k: tf.gather(v, keep) for k, v in batch.items()}
    weighted, manual = tiny_model(seed=2), tiny_model(seed=2)
    step_w = TrainStep(weighted, optimizer_for(weighted, "sgd"), global_batch=12, class_weights=[1.0, 0.0, 3.0])
    step_m = TrainStep(manual, optimizer_for(manual, "sgd"), global_batch=12)
    step_w.apply(batch)
    step_m.apply(by_hand)
    for a, b, v in zip(weights(weighted), weights(manual), weighted.weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert not np.allclose(weights(weighted)[0], weights(tiny_model(seed=2))[0])
    plain = tiny_model(seed=2)
    step_p = TrainStep(plain, optimizer_for(plain, "sgd"), global_batch=12)
    step_p.apply(batch)
    assert step_w.read_metrics()["loss"] == pytest.approx(step_p.read_metrics()["loss"], rel=1e-6)


def test_class_weights_with_mixed_labels_and_label_smoothing(tiny_model):
    """A mixup/cutmix label half class 0, half class 2 under weights (1, 0, 3) weighs 0.5*1 + 0.5*3 = 2:
    the same update as the unweighted loss over half the global batch, label smoothing included."""
    batch = make_batch(12, seed=5)
    batch["label"] = tf.constant(np.tile([[0.5, 0.0, 0.5]], (12, 1)), tf.float32)
    weighted, plain = tiny_model(seed=3), tiny_model(seed=3)
    TrainStep(weighted, optimizer_for(weighted, "sgd"), global_batch=12, label_smoothing=0.1,
              class_weights=[1.0, 0.0, 3.0]).apply(batch)
    TrainStep(plain, optimizer_for(plain, "sgd"), global_batch=6, label_smoothing=0.1).apply(batch)
    for a, b, v in zip(weights(weighted), weights(plain), weighted.weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert not np.allclose(weights(weighted)[0], weights(tiny_model(seed=3))[0])

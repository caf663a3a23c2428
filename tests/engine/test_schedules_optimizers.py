"""LR schedules against their formulas, nvLAMB and EMA against NumPy references, optimizer plugins."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.ema import ExponentialMovingAverage
from effnet.registry import Registry


@pytest.fixture
def registry():
    return Registry(autoload=False)


def lr(schedule, step):
    return float(schedule(tf.constant(step)))


def test_cosine_with_warmup(registry):
    s = registry.get("lr_schedule", "cosine")(base_lr=0.14375, steps_per_epoch=100, total_steps=3500, warmup_epochs=5)
    assert lr(s, 0) == 0.0
    assert lr(s, 250) == pytest.approx(0.14375 * 250 / 500)
    assert lr(s, 500) == pytest.approx(0.14375)
    for t in (900, 2000, 3400):
        expected = 0.14375 * 0.5 * (1 + math.cos(math.pi * (t - 500) / 3000))
        assert lr(s, t) == pytest.approx(expected, rel=1e-5)
    assert lr(s, 3500) == pytest.approx(0.0, abs=1e-9)
    assert lr(s, 5000) == pytest.approx(0.0, abs=1e-9)  # stays at the end value


def test_exponential_097_every_24_epochs(registry):
    s = registry.get("lr_schedule", "exponential")(base_lr=0.1, steps_per_epoch=10, total_steps=1000, warmup_epochs=0)
    assert lr(s, 0) == pytest.approx(0.1)
    assert lr(s, 23) == pytest.approx(0.1)
    assert lr(s, 24) == pytest.approx(0.097)
    assert lr(s, 240) == pytest.approx(0.1 * 0.97 ** 10, rel=1e-5)


def test_step_and_constant(registry):
    s = registry.get("lr_schedule", "step")(base_lr=1.0, steps_per_epoch=10, total_steps=1000, milestones=(3, 6), gamma=0.1)
    assert [round(lr(s, t), 6) for t in (0, 29, 30, 59, 60, 99)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    c = registry.get("lr_schedule", "constant")(base_lr=0.3, steps_per_epoch=10, total_steps=100, warmup_epochs=1)
    assert [round(lr(c, t), 6) for t in (0, 5, 10, 99)] == [0.0, 0.15, 0.3, 0.3]


def test_schedule_serialises(registry):
    s = registry.get("lr_schedule", "cosine")(base_lr=0.5, steps_per_epoch=10, total_steps=100)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert lr(clone, 73) == pytest.approx(lr(s, 73))


def numpy_nvlamb(w, grads_seq, lr, wd, b1=0.9, b2=0.999, eps=1e-6, max_norm=1.0, decay_mask=None):
    w = [x.copy() for x in w]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t, grads in enumerate(grads_seq, start=1):
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
        ratio = max_norm / max(norm, max_norm)
        grads = [g * ratio for g in grads]
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            update = (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
            if decay_mask[i]:
                update = update + wd * w[i]
            wn, un = np.linalg.norm(w[i]), np.linalg.norm(update)
            trust = wn / un if wn > 0 and un > 0 else 1.0
            w[i] = w[i] - lr * trust * update
    return w


def test_nvlamb_matches_numpy_reference(registry):
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype("float32"), np.zeros(4, "float32")]  # a zero bias: trust ratio 1
    variables = [keras.Variable(x) for x in init]
    opt = registry.get("optimizer", "nvlamb")(learning_rate=0.01, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_list=[variables[1]])
    grads_seq = [[rng.normal(size=x.shape).astype("float32") * s for x in init] for s in (5.0, 0.1, 3.0)]
    for grads in grads_seq:
        opt.apply([tf.constant(g) for g in grads], variables)
    expected = numpy_nvlamb(init, grads_seq, lr=0.01, wd=0.1, decay_mask=[True, False])
    for var, exp in zip(variables, expected):
        np.testing.assert_allclose(np.array(var.value), exp, rtol=2e-5, atol=1e-6)


def test_nvlamb_treats_non_finite_norm_as_one(registry):
    var = keras.Variable(np.ones((2,), "float32"))
    opt = registry.get("optimizer", "nvlamb")(learning_rate=0.1, weight_decay=0.0)
    opt.build([var])
    clipped = opt._clip_gradients([tf.constant([np.inf, 1.0])])
    assert np.array_equal(np.isinf(clipped[0].numpy()), [True, False])  # the ratio stayed 1: not rescaled to nan


@pytest.mark.parametrize("name,cls", [("rmsprop", keras.optimizers.RMSprop), ("sgd", keras.optimizers.SGD),
                                      ("adamw", keras.optimizers.AdamW)])
def test_keras_backed_optimizers(registry, name, cls):
    opt = registry.get("optimizer", name)(learning_rate=0.1)
    assert isinstance(opt, cls)
    if name == "rmsprop":  # the recipe's values
        assert (opt.rho, opt.momentum, opt.epsilon) == (0.9, 0.9, 1e-3)


def test_rmsprop_epsilon_inside_sqrt(registry):
    var = keras.Variable(np.zeros((1,), "float32"))
    opt = registry.get("optimizer", "rmsprop")(learning_rate=1.0, momentum=0.0)
    opt.apply([tf.constant([1e-2])], [var])
    ms = 0.1 * 1e-4
    assert float(var.value[0]) == pytest.approx(-1e-2 / math.sqrt(ms + 1e-3), rel=1e-5)


def test_ema_matches_numpy_reference():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, x)
    ema = ExponentialMovingAverage(model, decay=0.9)
    assert {v.path for v in ema._model_vars} >= {"batch_normalization/moving_mean", "batch_normalization/moving_variance"}
    ref = [np.array(v.value, np.float64) for v in ema._model_vars]
    rng = np.random.default_rng(1)
    for t in range(30):
        for v in ema._model_vars:
            v.assign(rng.normal(size=v.shape).astype("float32"))
        ema.update(tf.constant(t, tf.int64))
        d = min(0.9, (1 + t) / (10 + t))
        ref = [d * r + (1 - d) * np.array(v.value, np.float64) for r, v in zip(ref, ema._model_vars)]
    for avg, r in zip(ema.averages, ref):
        np.testing.assert_allclose(avg.numpy(), r, rtol=1e-5, atol=1e-6)
    current = [np.array(v.value) for v in ema._model_vars]
    with ema.swapped():
        for v, r in zip(ema._model_vars, ref):
            np.testing.assert_allclose(np.array(v.value), r, rtol=1e-5, atol=1e-6)
    for v, c in zip(ema._model_vars, current):
        np.testing.assert_array_equal(np.array(v.value), c)

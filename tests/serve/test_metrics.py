"""Evaluation metrics against a hand-computed example, sharding, and the percentile maths."""

import math

import numpy as np
import pytest

from effnet.metrics import EvalResult, Evaluator, percentile

# Pixel values of five constant 2x2 images (R, G, B) and their labels. The model below averages
# each channel and multiplies by W, so its logits are [r, g, b, r+g, b-g, b-r].
PIXELS = [(3, 1, 0), (0, 2, 5), (1, 1, 1), (4, 0, 2), (2, 6, 3)]
LABELS = [3, 2, 5, 1, 4]
W = [[1, 0, 0, 1, 0, -1],
     [0, 1, 0, 1, -1, 0],
     [0, 0, 1, 0, 1, 1]]


def linear_model():
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(6, use_bias=False, dtype="float32")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.kernel.assign(np.asarray(W, np.float32))
    return model


def dataset(batch_size):
    import tensorflow as tf

    images = np.stack([np.full((2, 2, 3), p, np.uint8) for p in PIXELS])
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.asarray(LABELS, np.int32)})
    return ds.batch(batch_size)


def test_loss_top1_top5_match_a_hand_computed_example():
    # logits by hand:       (3,1,0) -> [3, 1, 0, 4, -1, -3]  label 3: top-1 hit
    #                       (0,2,5) -> [0, 2, 5, 2, 3, 5]    label 2: tie with class 5 at 5; in_top_k counts ties as hits
    #                       (1,1,1) -> [1, 1, 1, 2, 0, 0]    label 5: rank 5 of 6 (tied with class 4): top-5 hit only
    #                       (4,0,2) -> [4, 0, 2, 4, 2, -2]   label 1: second-lowest of 6: top-5 hit only
    #                       (2,6,3) -> [2, 6, 3, 8, -3, 1]   label 4: the lowest, not in the top 5
    logits = [[3, 1, 0, 4, -1, -3], [0, 2, 5, 2, 3, 5], [1, 1, 1, 2, 0, 0], [4, 0, 2, 4, 2, -2], [2, 6, 3, 8, -3, 1]]
    losses = [math.log(sum(math.exp(v) for v in row)) - row[label] for row, label in zip(logits, LABELS)]
    result = Evaluator(linear_model())(dataset(batch_size=2))  # batches of 2, 2 and 1
    assert result.count == 5
    assert result.top1 == pytest.approx(2 / 5)
    assert result.top5 == pytest.approx(4 / 5)
    assert result.loss == pytest.approx(sum(losses) / 5, rel=1e-6)
    assert len(result.batch_seconds) == 3


def test_warm_up_traces_a_batch_polymorphic_step():
    evaluator = Evaluator(linear_model())
    evaluator.warm_up((2, 2, 3), [2, 1])
    traced = evaluator._step.experimental_get_tracing_count()
    result = evaluator(dataset(batch_size=2))  # full batches and a partial one: no new tracing
    assert evaluator._step.experimental_get_tracing_count() == traced
    assert result.top1 == pytest.approx(2 / 5)


def test_shards_count_every_example_once(tmp_path):
    """Two workers' shards of the eval split: their sums are exactly the whole split's."""
    from effnet.distribute import ShardInfo
    from effnet.plugins.data.shapes import demo_source
    from effnet.data import eval_dataset

    source = demo_source(cache_dir=str(tmp_path), image_size=32, num_classes=4, train_per_class=2, validation_per_class=5,
                         train_shards=1, validation_shards=3, seed=1, jpeg_quality=90)
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    evaluator = Evaluator(model)
    whole = evaluator(eval_dataset(source, image_size=32, batch_size=3))
    parts = [evaluator(eval_dataset(source, image_size=32, batch_size=3, shard=ShardInfo(2, i))) for i in range(2)]
    assert whole.count == 20 and sum(p.count for p in parts) == 20 and min(p.count for p in parts) > 0
    for name in ("top1", "top5", "loss"):
        summed = sum(getattr(p, name) * p.count for p in parts)
        assert summed == pytest.approx(getattr(whole, name) * whole.count, rel=1e-5)


def test_percentiles_interpolate_between_order_statistics():
    values = [7, 1, 10, 3, 2, 9, 4, 6, 8, 5]  # 1..10, shuffled
    # rank = q/100 * (n-1); p50 -> 4.5 -> between 5 and 6; p90 -> 8.1 -> 9 + 0.1; p99 -> 8.91 -> 9.91
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert percentile([42.0], 99) == 42.0
    assert math.isnan(percentile([], 50))
    # not a trimmed mean: one slow batch in 100 moves p99 only part of the way, and p50 not at all
    latencies = [10.0] * 99 + [1000.0]
    assert percentile(latencies, 50) == 10.0
    assert percentile(latencies, 99) == pytest.approx(10.0 + 0.01 * 990.0)


def test_eval_result_latencies_in_milliseconds():
    from effnet.evaluation import result_dict

    result = EvalResult(loss=0.5, top1=0.25, top5=1.0, count=40, seconds=2.0,
                        batch_seconds=[0.001 * k for k in (4, 1, 3, 2, 5)])
    report = result_dict(result)
    assert report["img_per_s"] == 20.0 and report["batches"] == 5
    assert report["latency_ms"] == pytest.approx({"p50": 3.0, "p90": 4.6, "p95": 4.8, "p99": 4.96, "mean": 3.0})

"""Per-class figures, confusions and calibration against a hand computation with a fixed model.

The model is tests/serve/test_metrics.py's: it averages each channel of a constant image and
multiplies by W, so its logits are known by hand (listed below).
"""

import json
import math

import numpy as np
import pytest

from effnet.metrics import Evaluator
from effnet.perclass import calibration_report, per_class_report, plotted_classes
from tests.serve.test_metrics import LABELS, dataset, linear_model

LOGITS = [[3, 1, 0, 4, -1, -3], [0, 2, 5, 2, 3, 5], [1, 1, 1, 2, 0, 0], [4, 0, 2, 4, 2, -2], [2, 6, 3, 8, -3, 1]]
# arg max (the first on a tie): 3, 2 (tie with 5), 3, 0 (tie with 3), 3 -> right, right, wrong, wrong, wrong
PREDICTED = [3, 2, 3, 0, 3]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_every_figure_matches_the_hand_computation():
    result = Evaluator(linear_model(), num_classes=6, keep_errors=2)(dataset(batch_size=2))
    expected = np.zeros((6, 6))
    for t, p in zip(LABELS, PREDICTED):
        expected[t, p] += 1
    np.testing.assert_array_equal(result.confusion, expected)

    report = per_class_report(result.confusion, [f"c{i}" for i in range(6)])
    by = {c["class"]: c for c in report["classes"]}
    # class 0: predicted once (wrongly), no example: precision 0, recall and F1 undefined
    assert (by[0]["precision"], by[0]["recall"], by[0]["f1"], by[0]["support"]) == (0.0, None, None, 0)
    # classes 1, 4, 5: one example each, never predicted: precision undefined, recall 0, F1 0
    for k in (1, 4, 5):
        assert (by[k]["precision"], by[k]["recall"], by[k]["f1"], by[k]["support"]) == (None, 0.0, 0.0, 1)
    assert (by[2]["precision"], by[2]["recall"], by[2]["f1"]) == (1.0, 1.0, 1.0)
    assert by[3]["precision"] == pytest.approx(1 / 3) and by[3]["recall"] == 1.0
    assert by[3]["f1"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # 0.5
    assert report["accuracy"] == pytest.approx(2 / 5)
    # averages over the classes where the figure is defined, each saying how many that is
    assert report["macro_precision"] == pytest.approx((0 + 1 + 1 / 3) / 3) and report["macro_precision_classes"] == 3
    assert report["macro_recall"] == pytest.approx((0 + 1 + 1 + 0 + 0) / 5) and report["macro_recall_classes"] == 5
    assert report["balanced_accuracy"] == pytest.approx(0.4)
    assert report["macro_f1"] == pytest.approx((0 + 1 + 0.5 + 0 + 0) / 5)
    assert report["weighted_recall"] == pytest.approx(2 / 5)  # weighted recall is accuracy
    assert report["weighted_precision"] == pytest.approx((1 + 1 / 3) / 2)  # classes 2 and 3 (1 example each)
    assert report["weighted_f1"] == pytest.approx((0 + 1 + 0.5 + 0 + 0) / 5)
    assert report["never_predicted"] == ["c1", "c4", "c5"]
    assert [(p["true"], p["predicted"], p["count"], p["share"]) for p in report["top_confusions"]] == [
        (1, 0, 1, 1.0), (4, 3, 1, 1.0), (5, 3, 1, 1.0)]
    text = json.dumps(report, allow_nan=False)  # no NaN anywhere: undefined is null
    assert '"precision": null' in text

    # calibration: confidence = the largest softmax probability; 15 equal-width bins
    confidences = [max(softmax(row)) for row in LOGITS]
    correct = [p == t for p, t in zip(PREDICTED, LABELS)]
    bins = {}
    for conf, ok in zip(confidences, correct):
        bins.setdefault(min(int(conf * 15), 14), []).append((conf, ok))
    ece = sum(len(v) / 5 * abs(sum(ok for _, ok in v) / len(v) - sum(c for c, _ in v) / len(v)) for v in bins.values())
    cal = calibration_report(result.calibration)
    assert cal["ece"] == pytest.approx(ece, rel=1e-5)
    assert cal["mean_confidence"] == pytest.approx(sum(confidences) / 5, rel=1e-6) and cal["accuracy"] == 0.4
    assert [b["count"] for b in cal["bins"]] == [len(bins.get(i, [])) for i in range(15)]
    assert all(b["accuracy"] is None for b in cal["bins"] if b["count"] == 0)
    json.dumps(cal, allow_nan=False)

    # the two most confident mistakes, with the probability the model gave the true class
    wrong = sorted(((confidences[i], i) for i in range(5) if not correct[i]), reverse=True)[:2]
    assert [(m.index, m.label, m.predicted) for m in result.errors] == [(i, LABELS[i], PREDICTED[i]) for _, i in wrong]
    for m, (conf, i) in zip(result.errors, wrong):
        assert m.confidence == pytest.approx(conf, rel=1e-6)
        assert m.label_probability == pytest.approx(softmax(LOGITS[i])[LABELS[i]], rel=1e-5)
        assert m.image.dtype == np.uint8 and m.image.shape == (2, 2, 3)


def test_a_class_without_examples_or_predictions_is_undefined_everywhere():
    report = per_class_report(np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]))
    last = report["classes"][2]
    assert (last["precision"], last["recall"], last["f1"], last["support"]) == (None, None, None, 0)
    assert report["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert report["never_predicted"] == []  # it has no example either
    empty = per_class_report(np.zeros((2, 2)))
    assert empty["accuracy"] is None and empty["balanced_accuracy"] is None and empty["macro_f1"] is None
    assert calibration_report(np.zeros((15, 3)))["ece"] is None


def test_the_png_shows_the_most_confused_block_of_many_classes():
    rng = np.random.default_rng(0)
    c = np.diag(rng.integers(5, 10, 1000)).astype(float)
    for t, p in [(10, 20), (20, 10), (500, 501), (999, 0)]:
        c[t, p] = 7
    # only classes in a confusion take a place: both sides of every pair, in label order
    assert plotted_classes(c, limit=30) == [0, 10, 20, 500, 501, 999]
    assert plotted_classes(c[:10, :10], limit=30) == list(range(10))
    for t in range(100):  # 100 confusions t -> t+1 with counts 100..1: the largest ones fill the block
        c[t, t + 1] = 100 - t
    keep = plotted_classes(c, limit=30)
    assert keep == list(range(30))  # pairs (0,1), (1,2), ... (28,29): the 29 largest
    assert plotted_classes(np.eye(1000), limit=30) == list(range(30))  # no mistake: the first classes

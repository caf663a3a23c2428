"""Imbalanced data: class counts, class weights (and their one-line errors), the balanced stream."""

import json

import numpy as np
import pytest

from effnet.data.balance import (balanced_weights, class_counts, imbalance, remedy_hint, repeat_factors,
                                 resolve_class_weights)
from effnet.errors import UserError
from tests import imbalanced
from tests.clitools import run_inprocess


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return imbalanced.build(tmp_path_factory.mktemp("imbalanced") / "photos",
                            train={"crimson": 40, "olive": 40, "amber": 4}, validation={"crimson": 3, "olive": 3, "amber": 3})


def test_balanced_weights_and_repeat_factors_by_hand():
    counts = [100, 100, 10, 0]
    # total / (non-empty classes * count): 210 / (3 * n)
    assert balanced_weights(counts) == pytest.approx([0.7, 0.7, 7.0, 0.0])
    assert repeat_factors(counts) == pytest.approx([1.0, 1.0, 10.0, 0.0])
    assert imbalance(counts) == {"largest": 0, "smallest": 2, "ratio": 10.0}
    assert imbalance([5, 0]) == {"largest": None, "smallest": None, "ratio": None}
    assert remedy_hint([30, 25, 12]) is None  # 2.5x: no hint
    hint = remedy_hint(counts, ["a", "b", "c", "d"])
    assert hint.startswith("imbalanced: a has 100 examples, c 10 (10.0x); train with --gin-param \"train.class_weights = "
                           "'balanced'\"") and "\n" not in hint


def test_class_weights_by_name_or_label_and_every_bad_input_in_one_line():
    names = ["cat", "dog", "emu"]
    assert resolve_class_weights({"emu": 4, 0: 0.5}, 3, names) == [0.5, 1.0, 4.0]
    assert resolve_class_weights("balanced", 3, names, counts=lambda: [10, 20, 30]) == pytest.approx([2, 1, 2 / 3])
    assert resolve_class_weights(None, 3, names) is None
    bad = [
        ({"emus": 2}, "train.class_weights names class 'emus', which the dataset does not have (did you mean 'emu'?); "
                      "its classes: cat, dog, emu"),
        ({"cat": -1}, "train.class_weights['cat'] = -1 must be a finite number >= 0"),
        ({"cat": float("nan")}, "train.class_weights['cat'] = nan must be a finite number >= 0"),
        ({"cat": "2"}, "train.class_weights['cat'] = '2' is not a number; give a weight >= 0 per class"),
        ({7: 1.0}, "train.class_weights names label 7, but labels go from 0 to 2"),
        ({"cat": 0, "dog": 0, "emu": 0}, "train.class_weights gives every class weight 0; nothing would be learned"),
        ("balance", "train.class_weights = 'balance' is not 'balanced', None or a {class: weight} dict"),
    ]
    for spec, message in bad:
        with pytest.raises(UserError) as err:
            resolve_class_weights(spec, 3, names, counts=lambda: [1, 1, 1])
        assert str(err.value) == message
    with pytest.raises(UserError, match="needs the training split's labels, and it has none"):
        resolve_class_weights("balanced", 3, names, counts=lambda: [0, 0, 0])
    with pytest.raises(UserError, match="the dataset has no labels"):
        resolve_class_weights({"cat": 1}, 0, [])


def test_a_bad_class_weight_stops_training_before_any_work(folder, tmp_path, capsys):
    gin = tmp_path / "t.gin"
    gin.write_text("include 'base/train.gin'\ntrain.model = 'efficientnet_v2_b0'\ntrain.dataset = 'folder'\n"
                   "folder.data_dir = %DATA_DIR\ntrain.image_size = 32\n")
    for param, message in (("train.class_weights = {'ambre': 3.0}", "names class 'ambre', which the dataset does not "
                                                                     "have (did you mean 'amber'?)"),
                           ("train.class_weights = {'amber': -3.0}", "train.class_weights['amber'] = -3.0 must be"),
                           ("train.class_weights = 'yes'", "train.class_weights = 'yes' is not 'balanced'")):
        result = run_inprocess(capsys, "train", "--gin", str(gin), "--data-dir", str(folder), "--model-dir",
                               str(tmp_path / "run"), "--gin-param", param)
        assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_class_counts_and_stats_report_the_balance(folder, capsys):
    from effnet.data import FolderSource

    assert class_counts(FolderSource(str(folder))) == [4, 40, 40]  # amber, crimson, olive
    result = run_inprocess(capsys, "data", "stats", str(folder))
    assert result.code == 0, result.err
    assert "  class balance: largest crimson 40, olive 40, amber 4; smallest amber 4, " in result.out
    assert "imbalanced: crimson has 40 examples, amber 4 (10.0x); train with" in result.out
    stats = json.loads(run_inprocess(capsys, "data", "stats", str(folder), "--json").out)
    assert stats["splits"]["train"]["per_class"] == [4, 40, 40] and stats["splits"]["train"]["imbalance_ratio"] == 10
    assert stats["splits"]["validation"]["imbalance_ratio"] == 1.0


def test_the_balanced_stream_is_even_reproducible_and_resumable(folder):
    from effnet.data import FolderSource, pipeline_options, train_dataset

    source = FolderSource(str(folder))

    def labels(balance, start=0, steps=24, seed=0, epoch=0):
        ds = train_dataset(source, image_size=8, batch_size=7, steps=steps, epoch=epoch, start_step=start, seed=seed,
                           options=pipeline_options(balance=balance, shuffle_buffer=64))
        return [np.argmax(b["label"].numpy(), axis=1) for b in ds]

    plain, even = np.concatenate(labels(False)), np.concatenate(labels(True))
    assert np.bincount(plain, minlength=3)[0] / len(plain) < 0.1  # amber is 4 of 84
    shares = np.bincount(even, minlength=3) / len(even)
    assert shares == pytest.approx([1 / 3] * 3, abs=0.08), shares
    again = labels(True)
    assert all(np.array_equal(a, b) for a, b in zip(again, labels(True)))  # the same seed: the same batches
    resumed = labels(True, start=10)
    assert all(np.array_equal(a, b) for a, b in zip(again[10:], resumed))  # start_step=10 continues exactly
    assert not all(np.array_equal(a, b) for a, b in zip(again, labels(True, epoch=1)))

"""Imbalanced data, end to end: one class 10x rarer in training (tests/imbalanced.py: 100 crimson,
100 olive, 10 amber noisy colour patches; 30 of each in validation), a quarter-size
EfficientNetV2-B0 at 32 px, 6 epochs, the same seed three times:

    run                                   amber recall   balanced accuracy   (measured here)
    unweighted                                 3.3%             64.4%
    train.class_weights = 'balanced'          60.0%             70.0%
    input_pipeline.balance = True             60.0%             71.1%

The test asserts that each remedy raises both figures over the unweighted run, as `effnet eval`
reports them (eval_report.json), and that the unweighted run's summary names amber as the worst class.
"""

import json

import pytest

from tests import imbalanced
from tests.clitools import run_inprocess

GIN = """
include 'base/train.gin'
train.model = 'efficientnet_v2_b0'
efficientnet.width = 0.25
efficientnet.depth = 0.25
efficientnet.dropout_rate = 0.0
efficientnet.drop_path_rate = 0.0
efficientnet.bn_momentum = 0.9
train.dataset = 'folder'
folder.data_dir = %DATA_DIR
input_pipeline.shuffle_buffer = 256
input_pipeline.area_range = (0.8, 1.0)
input_pipeline.eval_whole_frame = True
train.image_size = 32
train.eval_image_size = 32
train.batch_size = 16
train.epochs = 6
train.eval_every_epochs = 6
train.checkpoint_every_epochs = None
train.log_every_steps = 20
train.lr_init = 0.02
train.label_smoothing = 0.0
cosine.warmup_epochs = 0.5
train.ema_decay = None
train.deterministic = True
train.plot = False
loggers.names = ('dllogger',)
"""

VARIANTS = {"unweighted": (), "class_weights": ("train.class_weights = 'balanced'",),
            "balanced_sampling": ("input_pipeline.balance = True",)}


@pytest.mark.slow
def test_class_weights_and_balanced_sampling_raise_the_rare_class(tmp_path, capsys):
    photos = imbalanced.build(tmp_path / "photos")
    gin = tmp_path / "imbalanced.gin"
    gin.write_text(GIN)
    found = {}
    for name, params in VARIANTS.items():
        run = tmp_path / "runs" / name
        args = ["train", "--gin", str(gin), "--data-dir", str(photos), "--model-dir", str(run)]
        for p in params:
            args += ["--gin-param", p]
        result = run_inprocess(capsys, *args)
        assert result.code == 0, result.err
        result = run_inprocess(capsys, "eval", "--model-dir", str(run))
        assert result.code == 0, result.err
        report = json.loads((run / "eval_report.json").read_text())["raw"]["per_class"]
        amber = next(c for c in report["classes"] if c["name"] == "amber")
        found[name] = (amber["recall"], report["balanced_accuracy"], result.out)
    plain_recall, plain_balanced, plain_out = found["unweighted"]
    assert "lowest recall: amber" in plain_out
    for name in ("class_weights", "balanced_sampling"):
        recall, balanced, _ = found[name]
        assert recall > plain_recall + 0.2, {k: v[:2] for k, v in found.items()}
        assert balanced > plain_balanced, {k: v[:2] for k, v in found.items()}

"""A callback's stop under two Horovod processes: both ranks stop at the same step, after a checkpoint."""

from __future__ import annotations

import json
import re

import pytest

from effnet.checkpoint import latest_checkpoint
from tests.distributed.conftest import effnet_cmd, horovodrun_cmd, needs_horovod, run, tail
from tests.distributed.test_train_cli import SMALL

EARLY = """
train.backend = 'horovod'
train.epochs = 4
train.steps_per_epoch = 2
train.checkpoint_every_steps = None
train.callbacks = ['early_stopping']
early_stopping.metric = 'val_loss'
early_stopping.mode = 'min'
early_stopping.patience = 1
early_stopping.min_delta = 100.0
"""
STOPPED = re.compile(r"^\[(\d)\]<stderr>:effnet: .*; stopped after epoch (\d+) \(global step (\d+)\)$", re.M)


@needs_horovod
@pytest.mark.slow
def test_both_ranks_stop_at_the_same_step_and_resume_to_it(tmp_path):
    gin_path = tmp_path / "early.gin"
    gin_path.write_text("include 'base/train.gin'\n" + SMALL + EARLY)
    cmd = horovodrun_cmd(2, *effnet_cmd("train", "--gin", str(gin_path), "--model-dir", str(tmp_path / "run")))
    for attempt in ("first", "resumed"):
        proc = run(cmd, timeout=600)
        assert proc.returncode == 0, (attempt, tail(proc))
        stops = sorted(STOPPED.findall(proc.stdout + proc.stderr))
        assert stops == [("0", "2", "4"), ("1", "2", "4")], (attempt, tail(proc))  # every rank, the same step
        assert latest_checkpoint(tmp_path / "run").step == 4
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        assert report["final"]["global_step"] == 4 and report["stopped"]["epoch"] == 2

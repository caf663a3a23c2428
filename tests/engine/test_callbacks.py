"""Loop callbacks: early stopping ends a run with a checkpoint and resumes to the same stop, keep_best
chooses the kept checkpoint, and a callback that raises is one line naming it, after a checkpoint."""

import json
import sys

import pytest

from effnet.checkpoint import latest_checkpoint, list_checkpoints
from tests.clitools import run_inprocess
from tests.engine import runs

# Four epochs; the first evaluation sets the best and no later one can beat it by 100, so with a
# patience of 1 the run stops after epoch 2 of 4.
EARLY = """
train.epochs = 4
train.callbacks = ['early_stopping']
early_stopping.metric = 'val_loss'
early_stopping.mode = 'min'
early_stopping.patience = 1
early_stopping.min_delta = 100.0
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_early_stopping_stops_with_a_checkpoint_and_resumes_to_the_same_stop(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, EARLY)
    first = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert first.code == 0, first.err
    assert "callback 'early_stopping': val_loss did not improve" in first.err
    latest = latest_checkpoint(tmp_path / "run")
    assert latest.meta["epoch"] == 2  # before the last (4th) epoch, with a checkpoint there
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["stopped"]["epoch"] == 2 and report["final"]["global_step"] == latest.step
    saved = [c.step for c in list_checkpoints(tmp_path / "run")]

    again = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert again.code == 0, again.err
    assert "callback 'early_stopping': val_loss did not improve" in again.err
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == saved  # nothing trained, nothing new
    assert json.loads((tmp_path / "run" / "report.json").read_text())["final"]["global_step"] == latest.step


RAISES = '''
import effnet
from effnet.callbacks import Callback

class Boom(Callback):
    def on_epoch_end(self, run, epoch, metrics):
        raise ValueError("boom at epoch %d" % epoch)

@effnet.hookimpl
def effnet_callbacks():
    return {"boom": Boom}
'''


@pytest.fixture
def boom_plugin(tmp_path, monkeypatch):
    from effnet.registry import reset_registry

    (tmp_path / "boom_callbacks.py").write_text(RAISES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EFFNET_PLUGINS", "boom_callbacks")
    reset_registry()
    yield
    sys.modules.pop("boom_callbacks", None)
    reset_registry()


def test_a_callback_that_raises_is_one_line_naming_it_after_a_checkpoint(tmp_path, capsys, boom_plugin):
    gin_path = runs.write_gin(tmp_path, "train.callbacks = ['boom']\ntrain.checkpoint_every_epochs = None\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == (
        "error: callback 'boom' (boom_callbacks ($EFFNET_PLUGINS)) failed in on_epoch_end: ValueError: boom at epoch 1; "
        "fix the callback or remove it from train.callbacks")
    assert latest_checkpoint(tmp_path / "run").meta["epoch"] == 1  # not periodic, yet saved before the error


def test_keep_best_keeps_the_chosen_metric(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "train.epochs = 3\ntrain.keep_checkpoints = 1\ntrain.callbacks = ['keep_best']\n"
                                        "keep_best.metric = 'val_loss'\nkeep_best.mode = 'min'\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert result.code == 0, result.err
    kept = list_checkpoints(tmp_path / "run")
    best = min(kept, key=lambda c: c.meta["metrics"]["val_loss"])
    recorded = json.loads((tmp_path / "run" / "best_checkpoint.json").read_text())
    assert recorded["metric"] == "val_loss" and recorded["path"] == str(best.path)
    losses = [h["eval"]["val_loss"] for h in json.loads((kept[-1].path / "meta.json").read_text())["history"]
              if "eval" in h]
    assert best.meta["metrics"]["val_loss"] == min(losses)  # the best of all evaluations survived retention


def test_unknown_callback_and_bad_knobs_are_one_line(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "train.callbacks = ['early_stoping']\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert result.code == 2 and "unknown callback 'early_stoping' (did you mean 'early_stopping'?)" in result.err
    gin_path = runs.write_gin(tmp_path, "train.callbacks = ['early_stopping']\nearly_stopping.mode = 'up'\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run2"))
    assert result.code == 2 and "early_stopping.mode='up' is not one of max, min" in result.err

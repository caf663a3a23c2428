"""Built-in loop callbacks: ``early_stopping`` and ``keep_best`` (switch on with ``train.callbacks``).

``early_stopping`` ends a run whose chosen validation metric stopped improving::

    train.callbacks = ['early_stopping']
    early_stopping.metric = 'val_loss'    # any metric of the evaluation: val_top1, val_ema_top1 ...
    early_stopping.mode = 'min'           # 'max' (default) or 'min'
    early_stopping.patience = 3           # evaluations without improvement before stopping
    early_stopping.min_delta = 0.001      # an improvement must beat the best by more than this

The run ends like any clean stop (a checkpoint, then report.json with ``stopped``); its decision
is rebuilt from the run's history on resume, so rerunning the same command stops at the same point.

``keep_best`` chooses which checkpoint retention keeps besides the last ``train.keep_checkpoints``
(default: validation top-1, of the EMA weights when there are any), and writes
``<model_dir>/best_checkpoint.json`` (path, step, metric, value) whenever the best changes::

    train.callbacks = ['keep_best']
    keep_best.metric = 'val_loss'
    keep_best.mode = 'min'
"""

from __future__ import annotations

import math

import gin

import effnet
from effnet.callbacks import Callback
from effnet.errors import UserError, did_you_mean
from effnet.files import write_json_atomic
from effnet.validate import check_number

MODES = ("max", "min")
BEST_FILE = "best_checkpoint.json"


def _check_mode(name: str, mode) -> bool:
    """``higher_is_better`` for ``mode``."""
    if mode not in MODES:
        raise UserError(f"{name}.mode={mode!r} is not one of {', '.join(MODES)}")
    return mode == "max"


def _value(name: str, metric: str, metrics: dict) -> float:
    if metric not in metrics:
        raise UserError(f"{name}.metric={metric!r} is not a metric of this run's evaluation"
                        f"{did_you_mean(metric, list(metrics))}; it reports {', '.join(sorted(metrics))}")
    return float(metrics[metric])


@gin.configurable("early_stopping")
class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, metric: str = "val_top1", mode: str = "max", patience: int = 3, min_delta: float = 0.0):
        self.metric = metric
        self.higher = _check_mode("early_stopping", mode)
        check_number("early_stopping.patience", patience, 1, 10**6, integer=True)
        check_number("early_stopping.min_delta", min_delta, 0, None)
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = -math.inf if self.higher else math.inf
        self.best_epoch = 0
        self.waited = 0

    def _see(self, epoch: int, metrics: dict) -> None:
        value = _value("early_stopping", self.metric, metrics)
        better = value > self.best + self.min_delta if self.higher else value < self.best - self.min_delta
        if better:
            self.best, self.best_epoch, self.waited = value, epoch, 0
        else:
            self.waited += 1

    def _decide(self, run) -> None:
        if self.waited >= self.patience:
            run.request_stop(f"{self.metric} did not improve on {self.best:.6g} (epoch {self.best_epoch}) for "
                             f"{self.waited} evaluations (early_stopping.patience={self.patience})")

    def on_train_begin(self, run) -> None:
        """A resumed run: rebuild the state from the evaluations in its history (stop again if due)."""
        for entry in run.history:
            if "eval" in entry:
                self._see(int(entry["epoch"]), entry["eval"])
        self._decide(run)

    def on_evaluation_end(self, run, epoch: int, metrics: dict) -> None:
        self._see(epoch, metrics)
        self._decide(run)


@gin.configurable("keep_best")
class KeepBest(Callback):
    """Retention keeps the best checkpoint by ``metric`` (``mode`` 'max' or 'min'); best_checkpoint.json names it."""

    def __init__(self, metric: str = "val_top1", mode: str = "max"):
        self.metric = metric
        self.keep_best = (metric, _check_mode("keep_best", mode))
        self.best: float | None = None

    def on_train_begin(self, run) -> None:
        for entry in run.history:  # a resumed run: the best so far
            if "eval" in entry and self.metric in entry["eval"]:
                self._better(float(entry["eval"][self.metric]))

    def _better(self, value: float) -> bool:
        if self.best is None or (value > self.best if self.keep_best[1] else value < self.best):
            self.best = value
            return True
        return False

    def on_checkpoint_saved(self, run, path, step: int) -> None:
        metrics = run.last_eval
        if not metrics:
            return
        value = _value("keep_best", self.metric, metrics)
        if self._better(value) or not (run.model_dir / BEST_FILE).exists():
            write_json_atomic(run.model_dir / BEST_FILE, {"path": str(path), "step": int(step), "metric": self.metric,
                                                          "value": value, "mode": "max" if self.keep_best[1] else "min"})


@effnet.hookimpl
def effnet_callbacks():
    return {"early_stopping": EarlyStopping, "keep_best": KeepBest}

"""Built-in metric sinks: ``dllogger`` (JSON lines), ``stdout`` (lines plus a progress bar) and
``tensorboard`` (scalars). The engine only builds them on the writing process (rank 0).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from pathlib import Path

import gin

import effnet
from effnet.loggers import Logger, to_number


def _dllogger_step(step):
    return step if isinstance(step, str) else list(step)


# --------------------------------------------------------------------------------------------------
# The seed's metric names.
#
# NVIDIA's EfficientNet TF2 scripts (DeepLearningExamples, TensorFlow2/Classification/ConvNets) log
# these keys; their README lists the evaluation ones, and their main.py declares the units with
# DLLogger.metadata: throughput in samples/s, latency in ms, loss and accuracy without a unit.
# Their accuracy is the Keras metric's value, a fraction in [0, 1] (not percent: the README's
# tables print it as a percentage); ours is the same fraction. Their avg_time_per_exp_eval is
# 1000 / avg_exp_per_second_eval, i.e. ms per image; their latency_*pct values are per batch in
# ms, as ours. (The seed computes latency_*pct as the mean of the fastest 90/95/99% of batches;
# ours are true percentiles, see docs/differences.md.) The training throughput keys appear in
# the final record: avg_exp_per_second_training is the mean of the logged training windows after
# the first one (which holds tracing and compilation).
SEED_UNITS = {
    "avg_exp_per_second_training": "samples/s", "avg_exp_per_second_training_per_GPU": "samples/s",
    "avg_exp_per_second_eval": "samples/s", "avg_exp_per_second_eval_per_GPU": "samples/s",
    "avg_time_per_exp_eval": "ms", "latency_90pct": "ms", "latency_95pct": "ms", "latency_99pct": "ms",
    "eval_loss": None, "eval_accuracy_top_1": None, "eval_accuracy_top_5": None,
    "training_loss": None, "training_accuracy_top_1": None, "training_accuracy_top_5": None,
}


def _same(value, processes):
    return value


def _per_process(value, processes):
    return value / max(1, processes)


def _ms_per_example(value, processes):
    return 1000.0 / value if value else math.nan


_EVAL = ("eval", "final")  # evaluation during training (and its final record), `effnet eval`
_INFER = ("eval",)
_TRAIN = ("final", "training_benchmark")
#: THE translation table: (record kinds, our key, seed key, conversion(value, processes)).
#: Only the dllogger file carries the seed keys, next to ours; stdout and report.json keep ours.
SEED_METRICS = (
    (_EVAL, "val_loss", "eval_loss", _same),
    (_EVAL, "val_top1", "eval_accuracy_top_1", _same),
    (_EVAL, "val_top5", "eval_accuracy_top_5", _same),
    (_EVAL, "eval_loss", "eval_loss", _same),
    (_EVAL, "eval_top1", "eval_accuracy_top_1", _same),
    (_EVAL, "eval_top5", "eval_accuracy_top_5", _same),
    (_INFER, "eval_img_per_s", "avg_exp_per_second_eval", _same),
    (_INFER, "eval_img_per_s", "avg_exp_per_second_eval_per_GPU", _per_process),
    (_INFER, "eval_img_per_s", "avg_time_per_exp_eval", _ms_per_example),
    (_INFER, "eval_latency_p90_ms", "latency_90pct", _same),
    (_INFER, "eval_latency_p95_ms", "latency_95pct", _same),
    (_INFER, "eval_latency_p99_ms", "latency_99pct", _same),
    (("inference_benchmark",), "infer_img_per_s", "avg_exp_per_second_eval", _same),
    (("inference_benchmark",), "infer_img_per_s", "avg_exp_per_second_eval_per_GPU", _per_process),
    (("inference_benchmark",), "infer_img_per_s", "avg_time_per_exp_eval", _ms_per_example),
    (("inference_benchmark",), "infer_latency_p90_ms", "latency_90pct", _same),
    (("inference_benchmark",), "infer_latency_p95_ms", "latency_95pct", _same),
    (("inference_benchmark",), "infer_latency_p99_ms", "latency_99pct", _same),
    (("final",), "train_loss", "training_loss", _same),
    (("final",), "train_top1", "training_accuracy_top_1", _same),
    (("final",), "train_top5", "training_accuracy_top_5", _same),
    (_TRAIN, "train_img_per_s", "avg_exp_per_second_training", _same),
    (_TRAIN, "train_img_per_s", "avg_exp_per_second_training_per_GPU", _per_process),
)


class SeedNames:
    """Adds the seed's keys to a record (see :data:`SEED_METRICS`); keeps what it needs across records."""

    def __init__(self):
        self.processes = 1
        self.train_rates: list[float] = []

    def params(self, params) -> None:
        self.processes = int(params.get("processes") or 1)

    def __call__(self, metrics: dict, kind: str) -> dict:
        if kind == "train" and isinstance(metrics.get("img_per_s"), (int, float)):
            self.train_rates.append(float(metrics["img_per_s"]))
        source = dict(metrics)
        if kind == "final" and self.train_rates and "train_img_per_s" not in source:
            rates = self.train_rates[1:] or self.train_rates
            source["train_img_per_s"] = sum(rates) / len(rates)
        added = {}
        for kinds, ours, seed, convert in SEED_METRICS:
            value = source.get(ours)
            if kind in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
                added[seed] = convert(float(value), self.processes)
        return {**source, **added} if added else metrics


class DLLoggerJSON(Logger):
    """Writes NVIDIA dllogger's JSON-lines format: every line is ``DLLL {json}``.

    When the real ``dllogger`` package is importable it does the writing; otherwise this class
    writes the same format itself (``dllogger`` is not on PyPI). With ``seed_names`` every record
    also carries the seed's metric names (:data:`SEED_METRICS`), so parsers written for NVIDIA's
    scripts read our logs unchanged.
    """

    def __init__(self, path: str | os.PathLike, append: bool = True, seed_names: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        self._seed = SeedNames() if seed_names else None
        try:
            import dllogger  # type: ignore[import-not-found]
        except ImportError:
            dllogger = None
        self._dll = dllogger
        if dllogger is not None:
            dllogger.init(backends=[dllogger.JSONStreamBackend(dllogger.Verbosity.VERBOSE, str(self.path), append=append)])
            self._file = None
        else:
            self._file = open(self.path, "a" if append else "w", buffering=1)

    def _write(self, record: dict) -> None:
        now = time.time()
        line = {
            "timestamp": str(now),
            "datetime": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(),
            "elapsedtime": str(now - self.start),
            **record,
        }
        self._file.write("DLLL " + json.dumps(line, default=to_number) + "\n")

    def log_params(self, params):
        data = {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in params.items()}
        if self._dll is not None:
            self._dll.log(step="PARAMETER", data=data)
        else:
            self._write({"type": "LOG", "step": "PARAMETER", "data": data})
        if self._seed is not None:
            self._seed.params(params)

    def log_metadata(self, metric, metadata):
        if self._dll is not None:
            self._dll.metadata(metric, dict(metadata))
        else:
            self._write({"type": "METADATA", "metric": metric, "metadata": dict(metadata)})

    def log_metrics(self, step, metrics, kind="train"):
        data = {k: to_number(v) for k, v in metrics.items()}
        if self._seed is not None:
            data = self._seed(data, kind)
        if self._dll is not None:
            self._dll.log(step=tuple(step) if not isinstance(step, str) else step, data=data)
        else:
            self._write({"type": "LOG", "step": _dllogger_step(step), "data": data})

    def flush(self):
        if self._dll is not None:
            self._dll.flush()
        elif self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self):
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


@gin.configurable("dllogger")
def dllogger_sink(model_dir=None, filename: str = "log.json", seed_names: bool = True):
    """JSON lines in ``model_dir/filename``; ``seed_names`` adds NVIDIA's metric names to every record."""
    if model_dir is None:
        return Logger()
    return DLLoggerJSON(Path(model_dir) / filename, seed_names=seed_names)


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def _fmt_step(step) -> str:
    if isinstance(step, str):
        return step
    names = ("epoch", "step", "substep")
    return " ".join(f"{n} {s}" for n, s in zip(names, step)) or "final"


class StdoutLogger(Logger):
    """Human-readable lines; a live progress bar when the stream is a terminal."""

    def __init__(self, stream=None, bar: bool | None = None, width: int = 30):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.width = width
        self._last_draw = 0.0
        self._drawn = False

    def _clear_bar(self):
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False

    def log_params(self, params):
        pass  # parameters go to the dllogger file and the operative config

    def log_metrics(self, step, metrics, kind="train"):
        self._clear_bar()
        parts = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        self.stream.write(f"[{kind}] {_fmt_step(step)}  {parts}\n")
        self.stream.flush()

    def progress(self, done, total, metrics, desc=""):
        if not self.bar:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        frac = done / total if total else 1.0
        filled = int(round(self.width * frac))
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in list(metrics.items())[:4])
        self.stream.write(f"\r\033[K{desc} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}  {shown}")
        self.stream.flush()
        self._drawn = True
        if done >= total:
            self._clear_bar()

    def flush(self):
        self.stream.flush()

    def close(self):
        self._clear_bar()
        self.flush()


@gin.configurable("stdout")
def stdout_sink(model_dir=None, progress_bar: bool | None = None):
    return StdoutLogger(bar=progress_bar)


class TensorBoardLogger(Logger):
    """Scalars under ``<model_dir>/tensorboard/<kind>``; step is the global optimizer step."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        self._writers = {}

    def _writer(self, kind):
        import tensorflow as tf

        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(str(self.logdir / kind))
        return self._writers[kind]

    def log_metrics(self, step, metrics, kind="train"):
        import tensorflow as tf

        global_step = metrics.get("global_step")
        if global_step is None:
            global_step = step[-1] if isinstance(step, tuple) and step else 0
        with self._writer(kind).as_default():
            for name, value in metrics.items():
                value = to_number(value)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    tf.summary.scalar(name, value, step=int(global_step))

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


@gin.configurable("tensorboard")
def tensorboard_sink(model_dir=None, subdir: str = "tensorboard"):
    if model_dir is None:
        return Logger()
    return TensorBoardLogger(Path(model_dir) / subdir)


@effnet.hookimpl
def effnet_loggers():
    return {"dllogger": dllogger_sink, "stdout": stdout_sink, "tensorboard": tensorboard_sink}


__all__ = ["DLLoggerJSON", "SEED_METRICS", "SEED_UNITS", "SeedNames", "StdoutLogger", "TensorBoardLogger"]

"""Metric sinks: the Logger interface and the fan-out the engine writes to.

Logger plugins (``effnet_loggers``) implement :class:`Logger`. The engine owns one
:class:`MetricLogger` per run; on every process but the writer (rank 0) it holds no loggers, so
plugins never have to think about ranks.

Steps follow dllogger's convention: a tuple such as ``(epoch, step)`` while training, ``()`` for
the final summary, and the string ``"PARAMETER"`` for hyper-parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from effnet.settings import LoggerConfig

Step = tuple[int, ...] | str


class Logger:
    """Base class for metric sinks; every method is optional."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Hyper-parameters, once per run."""

    def log_metadata(self, metric: str, metadata: Mapping[str, Any]) -> None:
        """Unit and format of a metric (dllogger's METADATA lines)."""

    def log_metrics(self, step: Step, metrics: Mapping[str, float], kind: str = "train") -> None:
        """Scalars at a step. ``kind`` is ``train``, ``eval`` or ``final``."""

    def progress(self, done: int, total: int, metrics: Mapping[str, float], desc: str = "") -> None:
        """Called on every step of a long loop; a progress bar may draw it."""

    def flush(self) -> None:
        """Make everything logged so far durable."""

    def close(self) -> None:
        """End of run."""


def to_number(value: Any) -> Any:
    """Turn numpy / tensor scalars into plain Python numbers (JSON and TensorBoard want them)."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [to_number(v) for v in value]
    return value


class MetricLogger(Logger):
    """Fans every call out to a list of loggers (empty on processes that do not write)."""

    def __init__(self, loggers: Sequence[Logger] = ()):
        self.loggers = list(loggers)

    def log_params(self, params):
        params = {k: to_number(v) for k, v in params.items()}
        for logger in self.loggers:
            logger.log_params(params)

    def log_metadata(self, metric, metadata):
        for logger in self.loggers:
            logger.log_metadata(metric, metadata)

    def log_metrics(self, step, metrics, kind="train"):
        metrics = {k: to_number(v) for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(step, metrics, kind)

    def progress(self, done, total, metrics, desc=""):
        for logger in self.loggers:
            logger.progress(done, total, metrics, desc)

    def flush(self):
        for logger in self.loggers:
            logger.flush()

    def close(self):
        for logger in self.loggers:
            logger.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_benchmark(result: Mapping[str, Any], path) -> None:
    """Append one ``effnet benchmark`` result to the dllogger file ``path``: its settings as the
    parameters, then img/s and latency as ``train_*`` / ``infer_*`` with record kind
    ``training_benchmark`` / ``inference_benchmark`` (the seed's mode names)."""
    from pathlib import Path

    from effnet import registry

    path = Path(path)
    mode = "train" if result["mode"] == "train" else "infer"
    params = {k: v for k, v in result.items() if not isinstance(v, (dict, list)) and k not in ("img_per_s", "seconds")}
    metrics = {f"{mode}_img_per_s": result["img_per_s"],
               **{f"{mode}_latency_{q}_ms": v for q, v in result["latency_ms"].items()}}
    with MetricLogger([registry.get("logger", "dllogger")(model_dir=path.parent, filename=path.name)]) as log:
        log.log_params({"processes": 1, **params})
        log.log_metrics((), metrics, kind="training_benchmark" if mode == "train" else "inference_benchmark")


def configured_names() -> list[str]:
    """The metric sinks bound to ``loggers.names`` (gin/base/loggers.gin binds the built-in ones)."""
    return list(LoggerConfig().names)


def make_loggers(model_dir=None, is_writer: bool = True, names: Iterable[str] | None = None) -> MetricLogger:
    """Build the run's loggers by registered name (only on the writing process); ``names`` default: gin's."""
    from effnet import registry

    if not is_writer:
        return MetricLogger([])
    names = configured_names() if names is None else list(names)
    return MetricLogger([registry.get("logger", name)(model_dir=model_dir) for name in names])

"""Counting and timing predictions: top-k hits, softmax, latency percentiles, and the Evaluator.

Numerators and denominators are summed over local batches, then across processes with
``backend.reduce_sum``, and divided at the end, so every example counts once however the data was
split. Per-batch wall times are kept for throughput and true latency percentiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from effnet.distribute import Backend
from effnet.faults import point
from effnet.models import InferenceFunction

#: The latency percentiles every report gives (true percentiles, not trimmed means).
QUANTILES = (50, 90, 95, 99)


def topk_correct(logits, labels, k: int):
    """Number of rows whose integer label is among the ``k`` largest logits."""
    k = min(k, int(logits.shape[-1]))
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(tf.cast(labels, tf.int32), tf.cast(logits, tf.float32), k), tf.float32))


def probabilities(logits):
    """Class probabilities of logits, computed in float32 whatever the model's compute dtype."""
    return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics (numpy's default)."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(ms) -> dict[str, float]:
    """``{'p50': .., 'p90': .., 'p95': .., 'p99': .., 'mean': .., 'min': .., 'max': ..}`` of times in ms."""
    ms = list(ms)
    return {**{f"p{q}": percentile(ms, q) for q in QUANTILES},
            "mean": float(np.mean(ms)) if ms else float("nan"),
            "min": float(min(ms)) if ms else float("nan"), "max": float(max(ms)) if ms else float("nan")}


class EvaluationStopped(Exception):
    """An evaluation left early because ``stop()`` said so (a SIGTERM/SIGINT during training)."""

    def __init__(self, batches: int):
        super().__init__(f"evaluation stopped after {batches} batches")
        self.batches = batches


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    count: int
    seconds: float
    batch_seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count,
                "img_per_s": self.images_per_second}


class Evaluator:
    """Compiles the eval step once per model and reuses it across evaluations.

    ``freeze=True`` (``effnet eval``) runs the forward pass with the weights frozen into the graph
    (:class:`effnet.models.InferenceFunction`): faster, but it holds the weights of the time it was
    traced, so call :meth:`refresh` after loading other weights. Evaluation during training keeps
    ``freeze=False`` (live weights, EMA swaps).
    """

    def __init__(self, model, backend: Backend | None = None, jit_compile: bool = False, freeze: bool = False):
        self.model = model
        self.backend = backend or Backend()
        self.jit_compile = jit_compile
        self.freeze = freeze
        self.refresh()

    def refresh(self) -> None:
        """(Re)build the step; with ``freeze`` the next call freezes the weights the model holds then."""
        model = self.model
        forward = InferenceFunction(model, freeze=True) if self.freeze else (lambda x: model(x, training=False))

        def step(images, labels):
            logits = tf.cast(forward(images), tf.float32)
            labels = tf.cast(labels, tf.int32)
            loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            return tf.stack([
                tf.reduce_sum(loss),
                topk_correct(logits, labels, 1),
                topk_correct(logits, labels, 5),
                tf.cast(tf.shape(labels)[0], tf.float32),
            ])

        self._step = tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True)

    def warm_up(self, image_shape, batch_sizes, dtype=tf.uint8) -> None:
        """Trace (and compile) the step for these batch sizes before anything is timed.

        Two different sizes make ``reduce_retracing`` trace a batch-polymorphic step, so a
        partial last batch does not trace again inside the timed loop either.
        """
        for n in dict.fromkeys(int(b) for b in batch_sizes if int(b) > 0):
            self._step(tf.zeros([n, *image_shape], dtype), tf.zeros([n], tf.int32)).numpy()

    def __call__(self, dataset, progress=None, stop=None) -> EvalResult:
        """Evaluate every batch of ``dataset``; ``stop()``, asked after each batch, may end it early
        (raising :class:`EvaluationStopped`)."""
        sums = np.zeros(4, np.float64)
        batch_seconds = []
        start = time.perf_counter()
        total = None
        cardinality = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
        if cardinality > 0:
            total = cardinality
        for i, batch in enumerate(dataset):
            t0 = time.perf_counter()
            out = self._step(batch["image"], batch["label"]).numpy()  # .numpy() waits for the device
            batch_seconds.append(time.perf_counter() - t0)
            sums += out
            if progress is not None:
                progress(i + 1, total or i + 1, {"top1": sums[1] / max(sums[3], 1)})
            point("eval.batch")
            if stop is not None and stop():
                raise EvaluationStopped(i + 1)
        seconds = time.perf_counter() - start
        sums = np.asarray(self.backend.reduce_sum(tf.constant(sums)), np.float64)
        count = max(sums[3], 1.0)
        return EvalResult(loss=sums[0] / count, top1=sums[1] / count, top5=sums[2] / count, count=int(sums[3]),
                          seconds=seconds, batch_seconds=batch_seconds)


__all__ = ["EvalResult", "EvaluationStopped", "Evaluator", "QUANTILES", "latency_summary", "percentile", "probabilities", "topk_correct"]

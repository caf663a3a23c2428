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
from effnet.perclass import CALIBRATION_BINS

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
    #: ``confusion[true, predicted]`` summed over every process (with ``Evaluator(num_classes=...)``)
    confusion: np.ndarray | None = None
    #: per confidence bin: examples, sum of confidences, correct (effnet.perclass), summed over processes
    calibration: np.ndarray | None = None
    #: this process's most confident mistakes (with ``Evaluator(keep_errors=N)``), most confident first
    errors: list["Mistake"] | None = None

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count,
                "img_per_s": self.images_per_second}


@dataclass
class Mistake:
    """One wrongly classified example as the model saw it (the eval-preprocessed image)."""

    confidence: float   # probability of the predicted class
    index: int          # position in this process's pass
    label: int
    predicted: int
    label_probability: float
    image: np.ndarray   # uint8 HxWx3


def _keep_most_confident(kept: list, candidates, limit: int) -> list:
    merged = sorted([*kept, *candidates], key=lambda m: (-m.confidence, m.index))
    return merged[:limit]


def gather_mistakes(backend: Backend, mistakes: list[Mistake], limit: int, image_shape) -> list[Mistake]:
    """Every process's most confident mistakes merged into the ``limit`` most confident overall.

    Uses only the backend's sum: each process fills its own row of zero arrays, the sum gathers
    them. One process: the list as it is. ``index`` becomes ``rank * 10**9 + index`` beyond rank 0.
    """
    if backend.size <= 1:
        return list(mistakes)
    rank, size = backend.rank, backend.size
    fields = np.zeros((size, limit, 5), np.float64)  # present, confidence, label, predicted, label_probability
    images = np.zeros((size, limit, *image_shape), np.float32)
    for j, m in enumerate(mistakes[:limit]):
        fields[rank, j] = (1.0, m.confidence, m.label, m.predicted, m.label_probability)
        images[rank, j] = m.image
    fields = np.asarray(backend.reduce_sum(tf.constant(fields)), np.float64)
    images = np.asarray(backend.reduce_sum(tf.constant(images)), np.float32)
    merged = [Mistake(confidence=float(f[1]), index=r * 10**9 + j, label=int(round(f[2])), predicted=int(round(f[3])),
                      label_probability=float(f[4]), image=np.clip(np.round(images[r, j]), 0, 255).astype(np.uint8))
              for r in range(size) for j, f in enumerate(fields[r]) if f[0] > 0.5]
    return _keep_most_confident([], merged, limit)


class Evaluator:
    """Compiles the eval step once per model and reuses it across evaluations.

    ``freeze=True`` (``effnet eval``) runs the forward pass with the weights frozen into the graph
    (:class:`effnet.models.InferenceFunction`): faster, but it holds the weights of the time it was
    traced, so call :meth:`refresh` after loading other weights. Evaluation during training keeps
    ``freeze=False`` (live weights, EMA swaps).


    ``num_classes`` also counts the confusion matrix and the calibration bins (``effnet eval``);
    ``keep_errors=N`` keeps this process's N most confident mistakes with their images.
    """

    def __init__(self, model, backend: Backend | None = None, jit_compile: bool = False, freeze: bool = False,
                 num_classes: int | None = None, keep_errors: int = 0, calibration_bins: int = CALIBRATION_BINS):
        self.model = model
        self.backend = backend or Backend()
        self.jit_compile = jit_compile
        self.freeze = freeze
        self.num_classes = int(num_classes) if num_classes else None
        self.keep_errors = int(keep_errors)
        self.calibration_bins = int(calibration_bins)
        if self.keep_errors and not self.num_classes:
            raise ValueError("keep_errors needs num_classes")
        self.refresh()

    def refresh(self) -> None:
        """(Re)build the step; with ``freeze`` the next call freezes the weights the model holds then."""
        model = self.model
        forward = InferenceFunction(model, freeze=True) if self.freeze else (lambda x: model(x, training=False))

        num_classes, bins = self.num_classes, self.calibration_bins

        def step(images, labels):
            logits = tf.cast(forward(images), tf.float32)
            labels = tf.cast(labels, tf.int32)
            loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            sums = tf.stack([
                tf.reduce_sum(loss),
                topk_correct(logits, labels, 1),
                topk_correct(logits, labels, 5),
                tf.cast(tf.shape(labels)[0], tf.float32),
            ])
            if not num_classes:
                return sums
            probs = probabilities(logits)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # the first on a tie
            confidence = tf.reduce_max(probs, axis=-1)
            correct = tf.cast(tf.equal(predicted, labels), tf.float32)
            confusion = tf.math.confusion_matrix(labels, predicted, num_classes=num_classes, dtype=tf.float32)
            which = tf.minimum(tf.cast(tf.floor(confidence * bins), tf.int32), bins - 1)
            per_bin = tf.math.unsorted_segment_sum(tf.stack([tf.ones_like(confidence), confidence, correct], axis=1),
                                                   which, bins)
            label_probability = tf.gather(probs, labels, batch_dims=1)
            return sums, confusion, per_bin, predicted, confidence, label_probability

        self._step = tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True)

    def warm_up(self, image_shape, batch_sizes, dtype=tf.uint8) -> None:
        """Trace (and compile) the step for these batch sizes before anything is timed.

        Two different sizes make ``reduce_retracing`` trace a batch-polymorphic step, so a
        partial last batch does not trace again inside the timed loop either.
        """
        for n in dict.fromkeys(int(b) for b in batch_sizes if int(b) > 0):
            tf.nest.map_structure(lambda t: t.numpy(), self._step(tf.zeros([n, *image_shape], dtype), tf.zeros([n], tf.int32)))

    def __call__(self, dataset, progress=None, stop=None) -> EvalResult:
        """Evaluate every batch of ``dataset``; ``stop()``, asked after each batch, may end it early
        (raising :class:`EvaluationStopped`)."""
        sums = np.zeros(4, np.float64)
        confusion = np.zeros((self.num_classes,) * 2, np.float64) if self.num_classes else None
        calibration = np.zeros((self.calibration_bins, 3), np.float64) if self.num_classes else None
        errors: list[Mistake] = []
        seen = 0
        batch_seconds = []
        start = time.perf_counter()
        total = None
        cardinality = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
        if cardinality > 0:
            total = cardinality
        for i, batch in enumerate(dataset):
            t0 = time.perf_counter()
            out = tf.nest.map_structure(lambda t: t.numpy(), self._step(batch["image"], batch["label"]))  # waits
            batch_seconds.append(time.perf_counter() - t0)
            if self.num_classes:
                out, batch_confusion, batch_bins, predicted, confidence, label_probability = out
                confusion += batch_confusion
                calibration += batch_bins
                if self.keep_errors:
                    errors = self._mistakes(errors, batch, seen, predicted, confidence, label_probability)
                seen += len(predicted)
            sums += out
            if progress is not None:
                progress(i + 1, total or i + 1, {"top1": sums[1] / max(sums[3], 1)})
            point("eval.batch")
            if stop is not None and stop():
                raise EvaluationStopped(i + 1)
        seconds = time.perf_counter() - start
        if self.num_classes:  # one reduction for every sum: each example counts once over the processes
            flat = np.concatenate([sums, confusion.ravel(), calibration.ravel()])
            flat = np.asarray(self.backend.reduce_sum(tf.constant(flat)), np.float64)
            sums, rest = flat[:4], flat[4:]
            confusion = rest[:confusion.size].reshape(confusion.shape)
            calibration = rest[confusion.size:].reshape(calibration.shape)
        else:
            sums = np.asarray(self.backend.reduce_sum(tf.constant(sums)), np.float64)
        count = max(sums[3], 1.0)
        return EvalResult(loss=sums[0] / count, top1=sums[1] / count, top5=sums[2] / count, count=int(sums[3]),
                          seconds=seconds, batch_seconds=batch_seconds, confusion=confusion, calibration=calibration,
                          errors=errors if self.keep_errors else None)

    def _mistakes(self, kept, batch, offset, predicted, confidence, label_probability):
        labels = np.asarray(batch["label"]).astype(np.int64)
        wrong = np.flatnonzero(predicted != labels)
        floor = kept[-1].confidence if len(kept) >= self.keep_errors else -1.0
        wrong = [int(i) for i in wrong if confidence[i] > floor]
        if not wrong:
            return kept
        images = np.asarray(batch["image"])
        candidates = [Mistake(confidence=float(confidence[i]), index=offset + i, label=int(labels[i]),
                              predicted=int(predicted[i]), label_probability=float(label_probability[i]),
                              image=np.clip(images[i], 0, 255).astype(np.uint8)) for i in wrong]
        return _keep_most_confident(kept, candidates, self.keep_errors)


__all__ = ["EvalResult", "EvaluationStopped", "Evaluator", "Mistake", "gather_mistakes", "QUANTILES", "latency_summary", "percentile", "probabilities", "topk_correct"]

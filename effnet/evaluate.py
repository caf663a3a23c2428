"""Evaluation: loss, top-1 and top-5 over a dataset, every example counted once across workers.

Used by ``train_and_eval`` and by ``effnet eval``. Numerators and denominators are summed over the
local batches, then across processes with ``backend.reduce_sum``, and divided at the end.
Per-batch wall times are kept for throughput and latency percentiles.

``effnet eval`` (:func:`evaluate_run`) evaluates a training run's checkpoint on raw and EMA weights
with this evaluator and reports loss, top-1, top-5, throughput and true per-batch latency
percentiles (p50/p90/p95/p99). The step is traced before timing (:meth:`Evaluator.warm_up`), so
latencies are those of steady-state batches; throughput is examples over the wall time of the
whole pass (input pipeline included). Results go to the run's loggers (``dllogger.filename``; the
CLI binds it to ``eval_log.json``) and, on the writing process, to ``<model_dir>/eval_report.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gin

import numpy as np
import tensorflow as tf

from effnet import inference, registry
from effnet import precision as precision_mod
from effnet.distribute import Backend
from effnet.errors import UserError
from effnet.files import write_json_atomic


def topk_correct(logits, labels, k: int):
    """Number of rows whose integer label is among the ``k`` largest logits."""
    k = min(k, int(logits.shape[-1]))
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(tf.cast(labels, tf.int32), tf.cast(logits, tf.float32), k), tf.float32))


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics (numpy's default)."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


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
    """Compiles the eval step once per model and reuses it across evaluations."""

    def __init__(self, model, backend: Backend | None = None, jit_compile: bool = False):
        self.model = model
        self.backend = backend or Backend()

        def step(images, labels):
            logits = tf.cast(model(images, training=False), tf.float32)
            labels = tf.cast(labels, tf.int32)
            loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            return tf.stack([
                tf.reduce_sum(loss),
                topk_correct(logits, labels, 1),
                topk_correct(logits, labels, 5),
                tf.cast(tf.shape(labels)[0], tf.float32),
            ])

        self._step = tf.function(step, jit_compile=jit_compile, reduce_retracing=True)

    def warm_up(self, image_shape, batch_sizes, dtype=tf.uint8) -> None:
        """Trace (and compile) the step for these batch sizes before anything is timed.

        Two different sizes make ``reduce_retracing`` trace a batch-polymorphic step, so a
        partial last batch does not trace again inside the timed loop either.
        """
        for n in dict.fromkeys(int(b) for b in batch_sizes if int(b) > 0):
            self._step(tf.zeros([n, *image_shape], dtype), tf.zeros([n], tf.int32)).numpy()

    def __call__(self, dataset, progress=None) -> EvalResult:
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
        seconds = time.perf_counter() - start
        sums = np.asarray(self.backend.reduce_sum(tf.constant(sums)), np.float64)
        count = max(sums[3], 1.0)
        return EvalResult(loss=sums[0] / count, top1=sums[1] / count, top5=sums[2] / count, count=int(sums[3]),
                          seconds=seconds, batch_seconds=batch_seconds)


# --------------------------------------------------------------------------------------------------
# `effnet eval`: a training run's checkpoint, raw and EMA


REPORT_NAME = "eval_report.json"
QUANTILES = (50, 90, 95, 99)


def result_dict(result) -> dict:
    """An :class:`EvalResult` as the report's JSON, with per-batch latency percentiles."""
    ms = [1000.0 * s for s in result.batch_seconds]
    return {
        "loss": float(result.loss), "top1": float(result.top1), "top5": float(result.top5),
        "count": int(result.count), "seconds": float(result.seconds), "img_per_s": float(result.images_per_second),
        "batches": len(ms),
        "latency_ms": {**{f"p{q}": percentile(ms, q) for q in QUANTILES},
                       "mean": float(np.mean(ms)) if ms else float("nan")},
    }


def _logger_names(names):
    """The run's metric sinks (gin ``loggers.names``) without ``stdout``, unless given explicitly.

    ``effnet eval`` prints its own table, and ``--json`` output must stay parseable.
    """
    if names is not None:
        return list(names)
    import inspect

    from effnet.loggers import make_loggers

    try:
        configured = gin.query_parameter("loggers.names")
    except ValueError:
        configured = inspect.signature(make_loggers).parameters["names"].default
    return [n for n in configured if n != "stdout"]


def evaluate_run(cfg, checkpoint: str = "latest", weights: str = "both", split: str = "validation",
                 report_name: str | None = REPORT_NAME, logger_names=None) -> dict:
    """Evaluate ``cfg.model_dir``'s checkpoint; returns the report (also written as ``report_name``).

    ``weights``: ``both`` (raw, then EMA when the checkpoint has it), ``raw`` or ``ema``.
    ``logger_names``: metric sinks by registered name (default: the configured ones but ``stdout``).
    """
    from effnet import data
    from effnet.loggers import make_loggers

    if weights not in ("both", "raw", "ema"):
        raise UserError(f"--weights {weights!r} is not one of both, raw, ema")
    backend = registry.get("backend", cfg.backend)()
    backend.setup()
    info = inference.select_checkpoint(cfg.model_dir, checkpoint)
    inference.check_architecture(info, cfg.model)
    source = registry.get("dataset", cfg.dataset)()
    ds_info = source.info()
    inference.check_architecture(info, cfg.model, int(ds_info.num_classes))
    num_classes = int(ds_info.num_classes)
    ema_present = inference.has_ema(info)
    passes = {"both": ["raw", "ema"] if ema_present else ["raw"], "raw": ["raw"], "ema": ["ema"]}[weights]
    if "ema" in passes and not ema_present:
        raise UserError(f"checkpoint {info.path} has no EMA weights (the run had train.ema_decay = None); use --weights raw")

    precision_mod.configure(cfg.precision)
    xla = precision_mod.default_xla(cfg.xla)
    model = inference.build_model(cfg, num_classes, backend.scope())
    size = inference.eval_image_size(cfg)
    inference.check_image_size(model, size, cfg.model, "train.eval_image_size")
    batch = int(cfg.eval_batch_size or cfg.micro_batch)
    shard = backend.shard_info()

    model_dir = Path(cfg.model_dir)
    log = make_loggers(model_dir=model_dir, is_writer=backend.is_writer, names=_logger_names(logger_names))
    params = {"mode": "eval", "model": cfg.model, "dataset": cfg.dataset, "split": split,
              "checkpoint": str(info.path), "checkpoint_step": info.step, "image_size": size, "batch_size": batch,
              "precision": cfg.precision, "xla": xla, "processes": backend.size, "weights": ",".join(passes)}
    report = {**params, "model_dir": str(model_dir), "num_classes": num_classes, "raw": None, "ema": None}
    try:
        log.log_params(params)
        for metric, unit in (("loss", None), ("top1", "%"), ("top5", "%"), ("img_per_s", "images/s"), ("latency", "ms")):
            log.log_metadata(f"eval_{metric}", {"unit": unit, "format": ":.4f"})
        evaluator = Evaluator(model, backend, jit_compile=xla)
        started = time.perf_counter()
        evaluator.warm_up((size, size, 3), [batch, batch - 1])
        report["warmup_seconds"] = time.perf_counter() - started
        final: dict[str, float] = {}
        for which in passes:
            inference.load_checkpoint_weights(model, info, cfg.model, use_ema=which == "ema")
            ds = data.eval_dataset(source, image_size=size, batch_size=batch, split=split, shard=shard)
            try:
                result = evaluator(ds, progress=lambda d, t, m, w=which: log.progress(d, t, m, desc=f"eval {w}"))
            except Exception as exc:
                translated = data.translate_error(exc)
                if translated is not None:
                    raise translated from None
                raise
            report[which] = result_dict(result)
            prefix = "eval_" if which == "raw" else "eval_ema_"
            values = report[which]
            final.update({f"{prefix}{k}": values[k] for k in ("loss", "top1", "top5", "count", "img_per_s")})
            final.update({f"{prefix}latency_{q}_ms": v for q, v in values["latency_ms"].items()})
        log.log_metrics((), {**final, "global_step": info.step}, kind="eval")
    finally:
        log.close()
    if backend.is_writer and report_name:
        write_json_atomic(model_dir / report_name, report)
    return report


def summary_lines(report: dict) -> list[str]:
    """The eval report as a small table."""
    header = ("weights", "loss", "top-1", "top-5", "images", "img/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms")
    rows = [header]
    for which in ("raw", "ema"):
        r = report.get(which)
        if not r:
            continue
        lat = r["latency_ms"]
        rows.append((which, f"{r['loss']:.4f}", f"{100 * r['top1']:.2f}%", f"{100 * r['top5']:.2f}%", str(r["count"]),
                     f"{r['img_per_s']:.1f}", *(f"{lat[f'p{q}']:.2f}" for q in QUANTILES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{report['model']} on {report['dataset']}/{report['split']}, {Path(report['checkpoint']).name} "
             f"(step {report['checkpoint_step']}), {report['image_size']} px, batch {report['batch_size']}, "
             f"{report['precision']}, XLA {'on' if report['xla'] else 'off'}, {report['processes']} process(es)"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return lines


__all__ = ["REPORT_NAME", "evaluate_run", "result_dict", "summary_lines"]

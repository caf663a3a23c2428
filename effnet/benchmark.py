"""Synthetic-input throughput and latency of a model: ``effnet benchmark train|infer``.

Inputs are random uint8 images and one-hot labels made once on the device, so the numbers are
the model's (and the training step's), not the input pipeline's. ``train`` times
:class:`effnet.step.TrainStep` (the real step: loss scaling, weight decay, the configured
optimizer, EMA); ``infer`` times the model's forward pass in inference mode. The first
``warmup`` steps (tracing, compilation, allocator growth) are excluded. Throughput is
images over the wall time of the timed steps; latency is the wall time of each timed step (each
step waits for its result), reported as true percentiles.

Everything is a binding of the gin configurable ``benchmark`` (the CLI flags are shorthands).
Model knobs are the model's own bindings (e.g. ``efficientnet.width``). Values left ``None`` fall
back to the ``train.*`` binding of a loaded experiment (``--gin``), then to a default.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass

import gin

from effnet import registry
from effnet.errors import UserError

MODES = ("train", "infer")
QUANTILES = (50, 90, 95, 99)


def _train_binding(name: str, default):
    """The value of ``train.<name>`` in the loaded gin config, or ``default`` when it is not bound."""
    try:
        value = gin.query_parameter(f"train.{name}")
    except ValueError:
        return default
    if isinstance(value, gin.config.ConfigurableReference) or type(value).__name__ == "_MacroReference":
        return default
    return default if value is None else value


@gin.configurable("benchmark")
@dataclass
class BenchmarkConfig:
    """Settings of one benchmark. Bind them in gin as ``benchmark.<name> = value``."""

    mode: str = "infer"  # 'train' or 'infer'
    model: str | None = None  # a registered model; default train.model
    num_classes: int = 1000
    precision: str | None = None  # fp32 | tf32 | amp | bf16; default train.precision, else fp32
    batch_size: int | None = None  # default train.batch_size (train) / train.eval_batch_size, else 32
    image_size: int | None = None  # default train.eval_image_size (infer) / train.image_size, else 224
    xla: bool | None = None  # None: train.xla, else on for GPUs and off for CPUs
    steps: int = 20  # timed steps
    warmup: int = 5  # untimed steps first (tracing, compilation)
    optimizer: str | None = None  # train mode: a registered optimizer; default train.optimizer, else rmsprop
    learning_rate: float = 1e-4
    label_smoothing: float = 0.1
    weight_decay: float = 5e-6
    ema_decay: float | None = 0.9999  # train mode: update an EMA as the recipe does (None: no EMA)
    seed: int = 0

    def resolved(self) -> "BenchmarkConfig":
        """A copy with ``None`` fields filled from the ``train.*`` bindings or defaults, validated."""
        from effnet import precision as precision_mod

        cfg = BenchmarkConfig(**asdict(self))
        if cfg.mode not in MODES:
            raise UserError(f"benchmark mode {cfg.mode!r} is not one of {', '.join(MODES)}")
        cfg.model = cfg.model or _train_binding("model", None)
        if not cfg.model:
            raise UserError("no model to benchmark: pass --model NAME (see `effnet plugins`) or an experiment with --gin")
        cfg.precision = cfg.precision or _train_binding("precision", "fp32")
        precision_mod.check(cfg.precision)
        if cfg.batch_size is None:
            train_batch = _train_binding("batch_size", 32) // max(1, int(_train_binding("grad_accum_steps", 1)))
            cfg.batch_size = train_batch if cfg.mode == "train" else _train_binding("eval_batch_size", train_batch)
        if not cfg.image_size and cfg.mode == "infer":  # inference runs at the evaluation size (V2-S: 384)
            cfg.image_size = _train_binding("eval_image_size", None)
        cfg.image_size = cfg.image_size or _train_binding("image_size", 224)
        if cfg.xla is None:
            cfg.xla = _train_binding("xla", None)
        cfg.optimizer = cfg.optimizer or _train_binding("optimizer", "rmsprop")
        for name in ("batch_size", "image_size", "steps", "num_classes"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"benchmark.{name}={value!r} must be a positive integer")
        if not isinstance(cfg.warmup, int) or cfg.warmup < 0:
            raise UserError(f"benchmark.warmup={cfg.warmup!r} must be an integer >= 0")
        return cfg


def _percentiles(ms: list[float]) -> dict[str, float]:
    from effnet.evaluate import percentile

    return {f"p{q}": percentile(ms, q) for q in QUANTILES}


def _device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        except Exception:  # noqa: BLE001 - details are informative only
            name = "GPU"
        return f"{len(gpus)}x {name}"
    import os

    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def run_benchmark(cfg: BenchmarkConfig | None = None, progress=None) -> dict:
    """Run one benchmark; returns a JSON-able report (img/s, latency percentiles, settings)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet import precision as precision_mod
    from effnet.train import build_optimizer, count_params

    cfg = (cfg or BenchmarkConfig()).resolved()
    keras.backend.clear_session()
    precision_mod.configure(cfg.precision)
    xla = precision_mod.default_xla(cfg.xla)
    keras.utils.set_random_seed(cfg.seed)
    model = registry.get("model", cfg.model)(num_classes=cfg.num_classes)
    if not isinstance(model, keras.Model):
        raise UserError(f"model {cfg.model!r} returned {type(model).__name__}, not a keras.Model")
    minimum = int(getattr(model, "min_input_size", 1))
    if cfg.image_size < minimum:
        raise UserError(f"benchmark image size {cfg.image_size} is smaller than {cfg.model}'s minimum of {minimum} px")

    shape = [cfg.batch_size, cfg.image_size, cfg.image_size, 3]
    images = tf.random.stateless_uniform(shape, seed=[cfg.seed, 1], minval=0, maxval=256, dtype=tf.int32)
    images = tf.cast(images, tf.uint8)
    labels = tf.one_hot(tf.random.stateless_uniform([cfg.batch_size], seed=[cfg.seed, 2], minval=0,
                                                    maxval=cfg.num_classes, dtype=tf.int32), cfg.num_classes)
    batch = {"image": images, "label": labels}

    if cfg.mode == "train":
        from types import SimpleNamespace

        from effnet.ema import ExponentialMovingAverage
        from effnet.step import TrainStep, decayed_variables

        opt_cfg = SimpleNamespace(optimizer=cfg.optimizer, decay_bias=False, decay_norm=False, clip_norm=None,
                                  precision=cfg.precision)
        optimizer = build_optimizer(opt_cfg, model, cfg.learning_rate)
        ema = ExponentialMovingAverage(model, cfg.ema_decay) if cfg.ema_decay else None
        step = TrainStep(model, optimizer, global_batch=cfg.batch_size, label_smoothing=cfg.label_smoothing,
                         weight_decay=cfg.weight_decay, decay_vars=decayed_variables(model), ema=ema, jit_compile=xla)

        def one_step():
            return step.apply(batch).numpy()  # .numpy() waits for the device
    else:
        forward = tf.function(lambda x: model(x, training=False), jit_compile=xla)

        def one_step():
            return forward(images).numpy()

    started = time.perf_counter()
    for i in range(cfg.warmup):
        one_step()
        if progress is not None:
            progress(i + 1, cfg.warmup + cfg.steps)
    warmup_seconds = time.perf_counter() - started
    seconds = []
    window = time.perf_counter()
    for i in range(cfg.steps):
        t0 = time.perf_counter()
        one_step()
        seconds.append(time.perf_counter() - t0)
        if progress is not None:
            progress(cfg.warmup + i + 1, cfg.warmup + cfg.steps)
    elapsed = time.perf_counter() - window
    ms = [1000.0 * s for s in seconds]
    return {
        "mode": cfg.mode, "model": cfg.model, "precision": cfg.precision, "batch_size": cfg.batch_size,
        "image_size": cfg.image_size, "xla": xla, "steps": cfg.steps, "warmup": cfg.warmup,
        "num_classes": cfg.num_classes, "optimizer": cfg.optimizer if cfg.mode == "train" else None,
        "params": count_params(model),
        "img_per_s": cfg.batch_size * cfg.steps / elapsed if elapsed > 0 else math.nan,
        "seconds": elapsed, "warmup_seconds": warmup_seconds,
        "latency_ms": {**_percentiles(ms), "mean": float(np.mean(ms)) if ms else math.nan,
                       "min": min(ms) if ms else math.nan, "max": max(ms) if ms else math.nan},
        "device": _device(), "tensorflow": tf.__version__, "keras": keras.__version__,
    }


def table_lines(results: list[dict]) -> list[str]:
    """Benchmark results as a table, one row per result."""
    header = ("mode", "model", "precision", "batch", "size", "xla", "img/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms")
    rows = [header]
    for r in results:
        lat = r["latency_ms"]
        rows.append((r["mode"], r["model"], r["precision"], str(r["batch_size"]), str(r["image_size"]),
                     "on" if r["xla"] else "off", f"{r['img_per_s']:.1f}", *(f"{lat[f'p{q}']:.2f}" for q in QUANTILES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    if results:
        r = results[0]
        lines.append(f"({r['steps']} timed steps after {r['warmup']} warm-up steps; {r['device']}; "
                     f"TensorFlow {r['tensorflow']}, Keras {r['keras']})")
    return lines


__all__ = ["BenchmarkConfig", "MODES", "run_benchmark", "table_lines"]

"""Synthetic-input throughput and latency of a model: ``effnet benchmark train|infer``.

Inputs are random uint8 images and one-hot labels made once on the device, so the numbers are
the model's (and the training step's), not the input pipeline's. ``train`` times
the training run's own step (:func:`effnet.assembly.build_step`: loss scaling, weight decay and its
exclusions, clipping, the configured optimizer, EMA, gradient accumulation); ``infer`` times the model's forward pass in inference mode the way ``effnet
predict`` and ``effnet eval`` serve it, with the weights frozen into the graph
(:class:`effnet.models.InferenceFunction`; ``benchmark.frozen_graph = False`` times the live
variables instead). The first
``warmup`` steps (tracing, compilation, allocator growth) are excluded. Throughput is
images over the wall time of the timed steps; latency is the wall time of each timed step (each
step waits for its result), reported as true percentiles. ``memory`` is the peak over the whole
benchmark: the process's peak RSS on CPU (with the RSS after the build, before the first step), the
allocator's peak on a GPU (reset after the build); ``python -m benchmarks.memory`` measures each
size and batch in a fresh process instead.

Everything is a binding of the gin configurable ``benchmark`` (the CLI flags are shorthands).
Model knobs are the model's own bindings (e.g. ``efficientnet.width``). Values left ``None`` fall
back to the ``train.*`` binding of a loaded experiment (``--gin``), then to a default.
"""

from __future__ import annotations

import math
import platform
import time

from effnet import precision as precision_mod
from effnet.assembly import StepSettings, build_step, synthetic_batch
from effnet.memory import current_rss, peak_memory
from effnet.metrics import QUANTILES, latency_summary
from effnet.models import InferenceFunction, build_model, check_image_size, count_params
from effnet.settings import BENCHMARK_MODES as MODES
from effnet.settings import BenchmarkConfig


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


def step_settings(cfg: BenchmarkConfig, xla: bool) -> StepSettings:
    """The training step a resolved benchmark times (the experiment's, see BenchmarkConfig)."""
    return StepSettings(optimizer=cfg.optimizer, precision=cfg.precision, xla=bool(xla),
                        label_smoothing=cfg.label_smoothing, weight_decay=cfg.weight_decay, decay_bias=cfg.decay_bias,
                        decay_norm=cfg.decay_norm, clip_norm=cfg.clip_norm, ema_decay=cfg.ema_decay)


def build_train_step(cfg: BenchmarkConfig, model, xla: bool):
    """The step ``effnet benchmark train`` times: the training run's (effnet.assembly.build_step)."""
    _, _, step = build_step(model, step_settings(cfg, xla), cfg.learning_rate,
                            global_batch=cfg.batch_size * cfg.grad_accum_steps, accumulation=cfg.grad_accum_steps)
    return step


def run_benchmark(cfg: BenchmarkConfig | None = None, progress=None) -> dict:
    """Run one benchmark; returns a JSON-able report (img/s, latency percentiles, settings)."""
    import keras
    import tensorflow as tf

    cfg = (cfg or BenchmarkConfig()).resolved()
    if cfg.mode == "infer" and (cfg.runtime != "tf" or cfg.artifact):
        return _run_deployed(cfg, progress)
    keras.backend.clear_session()
    precision_mod.configure(cfg.precision)
    xla = precision_mod.default_xla(cfg.xla)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, cfg.num_classes)
    check_image_size(model, cfg.image_size, cfg.model, "benchmark image size")

    batch = synthetic_batch(cfg.batch_size, cfg.image_size, cfg.num_classes, cfg.seed)
    images = batch["image"]
    accumulation = cfg.grad_accum_steps if cfg.mode == "train" else 1

    if cfg.mode == "train":
        step = build_train_step(cfg, model, xla)

        def one_step():
            for _ in range(accumulation - 1):
                step.accumulate(batch)
            return step.apply(batch).numpy()  # .numpy() waits for the device
    else:
        forward = InferenceFunction(model, jit_compile=xla, freeze=cfg.frozen_graph)

        def one_step():
            return forward(images).numpy()

    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    baseline = current_rss()
    warmup_seconds, elapsed, ms = _timed(one_step, cfg, progress)
    memory = peak_memory(gpu) if gpu else {**peak_memory(False), "baseline_bytes": baseline}
    return {
        "mode": cfg.mode, "runtime": "tf", "model": cfg.model, "precision": cfg.precision, "batch_size": cfg.batch_size,
        "image_size": cfg.image_size, "xla": xla, "frozen_graph": cfg.frozen_graph if cfg.mode == "infer" else None,
        "steps": cfg.steps, "warmup": cfg.warmup,
        "num_classes": cfg.num_classes, "optimizer": cfg.optimizer if cfg.mode == "train" else None,
        "params": count_params(model), "grad_accum_steps": accumulation,
        "img_per_s": cfg.batch_size * accumulation * cfg.steps / elapsed if elapsed > 0 else math.nan,
        "seconds": elapsed, "warmup_seconds": warmup_seconds,
        "latency_ms": latency_summary(ms), "memory": memory,
        "device": _device(), "tensorflow": tf.__version__, "keras": keras.__version__,
    }


def _timed(one_step, cfg, progress) -> tuple[float, float, list[float]]:
    """Run ``cfg.warmup`` untimed then ``cfg.steps`` timed steps: ``(warm-up s, timed wall s, per-step ms)``."""
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
    return warmup_seconds, time.perf_counter() - window, [1000.0 * s for s in seconds]


# runtime -> the export format converted on the fly when no --artifact is given
_RUNTIME_FORMATS = {"tf": "saved_model", "tflite": "tflite", "onnxruntime": "onnx", "openvino": "openvino"}


def _run_deployed(cfg: BenchmarkConfig, progress=None) -> dict:
    """Inference in a deployment runtime: ``cfg.artifact`` as exported, else the model (random weights)
    exported to the runtime's format (float32) in a temporary folder. OpenVINO runs f32 for fp32 and
    its CPU plugin's own choice (bf16 where the CPU has it) for bf16/amp; the others run fp32."""
    import tempfile
    from pathlib import Path

    import keras
    import numpy as np
    import tensorflow as tf

    from effnet import runtimes
    from effnet.exporter import Exporter

    precision = "fp32" if cfg.runtime != "openvino" or cfg.precision not in ("bf16", "amp") else "auto"
    params = None
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as work:
        if cfg.artifact:
            loaded = runtimes.load(cfg.artifact, cfg.runtime, precision=precision)
        else:
            keras.backend.clear_session()
            keras.utils.set_random_seed(cfg.seed)
            model = build_model(cfg.model, cfg.num_classes)
            check_image_size(model, cfg.image_size, cfg.model, "benchmark image size")
            params = count_params(model)
            exporter = Exporter(model, cfg.image_size, num_classes=cfg.num_classes)
            fmt = _RUNTIME_FORMATS[cfg.runtime]
            path = Path(work) / fmt
            if fmt == "saved_model":
                exporter.write_saved_model(path)
            elif fmt in ("onnx", "openvino"):
                exporter.write_converted(fmt, path, Path(work), None, False)
            else:
                path.write_bytes(exporter.tflite_bytes(fmt, Path(work)))
            del model, exporter
            keras.backend.clear_session()
            loaded = runtimes.load(path, cfg.runtime, precision=precision)
        size = loaded.image_size or cfg.image_size
        rng = np.random.default_rng(cfg.seed)
        images = rng.integers(0, 256, [cfg.batch_size, size, size, 3]).astype(np.float32)
        baseline = current_rss()
        warmup_seconds, elapsed, ms = _timed(lambda: loaded.predict(images), cfg, progress)
        memory = {**peak_memory(False), "baseline_bytes": baseline}
    return {
        "mode": "infer", "runtime": cfg.runtime, "artifact": cfg.artifact, "runtime_detail": loaded.detail,
        "model": cfg.model,
        "precision": precision if cfg.runtime == "openvino" else ("as exported" if cfg.artifact else "fp32"),
        "batch_size": cfg.batch_size, "image_size": size, "xla": False, "frozen_graph": None,
        "steps": cfg.steps, "warmup": cfg.warmup, "num_classes": cfg.num_classes, "optimizer": None, "params": params,
        "img_per_s": cfg.batch_size * cfg.steps / elapsed if elapsed > 0 else math.nan,
        "seconds": elapsed, "warmup_seconds": warmup_seconds, "latency_ms": latency_summary(ms), "memory": memory,
        "device": _device(), "tensorflow": tf.__version__, "keras": keras.__version__,
    }


def table_lines(results: list[dict]) -> list[str]:
    """Benchmark results as a table, one row per result."""
    # the runtime column only when one of the rows ran outside TensorFlow (effnet benchmark infer --runtime)
    runtimes = any((r.get("runtime") or "tf") != "tf" for r in results)
    header = ("mode", "model", *(("runtime",) if runtimes else ()), "precision", "batch", "size", "xla", "img/s", "p50 ms",
              "p90 ms", "p95 ms", "p99 ms", "peak MiB")
    rows = [header]
    for r in results:
        lat = r["latency_ms"]
        rows.append((r["mode"], r["model"], *((r.get("runtime") or "tf",) if runtimes else ()), r["precision"],
                     str(r["batch_size"]), str(r["image_size"]),
                     "on" if r["xla"] else "off", f"{r['img_per_s']:.1f}", *(f"{lat[f'p{q}']:.2f}" for q in QUANTILES),
                     f"{r['memory']['peak_bytes'] / 2**20:.0f}" if r.get("memory") else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 3 + runtimes else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    if results:
        r = results[0]
        peak = f"peak: {r['memory']['measure']}; " if r.get("memory") else ""
        lines.append(f"({r['steps']} timed steps after {r['warmup']} warm-up steps; {peak}{r['device']}; "
                     f"TensorFlow {r['tensorflow']}, Keras {r['keras']})")
    return lines


__all__ = ["BenchmarkConfig", "MODES", "build_train_step", "run_benchmark", "step_settings", "table_lines"]

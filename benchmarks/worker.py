"""One benchmark job in its own process: ``python -m benchmarks.worker '<job as JSON>'``.

A job is one framework x model x precision (x XLA) measured in three ways, all on synthetic
inputs made once: a training step at ``batch`` (forward, loss, backward, optimizer update),
inference at ``batch`` and inference at batch 1 (latency). Every step is timed on its own and
waits for its result, so throughput is ``batch / median step time`` (robust against the other
processes on a shared machine) and latency percentiles are true percentiles of single calls.
The worker prints one JSON line (the last line of its output) for :mod:`benchmarks.run`.

Frameworks:

* ``effnet``: this project's model and :class:`effnet.step.TrainStep` through
  :func:`effnet.benchmarking.run_benchmark` (the code behind ``effnet benchmark``: label smoothing,
  L2 term, finiteness check and the EMA over all weights included); ``gin`` bindings of the job
  select model knobs (the before/after rows of docs/performance.md).
* ``keras``: ``keras.applications`` (EfficientNetV2S / EfficientNetB0), compiled with RMSprop,
  trained with its own ``train_on_batch``; inference with ``predict_on_batch``; XLA on or off.
* ``timm``: ``timm``'s ``tf_efficientnetv2_s`` / ``tf_efficientnet_b0`` (randomly initialised:
  pretrained=False) in PyTorch, channels_last, RMSprop, bf16 through CPU autocast.
* ``matmul``: a 4096 x 4096 matmul in TensorFlow, the yardstick for achieved FLOP/s.
* ``effnet-onnxruntime``, ``effnet-openvino``, ``effnet-tflite``: this project's model (random
  weights) exported as ``effnet export`` writes it (tf2onnx, ``openvino.convert_model``, the TFLite
  converter, from the float SavedModel; variant ``int8``: ``openvino_int8``) and run in that runtime
  through :func:`effnet.runtimes.load`: inference and batch-1 latency only. OpenVINO runs f32 for
  ``fp32`` and its CPU plugin's own choice (bf16 where the CPU has it) for ``bf16``.
* ``timm-onnxruntime``, ``timm-openvino``: timm's model exported to ONNX by ``torch.onnx.export`` and
  run as the runtime's documentation runs a model (:func:`plain_session`); variant ``effnet loader``:
  the same file through our loader, graph against graph; variants ``int8`` / ``int8, effnet loader``:
  quantized by NNCF as our ``openvino_int8`` is.
  The artifact is written by a child process (:func:`convert_artifact`), so the timing process holds
  the runtime alone, as a serving process does.

Each framework runs with the same number of intra-op threads (``threads``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = {
    # ours, keras.applications, timm
    "efficientnet_v2_s": ("efficientnet_v2_s", "EfficientNetV2S", "tf_efficientnetv2_s"),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNetB0", "tf_efficientnet_b0"),
}
QUANTILES = (50, 99)
CALIBRATION = 32  # images the int8 rows calibrate on (random: their speed does not depend on the ranges)


def percentile(values, q):
    """Linear-interpolated percentile of a list (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def timed(call, steps, warmup):
    """Seconds of each of ``steps`` calls of ``call`` (which must wait for its result) after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds, batch):
    ms = [1000.0 * s for s in seconds]
    return {"img_per_s": batch / statistics.median(seconds), "steps": len(seconds),
            **{f"p{q}_ms": percentile(ms, q) for q in QUANTILES}}


# -- TensorFlow side --------------------------------------------------------------------------------
def _tf_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_effnet(job):
    import gin

    import effnet.plugins.models  # noqa: F401 - registers the `efficientnet` configurable
    import effnet.plugins.optimizers  # noqa: F401 - ... and `rmsprop` (rmsprop.fused in the baseline rows)
    from effnet.benchmarking import run_benchmark
    from effnet.settings import BenchmarkConfig

    # model knobs of this row, e.g. efficientnet.fused_bn = False for the before-optimisation baseline
    gin.parse_config(job.get("gin") or [])
    out = {}
    for key, mode, batch, steps in (("train", "train", job["batch"], job["train_steps"]),
                                    ("infer", "infer", job["batch"], job["infer_steps"]),
                                    ("latency", "infer", 1, job["latency_steps"])):
        if key not in job["measure"]:
            continue
        stamps = []  # run_benchmark reports progress after each step, once the step's result is on the host
        cfg = BenchmarkConfig(mode=mode, model=MODELS[job["model"]][0], precision=job["precision"], batch_size=batch,
                              image_size=job["size"], xla=job["xla"], steps=steps, warmup=job["warmup"],
                              optimizer="rmsprop")
        report = run_benchmark(cfg, progress=lambda done, total: stamps.append(time.perf_counter()))
        timed_stamps = stamps[job["warmup"] - 1:] if job["warmup"] else stamps
        out[key] = summary([b - a for a, b in zip(timed_stamps, timed_stamps[1:])], batch)
        out["params"] = report["params"]
    return out


def convert_artifact(job, work):
    """Write the job's artifact into ``work`` (this project's export, or timm's model through torch.onnx).

    Runs in its own process (``python -m benchmarks.worker --convert JOB WORK``), so the process that
    times the artifact never imported TensorFlow, Keras or PyTorch: a serving process holds the runtime
    alone, and the converters' thread pools and memory would otherwise sit beside the measured one.
    Returns ``{"artifact": path, "params": count}``.
    """
    from pathlib import Path

    work = Path(work)
    framework, runtime = job["framework"].split("-", 1)
    if framework == "timm":
        import warnings

        import timm
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(timm.create_model(MODELS[job["model"]][2], pretrained=False, num_classes=1000),
                                    torch.nn.Softmax(dim=-1)).eval()
        path = work / "timm.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # the TorchScript exporter, as timm's own onnx_export uses by default (the dynamo one needs onnxscript);
            # batch dynamic, as timm's onnx_export writes it
            torch.onnx.export(model, (torch.zeros(1, 3, job["size"], job["size"]),), str(path), opset_version=17,
                              input_names=["images"], output_names=["probabilities"],
                              dynamic_axes={"images": {0: "batch"}}, do_constant_folding=True, dynamo=False)
        params = sum(p.numel() for p in model.parameters())
        if "int8" in (job.get("variant") or ""):  # our openvino_int8 conversion (NNCF), on timm's ONNX graph
            import numpy as np

            from effnet import runtimes

            images = np.random.default_rng(0).uniform(-1, 1, [CALIBRATION, 3, job["size"], job["size"]])
            runtimes.convert_openvino(path, work / "timm_int8", calibration=images.astype(np.float32))
            path = work / "timm_int8" / "model.xml"
        return {"artifact": str(path), "params": params}
    import keras

    from effnet.exporter import Exporter
    from effnet.models import build_model, count_params
    from effnet.registry import get_registry

    _tf_threads(job["threads"])
    get_registry()
    keras.utils.set_random_seed(0)
    model = build_model(MODELS[job["model"]][0], 1000)
    exporter = Exporter(model, job["size"], num_classes=1000)
    fmt = {"onnxruntime": "onnx", "openvino": "openvino", "tflite": "tflite"}[runtime]
    calibration = None
    if job.get("variant") == "int8":  # effnet export --format openvino_int8's conversion
        import numpy as np

        fmt = "openvino_int8"
        calibration = np.random.default_rng(0).uniform(0, 255, [CALIBRATION, job["size"], job["size"], 3]).astype(np.float32)
    path = work / {"onnx": "model.onnx", "openvino": "openvino", "openvino_int8": "openvino_int8",
                   "tflite": "model.tflite"}[fmt]
    if fmt == "tflite":
        path.write_bytes(exporter.tflite_bytes("tflite", work))
    else:
        exporter.write_converted(fmt, path, work, calibration, False)  # converted and loaded in its runtime
    return {"artifact": str(path), "params": count_params(model)}


def run_deployed(job):
    """An artifact timed in its runtime: converted in a child process, loaded and run here (no TF, no torch).

    ``effnet-*``: our model through :func:`effnet.runtimes.load` (what ``effnet predict --artifact`` and
    ``effnet benchmark infer --artifact`` use). ``timm-*``: timm's ONNX file run as the runtime's
    documentation runs a model (:func:`plain_session`), or, variant ``effnet loader``, through our loader:
    graph against graph. timm's inputs are NCHW and already normalised (its graph has no preprocessing;
    ours does it inside: a transpose and a multiply-add on the input, timed on our side only).
    """
    import subprocess
    import tempfile

    import numpy as np

    from effnet import runtimes

    framework, runtime = job["framework"].split("-", 1)
    precision = "auto" if runtime == "openvino" and job["precision"] == "bf16" else "fp32"
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", "--convert", json.dumps(job), work],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"converting for {job['framework']} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        made = json.loads(proc.stdout.strip().splitlines()[-1])
        if framework == "timm" and "effnet loader" not in (job.get("variant") or ""):
            predict, detail = plain_session(made["artifact"], runtime, job["threads"], precision)
        else:
            loaded = runtimes.load(made["artifact"], runtime, threads=job["threads"], precision=precision)
            predict, detail = loaded.predict, loaded.detail
        rng = np.random.default_rng(0)
        out = {"params": made["params"], "runtime_detail": detail}
        for key, batch, steps in (("infer", job["batch"], job["infer_steps"]), ("latency", 1, job["latency_steps"])):
            if key in job["measure"]:
                if framework == "timm":
                    images = ((rng.integers(0, 256, [batch, 3, job["size"], job["size"]]) / 255.0 - 0.5) / 0.5)
                else:
                    images = rng.integers(0, 256, [batch, job["size"], job["size"], 3])
                images = images.astype(np.float32)
                out[key] = summary(timed(lambda images=images: predict(images), steps, job["warmup"]), batch)
    return out


def run_keras(job):
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet import precision as precision_mod

    def build():
        keras.backend.clear_session()
        precision_mod.configure(job["precision"])
        return getattr(keras.applications, MODELS[job["model"]][1])(
            weights=None, classes=1000, classifier_activation=None, input_shape=(job["size"], job["size"], 3))

    rng = np.random.default_rng(0)
    out = {}
    if "train" in job["measure"]:
        model = build()
        model.compile(keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3),
                      keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                      jit_compile=job["xla"])
        images = tf.constant(rng.integers(0, 256, (job["batch"], job["size"], job["size"], 3)).astype("float32"))
        labels = tf.one_hot(rng.integers(0, 1000, job["batch"]), 1000)
        out["train"] = summary(timed(lambda: model.train_on_batch(images, labels), job["train_steps"], job["warmup"]), job["batch"])
        out["params"] = model.count_params()
    for key, batch, steps in (("infer", job["batch"], job["infer_steps"]), ("latency", 1, job["latency_steps"])):
        if key not in job["measure"]:
            continue
        model = build()
        forward = tf.function(lambda x: model(x, training=False), jit_compile=job["xla"])
        images = tf.constant(rng.integers(0, 256, (batch, job["size"], job["size"], 3)).astype("float32"))
        out[key] = summary(timed(lambda: forward(images).numpy(), steps, job["warmup"]), batch)
        out["params"] = model.count_params()
    return out


def run_matmul(job):
    import tensorflow as tf

    n = 4096
    out = {}
    for precision, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        a = tf.random.stateless_normal([n, n], seed=[0, 1], dtype=dtype)
        b = tf.random.stateless_normal([n, n], seed=[0, 2], dtype=dtype)
        matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
        seconds = timed(lambda: matmul().numpy(), job["matmul_steps"], 2)
        out[precision] = {"flop_per_s": 2.0 * n**3 / statistics.median(seconds), "n": n}
    return out


def model_flops(model_name, size):
    """FLOPs of one forward pass of our model at ``size`` px (2 per multiply-add), counted by TF's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    from effnet import precision as precision_mod
    from effnet import registry

    precision_mod.configure("fp32")
    model = registry.get("model", MODELS[model_name][0])(num_classes=1000)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
                                                         ).with_empty_output().build()
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options)
    return {"forward_flops": float(profile.total_float_ops)}


# -- PyTorch side -----------------------------------------------------------------------------------
def run_timm(job):
    import timm
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    bf16 = job["precision"] == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def build():
        model = timm.create_model(MODELS[job["model"]][2], pretrained=False, num_classes=1000)
        return model.to(memory_format=torch.channels_last)

    def images(batch):
        x = torch.randint(0, 256, (batch, 3, job["size"], job["size"]), dtype=torch.uint8).float()
        x = (x / 255.0 - 0.5) / 0.5
        return x.contiguous(memory_format=torch.channels_last)

    out = {}
    if "train" in job["measure"]:
        model = build().train()
        # variant "recipe": the work our step does besides the update, the way timm's train.py does it
        # (--model-ema with warm-up; RMSprop's weight_decay adds decay * w to the gradient, as ours does)
        recipe = job.get("variant") == "recipe"
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, momentum=0.9, eps=1e-3,
                                        weight_decay=5e-6 if recipe else 0.0)
        ema = None
        if recipe:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=0.9999, use_warmup=True)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        x, y = images(job["batch"]), torch.randint(0, 1000, (job["batch"],))
        updates = [0]

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            if ema is not None:
                updates[0] += 1
                ema.update(model, step=updates[0])
            return loss.item()

        out["train"] = summary(timed(step, job["train_steps"], job["warmup"]), job["batch"])
        out["params"] = sum(p.numel() for p in model.parameters())
    model = build().eval()
    for key, batch, steps in (("infer", job["batch"], job["infer_steps"]), ("latency", 1, job["latency_steps"])):
        if key not in job["measure"]:
            continue
        x = images(batch)

        def forward():
            with torch.inference_mode(), autocast():
                return model(x).float().sum().item()

        out[key] = summary(timed(forward, steps, job["warmup"]), batch)
        out["params"] = sum(p.numel() for p in model.parameters())
    return out


def plain_session(path, runtime, threads, precision):
    """``predict`` for an ONNX file as a runtime's own documentation runs it: one session, one synchronous call.

    ONNX Runtime: an ``InferenceSession`` with ``threads`` intra-op threads. OpenVINO: ``compile_model``
    with its CPU plugin's defaults (latency hint: one stream on every thread), ``threads`` threads and
    f32 unless ``precision`` is ``auto``, and ``infer`` on one request. The peer rows' default path.
    """
    import numpy as np

    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})[0]), ""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": "f32"} if precision == "fp32" else {})}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    detail = "inference precision " + str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return (lambda x: np.array(request.infer({0: x})[0])), detail


def run(job: dict) -> dict:
    os.environ["OMP_NUM_THREADS"] = str(job["threads"])
    started = time.perf_counter()
    if job["framework"] == "timm":
        result = run_timm(job)
    elif job["framework"].startswith(("effnet-", "timm-")):
        result = run_deployed(job)  # the runtime alone in this process; the converter runs in a child
    else:
        _tf_threads(job["threads"])
        if job["framework"] == "effnet":
            result = run_effnet(job)
        elif job["framework"] == "keras":
            result = run_keras(job)
        elif job["framework"] == "matmul":
            result = run_matmul(job)
        elif job["framework"] == "flops":
            result = model_flops(job["model"], job["size"])
        else:
            raise ValueError(f"unknown framework {job['framework']!r}")
    return {"job": job, "result": result, "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--convert":  # python -m benchmarks.worker --convert JOB WORK (see convert_artifact)
        print(json.dumps(convert_artifact(json.loads(argv[1]), argv[2])), flush=True)
        return 0
    print(json.dumps(run(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

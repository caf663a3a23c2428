"""Deployment runtimes: load an exported artifact and run it, and the converters that need an extra.

An artifact is run in its own runtime, never through TensorFlow's copy of the model:

==============  =========================================  ===============================================
runtime         artifact                                   package (optional extra)
==============  =========================================  ===============================================
``tf``          a SavedModel folder (``serving_images``)   TensorFlow (core)
``tflite``      a ``.tflite`` flatbuffer                   TensorFlow's interpreter, or LiteRT when installed
``onnxruntime`` a ``.onnx`` file                           ``onnxruntime`` (``effnet[onnx]``)
``openvino``    an OpenVINO IR (``.xml`` + ``.bin``)       ``openvino`` (``effnet[openvino]``)
==============  =========================================  ===============================================

``export --format openvino_int8`` writes an IR quantized by NNCF (``effnet[openvino-int8]``), run by
the same ``openvino`` runtime.

Every loaded artifact takes float32 images ``[N, S, S, 3]`` in [0, 255] (the evaluation
preprocessing already applied) and returns class probabilities ``[N, C]``; an int8-I/O TFLite
model has its input quantized and its output dequantized here with the model's own scales.

The extras are imported only when a format or runtime that needs them is used: a missing one is
a one-line :class:`~effnet.errors.UserError` naming it. OpenVINO's CPU plugin runs in bf16 on CPUs
that have it unless told otherwise; :func:`load` asks for f32 by default (the export's parity
check and ``effnet eval --artifact`` measure the fp32 model), ``precision="auto"`` leaves the
plugin's own choice (what ``effnet benchmark infer --runtime openvino --precision auto`` measures).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from effnet.errors import UserError, did_you_mean
from effnet.paths import check_input, read_bytes

RUNTIMES = ("tf", "tflite", "onnxruntime", "openvino")
# runtime -> (module to import, extra that installs it)
EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino"),
          "tf2onnx": ("tf2onnx", "onnx"), "nncf": ("nncf", "openvino-int8")}
# tf2onnx's default opset for TF 2.x graphs; ONNX Runtime >= 1.14 and TensorRT >= 8.6 run it.
ONNX_OPSET = 17


def require(module_name: str, what: str):
    """Import ``module_name`` (an optional extra) or raise a one-line UserError naming the extra."""
    module, extra = EXTRAS.get(module_name, (module_name, module_name))
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{what} needs the optional package {module!r} ({exc.name or module} is not importable); "
                        f"install it with: pip install 'effnet[{extra}]'") from None


def runtime_for(path, runtime: str | None = None) -> str:
    """The runtime that runs the artifact at ``path`` (``runtime`` when given, else by its kind)."""
    path = Path(path)
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise UserError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}{did_you_mean(runtime, RUNTIMES)}")
        return runtime
    # a FIFO, a device or a symlink loop is named for what it is, never opened
    check_input(path, "artifact", folder=None, hint="; pass an exported file or folder (see effnet export)")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tf"
        if (path / "model.xml").is_file():
            return "openvino"
        raise UserError(f"{path} is neither a SavedModel (no saved_model.pb) nor an OpenVINO folder (no model.xml)")
    kinds = {".tflite": "tflite", ".onnx": "onnxruntime", ".xml": "openvino"}
    if path.suffix in kinds:
        return kinds[path.suffix]
    raise UserError(f"{path}: cannot tell its runtime from the name (.tflite, .onnx, .xml, or a SavedModel/OpenVINO "
                    f"folder); pass --runtime")


@dataclass
class Loaded:
    """An artifact loaded in its runtime: ``predict(images) -> probabilities``."""

    runtime: str
    path: str
    image_size: int | None
    predict: object  # callable(np.ndarray float32 [N, S, S, 3]) -> np.ndarray [N, C]
    detail: str = ""

    def __call__(self, images):
        return self.predict(images)


def _size_from(shape) -> int | None:
    try:
        value = int(shape[1])
        return value if value > 0 else None
    except (TypeError, ValueError, IndexError):
        return None


def load(path, runtime: str | None = None, threads: int | None = None, precision: str = "fp32") -> Loaded:
    """Load an exported artifact in its runtime (see the module's table)."""
    import numpy as np

    path = Path(path)
    runtime = runtime_for(path, runtime)
    # a FIFO, a device or a symlink loop is named for what it is, never opened
    check_input(path, "artifact", folder=None, hint="; pass an exported file or folder (see effnet export)")
    if runtime == "tf":
        import tensorflow as tf

        if not (path / "saved_model.pb").is_file():
            raise UserError(f"{path} is not a SavedModel folder (no saved_model.pb); --runtime tf takes effnet export's saved_model")
        loaded = tf.saved_model.load(str(path))
        if "serving_images" not in loaded.signatures:
            raise UserError(f"{path} has no serving_images signature: not a SavedModel written by effnet export")
        fn = loaded.signatures["serving_images"]
        size = _size_from(fn.structured_input_signature[1]["images"].shape)
        return Loaded(runtime, str(path), size, lambda x: fn(images=tf.constant(np.asarray(x, np.float32)))["probabilities"].numpy())
    if runtime == "tflite":
        content = read_bytes(path, "artifact")
        runner = TFLiteRunner(content, threads)
        return Loaded(runtime, str(path), runner.image_size, runner, runner.io)
    if runtime == "onnxruntime":
        ort = require("onnxruntime", f"running {path.name} in ONNX Runtime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise UserError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:300]}") from None
        inp = session.get_inputs()[0]
        return Loaded(runtime, str(path), _size_from(inp.shape),
                      lambda x: session.run(None, {inp.name: np.asarray(x, np.float32)})[0])
    # openvino
    runner = OpenVINORunner(path / "model.xml" if path.is_dir() else path, threads, precision)
    return Loaded(runtime, str(path), runner.image_size, runner, runner.detail)


class OpenVINORunner:
    """An OpenVINO model on the CPU: single images on a latency-compiled copy, batches split across streams.

    OpenVINO's CPU plugin runs a model compiled for latency (its default) as one stream using every
    thread, and a model compiled for throughput as several streams with a few threads each; on small
    convolutions (depthwise, squeeze-excitation) several streams keep the cores busier than one
    stream's threads can. So a batch goes to a throughput-compiled copy, split into one chunk per
    infer request the plugin asks for, run at once; a single image goes to a latency-compiled copy
    with its batch fixed at 1 (static shapes skip per-call shape inference). Measured on V2-S, 128 px,
    2 cores (docs/performance.md, "Deployment runtimes"): batch 16 +21-23% images/s in f32 and bf16,
    batch-1 p50 -4% (f32) and -7% (bf16), outputs identical. The batch copy is compiled at load (a
    model the plugin refuses fails there), the single-image copy on first use; both stay in memory.
    An IR whose writer fixed its batch is run as it is, never split or reshaped.
    """

    def __init__(self, xml: Path, threads: int | None = None, precision: str = "fp32"):
        self.ov = require("openvino", f"running {xml.name} in OpenVINO")
        self.xml = xml
        self.config = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "fp32" else {}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.core = self.ov.Core()
        self._single = None
        model = self._read()
        shape = model.inputs[0].get_partial_shape()
        self.image_size = shape[1].get_length() if shape.rank.is_static and shape[1].is_static else None
        self._static_batch = shape.rank.is_static and shape[0].is_static  # an IR fixed by its writer: keep it
        self._batches = self._compile(model, "THROUGHPUT")
        requests = 1 if self._static_batch else max(1, int(self._batches.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = self.ov.AsyncInferQueue(self._batches, requests)
        self.detail = "inference precision " + str(self._batches.get_property("INFERENCE_PRECISION_HINT"))

    def _read(self):
        try:
            return self.core.read_model(str(self.xml))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
            raise UserError(f"OpenVINO cannot load {self.xml}: {str(exc).strip().splitlines()[0][:300]}") from None

    def _compile(self, model, hint: str):
        try:
            return self.core.compile_model(model, "CPU", {**self.config, "PERFORMANCE_HINT": hint})
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"OpenVINO cannot load {self.xml}: {str(exc).strip().splitlines()[0][:300]}") from None

    def _single_request(self):
        if self._single is None:
            model = self._read()
            if not self._static_batch:
                shape = model.inputs[0].get_partial_shape()
                shape[0] = 1
                model.reshape({model.inputs[0]: shape})
            self._single = self._compile(model, "LATENCY").create_infer_request()
        return self._single

    def __call__(self, images):
        import numpy as np

        images = np.ascontiguousarray(images, np.float32)
        if len(images) == 1 and not self._static_batch:
            request = self._single_request()
            request.infer({0: images})
            return request.get_output_tensor(0).data.copy()
        queue = self._queue
        chunks = np.array_split(images, min(len(queue), len(images)))
        out = [None] * len(chunks)

        def keep(request, index):
            out[index] = request.get_output_tensor(0).data.copy()

        queue.set_callback(keep)
        for index, chunk in enumerate(chunks):
            queue.start_async({0: chunk}, index)
        queue.wait_all()
        return np.concatenate(out)


class TFLiteRunner:
    """One TFLite interpreter, its input resized to the batch it is given; int8/uint8 I/O (de)quantized."""

    def __init__(self, content: bytes, threads: int | None = None):
        from effnet.native import captured_stderr

        with captured_stderr():  # the runtime announces its XNNPACK delegate on stderr
            self.interpreter = tflite_interpreter(content, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = _size_from(self.input["shape"])
        self._shape = None
        self.io = f"{self.input['dtype'].__name__} input, {self.output['dtype'].__name__} output"

    def __call__(self, images):
        import numpy as np

        from effnet.native import captured_stderr

        images = np.asarray(images, np.float32)
        dtype = self.input["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            images = np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)
        else:
            images = images.astype(dtype)
        with captured_stderr():
            if self._shape != images.shape:
                self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
                self.interpreter.allocate_tensors()
                self._shape = images.shape
            self.interpreter.set_tensor(self.input["index"], images)
            self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"]).copy()
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out


def tflite_interpreter(content: bytes, threads: int | None = None):
    """The TFLite interpreter: LiteRT's when installed, else TensorFlow's (deprecated there, still present)."""
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=content, num_threads=threads)


# --------------------------------------------------------------------------------------------------
# Converters from the float SavedModel (``serving_default``: float images -> probabilities)


def listed_ops(log: str, *markers: str) -> list[str]:
    """What a converter lists after ``marker`` on a line of its log: the ops it says it cannot convert."""
    return [line.split(marker, 1)[1].strip() for line in log.splitlines() for marker in markers if marker in line]


def unconvertible(conversion: str, which: str, ops: str, others: str) -> UserError:
    """The one line for a model whose graph has ops a converter lacks: the model's fault, not the converter's."""
    return UserError(f"{conversion}: the model uses ops {which}: {ops[:200]}; export another --format ({others}) or "
                     f"replace the op in the model plugin")


def convert_onnx(saved_model: Path, output: Path, opset: int = ONNX_OPSET) -> None:
    """tf2onnx from the SavedModel, in a child process (a converter crash cannot take the export down).

    tf2onnx is the converter Keras 3's own ``model.export(format="onnx")`` calls for the TensorFlow
    backend; converting the SavedModel we write anyway gives the same graph with our softmax and names.
    Ops it cannot express are a UserError naming them (the model plugin uses an op ONNX lacks).
    """
    require("tf2onnx", "--format onnx")
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--signature_def",
           "serving_default", "--opset", str(opset), "--output", str(output)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = proc.stderr + proc.stdout
    unsupported = listed_ops(log, "Unsupported ops:")
    if unsupported:
        output.unlink(missing_ok=True)
        raise unconvertible("ONNX conversion", f"tf2onnx cannot express in opset {opset}", unsupported[0], "tflite, openvino")
    if proc.returncode < 0:  # killed: the kernel's OOM killer is the usual sender
        output.unlink(missing_ok=True)
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else -proc.returncode
        raise RuntimeError(f"ONNX conversion (tf2onnx) was killed by {name} before it finished (out of memory?); "
                           f"nothing was written; rerun with more free memory")
    if proc.returncode != 0 or not output.is_file():
        output.unlink(missing_ok=True)
        last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
        raise RuntimeError(f"ONNX conversion (tf2onnx) failed with exit code {proc.returncode}: {last[0][:300]}")


class _quiet:  # noqa: N801 - used like a function
    """Python's stdout and warnings, and file descriptor 2, kept from the user while a chatty library runs."""

    def __enter__(self):
        import contextlib
        import io
        import warnings

        from effnet.native import captured_stderr

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        self._stack.enter_context(captured_stderr())
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def _quiet_nncf():
    """NNCF for ``openvino_int8``, its log at errors only (no progress bars); imported quietly: it imports
    PyTorch when installed, whose start-up warnings would land in the export's output."""
    import logging

    with _quiet():
        nncf = require("nncf", "--format openvino_int8")
    nncf.set_log_level(logging.ERROR)
    return nncf


def convert_openvino(saved_model: Path, output_dir: Path, calibration=None) -> None:
    """OpenVINO IR (``model.xml`` + ``model.bin``, fp32 weights) from the SavedModel with ``openvino.convert_model``.

    With ``calibration`` (float images ``[N, S, S, 3]`` as the model takes them), the IR is quantized
    to int8 by NNCF's post-training quantization (``nncf.quantize``, the method OpenVINO documents):
    int8 weights, and activation ranges measured on those images, asymmetric where an activation is
    not centred (the ``mixed`` preset: swish and the input are not), so convolutions and matrix
    products run on the CPU's int8 instructions; the rest stays in the plugin's float precision.
    """
    ov = require("openvino", "--format openvino")
    nncf = _quiet_nncf() if calibration is not None else None
    try:
        model = ov.convert_model(str(saved_model))
    except Exception as exc:  # noqa: BLE001 - the frontend raises several types; keep its first line
        text = str(exc)
        # the frontend's summary of what it could not convert: the model's fault, not the converter's
        missing = listed_ops(text, "No conversion rule found for operations:")
        if missing:
            raise unconvertible("OpenVINO conversion", "OpenVINO's TensorFlow frontend cannot convert", missing[0],
                                "onnx, tflite") from None
        first = " ".join(text.strip().split("\n")[0].split())[:300]
        raise RuntimeError(f"OpenVINO conversion failed: {type(exc).__name__}: {first}") from exc
    if nncf is not None:
        import numpy as np

        images = np.asarray(calibration, np.float32)
        try:
            with _quiet():  # NNCF draws progress bars on stdout, which is the export's report
                model = nncf.quantize(model, nncf.Dataset([image[None] for image in images]), subset_size=len(images),
                                      preset=nncf.QuantizationPreset.MIXED)
        except Exception as exc:  # noqa: BLE001 - NNCF raises its own types; keep the first line
            first = " ".join(str(exc).strip().split("\n")[0].split())[:300]
            raise RuntimeError(f"OpenVINO int8 quantization (NNCF) failed: {type(exc).__name__}: {first}") from exc
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        # compress_to_fp16 defaults to True: fp16 weights would move probabilities beyond the fp32 bound
        ov.save_model(model, str(output_dir / "model.xml"), compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001 - a failed write is a bare "basic_ios::clear: iostream error"
        import errno
        import shutil

        weights = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
        if shutil.disk_usage(output_dir).free < weights:  # the stream stopped because the disk filled up
            raise OSError(errno.ENOSPC, f"No space left on device (OpenVINO's serializer: {exc})") from exc
        raise RuntimeError(f"OpenVINO could not write {output_dir / 'model.xml'}: {type(exc).__name__}: "
                           f"{str(exc).strip()[:200]}") from exc


__all__ = ["EXTRAS", "Loaded", "ONNX_OPSET", "OpenVINORunner", "RUNTIMES", "TFLiteRunner", "convert_onnx", "convert_openvino", "listed_ops",
           "load", "require", "runtime_for", "tflite_interpreter", "unconvertible"]

"""``effnet export``: SavedModel, ``.keras`` and TFLite from a training run, each checked on reload.

Formats (names as ``--format`` takes them):

- ``saved_model``: a TensorFlow SavedModel (written with Keras' ``ExportArchive``) with two
  signatures. ``serving_default`` takes ``images``: a ``tf.string [None]`` batch of encoded
  JPEG/PNG/BMP/GIF files and applies the run's evaluation preprocessing inside (centre crop,
  bilinear resize to the eval size); ``serving_images`` takes ``images``: ``float32
  [None, S, S, 3]`` RGB values in [0, 255]. Both return ``probabilities [None, C]``,
  ``top_k_probabilities`` and ``top_k_indices [None, k]`` and, when class names are known,
  ``top_k_classes``.
- ``keras``: ``model.keras`` (the Keras model itself: float images of any size >= the model's
  minimum in [0, 255] -> logits; no softmax, no decoding).
- ``tflite``, ``tflite_float16``, ``tflite_dynamic``: TFLite flatbuffers of the float signature
  (input ``float32 [N, S, S, 3]`` in [0, 255], batch resizable; output probabilities), float32,
  float16 weights, or dynamic-range int8 weights. Built-in TFLite ops only (no Flex delegate).

Every artifact is written under a temporary name, re-loaded (``tf.saved_model.load``,
``keras.saving.load_model``, the TFLite interpreter) and compared with the in-memory model on
sample images: the largest absolute difference of a class probability and the top-1 agreement.
Only an artifact within the bounds (gin ``export.max_prob_diff`` / ``export.min_top1_agreement``,
per format) is renamed into place, so a failed export leaves nothing that looks valid; an export is
complete when ``export_report.json`` is there: it is written last, and an older one is removed
before the first artifact is replaced, so a folder whose export was cut short (a crash, a full disk)
has no report; the work folders of a killed export are removed by the next one. A parity
failure is a :class:`~effnet.errors.UserError` (exit code 2, one line naming the format, the measured
values and the bounds): the bounds are the user's tolerance, and raising them or choosing another
format is the fix. A converter crash stays an internal error (exit code 1).

Variables are frozen into the TFLite flatbuffer by converting a SavedModel written by Keras'
``ExportArchive``: with TF 2.21 and Keras 3, converting a concrete function together with the Keras
model as its trackable object keeps ``VAR_HANDLE``/``READ_VARIABLE`` ops whose values the
interpreter never initialises, and every output is NaN.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from effnet import metrics, runfolder
from effnet.checkpoint import free_bytes, human_bytes
from effnet.errors import UserError, did_you_mean
from effnet.faults import point
from effnet.files import write_json_atomic
from effnet.native import captured_stderr
from effnet.runtimes import TFLiteRunner, tflite_interpreter
from effnet.settings import (ALL_FORMATS, DEFAULT_MAX_PROB_DIFF, DEFAULT_MAX_TOP1_DROP, DEFAULT_MIN_TOP1_AGREEMENT, FILENAMES,
                             FORMATS, INT8_FORMATS, export_bounds)

REPORT_NAME = "export_report.json"


def parse_formats(names: Sequence[str]) -> list[str]:
    """``--format`` values (repeatable, comma-separated, ``all``) -> format names in canonical order."""
    wanted: set[str] = set()
    for item in names or ["all"]:
        for name in filter(None, (n.strip() for n in str(item).split(","))):
            if name == "all":
                wanted.update(ALL_FORMATS)
            elif name in FORMATS:
                wanted.add(name)
            else:
                raise UserError(f"--format {name!r} is not one of {', '.join(FORMATS)}, all{did_you_mean(name, FORMATS)}")
    return [name for name in FORMATS if name in wanted]


# the optional packages each converted format needs (effnet.runtimes.EXTRAS names their extras)
FORMAT_MODULES = {"onnx": ("tf2onnx", "onnxruntime"), "openvino": ("openvino",), "openvino_int8": ("openvino", "nncf")}


def check_format_extras(names: Sequence[str]) -> None:
    """A missing optional package for a chosen format, said before the run is loaded and converted
    (the converters import them only when they run, minutes later)."""
    import importlib.util

    from effnet import runtimes

    for name in names:
        for module in FORMAT_MODULES.get(name, ()):
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                runtimes.require(module, f"--format {name}")  # raises the one-line error naming the extra


@dataclass
class Parity:
    """How one re-loaded artifact compares with the in-memory model."""

    format: str
    path: str
    max_prob_diff: float
    top1_agree: int
    samples: int
    bound_max_prob_diff: float
    bound_min_top1_agreement: float
    bound_max_top1_drop: float = 1.0
    size_bytes: int = 0
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)  # per signature, for the SavedModel
    # with --validate: validation top-1 of the artifact (in its runtime) and of the in-memory model
    validation_images: int = 0
    validation_top1: float | None = None
    model_top1: float | None = None

    @property
    def top1_drop(self) -> float | None:
        return None if self.validation_top1 is None else self.model_top1 - self.validation_top1

    @property
    def accurate(self) -> bool:
        return self.top1_drop is None or self.top1_drop <= self.bound_max_top1_drop + 1e-9

    @property
    def top1_agreement(self) -> float:
        return self.top1_agree / self.samples if self.samples else float("nan")

    @property
    def agrees(self) -> bool:
        return self.max_prob_diff <= self.bound_max_prob_diff and self.top1_agreement >= self.bound_min_top1_agreement

    @property
    def passed(self) -> bool:
        return self.agrees and self.accurate

    def as_dict(self) -> dict:
        return {**asdict(self), "top1_agreement": self.top1_agreement, "top1_drop": self.top1_drop, "passed": self.passed}

    def line(self) -> str:
        status = "ok" if self.passed else "FAILED"
        validated = ""
        if self.validation_top1 is not None:
            validated = (f"  validation top-1 {100 * self.validation_top1:.2f}% vs model {100 * self.model_top1:.2f}% "
                         f"(drop {100 * self.top1_drop:+.2f} pt, bound {100 * self.bound_max_top1_drop:.1f})")
        return (f"{self.format:<15} max |prob diff| {self.max_prob_diff:.2e} (bound {self.bound_max_prob_diff:.0e})  "
                f"top-1 agreement {self.top1_agree}/{self.samples} = {100 * self.top1_agreement:.1f}% "
                f"(bound {100 * self.bound_min_top1_agreement:.0f}%){validated}  {status}")


def _compare(fmt: str, path: Path, ref, out, bounds) -> Parity:
    import numpy as np

    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise RuntimeError(f"re-loaded {fmt} returned shape {out.shape}, the model {ref.shape}")
    diff = float(np.max(np.abs(ref - out))) if ref.size else 0.0
    if not np.all(np.isfinite(out)):
        diff = float("inf")
    agree = int(np.sum(np.argmax(ref, -1) == np.argmax(out, -1)))
    max_diff, min_agreement, max_drop = bounds[fmt]
    return Parity(fmt, str(path), diff, agree, int(ref.shape[0]), max_diff, min_agreement, max_drop)


# --------------------------------------------------------------------------------------------------
# Sample inputs


def synthetic_samples(count: int, image_size: int, seed: int = 0) -> list[bytes]:
    """Deterministic smooth random images (low-resolution noise, upsampled), JPEG-encoded."""
    import tensorflow as tf

    out = []
    for i in range(count):
        coarse = tf.random.stateless_uniform([1, 4 + i % 5, 4 + (i * 3) % 7, 3], seed=[seed, i], maxval=255.0)
        size = image_size + 16 * (i % 3)  # not always the eval size: the crop and resize run too
        image = tf.image.resize(coarse, [size, size + 8 * (i % 2)], method="bilinear")[0]
        noise = tf.random.stateless_normal(tf.shape(image), seed=[seed, 1000 + i], stddev=8.0)
        image = tf.cast(tf.clip_by_value(tf.round(image + noise), 0, 255), tf.uint8)
        out.append(tf.io.encode_jpeg(image, quality=95).numpy())
    return out


def dataset_samples(source, count: int, split: str = "validation") -> list[bytes]:
    """The first ``count`` encoded images of a dataset split."""
    return [bytes(encoded) for encoded, _ in source.records(split).take(count).as_numpy_iterator()]


def file_samples(paths: Sequence, count: int) -> list[bytes]:
    """The bytes of the first ``count`` sample images; a file that is not a readable image is named (UserError)."""
    from effnet.images import check_image_bytes
    from effnet.paths import read_bytes

    out = []
    for p in list(paths)[:count]:
        data = read_bytes(p, "--samples image")
        problem = check_image_bytes(data)
        if problem:
            raise UserError(f"--samples image {str(p)!r} {problem}; pass JPEG, PNG, BMP or GIF images")
        out.append(data)
    return out


# --------------------------------------------------------------------------------------------------
# Writing and re-loading


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, replacing an older ``final`` (file or folder)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_leftovers(output_dir: Path) -> list[Path]:
    """Delete what killed exports left in ``output_dir``: their ``.tmp-export-<pid>-*`` work folders and
    ``.old-<name>-<pid>`` artifacts set aside for a replacement, when that process is gone."""
    removed = []
    for path in Path(output_dir).glob(".*"):
        parts = path.name.split("-")
        if path.name.startswith(".tmp-export-") and len(parts) > 3 and parts[2].isdigit():
            pid = int(parts[2])
        elif path.name.startswith(".old-") and parts[-1].isdigit():
            pid = int(parts[-1])
        else:
            continue
        if not _alive(pid):
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def run_tflite(content: bytes, images) -> "np.ndarray":  # noqa: F821
    """Run a TFLite model with one image input on a batch of float images (int8 I/O is (de)quantized)."""
    return TFLiteRunner(content)(images)


class Exporter:
    """Exports one model (with its weights loaded) in the run's serving conventions."""

    def __init__(self, model, image_size: int, class_names: Sequence[str] | None = None, top_k: int = 5,
                 crop_fraction: float | None = None, method: str = "bilinear", num_classes: int | None = None,
                 whole_frame: bool = False):
        import tensorflow as tf

        from effnet.data import decode_for_eval

        self.model = model
        self.image_size = int(image_size)
        self.num_classes = int(num_classes or model.outputs[0].shape[-1])
        self.class_names = list(class_names) if class_names else None
        self.top_k = max(1, min(int(top_k), self.num_classes))
        size = self.image_size

        def decode(encoded):
            return decode_for_eval(encoded, size, crop_fraction, method, whole_frame)

        self._decode_one = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)])
        self._decode = decode

    # -- the functions the artifacts serve -------------------------------------------------------------
    def probabilities(self, images):
        return metrics.probabilities(self.model(images, training=False))

    def _outputs(self, images):
        import tensorflow as tf

        probs = self.probabilities(images)
        values, indices = tf.math.top_k(probs, k=self.top_k)
        out = {"probabilities": probs, "top_k_probabilities": values, "top_k_indices": indices}
        if self.class_names:
            out["top_k_classes"] = tf.gather(tf.constant(self.class_names), indices)
        return out

    def serve_bytes(self, images):
        import tensorflow as tf

        size = self.image_size
        decoded = tf.map_fn(self._decode, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return self._outputs(tf.cast(decoded, tf.float32))

    def serve_images(self, images):
        return self._outputs(images)

    def _float_spec(self, batch=None):
        import tensorflow as tf

        return tf.TensorSpec([batch, self.image_size, self.image_size, 3], tf.float32, name="images")

    # -- reference ------------------------------------------------------------------------------------
    def decode_samples(self, samples: Sequence[bytes]):
        import numpy as np
        import tensorflow as tf

        return np.stack([self._decode_one(tf.constant(s)).numpy() for s in samples])

    def reference(self, decoded):
        import numpy as np

        return self.probabilities(np.asarray(decoded, np.float32)).numpy()

    # -- writers --------------------------------------------------------------------------------------
    def write_saved_model(self, path: Path) -> None:
        import keras
        import tensorflow as tf

        archive = keras.export.ExportArchive()
        # not archive.track(model): endpoints track the variables they use; tracking the model as well
        # stores every weight twice (Keras variables and the tf.Variables inside them)
        archive.add_endpoint("serving_default", self.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        archive.add_endpoint("serving_images", self.serve_images, input_signature=[self._float_spec()])
        archive.write_out(str(path), verbose=False)

    def write_keras(self, path: Path) -> None:
        self.model.save(str(path))

    def float_saved_model(self, workdir: Path) -> Path:
        """The float signature alone (``serving_default``: float images -> probabilities), written once per
        export: the source of every converted format (TFLite, ONNX, OpenVINO)."""
        import keras

        saved = workdir / "float_source"
        if not saved.exists():
            archive = keras.export.ExportArchive()
            # not archive.track(model): endpoints track the variables they use; tracking the model as well
            # stores every weight twice (Keras variables and the tf.Variables inside them)
            archive.add_endpoint("serving_default", self.probabilities, input_signature=[self._float_spec()])
            archive.write_out(str(saved), verbose=False)
        return saved

    def tflite_bytes(self, variant: str, workdir: Path, calibration=None, int8_io: bool = False) -> bytes:
        """Convert the float signature to TFLite: ``tflite`` (float32), ``tflite_float16``, ``tflite_dynamic``,
        or ``tflite_int8`` (full-integer: int8 weights and activations, ranges calibrated on ``calibration``,
        float32 or, with ``int8_io``, int8 input and output)."""
        import numpy as np
        import tensorflow as tf

        saved = self.float_saved_model(workdir)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant == "tflite_float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif variant == "tflite_dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif variant == "tflite_int8":
            images = np.asarray(calibration, np.float32)

            def representative():
                for image in images:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            # every op in int8: a model with an op that has no int8 kernel fails here instead of keeping float ops
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        try:
            with captured_stderr():
                return converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types; keep its first line
            text = str(exc)
            # ops outside TFLite's built-in set (the converter lists them as custom or flex ops): the model's fault
            from effnet import runtimes

            missing = runtimes.listed_ops(text, "Custom ops:", "Flex ops:")
            if missing:
                raise runtimes.unconvertible(f"TFLite conversion ({variant})", "outside TFLite's built-in op set",
                                             ", ".join(missing), "saved_model, onnx, openvino") from None
            first = " ".join(text.strip().split("\n")[0].split())[:300]
            raise RuntimeError(f"TFLite conversion ({variant}) failed: {type(exc).__name__}: {first}") from exc

    def write_converted(self, fmt: str, tmp: Path, work: Path, calibration, int8_io: bool):
        """Write ``fmt`` (a converted format) to ``tmp``; returns the artifact loaded in its runtime."""
        from effnet import runtimes

        if fmt == "onnx":
            runtimes.require("onnxruntime", "--format onnx")  # before converting: the check needs the runtime too
            runtimes.convert_onnx(self.float_saved_model(work), tmp)
        elif fmt == "openvino":
            runtimes.convert_openvino(self.float_saved_model(work), tmp)
        elif fmt == "openvino_int8":
            runtimes.convert_openvino(self.float_saved_model(work), tmp, calibration=calibration)
        else:
            tmp.write_bytes(self.tflite_bytes(fmt, work, calibration, int8_io))
        point("export.after_write")  # kill-anywhere tests: written, not yet checked
        runtime = {"onnx": "onnxruntime", "openvino": "openvino", "openvino_int8": "openvino"}.get(fmt, "tflite")
        return runtimes.load(tmp, runtime)

    # -- the whole export -------------------------------------------------------------------------------
    def export(self, output_dir, formats: Sequence[str], samples: Sequence[bytes], bounds: dict | None = None,
               on_result=None, calibration=None, int8_io: bool = False, validation=None) -> list[Parity]:
        """Write, re-load and check every format; returns the parity of each.

        ``calibration``: decoded float images for the int8 formats; ``validation``: batches of
        ``(images, labels)`` (:class:`ValidationData`) on which each artifact's top-1 is measured
        against the in-memory model's and held to ``max_top1_drop``. Stops at the first artifact beyond its bounds
        (UserError); artifacts checked before it stay in place, the failing one is removed.
        """
        import numpy as np
        import tensorflow as tf

        bounds = bounds or export_bounds()
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if not samples:
            raise UserError("no sample images for the parity check; pass --samples with images or raise --num-samples")
        wants = [f for f in formats if f in INT8_FORMATS]
        if wants and (calibration is None or len(calibration) == 0):
            raise UserError(f"--format {wants[0]} needs calibration images; pass --calibration with images")
        decoded = self.decode_samples(samples)
        floats = decoded.astype(np.float32)
        ref = self.reference(floats)
        model_top1 = None
        if validation is not None:
            model_top1 = accuracy_of(self.reference, validation)[0]
        results: list[Parity] = []
        remove_leftovers(output_dir)
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=f".tmp-export-{os.getpid()}-") as work:
            work = Path(work)
            for fmt in formats:
                started = time.perf_counter()
                final = output_dir / FILENAMES[fmt]
                tmp = work / FILENAMES[fmt]
                if fmt == "saved_model":
                    self.write_saved_model(tmp)
                    point("export.after_write")  # kill-anywhere tests: written, not yet checked
                    loaded = tf.saved_model.load(str(tmp))
                    by_bytes = loaded.signatures["serving_default"](images=tf.constant(list(samples)))
                    by_images = loaded.signatures["serving_images"](images=tf.constant(floats))
                    parity_bytes = _compare(fmt, final, ref, by_bytes["probabilities"].numpy(), bounds)
                    parity_images = _compare(fmt, final, ref, by_images["probabilities"].numpy(), bounds)
                    worst = max((parity_bytes, parity_images), key=lambda p: (not p.passed, p.max_prob_diff))
                    parity = Parity(**{**asdict(worst), "detail": {
                        "serving_default (encoded bytes)": parity_bytes.as_dict(),
                        "serving_images (float images)": parity_images.as_dict()}})
                    signature = loaded.signatures["serving_images"]

                    def predict(x, signature=signature):
                        return signature(images=tf.constant(x))["probabilities"].numpy()
                elif fmt == "keras":
                    import keras

                    self.write_keras(tmp)
                    point("export.after_write")  # kill-anywhere tests: written, not yet checked
                    loaded = keras.saving.load_model(str(tmp), compile=False)

                    def predict(x, loaded=loaded):
                        return metrics.probabilities(loaded(x, training=False)).numpy()
                    parity = _compare(fmt, final, ref, predict(floats), bounds)
                else:
                    loaded = self.write_converted(fmt, tmp, work, calibration, int8_io)
                    predict = loaded.predict
                    parity = _compare(fmt, final, ref, predict(floats), bounds)
                if validation is not None and parity.agrees:
                    parity.validation_top1 = accuracy_of(predict, validation)[0]
                    parity.model_top1 = model_top1
                    parity.validation_images = validation.count
                del loaded, predict
                parity.size_bytes = _size(tmp)
                parity.seconds = time.perf_counter() - started
                results.append(parity)
                if on_result is not None:
                    on_result(parity)
                if not parity.agrees:
                    _remove(tmp)
                    raise UserError(
                        f"{fmt} export differs from the model beyond its bounds: max |prob diff| "
                        f"{parity.max_prob_diff:.3g} (bound {parity.bound_max_prob_diff:g}), top-1 agreement "
                        f"{parity.top1_agree}/{parity.samples} (bound {parity.bound_min_top1_agreement:.0%}); "
                        f"{final} was not written; raise the bound (--max-diff / --min-agreement, or gin "
                        f"export.max_prob_diff / export.min_top1_agreement) or export another --format"
                    )
                if not parity.accurate:
                    _remove(tmp)
                    raise UserError(
                        f"{fmt} export loses {100 * parity.top1_drop:.2f} points of validation top-1 "
                        f"({100 * parity.validation_top1:.2f}% vs the model's {100 * parity.model_top1:.2f}% on "
                        f"{parity.validation_images} images; bound export.max_top1_drop {parity.bound_max_top1_drop:g}); "
                        f"{final} was not written; check the calibration images or raise the bound "
                        f"(--max-top1-drop, or gin export.max_top1_drop)"
                    )
                point("export.before_rename")
                # export_report.json marks a finished export: once an artifact changes, an older
                # report no longer describes the folder (export_run writes the new one last)
                (output_dir / REPORT_NAME).unlink(missing_ok=True)
                _place(tmp, final)
        return results


def accuracy_of(predict, data, k: int = 5) -> tuple[float, float, int]:
    """``(top-1, top-k, images)`` of ``predict`` (float images -> probabilities) over ``data``'s batches."""
    import numpy as np

    top1 = topk = count = 0
    for images, labels in data:
        probs = np.asarray(predict(images))
        labels = np.asarray(labels)
        top1 += int(np.sum(np.argmax(probs, -1) == labels))
        best = np.argsort(-probs, axis=-1)[:, :k]
        topk += int(np.sum(np.any(best == labels[:, None], axis=-1)))
        count += len(labels)
    return (top1 / count, topk / count, count) if count else (float("nan"), float("nan"), 0)


def decode_all(exporter: Exporter, encoded: Sequence[bytes]):
    """Decode encoded images with the run's evaluation preprocessing, skipping unreadable ones.

    Returns ``(images float32 [N, S, S, 3], indices of the images kept)``.
    """
    import numpy as np
    import tensorflow as tf

    images, kept = [], []
    for i, data in enumerate(encoded):
        try:
            images.append(exporter._decode_one(tf.constant(data)).numpy())
            kept.append(i)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError):
            continue
    size = exporter.image_size
    return (np.stack(images).astype(np.float32) if images else np.zeros([0, size, size, 3], np.float32)), kept


def calibration_images(cfg, exporter: Exporter, files=None, count: int = 100):
    """Calibration images for the int8 formats (``tflite_int8``, ``openvino_int8``), decoded with the evaluation
    preprocessing.

    The given files (the first ``count`` of them, in sorted order), else the first ``count``
    records of the run's training split in file order: the same images on every export of a run.
    """
    if files:
        from effnet.images import check_image_bytes
        from effnet.paths import read_bytes

        encoded = []
        for path in list(files)[:count]:  # an unreadable file is skipped: the others still calibrate
            try:
                data = read_bytes(path, "--calibration image")
            except UserError:
                continue
            if not check_image_bytes(data):
                encoded.append(data)
        images, _ = decode_all(exporter, encoded)
        origin = f"{len(images)} given images"
        if not len(images):
            raise UserError(f"no readable image among the {min(len(files), count)} calibration files "
                            f"(first: {files[0]}); pass --calibration with JPEG/PNG/BMP/GIF images")
        return images, origin
    from effnet import registry

    try:
        source = registry.get("dataset", cfg.dataset)()
        encoded = [bytes(e) for e, _ in source.records("train").take(count).as_numpy_iterator()]
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read the data is the same advice
        raise UserError(f"int8 export calibrates on the run's training images, and dataset {cfg.dataset!r} could not be "
                        f"read ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                        f"pass --data-dir or --calibration with images") from None
    images, _ = decode_all(exporter, encoded)
    if not len(images):
        raise UserError(f"no readable image in the training split of {cfg.dataset!r} for int8 calibration; "
                        f"pass --calibration with images")
    return images, f"the first {len(images)} training images of {cfg.dataset}"


class ValidationData:
    """A split of the run's dataset, decoded with the evaluation preprocessing, in float batches
    ``(images [B, S, S, 3], labels [B])``; unreadable images are skipped. Iterable more than once
    (each pass reads the records again: nothing larger than a batch is held)."""

    def __init__(self, cfg, exporter: Exporter, limit: int | None = None, split: str = "validation", batch: int = 32):
        from effnet import registry

        self.split, self.dataset, self.batch = split, cfg.dataset, int(batch)
        self._decode = exporter._decode
        try:
            source = registry.get("dataset", cfg.dataset)()
            self._records = source.records(split)
            if limit:
                self._records = self._records.take(int(limit))
            self.count = sum(len(labels) for _, labels in self)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to read the data is the same advice
            raise UserError(f"the {split} split of dataset {cfg.dataset!r} could not be read ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]}); pass --data-dir, or leave out the validation") from None
        if not self.count:
            raise UserError(f"no readable image in the {split} split of {cfg.dataset!r}; pass --data-dir, or leave out "
                            f"the validation")

    def __iter__(self):
        import tensorflow as tf

        ds = self._records.map(lambda encoded, label: (tf.cast(self._decode(encoded), tf.float32), label))
        yield from ds.ignore_errors().batch(self.batch).as_numpy_iterator()


def validation_set(cfg, exporter: Exporter, limit: int | None = None, split: str = "validation") -> ValidationData:
    """The run's ``split`` (its first ``limit`` images) as :class:`ValidationData`."""
    return ValidationData(cfg, exporter, limit, split)


def evaluate_artifact(cfg, path, runtime: str | None = None, checkpoint: str = "latest", weights: str = "auto",
                      split: str = "validation", limit: int | None = None, batch: int = 32) -> dict:
    """``effnet eval --artifact``: top-1/top-5 of an exported artifact in its own runtime on the run's
    ``split``, next to the in-memory model's (the run's checkpoint) on the same decoded images."""
    from effnet import runtimes
    from effnet.data import pipeline_options

    loaded = runtimes.load(path, runtime)
    run = runfolder.load_run(cfg, checkpoint=checkpoint, weights=weights, precision="fp32")
    size = loaded.image_size or run.image_size
    opts = pipeline_options()
    exporter = Exporter(run.model, size, None, 5, opts.eval_crop_fraction, opts.resize_method,
                        num_classes=run.num_classes, whole_frame=opts.eval_whole_frame)
    data = ValidationData(cfg, exporter, limit, split, batch)
    k = min(5, run.num_classes)
    started = time.perf_counter()
    art_top1, art_topk, count = accuracy_of(loaded.predict, data, k)
    seconds = time.perf_counter() - started
    model_top1, model_topk, _ = accuracy_of(exporter.reference, data, k)
    return {"artifact": str(path), "runtime": loaded.runtime, "detail": loaded.detail, "model": cfg.model,
            "dataset": cfg.dataset, "split": split, "images": count, "image_size": size,
            "checkpoint": str(run.checkpoint.path), "weights": "ema" if run.ema else "raw", "k": k,
            "artifact_top1": art_top1, "artifact_top5": art_topk, "model_top1": model_top1, "model_top5": model_topk,
            "top1_drop": model_top1 - art_top1, "artifact_seconds": seconds}


def artifact_lines(report: dict) -> list[str]:
    """``effnet eval --artifact``'s table."""
    k = report["k"]
    return [f"{report['artifact']} ({report['runtime']}) on {report['dataset']}/{report['split']}, {report['images']} images, "
            f"{report['image_size']} px; model: {Path(report['checkpoint']).name}, {report['weights']} weights",
            f"{'':<10}{'top-1':>9}{f'top-{k}':>9}",
            f"{'artifact':<10}{100 * report['artifact_top1']:>8.2f}%{100 * report['artifact_top5']:>8.2f}%",
            f"{'model':<10}{100 * report['model_top1']:>8.2f}%{100 * report['model_top5']:>8.2f}%",
            f"top-1 drop {100 * report['top1_drop']:+.2f} points"]


def run_samples(cfg, image_size: int, sample_files=None, count: int = 16) -> tuple[list[bytes], str]:
    """Parity-check images: the given files, else the run's validation images, else synthetic ones."""
    if sample_files:
        return file_samples(sample_files, count), "given images"
    try:
        from effnet import registry

        samples = dataset_samples(registry.get("dataset", cfg.dataset)(), count)
        if samples:
            return samples, f"validation images of {cfg.dataset}"
    except Exception:  # noqa: BLE001 - the dataset is optional here; synthetic images do instead
        pass
    return synthetic_samples(count, image_size), "synthetic images"


def export_run(cfg, formats: Sequence[str] = ("all",), output=None, checkpoint: str = "latest", weights: str = "auto",
               labels_file=None, top_k: int = 5, sample_files=None, num_samples: int = 16,
               max_diff: float | None = None, min_agreement: float | None = None, on_start=None, on_result=None,
               calibration_files=None, calibration_count: int = 100, int8_io: bool = False, validate: bool = False,
               validation_limit: int | None = None, max_top1_drop: float | None = None) -> dict:
    """``effnet export``: a run's checkpoint as the chosen formats, each checked on reload; returns the report.

    Writes ``export_report.json`` (and ``labels.txt`` when class names are known) into ``output``
    (default ``<model_dir>/export``). ``on_start(text)`` hears what is exported, ``on_result(parity)``
    each format's check. The int8 formats calibrate on ``calibration_files`` or the first
    ``calibration_count`` training images; ``validate`` measures each artifact's validation top-1
    (the first ``validation_limit`` images) against the model's, bounded by ``max_top1_drop``.
    """
    from effnet.data import pipeline_options
    from effnet.prediction import dataset_class_names

    names = parse_formats(formats)
    if int8_io and "tflite_int8" not in names:
        raise UserError(f"--int8-io applies to --format tflite_int8 only (asked for: {', '.join(names)}; openvino_int8 "
                        f"keeps float input and output); add tflite_int8 or drop --int8-io")
    if calibration_files and not any(name in INT8_FORMATS for name in names):
        raise UserError(f"--calibration is for the int8 formats ({', '.join(INT8_FORMATS)}), and none is asked for "
                        f"(asked for: {', '.join(names)}); add one to --format or drop --calibration")
    run = runfolder.load_run(cfg, checkpoint=checkpoint, weights=weights, precision="fp32")
    class_names = runfolder.class_names_for(run.num_classes, labels_file, cfg.model_dir, dataset_class_names(cfg))
    bounds = export_bounds()
    bounds = {f: (d if max_diff is None else max_diff, a if min_agreement is None else min_agreement,
                  drop if max_top1_drop is None else max_top1_drop) for f, (d, a, drop) in bounds.items()}
    samples, origin = run_samples(cfg, run.image_size, sample_files, num_samples)
    opts = pipeline_options()
    exporter = Exporter(run.model, run.image_size, class_names, top_k, opts.eval_crop_fraction, opts.resize_method,
                        num_classes=run.num_classes, whole_frame=opts.eval_whole_frame)
    out_dir = Path(output) if output else Path(cfg.model_dir) / "export"
    calibration, calibration_origin = None, None
    int8 = [name for name in names if name in INT8_FORMATS]
    if int8:
        calibration, calibration_origin = calibration_images(cfg, exporter, calibration_files, calibration_count)
    validation = validation_set(cfg, exporter, validation_limit) if validate else None
    if on_start is not None:
        extra = f"; {' and '.join(int8)} calibrated on {calibration_origin}" if calibration_origin else ""
        extra += f"; validation top-1 on {validation.count} images" if validation is not None else ""
        on_start(f"exporting {run.describe()} to {out_dir}; parity on {len(samples)} {origin}{extra}")
    existed = out_dir.exists()
    try:
        results = exporter.export(out_dir, names, samples, bounds, on_result=on_result, calibration=calibration,
                                  int8_io=int8_io, validation=validation)
        point("export.before_report")
        report = _export_report(cfg, run, class_names, samples, origin, out_dir, results)
        report["calibration"] = calibration_origin
        report["tflite_int8_io"] = ("int8" if int8_io else "float32") if "tflite_int8" in names else None
        report["validation_images"] = validation.count if validation is not None else None
        if class_names:
            runfolder.write_labels(out_dir, class_names)
        write_json_atomic(out_dir / REPORT_NAME, report)
    except Exception as exc:
        if not existed:  # a refused or failed export leaves no empty folder behind
            try:
                out_dir.rmdir()
            except OSError:
                pass
        full = _disk_full(exc)
        if full is None and not isinstance(exc, OSError):
            raise
        if full is not None:  # as train says for a checkpoint: what the export needs, what is free
            free = free_bytes(out_dir)
            reason = (f"{full} (this export needs at least {human_bytes(_needed_bytes(run.model, names))}: the model's "
                      f"weights once per format ({', '.join(names)}); {human_bytes(free)} free)")
        else:  # a folder that became read-only, an I/O error
            reason = exc.strerror or str(exc)
        raise UserError(f"could not write the export to {out_dir}: {reason}; formats checked before it "
                        f"were kept; free some space or pass another --output") from None
    return report


# The size of each format relative to the float32 weights (a lower bound: graphs and metadata add more).
_FORMAT_WEIGHT_FACTOR = {"saved_model": 1.0, "keras": 1.0, "tflite": 2.0, "tflite_float16": 1.5, "tflite_dynamic": 1.25}


def _needed_bytes(model, names) -> int:
    """A lower bound of an export's size: the weights once per format (TFLite also writes a float SavedModel
    to convert from)."""
    weights = sum(int(w.shape.num_elements() or 0) * 4 for w in model.weights)
    return int(weights * sum(_FORMAT_WEIGHT_FACTOR.get(n, 1.0) for n in names))


def _disk_full(exc: BaseException) -> str | None:
    """'No space left on device' (or quota, file too large) when ``exc`` says the disk is full, including
    TensorFlow's ResourceExhaustedError and errors whose cause is one."""
    import errno

    texts = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in texts:
            return texts[seen.errno]
        message = str(seen)
        for text in texts.values():
            if text in message:
                return text
        seen = seen.__cause__ or seen.__context__
    return None


def _export_report(cfg, run, class_names, samples, origin, out_dir, results) -> dict:
    return {"model": cfg.model, "checkpoint": str(run.checkpoint.path), "step": run.checkpoint.step,
            "weights": "ema" if run.ema else "raw", "image_size": run.image_size, "num_classes": run.num_classes,
            "class_names": class_names, "samples": f"{len(samples)} {origin}", "output": str(out_dir),
            "artifacts": [r.as_dict() for r in results]}


__all__ = [
    "ALL_FORMATS",
    "DEFAULT_MAX_PROB_DIFF",
    "DEFAULT_MAX_TOP1_DROP",
    "DEFAULT_MIN_TOP1_AGREEMENT",
    "Exporter",
    "FILENAMES",
    "FORMATS",
    "FORMAT_MODULES",
    "check_format_extras",
    "Parity",
    "REPORT_NAME",
    "dataset_samples",
    "export_bounds",
    "export_run",
    "file_samples",
    "parse_formats",
    "remove_leftovers",
    "run_samples",
    "calibration_images",
    "decode_all",
    "ValidationData",
    "accuracy_of",
    "artifact_lines",
    "evaluate_artifact",
    "validation_set",
    "run_tflite",
    "synthetic_samples",
    "tflite_interpreter",
]

"""Loading a finished training run for inference: checkpoint choice, weights, class names, prediction.

Used by ``effnet eval``, ``effnet predict`` and ``effnet export``. A run folder holds everything
needed: ``operative_config.gin`` (the whole configuration; parse it, then read
:class:`effnet.train.TrainConfig`), ``checkpoints/ckpt-<step>/`` (weights, raw and EMA, and
``meta.json`` naming the model and its number of classes) and ``labels.txt`` (class names).

Typical use, after gin was parsed::

    cfg = TrainConfig()
    info = select_checkpoint(cfg.model_dir, "latest")          # or "best", or a path
    model = build_model(cfg, num_classes_of(info, cfg.model_dir))
    used_ema = load_checkpoint_weights(model, info, cfg, use_ema=True)
    predictor = Predictor(model, image_size=eval_image_size(cfg), top_k=5)
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from effnet import registry
from effnet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
WEIGHT_CHOICES = ("auto", "ema", "raw")
EMA_KEY = "ema/averages/0/.ATTRIBUTES/VARIABLE_VALUE"


# --------------------------------------------------------------------------------------------------
# Run folders and checkpoints


def run_config_file(model_dir) -> Path:
    """``<model_dir>/operative_config.gin``, or a UserError saying what is missing."""
    from effnet.config import OPERATIVE_CONFIG

    if model_dir is None:
        raise UserError("no model dir: pass --model-dir with the folder of a training run")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise UserError(f"model dir {str(folder)!r} does not exist; pass the --model-dir of a training run")
    path = folder / OPERATIVE_CONFIG
    if not path.is_file():
        raise UserError(
            f"model dir {str(folder)!r} has no {OPERATIVE_CONFIG} (looked for {path}); it is not a training run "
            f"folder: pass the --model-dir of a run, or its experiment with --gin"
        )
    return path


def _best_metric(found, preferred: Sequence[str]) -> str | None:
    for metric in preferred:
        if any(metric in c.meta.get("metrics", {}) for c in found):
            return metric
    return None


def select_checkpoint(model_dir, which: str = "latest", prefer_ema: bool = True):
    """The checkpoint ``which`` names: ``latest``, ``best`` (by validation top-1 in meta.json) or a path.

    A path may be a ``ckpt-*`` folder (or its ``ckpt`` prefix / ``ckpt.index``) or another run
    folder (its latest checkpoint). Returns a :class:`effnet.checkpoint.CheckpointInfo`.
    """
    from effnet import checkpoint as ckpt

    which = str(which or "latest")
    model_dir = Path(model_dir)
    looked_for = f"{ckpt.SUBDIR}/{ckpt.PREFIX}*/ holding {ckpt.TF_PREFIX}.index and {ckpt.META}"
    if which in ("latest", "best"):
        found = ckpt.list_checkpoints(model_dir)
        if not found:
            where = "does not exist" if not model_dir.exists() else "has no complete checkpoint"
            raise UserError(
                f"model dir {str(model_dir)!r} {where} (looked for {model_dir / looked_for}); train first with "
                f"`effnet train --model-dir {model_dir}`, or pass --checkpoint PATH"
            )
        if which == "latest":
            return found[-1]
        order = ("val_ema_top1", "val_top1") if prefer_ema else ("val_top1", "val_ema_top1")
        metric = _best_metric(found, order)
        if metric is None:
            raise UserError(
                f"no checkpoint in {model_dir / ckpt.SUBDIR} has a validation metric ({' or '.join(order)}) in its "
                f"{ckpt.META}; the run did not evaluate: use --checkpoint latest"
            )
        scored = [c for c in found if metric in c.meta.get("metrics", {})]
        return max(scored, key=lambda c: (c.meta["metrics"][metric], c.step))
    path = Path(which)
    if path.name in (ckpt.TF_PREFIX, ckpt.TF_PREFIX + ".index"):
        path = path.parent
    if not path.exists():
        raise UserError(
            f"--checkpoint {which!r} does not exist; pass 'latest', 'best', a {ckpt.PREFIX}* folder or a run folder"
        )
    if path.is_dir() and (path / (ckpt.TF_PREFIX + ".index")).is_file():
        ckpt.verify_checkpoint(path)  # an explicitly named checkpoint: no fallback, one line naming the file
        try:
            meta = json.loads((path / ckpt.META).read_text())
        except (OSError, ValueError):
            meta = {}
        return ckpt.CheckpointInfo(path, int(meta.get("step", _step_from_name(path.name))), meta)
    if path.is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is not None:
            return latest
    raise UserError(
        f"--checkpoint {which!r} is not a checkpoint: looked for {path / (ckpt.TF_PREFIX + '.index')} and for "
        f"{path / looked_for}; pass 'latest', 'best', a {ckpt.PREFIX}* folder or a run folder"
    )


def _step_from_name(name: str) -> int:
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


def has_ema(info) -> bool:
    """Whether the checkpoint holds EMA averages."""
    import tensorflow as tf

    return EMA_KEY in tf.train.load_checkpoint(info.tf_prefix).get_variable_to_shape_map()


def num_classes_of(info, model_dir=None) -> int:
    """The number of classes a checkpoint was trained with (meta.json, else labels.txt of the run)."""
    value = info.meta.get("num_classes")
    if isinstance(value, int) and value > 0:
        return value
    for folder in (info.path.parent.parent, Path(model_dir) if model_dir else None):
        if folder is not None and (folder / "labels.txt").is_file():
            return len(read_labels(folder / "labels.txt"))
    raise UserError(
        f"checkpoint {info.path} has no num_classes in its meta.json and there is no labels.txt next to it; "
        f"pass a checkpoint written by `effnet train`"
    )


def check_architecture(info, model_name: str, num_classes: int | None = None) -> None:
    """UserError when the checkpoint's meta.json names another model (or class count) than the config."""
    found_model = info.meta.get("model")
    found_classes = info.meta.get("num_classes")
    if found_model is not None and found_model != model_name:
        raise UserError(
            f"checkpoint {info.path} holds {found_model} with {found_classes} classes, but the config builds "
            f"{model_name}; use the config that wrote it (its run's operative_config.gin) or another --checkpoint"
        )
    if num_classes is not None and found_classes is not None and int(found_classes) != int(num_classes):
        raise UserError(
            f"checkpoint {info.path} holds {found_model or model_name} with {found_classes} classes, but the "
            f"dataset has {num_classes}; evaluate it on the dataset it was trained for"
        )


def eval_image_size(cfg) -> int:
    return int(cfg.eval_image_size or cfg.image_size)


def build_model(cfg, num_classes: int, scope=None):
    """A fresh model of the run's architecture (``train.model`` and its gin knobs)."""
    import contextlib

    import keras

    keras.backend.clear_session()
    with scope or contextlib.nullcontext():
        model = registry.get("model", cfg.model)(num_classes=num_classes)
    if not isinstance(model, keras.Model):
        raise UserError(f"model {cfg.model!r} returned {type(model).__name__}, not a keras.Model")
    return model


def check_image_size(model, size: int, model_name: str, what: str = "image size") -> None:
    minimum = int(getattr(model, "min_input_size", 1))
    if size < minimum:
        raise UserError(f"{what} {size} is smaller than {model_name}'s minimum of {minimum} px")


def load_checkpoint_weights(model, info, model_name: str, use_ema: bool) -> bool:
    """Load raw or EMA weights of ``info`` into ``model``; returns whether EMA weights were loaded.

    A checkpoint written by another architecture (same model name, other knobs) is a UserError
    that names the first variable that does not fit.
    """
    from effnet.weights import load_weights

    try:
        result = load_weights(model, info.path, use_ema=use_ema)
    except UserError as exc:
        detail = str(exc).split("; pass --replace-head")[0]
        raise UserError(
            f"{detail}; the checkpoint was written by another architecture than the configured {model_name}: use "
            f"the config that wrote it (its run's operative_config.gin)"
        ) from None
    return bool(result.get("ema"))


def resolve_weights(choice: str, info) -> bool:
    """``auto|ema|raw`` -> whether to load EMA weights (``auto``: EMA when the checkpoint has them)."""
    if choice not in WEIGHT_CHOICES:
        raise UserError(f"--weights {choice!r} is not one of {', '.join(WEIGHT_CHOICES)}")
    if choice == "raw":
        return False
    present = has_ema(info)
    if choice == "ema" and not present:
        raise UserError(f"checkpoint {info.path} has no EMA weights (the run had train.ema_decay = None); use --weights raw")
    return present


# --------------------------------------------------------------------------------------------------
# Class names


def read_labels(path) -> list[str]:
    """Class names, one per line (trailing empty lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"labels file {str(path)!r} does not exist; pass a text file with one class name per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"labels file {str(path)!r} cannot be read: {exc}; pass a UTF-8 text file with one class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def class_names_for(num_classes: int, labels_file=None, model_dir=None, dataset_names: Callable[[], list[str] | None] | None = None):
    """Class names: ``labels_file`` > ``<model_dir>/labels.txt`` > ``dataset_names()``; None if none known.

    A file whose line count differs from ``num_classes`` is a UserError.
    """
    candidates = []
    if labels_file:
        candidates.append(Path(labels_file))
    elif model_dir is not None and (Path(model_dir) / "labels.txt").is_file():
        candidates.append(Path(model_dir) / "labels.txt")
    for path in candidates:
        names = read_labels(path)
        if len(names) != num_classes:
            raise UserError(
                f"labels file {str(path)!r} has {len(names)} lines but the model has {num_classes} classes; "
                f"give one class name per line, in label order"
            )
        return names
    if dataset_names is not None:
        try:
            names = dataset_names()
        except Exception:  # noqa: BLE001 - names are optional; an unreachable dataset just means indices
            names = None
        if names and len(names) == num_classes:
            return list(names)
    return None


# --------------------------------------------------------------------------------------------------
# Input files


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_images(inputs: Iterable[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Files named by ``inputs``: files as given, folders searched recursively, globs expanded.

    Inside folders and globs only files with an image extension count; a file named explicitly is
    taken whatever its name (a non-image then fails to decode and is reported). A path that does
    not exist (and matches nothing as a glob) or a folder without images is a UserError.
    """
    import glob

    exts = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))

    inputs = list(inputs)
    if not inputs:
        raise UserError("no images given: pass image files, folders or globs, e.g. `effnet predict --model-dir RUN photos/`")
    for text in inputs:
        path = Path(text)
        if path.is_file():
            add(path)
        elif path.is_dir():
            images = images_in(path)
            if not images:
                raise UserError(f"folder {text!r} has no images ({', '.join(exts)}), searched recursively; pass another folder or the files")
            for image in images:
                add(image)
        elif _has_glob(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in exts]
            for folder in (m for m in matches if m.is_dir()):
                files += images_in(folder)
            if not files:
                raise UserError(f"glob {text!r} matches no images ({', '.join(exts)}); check the pattern (quote it to let effnet expand it)")
            for image in files:
                add(image)
        else:
            raise UserError(f"image path {text!r} does not exist; pass existing files, folders or globs")
    return found


# --------------------------------------------------------------------------------------------------
# Prediction


class ImageError(Exception):
    """A file that could not be read or decoded as an image."""


def tf_error_text(message: str) -> str:
    """The informative line of a TensorFlow op error (no node names, op tags or traceback)."""
    for line in str(message).splitlines():
        if not line.strip() or line.startswith((" ", "\t")) or line.startswith(("Graph execution error", "Detected at node")):
            continue
        line = re.sub(r"\{\{[^}]*\}\}", "", line)
        line = re.sub(r"\[\[.*?\]\]", "", line)
        line = re.sub(r"\[Op:.*$", "", line)
        line = " ".join(line.split()).rstrip(" .")
        if line:
            return line
    return ""


class captured_stderr:  # noqa: N801 - used like a function
    """Collect what C libraries write to file descriptor 2 (libjpeg's warnings) instead of showing it.

    Decoders print their complaints straight to the process's stderr; a bad file must be reported
    on one line of our own, so the text is captured and folded into that line.
    """

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        try:
            self._saved = os.dup(2)
        except OSError:  # no fd 2 (embedded interpreters): nothing to capture
            self._saved = None
            return self
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False

    def text(self) -> str:
        return self._text


@dataclass
class Prediction:
    path: str
    indices: list[int]
    probabilities: list[float]
    names: list[str] | None = None

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "top_k": [
                {"rank": r + 1, "index": i, "class": self.names[r] if self.names else str(i), "probability": p}
                for r, (i, p) in enumerate(zip(self.indices, self.probabilities))
            ],
        }


class Predictor:
    """Decode images with the evaluation preprocessing and return top-k probabilities.

    ``image_size``, ``crop_fraction`` and ``method`` are those of the run's evaluation
    (``train.eval_image_size``, ``input_pipeline.eval_crop_fraction`` / ``resize_method``).
    """

    def __init__(self, model, image_size: int, top_k: int = 5, class_names: Sequence[str] | None = None,
                 crop_fraction: float | None = None, method: str = "bilinear", jit_compile: bool = False):
        import tensorflow as tf

        from effnet.data import decode_for_eval

        self.model = model
        self.image_size = int(image_size)
        self.class_names = list(class_names) if class_names else None
        num_classes = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
        self.top_k = max(1, min(int(top_k), num_classes or int(top_k)))

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def decode(encoded):
            return decode_for_eval(encoded, self.image_size, crop_fraction, method)

        def probabilities(images):
            return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

        self._decode = decode
        self._probabilities = tf.function(probabilities, jit_compile=jit_compile, reduce_retracing=True)

    def decode(self, path) -> "np.ndarray":  # noqa: F821
        import tensorflow as tf

        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot be read: {exc.strerror or exc}") from None
        if not data:
            raise ImageError("is an empty file, not an image")
        with captured_stderr() as captured:
            try:
                return self._decode(tf.constant(data)).numpy()
            except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
                error = exc
        details = [d for d in (tf_error_text(error.message), " ".join(captured.text().split())) if d]
        raise ImageError(f"is not a readable JPEG/PNG/BMP/GIF image ({'; '.join(details)[:200]})")

    def probabilities(self, images) -> "np.ndarray":  # noqa: F821
        return self._probabilities(images).numpy()

    def top_k_of(self, probs, path: str) -> Prediction:
        import numpy as np

        order = np.argsort(-probs, kind="stable")[: self.top_k]
        names = [self.class_names[i] for i in order] if self.class_names else None
        return Prediction(path, [int(i) for i in order], [float(probs[i]) for i in order], names)

    def predict_files(self, paths: Sequence, batch_size: int = 32, on_error: Callable[[str, str], None] | None = None,
                      progress: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predict every file; undecodable files go to ``on_error(path, reason)`` and are skipped."""
        import numpy as np

        results: list[Prediction] = []
        pending: list[tuple[str, "np.ndarray"]] = []  # noqa: F821

        def flush():
            if not pending:
                return
            probs = self.probabilities(np.stack([image for _, image in pending]))
            for (name, _), row in zip(pending, probs):
                results.append(self.top_k_of(row, name))
            pending.clear()

        for path in paths:
            try:
                pending.append((str(path), self.decode(path)))
            except ImageError as exc:
                if on_error is None:
                    raise UserError(f"{path} {exc}") from None
                on_error(str(path), str(exc))
            if len(pending) >= batch_size:
                flush()
            if progress is not None:
                progress(1)
        flush()
        order = {str(p): i for i, p in enumerate(paths)}
        results.sort(key=lambda r: order.get(r.path, 0))
        return results


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "Prediction",
    "Predictor",
    "build_model",
    "captured_stderr",
    "check_architecture",
    "check_image_size",
    "class_names_for",
    "eval_image_size",
    "find_images",
    "has_ema",
    "load_checkpoint_weights",
    "num_classes_of",
    "read_labels",
    "resolve_weights",
    "run_config_file",
    "select_checkpoint",
]


# --------------------------------------------------------------------------------------------------
# All of the above in one call


@dataclass
class LoadedRun:
    """A model with a run's weights, and what was chosen to get there."""

    cfg: object  # effnet.train.TrainConfig
    model: object  # keras.Model
    checkpoint: object  # effnet.checkpoint.CheckpointInfo
    num_classes: int
    ema: bool  # EMA weights loaded
    image_size: int  # the run's evaluation image size

    def describe(self) -> str:
        return (f"{self.cfg.model} ({self.num_classes} classes) from {self.checkpoint.path} "
                f"(step {self.checkpoint.step}), {'EMA' if self.ema else 'raw'} weights, {self.image_size} px")


def load_run(cfg, checkpoint: str = "latest", weights: str = "auto", precision: str | None = None, scope=None) -> LoadedRun:
    """Parse nothing, build everything: checkpoint choice, architecture checks, model, weights.

    ``cfg`` is the run's :class:`effnet.train.TrainConfig` (gin must already hold the run's config).
    ``precision`` overrides ``cfg.precision`` (e.g. ``"fp32"`` for export).
    """
    from effnet import precision as precision_mod

    info = select_checkpoint(cfg.model_dir, checkpoint, prefer_ema=weights != "raw")
    check_architecture(info, cfg.model)
    num_classes = num_classes_of(info, cfg.model_dir)
    use_ema = resolve_weights(weights, info)
    precision_mod.configure(precision or cfg.precision)
    model = build_model(cfg, num_classes, scope)
    size = eval_image_size(cfg)
    check_image_size(model, size, cfg.model, "train.eval_image_size")
    ema = load_checkpoint_weights(model, info, cfg.model, use_ema)
    return LoadedRun(cfg, model, info, num_classes, ema, size)


__all__ += ["LoadedRun", "load_run"]

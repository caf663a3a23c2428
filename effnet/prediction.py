"""Prediction: images in, top-k classes out, with the run's evaluation preprocessing.

:class:`Predictor` decodes files one by one (a bad file is reported and skipped, never stops the
others), batches them and returns :class:`Prediction` rows. :func:`predict_run` is ``effnet predict``:
a run folder and image paths in, predictions and per-file errors out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from effnet import metrics, registry, runfolder
from effnet.data import decode_for_eval, pipeline_options
from effnet.errors import UserError
from effnet.paths import read_bytes, what_is
from effnet.models import InferenceFunction
from effnet.native import captured_stderr, tf_error_text


class ImageError(Exception):
    """A file that could not be read or decoded as an image."""


@dataclass
class Prediction:
    path: str
    indices: list[int]
    probabilities: list[float]
    names: list[str] | None = None
    explanations: list[dict] = field(default_factory=list)  # {"class": ..., "index": ..., "gradcam": path}

    def as_dict(self) -> dict:
        out = {
            "path": self.path,
            "top_k": [
                {"rank": r + 1, "index": i, "class": self.names[r] if self.names else str(i), "probability": p}
                for r, (i, p) in enumerate(zip(self.indices, self.probabilities))
            ],
        }
        if self.explanations:
            out["explanations"] = list(self.explanations)
        return out


class Predictor:
    """Decode images with the evaluation preprocessing and return top-k probabilities.

    ``image_size``, ``crop_fraction``, ``method`` and ``whole_frame`` are those of the run's evaluation
    (``train.eval_image_size``, ``input_pipeline.eval_crop_fraction`` / ``resize_method`` / ``eval_whole_frame``).
    """

    def __init__(self, model, image_size: int, top_k: int = 5, class_names: Sequence[str] | None = None,
                 crop_fraction: float | None = None, method: str = "bilinear", jit_compile: bool = False,
                 whole_frame: bool = False, forward=None):
        """``forward``: float images -> probabilities (numpy), e.g. an exported artifact in its runtime
        (:func:`effnet.runtimes.load`); default the model's frozen forward pass."""
        import tensorflow as tf

        self.model = model
        self.image_size = int(image_size)
        self.class_names = list(class_names) if class_names else None
        num_classes = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
        self.top_k = max(1, min(int(top_k), num_classes or int(top_k)))

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def decode(encoded):
            return decode_for_eval(encoded, self.image_size, crop_fraction, method, whole_frame)

        self._decode = decode
        # the weights are frozen into the graph when the first batch arrives (effnet.models.InferenceFunction)
        self._forward = forward
        if forward is None:
            self._probabilities = InferenceFunction(model, metrics.probabilities, jit_compile=jit_compile)

    def decode(self, path) -> "np.ndarray":  # noqa: F821
        import tensorflow as tf

        try:
            data = read_bytes(path, "image")  # a FIFO or a device named like an image: named, never read
        except UserError:
            raise ImageError(f"is {what_is(path)}, not a regular file") from None
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
        if self._forward is not None:
            import numpy as np

            return np.asarray(self._forward(np.asarray(images, np.float32)))
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


@dataclass
class PredictResult:
    """What ``effnet predict`` produced: predictions, files that failed, and what was loaded."""

    predictions: list[Prediction]
    errors: list[dict] = field(default_factory=list)  # {"path": ..., "error": ...}
    run: object = None  # runfolder.LoadedRun

    def header(self) -> dict:
        return {"model": self.run.cfg.model, "checkpoint": str(self.run.checkpoint.path), "step": self.run.checkpoint.step,
                "weights": "ema" if self.run.ema else "raw", "image_size": self.run.image_size}

    def as_dict(self) -> dict:
        return {**self.header(), "predictions": [p.as_dict() for p in self.predictions], "errors": self.errors}


def dataset_class_names(cfg) -> Callable[[], list[str] | None]:
    """A late look-up of the run's dataset class names (used when the run folder has no labels.txt)."""
    return lambda: registry.get("dataset", cfg.dataset)().info().class_names


def predict_run(cfg, paths: Sequence, checkpoint: str = "latest", weights: str = "auto", labels_file=None,
                top_k: int = 5, batch_size: int = 32, on_error: Callable[[str, str], None] | None = None,
                progress: Callable[[int], None] | None = None, on_loaded: Callable[[object], None] | None = None,
                explain_dir=None, explain_class: str | None = None, artifact=None,
                runtime: str | None = None) -> PredictResult:
    """Predict ``paths`` with a run (gin holds its config; ``cfg`` its TrainConfig).

    Undecodable files are collected in ``errors`` (and passed to ``on_error(path, reason)``).
    ``explain_dir``: write a Grad-CAM overlay PNG per image for its top class (and ``explain_class``,
    a class name or index) into that folder (:mod:`effnet.explain`). With ``artifact`` the forward
    pass is that exported artifact's, in its own runtime (``runtime`` or the one its kind implies);
    the run still supplies the preprocessing and the class names (and the model for explanations).
    """
    loaded = None
    if artifact is not None:
        from effnet import runtimes

        loaded = runtimes.load(artifact, runtime)
    run = runfolder.load_run(cfg, checkpoint=checkpoint, weights=weights)
    if on_loaded is not None:
        on_loaded(run)
    names = runfolder.class_names_for(run.num_classes, labels_file, cfg.model_dir, dataset_class_names(cfg))
    explainer = named = None
    if explain_dir is not None:  # a model without a feature map, or an unknown class: fail before predicting
        from effnet.explain import GradCAM

        explainer = GradCAM(run.model)
        named = None if explain_class is None else class_index(explain_class, names, run.num_classes)
    elif explain_class is not None:
        raise UserError("--explain-class needs --explain DIR (where the overlays go)")
    opts = pipeline_options()
    size = (loaded.image_size if loaded is not None else None) or run.image_size
    predictor = Predictor(run.model, size, top_k=top_k, class_names=names,
                          crop_fraction=opts.eval_crop_fraction, method=opts.resize_method,
                          whole_frame=opts.eval_whole_frame, forward=loaded.predict if loaded is not None else None)
    errors: list[dict] = []

    def failed(path, reason):
        errors.append({"path": path, "error": reason})
        if on_error is not None:
            on_error(path, reason)

    predictions = predictor.predict_files(paths, batch_size, on_error=failed, progress=progress)
    if explainer is not None:
        explain_predictions(explainer, predictor, predictions, Path(explain_dir), names, named)
    return PredictResult(predictions, errors, run)


def class_index(which: str, names: Sequence[str] | None, num_classes: int) -> int:
    """A class given by name (or by its index) as its index, or a one-line UserError."""
    names = list(names or [])
    if which in names:
        return names.index(which)
    if str(which).isdigit() and int(which) < num_classes:
        return int(which)
    import difflib

    close = difflib.get_close_matches(str(which), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"--explain-class {which!r} is not one of the model's classes{hint}; give a class name from "
                    f"labels.txt or an index from 0 to {num_classes - 1}")


def explain_predictions(explainer, predictor, predictions, folder: Path, names, named: int | None) -> None:
    """One overlay per image and class (the top one, and ``named``): ``folder/NNNN_<stem>_<class>.png``."""
    import numpy as np

    from effnet.explain import overlay, safe_name, write_png

    folder.mkdir(parents=True, exist_ok=True)
    for n, p in enumerate(predictions):
        image = np.asarray(predictor.decode(p.path))
        classes = list(dict.fromkeys([p.indices[0], *([named] if named is not None else [])]))
        maps = explainer(np.stack([image] * len(classes)), classes)
        shown = np.clip(np.round(image), 0, 255).astype(np.uint8)
        for c, cam in zip(classes, maps):
            label = names[c] if names else str(c)
            path = folder / f"{n:04d}_{safe_name(Path(p.path).stem)}_{safe_name(label)}.png"
            write_png(overlay(shown, cam), path)
            p.explanations.append({"class": label, "index": int(c), "gradcam": str(path)})


__all__ = ["ImageError", "Prediction", "PredictResult", "Predictor", "class_index", "dataset_class_names",
           "explain_predictions", "predict_run"]

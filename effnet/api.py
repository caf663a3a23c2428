"""The public Python API: the same commands as the CLI, for notebooks and other programs.

Each function takes gin files and bindings the way the command line does (``gin_files`` like
``--gin``, ``bindings`` like ``--gin-param``), runs the command and returns its report as data::

    import effnet

    report = effnet.train(gin_files=["quickstart"], model_dir="runs/quickstart")
    print(report["final"]["val_ema_top1"])
    scores = effnet.evaluate("runs/quickstart")
    result = effnet.predict("runs/quickstart", ["photos/"])
    effnet.export("runs/quickstart", formats=["saved_model"])

    run = effnet.load_run("runs/quickstart")         # EMA weights by default
    run.model, run.class_names, run.image_size       # a keras.Model, its classes, its input size

The CLI (``effnet.cli``) is a thin layer over these functions. Errors a user can cause raise
:class:`effnet.UserError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from effnet import config, registry, runfolder
from effnet.errors import UserError
from effnet.paths import check_output


def configure(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), model_dir=None, data_dir=None,
              finalize: bool = True) -> config.ParsedConfig:
    """Load plugins, then parse gin files, the ``MODEL_DIR``/``DATA_DIR`` macros, then ``bindings``."""
    registry.get_registry()
    macros = {"MODEL_DIR": None if model_dir is None else str(model_dir),
              "DATA_DIR": None if data_dir is None else str(data_dir)}
    return config.parse(list(gin_files), list(bindings), macros=macros, finalize=finalize)


def _shorthand(name: str, value) -> list[str]:
    return [] if value is None else [f"{name} = {value!r}"]


def _run_settings(model_dir, gin_files=(), bindings=(), data_dir=None):
    """Parse a run's configuration (its operative_config.gin unless ``gin_files`` are given)."""
    from effnet.settings import TrainConfig

    if not model_dir:
        raise UserError("no model dir: pass --model-dir with the folder of a training run")
    files = list(gin_files) or [str(runfolder.run_config_file(model_dir))]
    configure(files, bindings, model_dir, data_dir)
    return TrainConfig()


def train(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), model_dir=None, data_dir=None,
          from_weights=None, replace_head: bool = False) -> dict:
    """``effnet train``: train (and evaluate) an experiment; returns the final report (report.json)."""
    from effnet.settings import TrainConfig
    from effnet.trainer import Trainer

    shorthands = _shorthand("train.from_weights", None if from_weights is None else str(from_weights))
    if replace_head:
        shorthands.append("train.replace_head = True")
    configure(gin_files, [*shorthands, *bindings], model_dir, data_dir)
    return Trainer(TrainConfig()).fit()


def evaluate(model_dir, gin_files: Sequence[str] = (), bindings: Sequence[str] = (), data_dir=None,
             checkpoint: str = "latest", weights: str = "both", split: str = "validation", batch_size=None,
             image_size=None, precision=None, xla=None, show_errors: int = 0) -> dict:
    """``effnet eval``: evaluate a run's checkpoint on raw and EMA weights; returns the report (eval_report.json).

    ``show_errors=N`` also draws the N most confident mistakes per weights (eval_errors_<weights>.png)."""
    from effnet.evaluation import evaluate_run

    shorthands = [f"dllogger.filename = {runfolder.EVAL_LOG!r}"]
    shorthands += _shorthand("train.eval_batch_size", batch_size) + _shorthand("train.eval_image_size", image_size)
    shorthands += _shorthand("train.precision", precision) + _shorthand("train.xla", xla)
    cfg = _run_settings(model_dir, gin_files, [*shorthands, *bindings], data_dir)
    return evaluate_run(cfg, checkpoint=checkpoint, weights=weights, split=split, show_errors=show_errors)


def evaluate_artifact(model_dir, artifact, runtime=None, gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
                      data_dir=None, checkpoint: str = "latest", weights: str = "auto", split: str = "validation",
                      limit=None, batch_size=None) -> dict:
    """``effnet eval --artifact``: an exported artifact in its own runtime on the run's data, next to the model."""
    from effnet.exporter import evaluate_artifact as run_artifact
    from effnet.runtimes import runtime_for

    runtime = runtime_for(artifact, runtime)  # a bad path or runtime fails before anything heavy is loaded
    cfg = _run_settings(model_dir, gin_files, bindings, data_dir)
    return run_artifact(cfg, artifact, runtime, checkpoint=checkpoint, weights=weights, split=split, limit=limit,
                        batch=batch_size or 32)


def predict(model_dir, images: Sequence[str], gin_files: Sequence[str] = (), bindings: Sequence[str] = (), data_dir=None,
            checkpoint: str = "latest", weights: str = "auto", labels=None, top_k: int = 5, batch_size: int = 32,
            precision=None, on_error: Callable[[str, str], None] | None = None,
            progress: Callable[[int], None] | None = None, on_loaded=None, explain=None, explain_class=None,
            artifact=None, runtime=None):
    """``effnet predict``: top-k classes of image files, folders or globs; returns a :class:`~effnet.predict.PredictResult`.

    Files that cannot be decoded are listed in ``result.errors`` (and passed to ``on_error``).
    ``explain``: a folder for Grad-CAM overlays (top class, and ``explain_class``), one PNG per image and class.
    ``artifact``: serve from that exported artifact in its own runtime (``runtime``) instead of the checkpoint.
    """
    from effnet.images import find_images
    from effnet.prediction import predict_run

    paths = find_images(images)  # bad paths fail before anything heavy is loaded
    if artifact is not None or runtime is not None:
        from effnet.runtimes import runtime_for

        if artifact is None:
            raise UserError("--runtime needs --artifact: the exported file or folder to serve (see effnet export)")
        runtime = runtime_for(artifact, runtime)
    cfg = _run_settings(model_dir, gin_files, [*_shorthand("train.precision", precision), *bindings], data_dir)
    return predict_run(cfg, paths, checkpoint=checkpoint, weights=weights, labels_file=labels, top_k=top_k,
                       batch_size=batch_size, on_error=on_error, progress=progress, on_loaded=on_loaded,
                       explain_dir=explain, explain_class=explain_class, artifact=artifact, runtime=runtime)


def export(model_dir, formats: Sequence[str] = ("all",), output=None, gin_files: Sequence[str] = (),
           bindings: Sequence[str] = (), data_dir=None, checkpoint: str = "latest", weights: str = "auto", labels=None,
           top_k: int = 5, samples: Sequence[str] = (), num_samples: int = 16, max_diff=None, min_agreement=None,
           on_start=None, on_result=None, calibration: Sequence[str] = (), calibration_images: int = 100,
           int8_io: bool = False, validate: bool = False, validation_images: int | None = None,
           max_top1_drop=None) -> dict:
    """``effnet export``: SavedModel / .keras / TFLite / ONNX / OpenVINO, each re-loaded and checked; returns
    export_report.json's content."""
    from effnet.exporter import check_format_extras, export_run, parse_formats
    from effnet.images import find_images

    check_format_extras(parse_formats(formats))  # a bad format or a missing extra fails before anything heavy
    if output is not None or model_dir is not None:  # absent or a folder, no device, not a run's own files
        check_output(output if output is not None else Path(model_dir) / "export", "--output folder", folder=True,
                     inputs=[*samples, labels, *gin_files])
    sample_files = find_images(samples) if samples else None
    calibration_files = find_images(calibration) if calibration else None
    cfg = _run_settings(model_dir, gin_files, bindings, data_dir)
    return export_run(cfg, formats, output=output, checkpoint=checkpoint, weights=weights, labels_file=labels,
                      top_k=top_k, sample_files=sample_files, num_samples=num_samples, max_diff=max_diff,
                      min_agreement=min_agreement, on_start=on_start, on_result=on_result,
                      calibration_files=calibration_files, calibration_count=calibration_images, int8_io=int8_io,
                      validate=validate, validation_limit=validation_images, max_top1_drop=max_top1_drop)


def benchmark(mode: str = "infer", gin_files: Sequence[str] = (), bindings: Sequence[str] = (), progress=None,
              **settings) -> dict:
    """``effnet benchmark``: synthetic-input img/s and latency; ``settings`` are ``benchmark.*`` values."""
    from effnet.benchmarking import run_benchmark
    from effnet.settings import BenchmarkConfig

    shorthands = [f"benchmark.mode = {mode!r}"]
    for name, value in settings.items():
        shorthands += _shorthand(f"benchmark.{name}", value)
    # With no experiment, the recipe's defaults (gin/base/train.gin) supply what benchmark.* leaves open.
    configure(list(gin_files) or ["base/train"], [*shorthands, *bindings], finalize=False)
    return run_benchmark(BenchmarkConfig(), progress=progress)


def load_run(path, checkpoint: str = "latest", weights: str = "ema", bindings: Sequence[str] = ()):
    """A trained run as a Keras model: ``run.model`` (EMA weights by default), ``run.class_names``, ``run.image_size``.

    ``path`` is a run folder (its operative_config.gin is parsed; ``bindings`` apply after it).
    ``weights``: ``ema`` (falls back to raw weights when the run had no EMA), ``raw`` or ``auto``.
    """
    from effnet.prediction import dataset_class_names

    cfg = _run_settings(path, (), bindings)
    choice = "auto" if weights == "ema" else weights
    run = runfolder.load_run(cfg, checkpoint=checkpoint, weights=choice)
    run.class_names = runfolder.class_names_for(run.num_classes, None, cfg.model_dir, dataset_class_names(cfg))
    return run


__all__ = ["benchmark", "configure", "evaluate", "export", "load_run", "predict", "train"]

"""``effnet eval``, ``effnet predict``, ``effnet benchmark`` and ``effnet export``.

Thin: each command turns its flags into gin bindings or arguments, loads the run's configuration
(``<model-dir>/operative_config.gin`` unless ``--gin`` is given) and calls the engine
(:mod:`effnet.evaluate`, :mod:`effnet.inference`, :mod:`effnet.benchmark`, :mod:`effnet.export`).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from effnet.cli.options import CONTEXT, gin_options, load_config
from effnet.errors import UserError
from effnet.files import write_json_atomic, write_text_atomic

PRECISIONS = ("fp32", "tf32", "amp", "bf16")


def _run_config(gin_files, gin_params, model_dir, data_dir, shorthands=()):
    """Parse the run's config (its operative_config.gin unless --gin is given); returns TrainConfig()."""
    from effnet.inference import run_config_file

    if not model_dir:
        raise UserError("no model dir: pass --model-dir with the folder of a training run")
    files = list(gin_files) or [str(run_config_file(model_dir))]
    load_config(files, [*shorthands, *gin_params], model_dir, data_dir)
    from effnet.train import TrainConfig

    return TrainConfig()


def _shorthand(name: str, value) -> list[str]:
    return [] if value is None else [f"{name} = {value!r}"]


def _bar(total: int, label: str):
    """A progress bar on stderr when it is a terminal (else nothing is drawn)."""
    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)


def _emit(text: str, output) -> None:
    if output:

        write_text_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


checkpoint_option = click.option(
    "--checkpoint", default="latest", show_default=True, metavar="latest|best|PATH",
    help="Which checkpoint: the latest, the best by validation top-1 (meta.json), or a ckpt-* / run folder.")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                                help="Shorthand for train.precision (default: the run's).")


# --------------------------------------------------------------------------------------------------
# eval


@click.command(name="eval", context_settings=CONTEXT)
@gin_options
@checkpoint_option
@click.option("--weights", type=click.Choice(["both", "raw", "ema"]), default="both", show_default=True,
              help="Evaluate the raw weights, the EMA weights, or both (EMA only when the checkpoint has them).")
@click.option("--split", default="validation", show_default=True, help="Dataset split to evaluate.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Shorthand for train.eval_batch_size.")
@click.option("--image-size", type=click.IntRange(1), default=None, help="Shorthand for train.eval_image_size.")
@precision_option
@click.option("--xla/--no-xla", default=None, help="Shorthand for train.xla (default: the run's; on for GPUs).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def eval_(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, split, batch_size, image_size, precision,
          xla, as_json):
    """Evaluate a run's checkpoint: loss, top-1, top-5, img/s, latency p50/p90/p95/p99 per batch.

    The configuration is the run's own (--model-dir/operative_config.gin) unless --gin is given;
    data come from its train.dataset (--data-dir, --gin-param override). Metrics are summed over
    all workers of train.backend, so every example counts once. Writes
    MODEL_DIR/eval_report.json and dllogger lines to MODEL_DIR/eval_log.json (dllogger.filename).

    \b
    Examples:
      effnet eval --model-dir runs/quickstart
      effnet eval --model-dir /results --checkpoint best --data-dir /data/imagenet --precision bf16
      effnet eval --gin efficientnet_v2_s/amp_8xA100 --model-dir /results --weights ema --json
    """
    shorthands = ["dllogger.filename = 'eval_log.json'"]
    shorthands += _shorthand("train.eval_batch_size", batch_size) + _shorthand("train.eval_image_size", image_size)
    shorthands += _shorthand("train.precision", precision) + _shorthand("train.xla", xla)
    cfg = _run_config(gin_files, gin_params, model_dir, data_dir, shorthands)
    from effnet.evaluate import REPORT_NAME, evaluate_run, summary_lines

    report = evaluate_run(cfg, checkpoint=checkpoint, weights=weights, split=split)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"wrote {Path(cfg.model_dir) / REPORT_NAME}", err=True)


# --------------------------------------------------------------------------------------------------
# predict


def _format_predictions(predictions, fmt: str, header: dict, errors: list[dict]) -> str:
    if fmt == "json":
        return json.dumps({**header, "predictions": [p.as_dict() for p in predictions], "errors": errors}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "index", "class", "probability"])
        for p in predictions:
            for row in p.as_dict()["top_k"]:
                writer.writerow([p.path, row["rank"], row["index"], row["class"], f"{row['probability']:.6f}"])
        return buffer.getvalue()
    k = max((len(p.indices) for p in predictions), default=1)
    rows = [("image", *(f"top-{r + 1}" for r in range(k)))]
    for p in predictions:
        cells = [f"{d['class']} {100 * d['probability']:.1f}%" for d in p.as_dict()["top_k"]]
        rows.append((p.path, *cells, *[""] * (k - len(cells))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in rows)


@click.command(context_settings=CONTEXT)
@gin_options
@checkpoint_option
@click.option("--weights", type=click.Choice(["auto", "ema", "raw"]), default="auto", show_default=True,
              help="EMA weights when the checkpoint has them (auto), or force one kind.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line (default: MODEL_DIR/labels.txt, else the dataset's).")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Classes per image.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write the output to this file.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Images per forward pass.")
@precision_option
@click.argument("images", nargs=-1)
def predict(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, labels_file, top_k, fmt, output,
            batch_size, precision, images):
    """Predict classes for images, folders (searched recursively) or globs.

    JPEG, PNG, BMP and GIF of any size, preprocessed as in evaluation (centre crop, resize to the
    run's eval size). A file that cannot be decoded is reported on its own line on stderr, the
    others are still predicted, and the exit code is 2.

    \b
    Examples:
      effnet predict --model-dir runs/quickstart photos/*.jpg
      effnet predict --model-dir runs/quickstart photos/ --format csv -o predictions.csv
      effnet predict --model-dir /results 'shots/**/*.png' --labels classes.txt --top-k 3 --format json
    """
    from effnet import inference
    from effnet.data import pipeline_options

    paths = inference.find_images(images)  # bad paths fail before anything heavy is loaded
    cfg = _run_config(gin_files, gin_params, model_dir, data_dir, _shorthand("train.precision", precision))
    run = inference.load_run(cfg, checkpoint=checkpoint, weights=weights)

    def dataset_names():
        from effnet import registry

        return registry.get("dataset", cfg.dataset)().info().class_names

    names = inference.class_names_for(run.num_classes, labels_file, cfg.model_dir, dataset_names)
    opts = pipeline_options()
    predictor = inference.Predictor(run.model, run.image_size, top_k=top_k, class_names=names,
                                    crop_fraction=opts.eval_crop_fraction, method=opts.resize_method)
    click.echo(f"predicting {len(paths)} image(s) with {run.describe()}", err=True)
    errors: list[dict] = []
    bar = _bar(len(paths), "predict") if len(paths) > batch_size else None

    def on_error(path, reason):
        errors.append({"path": path, "error": reason})
        lead = "\n" if bar is not None else ""  # leave the bar's line
        click.echo(f"{lead}error: {path} {reason}", err=True)

    if bar is not None:
        with bar:
            predictions = predictor.predict_files(paths, batch_size, on_error=on_error, progress=bar.update)
    else:
        predictions = predictor.predict_files(paths, batch_size, on_error=on_error)
    header = {"model": cfg.model, "checkpoint": str(run.checkpoint.path), "step": run.checkpoint.step,
              "weights": "ema" if run.ema else "raw", "image_size": run.image_size}
    _emit(_format_predictions(predictions, fmt, header, errors), output)
    if errors:
        raise UserError(
            f"{len(errors)} of {len(paths)} file(s) could not be read as images (listed above); "
            f"the other {len(predictions)} were predicted"
        )


# --------------------------------------------------------------------------------------------------
# benchmark


@click.command(context_settings=CONTEXT)
@click.argument("mode", type=click.Choice(["train", "infer"]))
@click.option("--gin", "gin_files", multiple=True, metavar="NAME_OR_PATH",
              help="Experiment file: model knobs and train.* defaults (model, precision, batch, size). Repeatable.")
@click.option("--gin-param", "gin_params", multiple=True, metavar="'SCOPE.NAME=VALUE'",
              help="A gin binding, e.g. 'efficientnet.width=0.5' or 'benchmark.ema_decay=None'. Repeatable.")
@click.option("--model", default=None, metavar="NAME", help="Registered model (benchmark.model; default train.model).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="benchmark.precision (default train.precision, else fp32).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="benchmark.batch_size (default the experiment's, else 32).")
@click.option("--image-size", type=click.IntRange(1), default=None,
              help="benchmark.image_size (default train.eval_image_size for infer, train.image_size for train, else 224).")
@click.option("--num-classes", type=click.IntRange(1), default=None, help="benchmark.num_classes (default 1000).")
@click.option("--xla/--no-xla", default=None, help="benchmark.xla (default: on for GPUs, off for CPUs).")
@click.option("--steps", type=click.IntRange(1), default=None, help="Timed steps (benchmark.steps, default 20).")
@click.option("--warmup", type=click.IntRange(0), default=None, help="Untimed steps first (benchmark.warmup, default 5).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Also write the result to this JSON file.")
@click.option("--dllogger", "dllogger_file", type=click.Path(dir_okay=False), default=None,
              help="Also append the result as dllogger JSON lines (with NVIDIA's metric names) to this file.")
def benchmark(mode, gin_files, gin_params, model, precision, batch_size, image_size, num_classes, xla, steps, warmup,
              json_file, dllogger_file):
    """Synthetic-input throughput (img/s) and per-batch latency of training or inference.

    Random uint8 images and one-hot labels made once on the device; `train` times the real
    training step (configured optimizer, loss scaling, weight decay, EMA), `infer` the forward
    pass. Warm-up steps (tracing, compilation) are excluded from every number.

    \b
    Examples:
      effnet benchmark infer --model efficientnet_v2_s --precision bf16 --batch-size 16 --image-size 128
      effnet benchmark train --model efficientnet_b0 --batch-size 32 --image-size 224 --xla --json b0.json
      effnet benchmark train --gin quickstart --steps 50 --gin-param 'efficientnet.width=1.0'
      effnet benchmark infer --gin efficientnet_v2_s/amp_8xA100 --batch-size 1 --dllogger bench_log.json
    """
    import effnet.benchmark as bench

    shorthands = [f"benchmark.mode = {mode!r}"]
    for name, value in (("model", model), ("precision", precision), ("batch_size", batch_size),
                        ("image_size", image_size), ("num_classes", num_classes), ("xla", xla), ("steps", steps),
                        ("warmup", warmup)):
        shorthands += _shorthand(f"benchmark.{name}", value)
    load_config(gin_files, [*shorthands, *gin_params], finalize=False)  # MODEL_DIR etc. may stay unset
    cfg = bench.BenchmarkConfig()
    bar = _bar(1, f"benchmark {mode}")
    if bar is not None:
        with bar:
            def progress(done, total):
                bar.length = total
                bar.update(done - bar.pos)

            result = bench.run_benchmark(cfg, progress=progress)
    else:
        result = bench.run_benchmark(cfg)
    for line in bench.table_lines([result]):
        click.echo(line)
    if json_file:

        write_json_atomic(json_file, result)
        click.echo(f"wrote {json_file}", err=True)
    if dllogger_file:
        from effnet.loggers import log_benchmark

        log_benchmark(result, dllogger_file)


# --------------------------------------------------------------------------------------------------
# export


@click.command(context_settings=CONTEXT)
@gin_options
@checkpoint_option
@click.option("--weights", type=click.Choice(["auto", "ema", "raw"]), default="auto", show_default=True,
              help="EMA weights when the checkpoint has them (auto), or force one kind.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None, help="Output folder (default MODEL_DIR/export).")
@click.option("--format", "formats", multiple=True, metavar="FORMAT[,FORMAT]",
              help="saved_model, keras, tflite, tflite_float16, tflite_dynamic or all (default). Repeatable.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names for the SavedModel's top_k_classes (default: MODEL_DIR/labels.txt, else the dataset's).")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="k of the SavedModel's top-k outputs.")
@click.option("--samples", "sample_paths", multiple=True, metavar="PATH",
              help="Images for the parity check (files, folders, globs; default: the run's validation images, else synthetic ones).")
@click.option("--num-samples", type=click.IntRange(1), default=16, show_default=True, help="Images in the parity check.")
@click.option("--max-diff", type=click.FloatRange(0), default=None,
              help="Bound on max |probability difference| for every format exported (export.max_prob_diff).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Bound on top-1 agreement (0..1) for every format exported (export.min_top1_agreement).")
def export(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, output, formats, labels_file, top_k,
           sample_paths, num_samples, max_diff, min_agreement):
    """Export a run as SavedModel, .keras and TFLite (float32, float16, dynamic-range), checked on reload.

    Every artifact is re-loaded and compared with the in-memory model on sample images; the max
    |probability difference| and top-1 agreement are printed, and the command fails (exit 2,
    nothing written for that format) when they are beyond the bounds. The SavedModel takes encoded
    image bytes (serving_default, preprocessing inside) or float images (serving_images).

    \b
    Examples:
      effnet export --model-dir runs/quickstart
      effnet export --model-dir runs/quickstart --format saved_model --format tflite -o serving/
      effnet export --model-dir /results --checkpoint best --weights raw --format tflite_dynamic --max-diff 0.2
    """
    import effnet.export as exp
    from effnet import inference
    from effnet.data import pipeline_options

    names = exp.parse_formats(formats)
    sample_files = inference.find_images(sample_paths) if sample_paths else None
    cfg = _run_config(gin_files, gin_params, model_dir, data_dir)
    run = inference.load_run(cfg, checkpoint=checkpoint, weights=weights, precision="fp32")

    def dataset_names():
        from effnet import registry

        return registry.get("dataset", cfg.dataset)().info().class_names

    class_names = inference.class_names_for(run.num_classes, labels_file, cfg.model_dir, dataset_names)
    bounds = exp.export_bounds()
    if max_diff is not None or min_agreement is not None:
        bounds = {f: (max_diff if max_diff is not None else d, min_agreement if min_agreement is not None else a)
                  for f, (d, a) in bounds.items()}
    samples, origin = _export_samples(cfg, run, sample_files, num_samples)
    opts = pipeline_options()
    exporter = exp.Exporter(run.model, run.image_size, class_names, top_k, opts.eval_crop_fraction, opts.resize_method,
                            num_classes=run.num_classes)
    out_dir = Path(output) if output else Path(cfg.model_dir) / "export"
    click.echo(f"exporting {run.describe()} to {out_dir}; parity on {len(samples)} {origin}", err=True)
    results = exporter.export(out_dir, names, samples, bounds, on_result=lambda p: click.echo(p.line()))
    report = {"model": cfg.model, "checkpoint": str(run.checkpoint.path), "step": run.checkpoint.step,
              "weights": "ema" if run.ema else "raw", "image_size": run.image_size, "num_classes": run.num_classes,
              "class_names": class_names, "samples": f"{len(samples)} {origin}",
              "artifacts": [r.as_dict() for r in results]}
    if class_names:
        write_text_atomic(out_dir / "labels.txt", "".join(f"{n}\n" for n in class_names))
    write_json_atomic(out_dir / "export_report.json", report)
    for r in results:
        click.echo(f"wrote {r.path} ({r.size_bytes / 1e6:.2f} MB)", err=True)


def _export_samples(cfg, run, sample_files, count):
    import effnet.export as exp

    if sample_files:
        return exp.file_samples(sample_files, count), "given images"
    try:
        from effnet import registry

        samples = exp.dataset_samples(registry.get("dataset", cfg.dataset)(), count)
        if samples:
            return samples, f"validation images of {cfg.dataset}"
    except Exception:  # noqa: BLE001 - the dataset is optional here; synthetic images do instead
        pass
    return exp.synthetic_samples(count, run.image_size), "synthetic images"


COMMANDS = [eval_, predict, benchmark, export]

__all__ = ["COMMANDS", "benchmark", "eval_", "export", "predict"]

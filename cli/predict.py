"""``effnet predict``: top-k classes for image files, folders or globs."""

from __future__ import annotations

import csv
import io
import json

import click

from effnet.cli.options import CONTEXT, checkpoint_option, emit, gin_options, precision_option, progress_bar
from effnet.errors import UserError
from effnet.paths import check_input, check_output


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
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a Grad-CAM overlay PNG per image (for its top class) into DIR.")
@click.option("--explain-class", default=None, metavar="NAME",
              help="With --explain: an overlay for this class too (a name from labels.txt or an index).")
@click.option("--artifact", type=click.Path(), default=None,
              help="Serve from this exported artifact (.tflite, .onnx, OpenVINO folder, SavedModel) in its own runtime.")
@click.option("--runtime", type=click.Choice(["tf", "tflite", "onnxruntime", "openvino"]), default=None,
              help="With --artifact: the runtime (default: from the artifact's kind).")
@click.argument("images", nargs=-1)
def predict(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, labels_file, top_k, fmt, output,
            batch_size, precision, explain_dir, explain_class, artifact, runtime, images):
    """Predict classes for images, folders (searched recursively) or globs.

    JPEG, PNG, BMP and GIF of any size, preprocessed as in evaluation (centre crop, resize to the
    run's eval size). A file that cannot be decoded is reported on its own line on stderr, the
    others are still predicted, and the exit code is 2.

    \b
    Examples:
      effnet predict --model-dir runs/quickstart photos/*.jpg
      effnet predict --model-dir runs/quickstart photos/ --format csv -o predictions.csv
      effnet predict --model-dir /results 'shots/**/*.png' --labels classes.txt --top-k 3 --format json
      effnet predict --model-dir runs/quickstart photos/ --explain explained/ --explain-class ring
      effnet predict --model-dir runs/quickstart --artifact runs/quickstart/export/model.onnx photos/
    """
    from effnet.api import predict as predict_images
    from effnet.images import find_images

    paths = [str(p) for p in find_images(images)]  # bad paths fail before anything heavy is loaded
    if labels_file:  # a FIFO or a device would block or mislead after the model is loaded: refused now
        check_input(labels_file, "labels file", hint="; pass a text file with one class name per line")
    if output:  # never one of the images, the labels, a gin file or a run folder's own file
        check_output(output, "--output file", inputs=[*paths, labels_file, *gin_files])
    if explain_class is not None and explain_dir is None:
        raise UserError("--explain-class needs --explain DIR (where the overlays go)")
    if explain_dir:  # a folder of overlays, holding none of the inputs
        check_output(explain_dir, "--explain folder", folder=True, inputs=[*paths, labels_file, *gin_files])
    bar = progress_bar(len(paths), "predict") if len(paths) > batch_size else None

    def on_loaded(run):
        click.echo(f"predicting {len(paths)} image(s) with {run.describe()}", err=True)

    def on_error(path, reason):
        lead = "\n" if bar is not None else ""  # leave the bar's line
        click.echo(f"{lead}error: {path} {reason}", err=True)

    def call(progress=None):
        return predict_images(model_dir, paths, gin_files, gin_params, data_dir, checkpoint=checkpoint, weights=weights,
                              labels=labels_file, top_k=top_k, batch_size=batch_size, precision=precision,
                              on_error=on_error, progress=progress, on_loaded=on_loaded, explain=explain_dir,
                              explain_class=explain_class, artifact=artifact, runtime=runtime)

    if bar is not None:
        with bar:
            result = call(bar.update)
    else:
        result = call()
    predictions, errors = result.predictions, result.errors
    emit(_format_predictions(predictions, fmt, result.header(), errors), output)
    if explain_dir:
        click.echo(f"wrote {sum(len(p.explanations) for p in predictions)} Grad-CAM overlay(s) to {explain_dir}", err=True)
    if errors:
        raise UserError(
            f"{len(errors)} of {len(paths)} file(s) could not be read as images (listed above); "
            f"the other {len(predictions)} were predicted"
        )


__all__ = ["predict"]

"""``effnet export``: SavedModel, .keras, TFLite, ONNX and OpenVINO from a run, each checked on reload."""

from __future__ import annotations

import click

from effnet.cli.options import CONTEXT, checkpoint_option, gin_options
from effnet.paths import check_input


@click.command(context_settings=CONTEXT)
@gin_options
@checkpoint_option
@click.option("--weights", type=click.Choice(["auto", "ema", "raw"]), default="auto", show_default=True,
              help="EMA weights when the checkpoint has them (auto), or force one kind.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None, help="Output folder (default MODEL_DIR/export).")
@click.option("--format", "formats", multiple=True, metavar="FORMAT[,FORMAT]",
              help="saved_model, keras, tflite, tflite_float16, tflite_dynamic, onnx, openvino, tflite_int8, "
                   "openvino_int8, or all "
                   "(default: the first five). Repeatable.")
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
@click.option("--calibration", "calibration_paths", multiple=True, metavar="PATH",
              help="int8 calibration images (files, folders, globs; default: the run's training images).")
@click.option("--calibration-images", type=click.IntRange(1), default=100, show_default=True,
              help="int8 formats: calibrate on the first N images (training split in file order, or --calibration sorted).")
@click.option("--int8-io", is_flag=True, help="tflite_int8 with int8 input and output (default float32 I/O).")
@click.option("--validate", is_flag=True,
              help="Also measure each artifact's validation top-1 against the model's, bounded by export.max_top1_drop.")
@click.option("--validation-images", type=click.IntRange(1), default=None,
              help="With --validate: only the first N validation images (default all).")
@click.option("--max-top1-drop", type=click.FloatRange(0, 1), default=None,
              help="Bound on validation top-1 lost (0..1, e.g. 0.02) for every format (export.max_top1_drop).")
def export(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, output, formats, labels_file, top_k,
           sample_paths, num_samples, max_diff, min_agreement, calibration_paths, calibration_images, int8_io, validate,
           validation_images, max_top1_drop):
    """Export a run as SavedModel, .keras, TFLite, ONNX or OpenVINO, each checked on reload.

    Every artifact is re-loaded and compared with the in-memory model on sample images; the max
    |probability difference| and top-1 agreement are printed, and the command fails (exit 2,
    nothing written for that format) when they are beyond the bounds. The SavedModel takes encoded
    image bytes (serving_default, preprocessing inside) or float images (serving_images); the other
    formats take float images [N, S, S, 3] in [0, 255] and return probabilities. onnx needs
    effnet[onnx], openvino effnet[openvino], openvino_int8 effnet[openvino-int8] (NNCF); tflite_int8 and
    openvino_int8 are int8 weights and activations, calibrated on training images.

    \b
    Examples:
      effnet export --model-dir runs/quickstart
      effnet export --model-dir runs/quickstart --format saved_model --format tflite -o serving/
      effnet export --model-dir /results --checkpoint best --weights raw --format tflite_dynamic --max-diff 0.2
      effnet export --model-dir runs/quickstart --format onnx,openvino,tflite_int8 --validate
      effnet export --model-dir runs/quickstart --format openvino_int8 --validate --calibration-images 300
    """
    from effnet.api import export as export_run

    if labels_file:  # a FIFO or a device would block or mislead after the model is loaded: refused now
        check_input(labels_file, "labels file", hint="; pass a text file with one class name per line")
    report = export_run(model_dir, formats, output, gin_files, gin_params, data_dir, checkpoint=checkpoint, weights=weights,
                        labels=labels_file, top_k=top_k, samples=sample_paths, num_samples=num_samples,
                        max_diff=max_diff, min_agreement=min_agreement, calibration=calibration_paths,
                        calibration_images=calibration_images, int8_io=int8_io, validate=validate,
                        validation_images=validation_images, max_top1_drop=max_top1_drop,
                        on_start=lambda text: click.echo(text, err=True), on_result=lambda p: click.echo(p.line()))
    for artifact in report["artifacts"]:
        click.echo(f"wrote {artifact['path']} ({artifact['size_bytes'] / 1e6:.2f} MB)", err=True)


__all__ = ["export"]

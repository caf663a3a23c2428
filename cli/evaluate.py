"""``effnet eval``: evaluate a run's checkpoint on raw and EMA weights."""

from __future__ import annotations

import json

import click

from effnet.cli.options import CONTEXT, checkpoint_option, gin_options, precision_option


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
@click.option("--show-errors", type=click.IntRange(0, 200), default=0, show_default=True, metavar="N",
              help="Draw the N most confident mistakes per weights into MODEL_DIR/eval_errors_<weights>.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--artifact", type=click.Path(), default=None,
              help="Evaluate an exported artifact (SavedModel folder, .tflite, .onnx, OpenVINO folder/.xml) in its own "
                   "runtime, next to the run's model.")
@click.option("--runtime", type=click.Choice(["tf", "tflite", "onnxruntime", "openvino"]), default=None,
              help="With --artifact: the runtime (default: from the artifact's kind).")
@click.option("--limit", type=click.IntRange(1), default=None, help="With --artifact: only the first N images of the split.")
def eval_(gin_files, gin_params, model_dir, data_dir, checkpoint, weights, split, batch_size, image_size, precision,
          xla, show_errors, as_json, artifact, runtime, limit):
    """Evaluate a run's checkpoint: loss, top-1, top-5, img/s, latency p50/p90/p95/p99 per batch.

    The configuration is the run's own (--model-dir/operative_config.gin) unless --gin is given;
    data come from its train.dataset (--data-dir, --gin-param override). Metrics are summed over
    all workers of train.backend, so every example counts once. Per class: precision, recall, F1,
    support, balanced accuracy, top confusions and calibration (ECE). Writes MODEL_DIR/eval_report.json,
    eval_confusion_<weights>.csv/.png, eval_reliability_<weights>.png and dllogger lines to
    MODEL_DIR/eval_log.json (dllogger.filename).

    With --artifact the artifact runs in its own runtime (TFLite, ONNX Runtime, OpenVINO,
    TensorFlow) on the split, and its top-1/top-5 are printed next to the run's model's (the
    checkpoint's EMA weights when it has them, as effnet export uses), on the same images.

    \b
    Examples:
      effnet eval --model-dir runs/quickstart
      effnet eval --model-dir /results --checkpoint best --data-dir /data/imagenet --precision bf16
      effnet eval --gin efficientnet_v2_s/amp_8xA100 --model-dir /results --weights ema --json
      effnet eval --model-dir runs/quickstart --show-errors 24
      effnet eval --model-dir runs/quickstart --artifact runs/quickstart/export/model_int8.tflite
    """
    if artifact:
        from effnet.api import evaluate_artifact
        from effnet.exporter import artifact_lines

        report = evaluate_artifact(model_dir, artifact, runtime, gin_files, gin_params, data_dir, checkpoint=checkpoint,
                                   weights="auto" if weights == "both" else weights, split=split, limit=limit,
                                   batch_size=batch_size)
        click.echo(json.dumps(report, indent=2, default=str) if as_json else "\n".join(artifact_lines(report)))
        return
    from effnet.api import evaluate
    from effnet.evaluation import summary_lines
    from effnet.runfolder import EVAL_REPORT

    report = evaluate(model_dir, gin_files, gin_params, data_dir, checkpoint=checkpoint, weights=weights, split=split,
                      batch_size=batch_size, image_size=image_size, precision=precision, xla=xla,
                      show_errors=show_errors)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for line in summary_lines(report):
        click.echo(line)
    if report.get("report_file"):
        click.echo(f"wrote {report['report_file']}", err=True)
    else:
        click.echo(f"note: {report['model_dir']} is not writable: evaluated without writing {EVAL_REPORT} or logs there",
                   err=True)


__all__ = ["eval_"]

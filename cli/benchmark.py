"""``effnet benchmark train|infer``: synthetic-input throughput and latency of a model."""

from __future__ import annotations

import click

from effnet.cli.options import CONTEXT, progress_bar
from effnet.files import write_json_atomic
from effnet.precision import PRECISIONS


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
@click.option("--runtime", type=click.Choice(["tf", "tflite", "onnxruntime", "openvino"]), default=None,
              help="infer: serve from this runtime; the model is exported to its format first (default tf).")
@click.option("--artifact", type=click.Path(), default=None,
              help="infer: time this exported artifact (.tflite, .onnx, OpenVINO folder, SavedModel) in its runtime.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Also write the result to this JSON file.")
@click.option("--dllogger", "dllogger_file", type=click.Path(dir_okay=False), default=None,
              help="Also append the result as dllogger JSON lines (with NVIDIA's metric names) to this file.")
def benchmark(mode, gin_files, gin_params, model, precision, batch_size, image_size, num_classes, xla, steps, warmup,
              runtime, artifact, json_file, dllogger_file):
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
      effnet benchmark infer --model efficientnet_v2_s --image-size 128 --batch-size 16 --runtime openvino
      effnet benchmark infer --artifact runs/quickstart/export/model.onnx --batch-size 1
    """
    from effnet.api import benchmark as run_benchmark
    from effnet.benchmarking import table_lines

    from effnet.paths import check_output

    if json_file:  # checked before the benchmark runs, like every output (effnet/paths.py)
        check_output(json_file, "--json file", inputs=[*gin_files, dllogger_file])
    if dllogger_file:
        check_output(dllogger_file, "--dllogger file", inputs=gin_files)
    settings = {"model": model, "precision": precision, "batch_size": batch_size, "image_size": image_size,
                "num_classes": num_classes, "xla": xla, "steps": steps, "warmup": warmup, "runtime": runtime,
                "artifact": artifact}
    bar = progress_bar(1, f"benchmark {mode}")
    if bar is not None:
        with bar:
            def progress(done, total):
                bar.length = total
                bar.update(done - bar.pos)

            result = run_benchmark(mode, gin_files, gin_params, progress=progress, **settings)
    else:
        result = run_benchmark(mode, gin_files, gin_params, **settings)
    for line in table_lines([result]):
        click.echo(line)
    if json_file:
        write_json_atomic(json_file, result)
        click.echo(f"wrote {json_file}", err=True)
    if dllogger_file:
        from effnet.loggers import log_benchmark

        log_benchmark(result, dllogger_file)


__all__ = ["benchmark"]

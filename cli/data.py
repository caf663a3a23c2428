"""``effnet data``: convert image folders to TFRecords, show dataset statistics, build the demo data."""

from __future__ import annotations

import json
import os
import sys

import click

from effnet.cli.options import CONTEXT

from effnet.errors import UserError



def _progress_factory():
    bars = []

    def make(split, total):
        if bars:
            bars[-1].render_finish()
        bar = click.progressbar(length=total, label=f"{split:<10}", file=sys.stderr, show_pos=True)
        bar.render_progress()
        bars.append(bar)
        last = [0]

        def tick(done):
            bar.update(done - last[0])
            last[0] = done
            if done >= total:
                bar.render_finish()

        return tick

    return make


def _print_stats(stats: dict, as_json: bool) -> None:
    from effnet.data.convert import stats_lines

    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        for line in stats_lines(stats):
            click.echo(line)


@click.group(context_settings=CONTEXT)
def data():
    """Prepare datasets: convert image folders to TFRecords, inspect them, build the demo data.

    \b
    Examples:
      effnet data convert photos/ records/           # photos/<split>/<class>/*.jpg -> records/train-*, validation-*
      effnet data stats records/ --check             # counts, sizes, every unreadable record
      effnet data demo                               # generate (once) and describe the demo dataset
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@data.command(context_settings=CONTEXT)
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--train-shards", type=click.IntRange(1), default=None, help="Files for the train split (default: 1 per 1024 images).")
@click.option("--validation-shards", type=click.IntRange(1), default=None, help="Files for the validation split.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="What to do with an image that cannot be read: stop, or report and skip it.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG quality for re-encoded images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the order of examples across files.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def convert(src, dst, train_shards, validation_shards, on_error, quality, seed, as_json):
    """Convert SRC/<split>/<class>/<image> into ImageNet-layout TFRecords in DST.

    Splits are train and validation (or val). Labels are 1-based in the records, as in ImageNet;
    class names go to image/class/text and DST/effnet-dataset.json.

    \b
    Example:
      effnet data convert photos/ records/ --train-shards 64 --on-error skip
    """
    from effnet.data.convert import convert_folder, dataset_stats
    from effnet.data.source import TFRecordSource

    result = convert_folder(src, dst, train_shards=train_shards, validation_shards=validation_shards,
                            on_error=on_error, quality=quality, seed=seed, progress=_progress_factory())
    click.echo(f"wrote {dst}: {sum(s['examples'] for s in result['splits'].values())} images "
               f"({result['converted']} re-encoded as RGB JPEG, {len(result['skipped'])} skipped)", err=True)
    _print_stats(dataset_stats(TFRecordSource(dst, on_error=on_error)), as_json)


@data.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path())
@click.option("--check", is_flag=True, help="Decode every image and list the unreadable ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(path, check, as_json):
    """Statistics of a dataset folder (TFRecords, a prepared TFDS folder, or an image folder).

    \b
    Example:
      effnet data stats records/ --check
    """
    from effnet.data.convert import dataset_stats
    from effnet.data.source import TFRecordSource, find_source

    source = find_source(path)
    if isinstance(source, TFRecordSource):
        source.on_error = "skip"  # report truncated files instead of stopping at the first
    result = dataset_stats(source, check=check, progress=_progress_factory())
    _print_stats(result, as_json)
    bad = sum(len(s["bad_records"]) + len(s["labels_out_of_range"]) for s in result["splits"].values())
    if check and bad:
        raise UserError(f"{bad} bad record(s) in {path} (listed above); remove them or train with input_pipeline.on_error='skip'")


@data.command(context_settings=CONTEXT)
@click.option("--gin", "gin_files", multiple=True, metavar="NAME_OR_PATH", help="Gin files with demo.* bindings.")
@click.option("--gin-param", "gin_params", multiple=True, metavar="'demo.NAME=VALUE'", help="A gin binding, e.g. 'demo.image_size=96'.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def demo(gin_files, gin_params, as_json):
    """Generate the built-in demo dataset (once; it is cached) and print where it is.

    \b
    Example:
      effnet data demo
    """
    from effnet import config
    from effnet.data.convert import dataset_stats
    from effnet.registry import get_registry

    registry = get_registry()
    if gin_files or gin_params:
        config.parse(gin_files, gin_params, finalize=False)
    source = registry.get("dataset", "demo")()
    click.echo(f"demo dataset: {source.data_dir}", err=True)
    _print_stats(dataset_stats(source), as_json)

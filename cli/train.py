"""``effnet train``: train an experiment (resumes from the latest checkpoint in --model-dir)."""

from __future__ import annotations

import click

from effnet.cli.options import CONTEXT, gin_options


@click.command(context_settings=CONTEXT)
@gin_options
@click.option("--from-weights", type=click.Path(), default=None,
              help="Start a new run from these weights: 'imagenet' (keras.applications' weights, cached in ~/.keras), "
                   "a run or checkpoint folder, or a .weights.h5/.keras file (train.from_weights).")
@click.option("--replace-head", is_flag=True, default=False,
              help="With --from-weights: allow a classifier with another number of classes (train.replace_head).")
def train(gin_files, gin_params, model_dir, data_dir, from_weights, replace_head):
    """Train a model; resumes from the latest checkpoint in --model-dir.

    \b
    Examples:
      effnet train --gin quickstart --model-dir runs/quickstart
      effnet train --gin efficientnet_v2_s/amp_8xA100 --data-dir /data/imagenet --model-dir /results \\
          --gin-param 'train.epochs = 10'
      effnet train --gin image_folder --data-dir photos/ --model-dir runs/photos
      effnet train --gin finetune --data-dir photos/ --model-dir runs/finetune            # ImageNet weights
      effnet train --gin finetune --data-dir photos/ --from-weights v2b0.weights.h5 --replace-head --model-dir ft
    """
    from effnet.api import train as run_training
    from effnet.report import summary_lines

    report = run_training(gin_files, gin_params, model_dir, data_dir, from_weights=from_weights or None,
                          replace_head=replace_head)
    for line in summary_lines(report):
        click.echo(line)


__all__ = ["train"]

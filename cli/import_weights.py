"""``effnet import-weights``: convert keras.applications EfficientNet weights for our models."""

from __future__ import annotations

import click

from effnet.cli.options import CONTEXT



@click.command(name="import-weights", context_settings=CONTEXT)
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--variant", default=None, metavar="NAME", help="Our model name, e.g. efficientnet_v2_s (optional for .keras sources).")
@click.option("--num-classes", type=int, default=None, help="Classes of the new model (default: the source's).")
@click.option("--replace-head", is_flag=True, help="Start a new classifier when the number of classes differs.")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare logits with the Keras model on random images.")
def import_weights(source, output, variant, num_classes, replace_head, check):
    """Map the weights of a keras.applications EfficientNet (B0-B7, V2 B0-B3/S/M/L) onto ours.

    SOURCE is a .keras, .weights.h5 or legacy .h5 file (e.g. ~/.keras/models/efficientnetv2-s.h5);
    OUTPUT a .weights.h5 or .keras file, written only if every layer matched. Then fine-tune with
    the printed normalization binding and --from-weights OUTPUT.

    \b
    Examples:
      effnet import-weights ~/.keras/models/efficientnetv2-s.h5 v2s.weights.h5 --variant efficientnet_v2_s
      effnet import-weights b0.keras b0_flowers.weights.h5 --num-classes 5 --replace-head
    """
    from effnet.plugins.models.keras_import import import_keras_weights

    _, report = import_keras_weights(source, variant, num_classes, replace_head, output=output, check=check)
    click.echo(str(report))
    click.echo(f"wrote {output}; train with: --gin-param \"efficientnet.normalization = {report.normalization!r}\"")

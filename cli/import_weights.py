"""``effnet import-weights``: convert keras.applications or PyTorch (timm, efficientnet_pytorch) EfficientNet weights for our models."""

from __future__ import annotations

import click

from effnet.cli.options import CONTEXT


@click.command(name="import-weights", context_settings=CONTEXT)
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--variant", default=None, metavar="NAME", help="Our model name, e.g. efficientnet_v2_s (optional for .keras and PyTorch sources).")
@click.option("--from", "source_name", default=None, metavar="timm:NAME[.TAG]",
              help="The PyTorch model the weights come from, e.g. timm:tf_efficientnetv2_s.in21k_ft_in1k, timm:efficientnet_b0, "
                   "efficientnet_pytorch:efficientnet-b0 (default: detected from the tensors).")
@click.option("--normalization", default=None, metavar="NAME",
              help="Input normalisation the weights were trained with, when it is not the source's default: imagenet or inception ([-1, 1]).")
@click.option("--num-classes", type=int, default=None, help="Classes of the new model (default: the source's).")
@click.option("--replace-head", is_flag=True, help="Start a new classifier when the number of classes differs.")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare logits with the Keras model on random images (Keras sources).")
def import_weights(source, output, variant, source_name, normalization, num_classes, replace_head, check):
    """Map the weights of a keras.applications or PyTorch EfficientNet onto ours.

    SOURCE is a .keras, .weights.h5 or legacy .h5 file (e.g. ~/.keras/models/efficientnetv2-s.h5),
    or a PyTorch state dict (.safetensors, .pth, .pt) of timm (V1 incl. tf_ ports, V2, Lite) or
    efficientnet_pytorch (V1). .pth files are read with torch.load(weights_only=True): a pickle
    asking for anything but tensors is refused and nothing in it runs. OUTPUT is a .weights.h5 or
    .keras file, written only if every tensor found its layer. It records the input normalisation,
    padding and BatchNorm epsilon the weights need; --from-weights OUTPUT sets them for the run.

    \b
    Examples:
      effnet import-weights ~/.keras/models/efficientnetv2-s.h5 v2s.weights.h5 --variant efficientnet_v2_s
      effnet import-weights b0.keras b0_flowers.weights.h5 --num-classes 5 --replace-head
      effnet import-weights model.safetensors v2s.weights.h5 --from timm:tf_efficientnetv2_s.in21k_ft_in1k
      effnet import-weights efficientnet-b0-355c32eb.pth b0.weights.h5
    """
    from effnet.plugins.models.keras_import import import_keras_weights

    if normalization is not None and normalization not in ("imagenet", "inception", "centered", "unit", "none"):
        from effnet.errors import UserError

        raise UserError(f"--normalization {normalization!r} must be imagenet, inception, centered, unit or none")
    _, report = import_keras_weights(source, variant, num_classes, replace_head, output=output, check=check,
                                     source_name=source_name, normalization=normalization)
    click.echo(str(report))
    settings = report.settings or {"efficientnet.normalization": report.normalization}
    bindings = " ".join(f"--gin-param \"{key} = {value!r}\"" for key, value in settings.items())
    click.echo(f"wrote {output}; fine-tune with --from-weights {output} (sets {', '.join(settings)}), or a model built with: {bindings}")

"""One builder for every EfficientNet V1/V2 variant: :class:`~.specs.VariantSpec` -> Keras model.

The model is a plain Keras functional model: ``images`` -> :class:`~.layers.Normalize` -> stem
(``stem_conv``, ``stem_bn``, ``stem_activation``) -> one layer per block (``block1a``,
``block1b``, ... see :mod:`.blocks`) -> head (``top_conv``, ``top_bn``, ``top_activation``,
``avg_pool``, ``top_dropout``, ``predictions``). Every layer that owns weights carries the name
keras.applications gives the same weights (block sublayers included), so importing Keras weights
is a copy by name (except V2's ``dwconv2`` -> ``dwconv``) and a mismatch names a layer.

Padding is TensorFlow's ``"same"`` everywhere by default, as in the papers' reference code. (keras.applications
V1 pads explicitly; for a static input size that is the same padding, for a dynamic one only on
even sizes.) ``efficientnet.padding = 'symmetric'`` pads strided convolutions by ``k // 2`` on every
side instead, as PyTorch models do (timm's native ``efficientnet_b0``): on even sizes TF's "same"
pads one pixel less before than after, which shifts every strided window by one pixel.
"""

from __future__ import annotations

import math
import re

import keras
from keras import layers

from effnet.errors import UserError
from effnet.validate import MAX_IMAGE_SIZE, check_number
from effnet.plugins.models.blocks import CONV_INIT, Block, FusedMBConv, MBConv, symmetric_padding
from effnet.plugins.models.layers import FusedBatchNorm, HeadDropout, Normalize, activation as resolve_activation
from effnet.plugins.models.specs import ModelKnobs, VariantSpec, resolve_normalization

__all__ = ["HEAD_LAYERS", "MIN_INPUT_SIZE", "apply_freeze", "build", "layer_stage", "weighted_layers"]

MIN_INPUT_SIZE = 32
HEAD_LAYERS = ("avg_pool", "top_dropout", "predictions")
BLOCKS = {"mb": MBConv, "fused": FusedMBConv}
PADDINGS = ("same", "symmetric")

# The reference code's classifier initialiser: U(-1/sqrt(fan_out), 1/sqrt(fan_out)).
DENSE_INIT = {"class_name": "VarianceScaling", "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _block_letter(j: int) -> str:
    """a..z as keras.applications names blocks, then aa, ab, ... for stages of more than 26 blocks."""
    return chr(97 + j) if j < 26 else chr(96 + j // 26) + chr(97 + j % 26)


def build(spec: VariantSpec, num_classes: int = 1000, knobs: ModelKnobs | None = None) -> keras.Model:
    """Build ``spec`` (already scaled to the wanted width/depth) as a Keras model with ``knobs`` (default: gin's)."""
    knobs = knobs if knobs is not None else ModelKnobs()
    dropout_rate, drop_path_rate, bn_momentum, bn_epsilon = knobs.dropout_rate, knobs.drop_path_rate, knobs.bn_momentum, knobs.bn_epsilon
    activation, se_ratio, normalization, include_top = knobs.activation, knobs.se_ratio, knobs.normalization, knobs.include_top
    features_only, freeze, input_size = knobs.features_only, knobs.freeze, knobs.input_size
    fused_bn, fold_bn, padding = knobs.fused_bn, knobs.fold_bn, knobs.padding
    activation = spec.activation if activation is None else activation
    if padding not in PADDINGS:
        raise UserError(f"efficientnet.padding={padding!r} must be one of {', '.join(map(repr, PADDINGS))}")
    mean, std = resolve_normalization(normalization)
    dropout_rate = spec.dropout if dropout_rate is None else dropout_rate
    drop_path_rate = spec.drop_path if drop_path_rate is None else drop_path_rate
    check_number("efficientnet.dropout_rate", dropout_rate, 0, 1, high_open=True)
    check_number("efficientnet.drop_path_rate", drop_path_rate, 0, 1, high_open=True)
    check_number("efficientnet.se_ratio", se_ratio, 0, 1, optional=True)
    check_number("efficientnet.bn_momentum", bn_momentum, 0, 1, high_open=True)
    check_number("efficientnet.bn_epsilon", bn_epsilon, 0, 1, low_open=True)
    if include_top and not features_only:
        check_number("num_classes", num_classes, 1, 1_000_000, integer=True,
                     hint="the dataset or --gin-param sets it")
    check_number("efficientnet.input_size", input_size, MIN_INPUT_SIZE, MAX_IMAGE_SIZE, integer=True, optional=True,
                 hint=f"the minimum is {MIN_INPUT_SIZE} px (five stride-2 stages), the maximum {MAX_IMAGE_SIZE}")
    try:
        act = resolve_activation(activation)
    except ValueError:
        raise UserError(f"efficientnet.activation={activation!r} is not a Keras activation (e.g. 'swish', 'relu', 'gelu')") from None

    for key, value in (("fused_bn", fused_bn), ("fold_bn", fold_bn)):
        if not isinstance(value, bool):
            raise UserError(f"efficientnet.{key}={value!r} must be True or False")
    batch_norm = FusedBatchNorm if fused_bn else layers.BatchNormalization

    def conv_bn_act(x, filters, kernel, stride, prefix):
        pad = symmetric_padding(kernel, stride) if padding == "symmetric" else 0
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"{prefix}pad")(x)
        x = layers.Conv2D(filters, kernel, stride, padding="valid" if pad else "same", use_bias=False, kernel_initializer=CONV_INIT, name=f"{prefix}conv")(x)
        x = batch_norm(momentum=bn_momentum, epsilon=bn_epsilon, name=f"{prefix}bn")(x)
        return layers.Activation(act, name=f"{prefix}activation")(x)

    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = Normalize(mean, std, name="normalize")(inputs)
    x = conv_bn_act(x, spec.stem_channels(), 3, 2, "stem_")

    n_blocks = sum(spec.round_repeats(stage.repeats, stage=i) for i, stage in enumerate(spec.stages))
    endpoints, reduction, index = {}, 1, 0
    for i, stage in enumerate(spec.stages, 1):
        if stage.stride == 2:
            endpoints[f"reduction_{reduction}"] = x
            reduction += 1
        out_channels = spec.round_filters(stage.out_channels)
        ratio = stage.se_ratio if se_ratio is None or not stage.se_ratio else se_ratio
        for j in range(spec.round_repeats(stage.repeats, stage=i - 1)):
            x = BLOCKS[stage.block](
                x.shape[-1], out_channels, kernel=stage.kernel, stride=stage.stride if j == 0 else 1,
                expand=stage.expand, se_ratio=ratio, activation=activation, bn_momentum=bn_momentum,
                bn_epsilon=bn_epsilon, fused_bn=fused_bn, fold_bn=fold_bn, padding=padding, drop_path_rate=drop_path_rate, block_fraction=index / n_blocks,
                name=f"block{i}{_block_letter(j)}",
            )(x)
            index += 1
    endpoints[f"reduction_{reduction}"] = x

    if features_only:
        outputs = endpoints
    else:
        x = conv_bn_act(x, spec.head_channels(), 1, 1, "top_")
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = HeadDropout(dropout_rate, name="top_dropout")(x)
            # float32 classifier: logits stay float32 under mixed precision policies.
            x = layers.Dense(num_classes, kernel_initializer=DENSE_INIT, dtype="float32", name="predictions")(x)
        outputs = x
    model = keras.Model(inputs, outputs, name=spec.name)
    model.min_input_size = MIN_INPUT_SIZE
    apply_freeze(model, freeze)
    return model


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer that owns weights, with blocks replaced by their sublayers (keras.applications' units)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, Block):
            out.extend(layer.sublayers())
        elif layer.weights:
            out.append(layer)
    return out


_BLOCK_RE = re.compile(r"^block(\d+)[a-z]+(_|$)")


def layer_stage(name: str) -> int | float | None:
    """0 for the stem, i for stage i's blocks, inf for the head conv, None for the classifier."""
    if name in HEAD_LAYERS:
        return None
    match = _BLOCK_RE.match(name)
    if match:
        return int(match.group(1))
    return math.inf if name.startswith("top_") else 0


def apply_freeze(model: keras.Model, freeze) -> list[str]:
    """Make leading layers non-trainable; returns the names of the frozen layers that have weights.

    ``freeze``: None/0 nothing; an int k freezes the first k stages counting the stem as the
    first (1 = stem, 2 = stem + stage 1, ...); "backbone" everything but the classifier. Frozen
    BatchNorm layers run in inference mode (Keras does that for non-trainable BN).
    """
    if freeze is None or freeze is False:
        return []
    if freeze == "backbone":
        limit = math.inf
    elif isinstance(freeze, int) and not isinstance(freeze, bool) and freeze >= 0:
        limit = freeze - 1
    else:
        raise UserError(f"efficientnet.freeze={freeze!r} must be None, 'backbone' or a number of leading stages (int >= 0, 1 = stem only)")
    frozen = []
    for layer in model.layers:
        stage = layer_stage(layer.name)
        if stage is not None and stage <= limit:
            layer.trainable = False
            if layer.weights:
                frozen.append(layer.name)
    return frozen

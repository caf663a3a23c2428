"""Built-in models: EfficientNet V1 (B0-B8, L2), EfficientNet-Lite (0-4) and EfficientNetV2 (B0-B3, S, M, L, XL).

Registered model names: ``efficientnet_b0`` ... ``efficientnet_b8``, ``efficientnet_l2``,
``efficientnet_lite0`` ... ``efficientnet_lite4`` (no SE, ReLU6, stem and head not scaled),
``efficientnet_v2_b0`` ... ``efficientnet_v2_b3``, ``efficientnet_v2_s``, ``efficientnet_v2_m``,
``efficientnet_v2_l``, ``efficientnet_v2_xl``. The engine calls ``factory(num_classes=N)``; every
other knob is a binding of the one gin configurable ``efficientnet`` shared by all variants
(``None`` means "the variant's published value", see :mod:`.specs`):

=============================  ==========================================================================
``efficientnet.width``         width coefficient (channels multiplier) instead of the variant's
``efficientnet.depth``         depth coefficient (repeats multiplier) instead of the variant's
``efficientnet.dropout_rate``  dropout before the classifier (B0 0.2 ... B7 0.5; V2-S 0.2, M 0.3, L 0.4)
``efficientnet.drop_path_rate`` stochastic depth rate of the last block (0.2); block b of n gets rate*b/n
``efficientnet.bn_momentum``   BatchNormalization momentum (0.99)
``efficientnet.bn_epsilon``    BatchNormalization epsilon (1e-3)
``efficientnet.fused_bn``      True (default): BatchNorm through TF's fused kernel (:class:`.layers.FusedBatchNorm`,
                               ~2x faster per layer on CPUs, same weights and training); False: plain
                               keras.layers.BatchNormalization
``efficientnet.fold_bn``       True (default): in inference each block folds its BatchNorms into the convolution
                               before them (conv + bias, which fuses with the activation); False: conv then BN
``efficientnet.activation``    any Keras activation name (default: the variant's, 'swish' = SiLU; 'relu6' for Lite)
``efficientnet.padding``       'same' (default, TensorFlow's) or 'symmetric' (k // 2 on every side of strided
                               convolutions, as PyTorch: timm's own efficientnet_b0 etc.)
``efficientnet.se_ratio``      squeeze-excitation ratio of the blocks that have SE (0 removes SE)
``efficientnet.normalization`` input normalisation inside the model: 'imagenet' (default, ImageNet
                               mean/std), 'centered' ((x-128)/128, Keras' V2-S/M/L weights), 'inception'
                               ((x-127.5)/127.5, timm's Lite/AdvProp/V2-21k weights), 'unit' (x/255), 'none', or {'mean': [r, g, b], 'std': [r, g, b]} in [0, 255] units
``efficientnet.include_top``   False: no classifier; the output is the last feature map (after top_conv)
``efficientnet.features_only`` True: no head at all; the output is a dict of multi-scale endpoints
                               ``reduction_1`` (stride 2) ... ``reduction_5`` (stride 32), for detectors
``efficientnet.freeze``        None; 'backbone' (all but the classifier); or k: the first k stages
                               counting the stem as stage 1 (2 = stem + first block stage)
``efficientnet.input_size``    None (any size >= 32) or a fixed square input size, e.g. for export
=============================  ==========================================================================

Models take images ``[batch, height, width, 3]`` with values in [0, 255] (float or uint8) and
return float32 logits ``[batch, num_classes]``; no softmax. Layer names follow
keras.applications (``stem_conv``, ``block2a_expand_bn``, ``top_conv``, ``predictions``), so BN
variables have paths ending ``_bn/gamma|beta|moving_mean|moving_variance`` and biases
``/bias``; every kernel (conv, depthwise, dense) has ndim >= 2. Published image sizes:
:func:`default_resolution`, or ``@efficientnet_image_size()`` in gin files.

Weights: :func:`load_pretrained` loads .weights.h5/.keras files from our models or from
keras.applications, and PyTorch .pth/.safetensors state dicts of timm and efficientnet_pytorch
(:mod:`.torch_import`); ``effnet import-weights`` converts either (:mod:`.keras_import`). This module imports no TensorFlow; building a model does.
"""

from __future__ import annotations

import gin

import effnet
from effnet.plugins.models.specs import VARIANTS, ModelKnobs, default_resolution, get_variant, variant_names

__all__ = [
    "default_resolution",
    "efficientnet",
    "efficientnet_image_size",
    "import_keras_weights",
    "load_model",
    "load_pretrained",
    "ModelKnobs",
    "variant_names",
]


def efficientnet(variant: str, num_classes: int = 1000, **knobs):
    """Build the EfficientNet ``variant`` (a registered name) as a Keras model; see the module docstring.

    ``knobs`` override the gin bindings of ``efficientnet.*`` (:class:`~.specs.ModelKnobs`) for this call.
    """
    from effnet.plugins.models.builder import build

    try:
        settings = ModelKnobs(**knobs)
    except TypeError as exc:
        raise effnet.UserError(f"efficientnet(): {exc}; the knobs are {', '.join(ModelKnobs.__dataclass_fields__)}") from None
    return build(get_variant(variant).scaled(settings.width, settings.depth), num_classes, settings)


@gin.configurable
def efficientnet_image_size(variant: str = gin.REQUIRED, split: str = "train") -> int:
    """A variant's published image size for ``split`` 'train' or 'eval' (for gin files)."""
    train, evaluate = default_resolution(variant)
    if split not in ("train", "eval"):
        raise effnet.UserError(f"efficientnet_image_size.split={split!r} must be 'train' or 'eval'")
    return train if split == "train" else evaluate


def _factory(variant: str):
    def factory(num_classes: int = 1000):
        return efficientnet(variant, num_classes=num_classes)

    factory.__name__ = variant
    factory.__doc__ = f"EfficientNet variant {variant!r}; knobs are bindings of the gin configurable `efficientnet`."
    factory.load_weights = load_pretrained  # what --from-weights uses for .weights.h5/.keras/.pth/.safetensors files
    factory.weight_settings = weight_settings  # the gin bindings a weights file needs, bound before building
    return factory


@effnet.hookimpl
def effnet_models():
    return {name: _factory(name) for name in VARIANTS}


def import_keras_weights(source, variant=None, num_classes=None, replace_head=False, output=None, check=False,
                         source_name=None, normalization=None):
    """Build our model matching a keras.applications model, a Keras weights file or a PyTorch state dict
    (timm / efficientnet_pytorch) and copy its weights (see keras_import, torch_import)."""
    from effnet.plugins.models.keras_import import import_keras_weights as _import

    return _import(source, variant, num_classes, replace_head, output=output, check=check,
                   source_name=source_name, normalization=normalization)


def load_pretrained(model, path, replace_head: bool = False):
    """Load a .weights.h5 / .keras / legacy .h5 file into ``model``, layer by layer (see keras_import)."""
    from effnet.plugins.models.keras_import import load_pretrained as _load

    return _load(model, path, replace_head=replace_head)


def weight_settings(path) -> dict:
    """The gin bindings (normalisation, padding, BN epsilon) the weights file ``path`` needs (see keras_import)."""
    from effnet.plugins.models.keras_import import weight_settings as _settings

    return _settings(path)


def load_model(path, compile: bool = False):
    """``keras.saving.load_model`` with effnet's layers registered (for .keras files of our models)."""
    from effnet.plugins.models.keras_import import load_keras_file

    return load_keras_file(path, compile=compile)

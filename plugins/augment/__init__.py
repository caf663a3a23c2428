"""Built-in augmenter plugins: ``randaugment``, ``autoaugment`` (image level), ``mixup`` and
``cutmix`` (batch level). The factories are gin configurables; the pipeline (or a progressive
stage) calls them with overrides such as ``magnitude`` or ``alpha``. TensorFlow is imported only
when a factory runs (the implementations live in ``augmenters.py`` and ``ops.py``).
"""

from __future__ import annotations

import gin

import effnet

RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


@gin.configurable("randaugment", module="effnet.plugins.augment")
def randaugment(num_layers=2, magnitude=10.0, translate_const=100, cutout_const=40, fill_value=128,
                ops=RANDAUGMENT_OPS):
    """RandAugment(N=num_layers, M=magnitude) with the EfficientNetV2 recipe's 16 ops."""
    from effnet.plugins.augment.augmenters import RandAugment

    return RandAugment(num_layers=num_layers, magnitude=magnitude, translate_const=translate_const,
                       cutout_const=cutout_const, fill_value=fill_value, ops=ops)


@gin.configurable("autoaugment", module="effnet.plugins.augment")
def autoaugment(policy="v0", translate_const=250, cutout_const=100, fill_value=128):
    """AutoAugment with the ImageNet policy v0."""
    from effnet.plugins.augment.augmenters import AutoAugment

    return AutoAugment(policy=policy, translate_const=translate_const, cutout_const=cutout_const, fill_value=fill_value)


@gin.configurable("mixup", module="effnet.plugins.augment")
def mixup(alpha=0.2):
    """mixup with lam ~ Beta(alpha, alpha) per example (alpha 0: off)."""
    from effnet.plugins.augment.augmenters import MixUp

    return MixUp(alpha=alpha)


@gin.configurable("cutmix", module="effnet.plugins.augment")
def cutmix(alpha=1.0):
    """cutmix with box area ~ 1 - Beta(alpha, alpha) per example (alpha 0: off)."""
    from effnet.plugins.augment.augmenters import CutMix

    return CutMix(alpha=alpha)


@effnet.hookimpl
def effnet_augmenters():
    return {"randaugment": randaugment, "autoaugment": autoaugment, "mixup": mixup, "cutmix": cutmix}

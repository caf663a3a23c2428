"""EfficientNet V1 and V2 architectures as data (no TensorFlow here).

A variant is a table of stages plus scaling coefficients. Each stage is one compact string::

    "fused_r4_k3_s2_e4_i24_o48"          Fused-MBConv, 4 repeats, 3x3, stride 2, expand 4, 24->48
    "mb_r6_k3_s2_e4_i64_o128_se0.25"     MBConv, ..., squeeze-excitation ratio 0.25

Fields: block type (``mb`` or ``fused``), ``r`` repeats, ``k`` kernel, ``s`` stride of the first
block of the stage, ``e`` expand ratio, ``i``/``o`` input/output channels before width scaling,
``se`` squeeze-excitation ratio (absent = no SE). The builder (:mod:`.builder`) turns a
:class:`VariantSpec` into a Keras model; adding a variant means adding an entry to
:data:`VARIANTS`, not code.

Scaling rules (from the papers' reference code, which keras.applications follows):

* channels: ``c * width`` rounded to the nearest multiple of ``divisor`` (8), at least
  ``min_filters``; V1 additionally never rounds down by more than 10 % (``round_guard``).
  The stem and the 1280-channel head conv are scaled the same way.
* repeats: ``ceil(r * depth)``.
* stochastic depth: block ``b`` of ``n`` (counted over the scaled network) drops its residual
  branch with probability ``drop_path_rate * b / n``; only blocks with an identity skip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import gin

from effnet.errors import UserError, did_you_mean

__all__ = [
    "NORMALIZATIONS",
    "StageSpec",
    "VariantSpec",
    "VARIANTS",
    "decode_stage",
    "default_resolution",
    "get_variant",
    "normalization_name",
    "resolve_normalization",
    "variant_names",
]


# --------------------------------------------------------------------------------------------------
# Stages



@gin.configurable("efficientnet", module="effnet.plugins.models")
@dataclass(frozen=True)
class ModelKnobs:
    """The knobs every variant shares: bind them in gin as ``efficientnet.<name>`` (see the package docstring).

    ``None`` means "the variant's published value".
    """

    width: float | None = None
    depth: float | None = None
    dropout_rate: float | None = None
    drop_path_rate: float | None = None
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    fused_bn: bool = True  # BatchNorm through TF's fused kernel (layers.FusedBatchNorm); False: Keras' own
    fold_bn: bool = True
    activation: str | None = None  # None: the variant's ('swish'; 'relu6' for Lite)
    padding: str = "same"  # 'same' (TensorFlow's, the papers' code) or 'symmetric' (PyTorch's k//2 on both sides)
    se_ratio: float | None = None
    normalization: object = "imagenet"
    include_top: bool = True
    features_only: bool = False
    freeze: object = None
    input_size: int | None = None

    def __post_init__(self):
        from effnet.validate import check_number

        # The largest published coefficients are L2's (width 4.3, depth 5.3); the other knobs are
        # checked where the model is built (builder.build).
        check_number("efficientnet.width", self.width, 0, 8, low_open=True, optional=True)
        check_number("efficientnet.depth", self.depth, 0, 8, low_open=True, optional=True)


def default_knobs(**overrides) -> ModelKnobs:
    """Knobs at their defaults whatever gin binds (every field passed explicitly), with ``overrides``."""
    from dataclasses import fields

    return ModelKnobs(**{**{f.name: f.default for f in fields(ModelKnobs)}, **overrides})

@dataclass(frozen=True)
class StageSpec:
    """One stage: ``repeats`` blocks of one type; the first one changes stride and channels."""

    block: str  # "mb" (MBConv: expand 1x1, depthwise kxk, SE, project 1x1) or "fused"
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.0

    def encode(self) -> str:
        text = f"{self.block}_r{self.repeats}_k{self.kernel}_s{self.stride}_e{self.expand}_i{self.in_channels}_o{self.out_channels}"
        return text + (f"_se{self.se_ratio:g}" if self.se_ratio else "")


_STAGE_RE = re.compile(r"^(?P<block>mb|fused)((?:_[a-z]+[0-9.]+)+)$")
_FIELDS = {"r": "repeats", "k": "kernel", "s": "stride", "e": "expand", "i": "in_channels", "o": "out_channels", "se": "se_ratio"}


def decode_stage(text: str) -> StageSpec:
    """Parse ``"mb_r2_k3_s2_e6_i16_o24_se0.25"`` into a :class:`StageSpec` (UserError if malformed)."""
    match = _STAGE_RE.match(text.strip())
    if not match:
        raise UserError(f"stage {text!r} is not '<mb|fused>_r<repeats>_k<kernel>_s<stride>_e<expand>_i<in>_o<out>[_se<ratio>]'")
    values: dict[str, float] = {}
    for part in match.group(2).strip("_").split("_"):
        key, number = re.match(r"([a-z]+)([0-9.]+)", part).groups()
        if key not in _FIELDS:
            raise UserError(f"stage {text!r}: unknown field {key!r}{did_you_mean(key, _FIELDS)}; fields: {', '.join(_FIELDS)}")
        values[_FIELDS[key]] = float(number)
    missing = [k for k, v in _FIELDS.items() if k != "se" and v not in values]
    if missing:
        raise UserError(f"stage {text!r} lacks field(s) {', '.join(missing)}")
    ints = {k: int(v) for k, v in values.items() if k != "se_ratio"}
    if min(ints.values()) < 1 or ints["stride"] not in (1, 2):
        raise UserError(f"stage {text!r}: repeats, kernel, expand and channels must be >= 1 and stride 1 or 2")
    return StageSpec(match.group("block"), se_ratio=values.get("se_ratio", 0.0), **ints)


# --------------------------------------------------------------------------------------------------
# Input normalisation presets. Models take images with values in [0, 255] and compute
# (x - mean) / std per channel inside the model; mean and std are in [0, 255] units.

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # ImageNet statistics; the seed's convention and the default of every variant here.
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    # (x - 128) / 128, range [-1, 1): keras.applications EfficientNetV2 S/M/L.
    "centered": ((128.0,) * 3, (128.0,) * 3),
    # x / 255, range [0, 1]: keras.applications EfficientNet B0-B7 built without ImageNet weights.
    "unit": ((0.0,) * 3, (255.0,) * 3),
    # (x - 127.5) / 127.5, range [-1, 1]: "inception" style, timm's Lite, AdvProp and V2 in21k weights.
    "inception": ((127.5,) * 3, (127.5,) * 3),
    # identity: the caller normalises.
    "none": ((0.0,) * 3, (1.0,) * 3),
}


def resolve_normalization(value) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A preset name, a ``{"mean": [...], "std": [...]}`` mapping or a ``(mean, std)`` pair -> (mean, std)."""
    if isinstance(value, str):
        if value not in NORMALIZATIONS:
            raise UserError(
                f"efficientnet.normalization={value!r} is unknown{did_you_mean(value, NORMALIZATIONS)}; "
                f"use one of {', '.join(NORMALIZATIONS)} or {{'mean': [r, g, b], 'std': [r, g, b]}}"
            )
        return NORMALIZATIONS[value]
    if isinstance(value, Mapping):
        mean, std = value.get("mean"), value.get("std")
    elif isinstance(value, Sequence) and len(value) == 2:
        mean, std = value
    else:
        mean = std = None
    try:
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
    except TypeError:
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UserError(
            f"efficientnet.normalization={value!r} must be a preset ({', '.join(NORMALIZATIONS)}) or "
            f"{{'mean': [r, g, b], 'std': [r, g, b]}} with three positive std values"
        )
    return mean, std


def normalization_name(mean: Sequence[float], std: Sequence[float], rtol: float = 1e-5):
    """The preset equal to (mean, std) within ``rtol``, else ``{"mean": [...], "std": [...]}``."""
    for name, (pm, ps) in NORMALIZATIONS.items():
        pairs = list(zip(mean, pm)) + list(zip(std, ps))
        if all(abs(a - b) <= rtol * max(1.0, abs(b)) for a, b in pairs):
            return name
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


# --------------------------------------------------------------------------------------------------
# Variants


@dataclass(frozen=True)
class VariantSpec:
    name: str
    family: str  # "v1" or "v2"
    stages: tuple[StageSpec, ...]
    width: float
    depth: float
    train_size: int
    eval_size: int
    dropout: float
    drop_path: float = 0.2
    stem_filters: int = 32
    head_filters: int = 1280
    divisor: int = 8
    min_filters: int | None = None
    round_guard: bool = False  # V1: never round channels down by more than 10 %
    # Lite: the stem and head keep their channels whatever the width, and the first and last stage
    # their repeats whatever the depth (timm's fix_stem / fix_first_last).
    fixed_stem_head: bool = False
    activation: str = "swish"
    # keras.applications constructor with the same architecture (None if Keras has none).
    keras_application: str | None = None
    # Trainable parameters with a 1000-class head as published (millions), for variants
    # keras.applications does not have; (value, source).
    published_params: tuple[float, str] | None = None

    def round_filters(self, channels: int, width: float | None = None) -> int:
        width = self.width if width is None else width
        divisor = self.divisor
        scaled = channels * width
        rounded = max(self.min_filters or divisor, int(scaled + divisor / 2) // divisor * divisor)
        if self.round_guard and rounded < 0.9 * scaled:
            rounded += divisor
        return int(rounded)

    def round_repeats(self, repeats: int, depth: float | None = None, stage: int | None = None) -> int:
        """Scaled repeats of a stage (``stage``: its 0-based index, for the Lite rule on the first and last)."""
        if self.fixed_stem_head and stage in (0, len(self.stages) - 1):
            return int(repeats)
        return int(math.ceil((self.depth if depth is None else depth) * repeats))

    def stem_channels(self) -> int:
        return self.stem_filters if self.fixed_stem_head else self.round_filters(self.stem_filters)

    def head_channels(self) -> int:
        return self.head_filters if self.fixed_stem_head else self.round_filters(self.head_filters)

    def scaled(self, width: float | None = None, depth: float | None = None) -> VariantSpec:
        """The same variant with other width/depth coefficients (None keeps the variant's)."""
        return replace(self, width=self.width if width is None else float(width), depth=self.depth if depth is None else float(depth))


def _stages(*texts: str) -> tuple[StageSpec, ...]:
    return tuple(decode_stage(t) for t in texts)


V1_BASE = _stages(
    "mb_r1_k3_s1_e1_i32_o16_se0.25",
    "mb_r2_k3_s2_e6_i16_o24_se0.25",
    "mb_r2_k5_s2_e6_i24_o40_se0.25",
    "mb_r3_k3_s2_e6_i40_o80_se0.25",
    "mb_r3_k5_s1_e6_i80_o112_se0.25",
    "mb_r4_k5_s2_e6_i112_o192_se0.25",
    "mb_r1_k3_s1_e6_i192_o320_se0.25",
)

LITE_BASE = tuple(replace(stage, se_ratio=0.0) for stage in V1_BASE)

V2_BASE = _stages(  # EfficientNetV2 B0-B3
    "fused_r1_k3_s1_e1_i32_o16",
    "fused_r2_k3_s2_e4_i16_o32",
    "fused_r2_k3_s2_e4_i32_o48",
    "mb_r3_k3_s2_e4_i48_o96_se0.25",
    "mb_r5_k3_s1_e6_i96_o112_se0.25",
    "mb_r8_k3_s2_e6_i112_o192_se0.25",
)

V2_S = _stages(
    "fused_r2_k3_s1_e1_i24_o24",
    "fused_r4_k3_s2_e4_i24_o48",
    "fused_r4_k3_s2_e4_i48_o64",
    "mb_r6_k3_s2_e4_i64_o128_se0.25",
    "mb_r9_k3_s1_e6_i128_o160_se0.25",
    "mb_r15_k3_s2_e6_i160_o256_se0.25",
)

V2_M = _stages(
    "fused_r3_k3_s1_e1_i24_o24",
    "fused_r5_k3_s2_e4_i24_o48",
    "fused_r5_k3_s2_e4_i48_o80",
    "mb_r7_k3_s2_e4_i80_o160_se0.25",
    "mb_r14_k3_s1_e6_i160_o176_se0.25",
    "mb_r18_k3_s2_e6_i176_o304_se0.25",
    "mb_r5_k3_s1_e6_i304_o512_se0.25",
)

V2_L = _stages(
    "fused_r4_k3_s1_e1_i32_o32",
    "fused_r7_k3_s2_e4_i32_o64",
    "fused_r7_k3_s2_e4_i64_o96",
    "mb_r10_k3_s2_e4_i96_o192_se0.25",
    "mb_r19_k3_s1_e6_i192_o224_se0.25",
    "mb_r25_k3_s2_e6_i224_o384_se0.25",
    "mb_r7_k3_s1_e6_i384_o640_se0.25",
)

V2_XL = _stages(
    "fused_r4_k3_s1_e1_i32_o32",
    "fused_r8_k3_s2_e4_i32_o64",
    "fused_r8_k3_s2_e4_i64_o96",
    "mb_r16_k3_s2_e4_i96_o192_se0.25",
    "mb_r24_k3_s1_e6_i192_o256_se0.25",
    "mb_r32_k3_s2_e6_i256_o512_se0.25",
    "mb_r8_k3_s1_e6_i512_o640_se0.25",
)


def _v1(suffix, width, depth, size, dropout, keras=True, published=None):
    return VariantSpec(
        name=f"efficientnet_{suffix}", family="v1", stages=V1_BASE, width=width, depth=depth,
        train_size=size, eval_size=size, dropout=dropout, stem_filters=32, round_guard=True,
        keras_application=f"EfficientNet{suffix.upper()}" if keras else None, published_params=published,
    )


def _lite(index, width, depth, size, dropout, published):
    # No SE, ReLU6, fixed stem/head/first/last stage (timm's _gen_efficientnet_lite, automl's lite builder).
    return VariantSpec(
        name=f"efficientnet_lite{index}", family="v1", stages=LITE_BASE, width=width, depth=depth,
        train_size=size, eval_size=size, dropout=dropout, stem_filters=32, round_guard=True,
        fixed_stem_head=True, activation="relu6", published_params=published,
    )


def _v2(suffix, stages, width, depth, train, evaluate, dropout, keras=True, published=None):
    return VariantSpec(
        name=f"efficientnet_v2_{suffix}", family="v2", stages=stages, width=width, depth=depth,
        train_size=train, eval_size=evaluate, dropout=dropout, stem_filters=stages[0].in_channels,
        min_filters=8, keras_application=f"EfficientNetV2{suffix.upper()}" if keras else None,
        published_params=published,
    )


# (width, depth, resolution, dropout) from the EfficientNet paper / reference code; V2 adds
# separate train and eval sizes. Published sizes of the variants Keras lacks: B8 and L2 from the
# Noisy Student / AdvProp reference checkpoints (87.4M, 480.3M), V2-XL from the V2 paper (208M).
VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        _v1("b0", 1.0, 1.0, 224, 0.2),
        _v1("b1", 1.0, 1.1, 240, 0.2),
        _v1("b2", 1.1, 1.2, 260, 0.3),
        _v1("b3", 1.2, 1.4, 300, 0.3),
        _v1("b4", 1.4, 1.8, 380, 0.4),
        _v1("b5", 1.6, 2.2, 456, 0.4),
        _v1("b6", 1.8, 2.6, 528, 0.5),
        _v1("b7", 2.0, 3.1, 600, 0.5),
        _v1("b8", 2.2, 3.6, 672, 0.5, keras=False, published=(87.4, "AdvProp EfficientNet-B8 checkpoint")),
        _v1("l2", 4.3, 5.3, 800, 0.5, keras=False, published=(480.3, "Noisy Student EfficientNet-L2 checkpoint")),
        # Lite: (width, depth, resolution, dropout) of automl's efficientnet_lite_builder; parameter
        # counts (trainable + BN statistics, 1000 classes) of timm's tf_efficientnet_lite0..4.
        _lite(0, 1.0, 1.0, 224, 0.2, (4.65, "timm tf_efficientnet_lite0")),
        _lite(1, 1.0, 1.1, 240, 0.2, (5.42, "timm tf_efficientnet_lite1")),
        _lite(2, 1.1, 1.2, 260, 0.3, (6.09, "timm tf_efficientnet_lite2")),
        _lite(3, 1.2, 1.4, 280, 0.3, (8.2, "timm tf_efficientnet_lite3")),
        _lite(4, 1.4, 1.8, 300, 0.3, (13.01, "timm tf_efficientnet_lite4")),
        _v2("b0", V2_BASE, 1.0, 1.0, 192, 224, 0.2),
        _v2("b1", V2_BASE, 1.0, 1.1, 192, 240, 0.2),
        _v2("b2", V2_BASE, 1.1, 1.2, 208, 260, 0.3),
        _v2("b3", V2_BASE, 1.2, 1.4, 240, 300, 0.3),
        _v2("s", V2_S, 1.0, 1.0, 300, 384, 0.2),
        _v2("m", V2_M, 1.0, 1.0, 384, 480, 0.3),
        _v2("l", V2_L, 1.0, 1.0, 384, 480, 0.4),
        _v2("xl", V2_XL, 1.0, 1.0, 384, 512, 0.4, keras=False, published=(208.0, "EfficientNetV2 paper, table 7")),
    )
}


def variant_names() -> list[str]:
    return list(VARIANTS)


def get_variant(name: str) -> VariantSpec:
    """The spec registered as ``name`` (UserError naming the close match and all names otherwise)."""
    if name not in VARIANTS:
        raise UserError(f"unknown EfficientNet variant {name!r}{did_you_mean(name, VARIANTS)}; variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def default_resolution(name: str) -> tuple[int, int]:
    """(train image size, eval image size) of a variant as published."""
    spec = get_variant(name)
    return spec.train_size, spec.eval_size

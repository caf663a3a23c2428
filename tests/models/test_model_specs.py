"""Architecture data, names, gin knobs: no TensorFlow needed."""

import subprocess
import sys

import gin
import pytest

from effnet.errors import UserError
from effnet.plugins.models import efficientnet_image_size
from effnet.plugins.models.specs import (
    NORMALIZATIONS,
    VARIANTS,
    decode_stage,
    default_resolution,
    get_variant,
    normalization_name,
    resolve_normalization,
)

EXPECTED_NAMES = (
    [f"efficientnet_b{i}" for i in range(9)]
    + ["efficientnet_l2"]
    + [f"efficientnet_lite{i}" for i in range(5)]
    + [f"efficientnet_v2_b{i}" for i in range(4)]
    + ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l", "efficientnet_v2_xl"]
)


def test_every_variant_is_a_registered_model_plugin():
    from effnet.registry import get_registry

    registry = get_registry()
    models = [e for e in registry.entries() if e.kind == "model" and e.plugin == "effnet.plugins.models"]
    assert sorted(e.name for e in models) == sorted(EXPECTED_NAMES)
    assert sorted(VARIANTS) == sorted(EXPECTED_NAMES)


def test_plugin_module_does_not_import_tensorflow(tmp_path):
    code = "import sys, effnet.plugins.models; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stage_strings_decode_and_encode_back():
    for spec in VARIANTS.values():
        for stage in spec.stages:
            assert decode_stage(stage.encode()) == stage
    stage = decode_stage("mb_r6_k3_s2_e4_i64_o128_se0.25")
    assert (stage.block, stage.repeats, stage.kernel, stage.stride, stage.expand) == ("mb", 6, 3, 2, 4)
    assert (stage.in_channels, stage.out_channels, stage.se_ratio) == (64, 128, 0.25)
    assert decode_stage("fused_r2_k3_s1_e1_i24_o24").se_ratio == 0.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("conv_r1_k3_s1_e1_i8_o8", "stage 'conv_r1_k3_s1_e1_i8_o8' is not '<mb|fused>_r<repeats>_k<kernel>_s<stride>_e<expand>_i<in>_o<out>[_se<ratio>]'"),
        ("mb_r1_k3_s1_e1_i8_o8_x2", "stage 'mb_r1_k3_s1_e1_i8_o8_x2': unknown field 'x'; fields: r, k, s, e, i, o, se"),
        ("mb_r1_k3_s1_e1_i8", "stage 'mb_r1_k3_s1_e1_i8' lacks field(s) o"),
        ("mb_r1_k3_s3_e1_i8_o8", "stage 'mb_r1_k3_s3_e1_i8_o8': repeats, kernel, expand and channels must be >= 1 and stride 1 or 2"),
    ],
)
def test_malformed_stage_strings_say_what_is_wrong(text, message):
    with pytest.raises(UserError) as err:
        decode_stage(text)
    assert str(err.value) == message


def test_v2_s_table_is_the_published_one():
    spec = get_variant("efficientnet_v2_s")
    assert [s.encode() for s in spec.stages] == [
        "fused_r2_k3_s1_e1_i24_o24", "fused_r4_k3_s2_e4_i24_o48", "fused_r4_k3_s2_e4_i48_o64",
        "mb_r6_k3_s2_e4_i64_o128_se0.25", "mb_r9_k3_s1_e6_i128_o160_se0.25", "mb_r15_k3_s2_e6_i160_o256_se0.25",
    ]
    assert sum(spec.round_repeats(s.repeats) for s in spec.stages) == 40
    assert (spec.width, spec.depth, spec.dropout, spec.drop_path, spec.stem_filters, spec.head_filters) == (1.0, 1.0, 0.2, 0.2, 24, 1280)


def test_rounding_rules_differ_between_v1_and_v2():
    v1, v2 = get_variant("efficientnet_b3"), get_variant("efficientnet_v2_b3")  # both width 1.2
    # 16 * 1.2 = 19.2: the nearest multiple of 8 is 16, which V1 rejects (more than 10 % down).
    assert v1.round_filters(16) == 24
    assert v2.round_filters(16) == 16
    assert v1.round_filters(32) == v2.round_filters(32) == 40  # 38.4 -> 40
    assert v1.round_filters(1280) == 1536
    assert v1.round_repeats(3) == 5  # ceil(3 * 1.4) = ceil(4.2)
    assert get_variant("efficientnet_b0").scaled(width=0.25).round_filters(16) == 8  # never below the divisor


def test_default_resolutions_are_the_published_ones():
    assert default_resolution("efficientnet_v2_s") == (300, 384)
    assert default_resolution("efficientnet_v2_m") == (384, 480)
    assert default_resolution("efficientnet_v2_xl") == (384, 512)
    assert default_resolution("efficientnet_v2_b3") == (240, 300)
    assert default_resolution("efficientnet_b0") == (224, 224)
    assert default_resolution("efficientnet_l2") == (800, 800)


def test_image_size_is_available_to_gin_files():
    gin.parse_config("""
        train/efficientnet_image_size.variant = 'efficientnet_v2_s'
        eval/efficientnet_image_size.variant = 'efficientnet_v2_s'
        eval/efficientnet_image_size.split = 'eval'
    """)
    with gin.config_scope("train"):
        assert efficientnet_image_size() == 300
    with gin.config_scope("eval"):
        assert efficientnet_image_size() == 384
    with pytest.raises(UserError) as err:
        efficientnet_image_size("efficientnet_b0", split="val")
    # gin appends "In call to configurable ..." lines; the CLI prints the first line only.
    assert str(err.value).splitlines()[0] == "efficientnet_image_size.split='val' must be 'train' or 'eval'"


def test_unknown_variant_names_the_closest_and_all():
    with pytest.raises(UserError) as err:
        get_variant("efficientnet_v2_ss")
    assert str(err.value) == (
        "unknown EfficientNet variant 'efficientnet_v2_ss' (did you mean 'efficientnet_v2_s'?); "
        f"variants: {', '.join(VARIANTS)}"
    )


def test_normalization_presets_and_custom_values():
    assert resolve_normalization("imagenet") == NORMALIZATIONS["imagenet"]
    assert resolve_normalization({"mean": [1, 2, 3], "std": [4, 5, 6]}) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert normalization_name((128.0,) * 3, (128.0,) * 3) == "centered"
    assert normalization_name((1, 2, 3), (4, 5, 6)) == {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    with pytest.raises(UserError) as err:
        resolve_normalization("imagenett")
    assert str(err.value) == (
        "efficientnet.normalization='imagenett' is unknown (did you mean 'imagenet'?); "
        "use one of imagenet, centered, unit, inception, none or {'mean': [r, g, b], 'std': [r, g, b]}"
    )
    with pytest.raises(UserError, match=r"^efficientnet.normalization=\{'mean': \[1, 2\], 'std': \[1, 1\]\} must be a preset"):
        resolve_normalization({"mean": [1, 2], "std": [1, 1]})

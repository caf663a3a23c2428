"""Building, running, training, saving and configuring the models (tiny widths and depths)."""

import math

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.errors import UserError
from effnet.plugins.models import efficientnet, load_model
from effnet.plugins.models.blocks import Block, FusedMBConv, MBConv
from effnet.plugins.models.builder import weighted_layers
from effnet.plugins.models.layers import Normalize
from effnet.plugins.models.specs import NORMALIZATIONS, VARIANTS

from modeltest_utils import TINY, images


def first_line(exc):
    return str(exc.value).splitlines()[0]


def stage_layers(model):
    return [layer for layer in model.layers if hasattr(layer, "apply_stage")]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_a_step_at_reduced_size(variant):
    from effnet.registry import get_registry

    gin.parse_config(f"efficientnet.width = {TINY['width']}\nefficientnet.depth = {TINY['depth']}")
    model = get_registry().get("model", variant)(num_classes=5)  # exactly how the engine calls it
    assert model.name == variant and model.min_input_size == 32
    x, labels = images(2, 32), tf.constant([1, 4])
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert logits.shape == (2, 5) and logits.dtype == tf.float32
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert np.all(np.isfinite(model(x, training=False)))


def test_inputs_of_any_size_and_uint8():
    model = efficientnet("efficientnet_v2_b0", num_classes=3, **TINY)
    x = images(2, 33, width=47)
    assert model(x).shape == (2, 3)
    np.testing.assert_array_equal(model(x.astype("uint8")), model(x.astype("uint8").astype("float32")))


def test_normalization_is_inside_the_model_and_selectable():
    x = images(1, 32)
    for name, (mean, std) in NORMALIZATIONS.items():
        model = efficientnet("efficientnet_b0", num_classes=2, normalization=name, **TINY)
        layer = model.get_layer("normalize")
        np.testing.assert_allclose(layer(x), (x - np.array(mean)) / np.array(std), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_body_half_logits_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    model = efficientnet("efficientnet_v2_s", num_classes=4, **TINY)
    half = policy.split("_")[1]
    assert model.get_layer("stem_conv").compute_dtype == half
    block = model.get_layer("block4a")
    assert block.compute_dtype == half and block.project_conv.compute_dtype == half
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    logits = model(images(2, 32), training=True)
    assert logits.dtype == tf.float32 and np.all(np.isfinite(logits))


def test_stochastic_depth_grows_linearly_and_only_on_identity_blocks():
    model = efficientnet("efficientnet_v2_s", num_classes=2, drop_path_rate=0.3, width=0.25)
    blocks = [layer for layer in model.layers if isinstance(layer, Block)]
    assert len(blocks) == 40
    for index, block in enumerate(blocks):
        assert block.block_fraction == pytest.approx(index / 40)
        identity = block.stride == 1 and block.in_channels == block.out_channels
        assert block.has_skip == identity
        assert block.drop_probability == pytest.approx(0.3 * index / 40 if identity else 0.0)
    assert blocks[-1].has_skip and blocks[-1].drop_probability == pytest.approx(0.3 * 39 / 40)


def test_stochastic_depth_drops_whole_samples_only_in_training():
    block = MBConv(8, 8, expand=2, se_ratio=0.25, drop_path_rate=0.5, block_fraction=1.0, name="block9a", seed=3)
    x = np.repeat(images(1, 8)[:, :, :, :1], 8, axis=-1).repeat(256, axis=0) / 255.0
    branch = np.asarray(block(x, training=False)) - x  # inference: the full residual branch
    out = np.asarray(block(x, training=True)) - x
    # BN uses batch statistics in training; the samples are identical, so each sample's branch is
    # either dropped (exactly 0) or the same branch scaled by 1 / keep.
    dropped = np.all(out == 0, axis=(1, 2, 3))
    kept_branch = out[~dropped]
    assert 0.35 < dropped.mean() < 0.65
    np.testing.assert_allclose(kept_branch, np.broadcast_to(kept_branch[:1], kept_branch.shape), rtol=1e-5, atol=1e-6)
    assert not np.allclose(branch, 0)


def test_stage_protocol_changes_rates_without_rebuilding():
    model = efficientnet("efficientnet_b0", num_classes=2, dropout_rate=0.0, drop_path_rate=0.2, **TINY)
    layers = stage_layers(model)
    head = model.get_layer("top_dropout")
    assert head in layers and head.stage_values() == {"dropout": 0.0}
    blocks = [layer for layer in layers if isinstance(layer, Block)]
    assert len(blocks) == len(layers) - 1 and all(b.stage_values() == {"drop_path": 0.2} for b in blocks)
    features = np.ones((64, 16), "float32")
    assert np.array_equal(head(features, training=True), features)  # rate 0: no dropout
    for layer in layers:
        layer.apply_stage({"dropout": 0.5, "drop_path": 0.4, "image_size": 128})
    out = np.asarray(head(features, training=True))
    assert set(np.unique(out)) == {0.0, 2.0}
    assert np.array_equal(head(features, training=False), features)
    assert all(b.drop_path_rate == 0.4 for b in blocks)
    assert head.stage_values() == {"dropout": 0.0}  # what it was built with
    with pytest.raises(ValueError, match="dropout must be in"):
        head.apply_stage({"dropout": 1.0})


def test_features_only_returns_multiscale_endpoints():
    model = efficientnet("efficientnet_v2_b0", features_only=True, **TINY)
    out = model(images(1, 64))
    assert sorted(out) == [f"reduction_{i}" for i in range(1, 6)]
    assert [out[f"reduction_{i}"].shape[1] for i in range(1, 6)] == [32, 16, 8, 4, 2]
    assert not any(layer.name.startswith("top_") or layer.name == "predictions" for layer in model.layers)


def test_include_top_false_returns_the_last_feature_map():
    model = efficientnet("efficientnet_b0", include_top=False, **TINY)
    assert model(images(1, 64)).shape == (1, 2, 2, 320)  # 1280 * 0.25


def test_freeze_backbone_or_leading_stages():
    model = efficientnet("efficientnet_v2_s", num_classes=3, freeze="backbone", **TINY)
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]

    model = efficientnet("efficientnet_v2_s", num_classes=3, freeze=2, **TINY)
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    assert {"stem_conv", "stem_bn", "block1a"} <= frozen and "block2a" not in frozen
    bn = model.get_layer("block1a").project_bn
    before = bn.moving_mean.numpy().copy()
    model(images(4, 32), training=True)  # frozen BN runs in inference mode: statistics unchanged
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    assert not np.array_equal(model.get_layer("block2a").project_bn.moving_mean.numpy(), 0)


@pytest.mark.parametrize("value", ["stem", -1, 1.5, True])
def test_bad_freeze_value_is_a_user_error(value):
    with pytest.raises(UserError) as err:
        efficientnet("efficientnet_b0", freeze=value, **TINY)
    assert first_line(err) == (
        f"efficientnet.freeze={value!r} must be None, 'backbone' or a number of leading stages (int >= 0, 1 = stem only)"
    )


def test_knobs_are_gin_bindings():
    gin.parse_config("""
        efficientnet.width = 0.25
        efficientnet.depth = 0.1
        efficientnet.bn_momentum = 0.9
        efficientnet.bn_epsilon = 1e-5
        efficientnet.activation = 'relu'
        efficientnet.se_ratio = 0.0
        efficientnet.dropout_rate = 0.35
        efficientnet.drop_path_rate = 0.1
        efficientnet.normalization = 'centered'
    """)
    from effnet.registry import get_registry

    model = get_registry().get("model", "efficientnet_b0")(num_classes=7)
    bns = [layer for layer in weighted_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)
    assert model.get_layer("stem_activation").activation is keras.activations.relu
    blocks = [layer for layer in model.layers if isinstance(layer, Block)]
    assert all(b.activation == "relu" and b.se_reduce is None and b.built_drop_path_rate == 0.1 for b in blocks)
    assert model.get_layer("top_dropout").rate == 0.35
    assert model.get_layer("normalize").mean == [128.0] * 3
    assert model.get_layer("predictions").units == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "swishh"}, "efficientnet.activation='swishh' is not a Keras activation (e.g. 'swish', 'relu', 'gelu')"),
        ({"dropout_rate": 1.0}, "efficientnet.dropout_rate=1.0 is out of range: allowed a number in [0, 1); "
                                "fix it in the gin file or --gin-param"),
        ({"se_ratio": 2.0}, "efficientnet.se_ratio=2.0 is out of range: allowed a number in [0, 1] or None; "
                            "fix it in the gin file or --gin-param"),
        ({"input_size": 16}, "efficientnet.input_size=16 is out of range: allowed an integer in [32, 4096] or None; "
                             "the minimum is 32 px (five stride-2 stages), the maximum 4096"),
        ({"num_classes": 0}, "num_classes=0 is out of range: allowed an integer in [1, 1000000]; "
                             "the dataset or --gin-param sets it"),
        ({"width": -1.0}, "efficientnet.width=-1.0 is out of range: allowed a number in (0, 8] or None; "
                          "fix it in the gin file or --gin-param"),
        ({"depth": 0}, "efficientnet.depth=0 is out of range: allowed a number in (0, 8] or None; "
                       "fix it in the gin file or --gin-param"),
        ({"bn_momentum": 1.5}, "efficientnet.bn_momentum=1.5 is out of range: allowed a number in [0, 1); "
                               "fix it in the gin file or --gin-param"),
        ({"bn_epsilon": 0.0}, "efficientnet.bn_epsilon=0.0 is out of range: allowed a number in (0, 1]; "
                              "fix it in the gin file or --gin-param"),
    ],
)
def test_bad_knob_values_are_user_errors(kwargs, message):
    with pytest.raises(UserError) as err:
        efficientnet("efficientnet_b0", **{**TINY, **kwargs})
    assert first_line(err) == message


def test_fixed_input_size_for_export():
    model = efficientnet("efficientnet_b0", input_size=64, **TINY)
    assert model.input_shape == (None, 64, 64, 3)


def test_initialisers_are_fan_out():
    keras.utils.set_random_seed(0)
    model = efficientnet("efficientnet_b0", num_classes=1000)
    kernel = model.get_layer("top_conv").kernel.numpy()  # 1x1, 320 -> 1280: fan_out 1280
    assert kernel.std() == pytest.approx(math.sqrt(2 / 1280), rel=0.02)
    # Normal, not truncated at 2 sigma: ~26 of these 409,600 values lie beyond 4 sigma.
    assert abs(kernel).max() > 4 * math.sqrt(2 / 1280)
    dense = model.get_layer("predictions").kernel.numpy()  # U(-1/sqrt(1000), 1/sqrt(1000))
    assert abs(dense).max() <= 1 / math.sqrt(1000) and abs(dense).max() > 0.99 / math.sqrt(1000)
    np.testing.assert_array_equal(model.get_layer("predictions").bias.numpy(), 0)


def test_variable_paths_identify_bn_and_bias_for_weight_decay():
    model = efficientnet("efficientnet_v2_b0", num_classes=3, **TINY)
    for var in model.trainable_weights:
        kind = var.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "beta"):
            assert var.path.split("/")[-2].endswith("_bn") and len(var.shape) == 1
        elif kind == "bias":
            assert len(var.shape) == 1
        else:
            assert kind == "kernel" and len(var.shape) >= 2, var.path


def test_summary_save_load_and_config_round_trip(tmp_path):
    model = efficientnet("efficientnet_v2_b1", num_classes=3, normalization="centered", drop_path_rate=0.1, **TINY)
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    assert any("block6a" in line for line in lines)
    x = images(2, 40)
    expected = model(x)

    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x), expected)
    assert loaded.get_layer("normalize").mean == [128.0] * 3
    assert loaded.get_layer("block5a").stage_values() == {"drop_path": 0.1}
    assert loaded.min_input_size == 32

    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x), expected)

    model.save_weights(tmp_path / "m.weights.h5")
    fresh = efficientnet("efficientnet_v2_b1", num_classes=3, normalization="centered", **TINY)
    fresh.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(fresh(x), expected)


def test_fused_block_with_expand_one_keeps_its_activation():
    block = FusedMBConv(8, 8, kernel=3, expand=1, name="block1a")
    out = block(images(2, 8)[..., :1].repeat(8, -1) / 255.0 - 0.5)
    assert [layer.name for layer in block.sublayers()] == ["block1a_project_conv", "block1a_project_bn"]
    residual = np.asarray(out) - (images(2, 8)[..., :1].repeat(8, -1) / 255.0 - 0.5)
    assert residual.min() >= -0.2785  # SiLU's minimum: the branch ends with the activation


def test_normalize_layer_computes_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = Normalize([200.0] * 3, [0.1] * 3)
    x = np.full((1, 1, 1, 3), 200.3, "float32")  # float16 would round the input to 200.25 (-> 2.5)
    out = layer(x)
    assert out.dtype == tf.float16 and layer.compute_dtype == "float16"
    np.testing.assert_allclose(np.asarray(out, "float32"), 3.0, rtol=2e-3)


def test_the_trained_model_object_exports_for_serving(tmp_path):
    model = efficientnet("efficientnet_v2_b0", num_classes=3, **TINY)
    x = images(2, 48)
    model(x, training=True)  # the same object that trains...
    model.export(tmp_path / "serving", format="tf_saved_model", verbose=False)  # ...exports
    loaded = tf.saved_model.load(str(tmp_path / "serving"))
    np.testing.assert_allclose(loaded.serve(x), model(x, training=False), rtol=1e-5, atol=1e-6)

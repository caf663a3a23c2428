"""Grad-CAM: the feature map found from the model's structure (V1, V2, the exported .keras), the
maps themselves against a hand computation, `effnet predict --explain`, and the one-line errors."""

import json
import shutil

import numpy as np
import pytest

from effnet.errors import UserError
from effnet.explain import GradCAM, feature_layer
from tests.serve.conftest import cli
from tests.serve.test_predict import validation_images  # noqa: F401  (a fixture)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0", "efficientnet_v2_s"])
def test_the_feature_map_is_found_from_the_structure(name):
    import gin

    from effnet.registry import get_registry

    get_registry()  # the built-in plugins, so gin knows efficientnet.*
    gin.parse_config("efficientnet.width = 0.25\nefficientnet.depth = 0.25")
    try:
        model = get_registry().get("model", name)(num_classes=4)
    finally:
        gin.clear_config()
    layer = feature_layer(model)
    assert layer.name == "top_activation" and len(layer.output.shape) == 4
    maps = GradCAM(model)(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)), [0, 3])
    assert maps.shape == (2, 2, 2) and maps.min() >= 0 and maps.max() <= 1


def test_maps_match_a_hand_computation():
    """A conv map A (4x4x2) -> global average -> dense W: d logit_c / d A_k = W[k, c] / 16, so the
    Grad-CAM weights are W[:, c] / 16 and the map is relu(A @ W[:, c]) / its maximum."""
    import keras

    inputs = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="features")
    pooled = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    dense = keras.layers.Dense(3, use_bias=False)
    model = keras.Model(inputs, dense(pooled))
    conv.kernel.assign(np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32))  # A = (R, G)
    W = np.array([[1.0, -1.0, 0.5], [-2.0, 1.0, 0.5]], np.float32)
    dense.kernel.assign(W)
    image = np.random.default_rng(1).uniform(0, 4, (1, 4, 4, 3)).astype(np.float32)
    assert feature_layer(model).name == "features"
    for c in range(3):
        a = image[0, :, :, :2]
        expected = np.maximum(a @ (W[:, c] / 16), 0)
        expected = expected / expected.max() if expected.max() > 0 else expected
        np.testing.assert_allclose(GradCAM(model)(image, [c])[0], expected, rtol=1e-5, atol=1e-6)


def test_a_model_without_a_feature_map_is_one_line():
    import keras

    inputs = keras.Input((8,))
    flat = keras.Model(inputs, keras.layers.Dense(3)(inputs), name="tabular")
    with pytest.raises(UserError) as err:
        feature_layer(flat)
    assert str(err.value).startswith("model 'tabular' has no layer with a 4-D (batch, height, width, channels) output")

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UserError, match="is not a functional Keras graph"):
        feature_layer(Sub(name="sub"))


def test_predict_explain_writes_an_overlay_per_image_and_class(capsys, trained_run, validation_images, tmp_path):
    images = sorted((validation_images / "jpeg").glob("*.jpg"))[:3]
    out = tmp_path / "explained"
    result = cli(capsys, "predict", "--model-dir", str(trained_run), *map(str, images), "--format", "json",
                 "--explain", str(out), "--explain-class", "ring")
    assert result.code == 0, result.err
    assert f"wrote 6 Grad-CAM overlay(s) to {out}" in result.err or f"wrote 5 Grad-CAM overlay(s) to {out}" in result.err
    report = json.loads(result.out)
    for n, p in enumerate(report["predictions"]):
        classes = [e["class"] for e in p["explanations"]]
        assert classes[0] == p["top_k"][0]["class"] and classes[-1] == "ring" and len(set(classes)) == len(classes)
        for e in p["explanations"]:
            png = e["gradcam"]
            assert png.startswith(str(out / f"{n:04d}_")) and png.endswith(f"_{e['class']}.png")
            import tensorflow as tf

            pixels = tf.io.decode_png(open(png, "rb").read()).numpy()
            assert pixels.shape == (32, 32, 3)  # the evaluation crop the model saw
    # the exported .keras model (what `effnet export` writes with model.save) explains the same way
    import keras

    from effnet.api import load_run

    run = load_run(str(trained_run), weights="ema")
    path = tmp_path / "model.keras"
    run.model.save(str(path))
    loaded = keras.saving.load_model(str(path), compile=False)
    assert feature_layer(loaded).name == feature_layer(run.model).name == "top_activation"
    batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(GradCAM(loaded)(batch, [1, 2]), GradCAM(run.model)(batch, [1, 2]), atol=1e-4)


def test_explain_class_errors_are_one_line(capsys, trained_run, validation_images, tmp_path):
    image = str(sorted((validation_images / "jpeg").glob("*.jpg"))[0])
    result = cli(capsys, "predict", "--model-dir", str(trained_run), image, "--explain", str(tmp_path / "x"),
                 "--explain-class", "rings")
    assert result.code == 2
    assert result.err.splitlines()[-1].startswith(  # one line, after the "predicting ..." notice
        "error: --explain-class 'rings' is not one of the model's classes (did you mean 'ring'?)")
    assert not (tmp_path / "x").exists()
    result = cli(capsys, "predict", "--model-dir", str(trained_run), image, "--explain-class", "ring")
    assert result.code == 2 and "--explain-class needs --explain DIR" in result.err

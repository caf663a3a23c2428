"""Importing keras.applications weights, loading weights for fine-tuning, and the import command.

Keras models are built with weights=None (no download), given random BatchNorm statistics and
biases, and compared with ours on random images: the max |logit difference| is printed and bounded.
"""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.errors import UserError
from effnet.plugins.models import efficientnet, load_pretrained
from effnet.plugins.models.builder import build, weighted_layers
from effnet.plugins.models.keras_import import (
    import_keras_weights,
    max_logit_difference,
    read_source,
    transfer,
)
from effnet.plugins.models.specs import get_variant

from modeltest_utils import images, randomize

# Float32 rounding through 20-60 blocks, relative to the logits' size.
RTOL = 1e-5


def keras_model(name, size, classes, seed=0):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None
    )
    return randomize(model, seed)


def assert_same_logits(reference, model, size, label):
    x = images(4, size, seed=1)
    scale = float(np.max(np.abs(reference(x, training=False))))
    diff = max_logit_difference(reference, model, size=size, batch=4, seed=1)
    print(f"{label}: max |logit difference| {diff:.3g} (logits up to {scale:.3g})")
    assert diff <= RTOL * max(1.0, scale)
    return diff


def main_exit(argv):
    from effnet.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.mark.parametrize(
    "keras_name, variant, size, normalization",
    [
        ("EfficientNetB0", "efficientnet_b0", 65, "unit"),  # odd size: Keras' explicit padding == "same"
        ("EfficientNetB2", "efficientnet_b2", 64, "unit"),  # width 1.1: V1's 10 % rounding guard
        ("EfficientNetV2B3", "efficientnet_v2_b3", 64, "imagenet"),  # width 1.2 without the guard
        ("EfficientNetV2S", "efficientnet_v2_s", 64, "centered"),  # Fused-MBConv, (x - 128) / 128
    ],
)
def test_imported_model_gives_keras_logits(keras_name, variant, size, normalization):
    reference = keras_model(keras_name, size, classes=10)
    model, report = import_keras_weights(reference)
    assert model.name == variant and model.output_shape == (None, 10)
    assert report.normalization == normalization and report.head == "loaded"
    keras_units = [layer for layer in reference.layers if layer.weights and not isinstance(layer, keras.layers.Normalization)]
    assert report.layers == len(keras_units) == len(weighted_layers(model))
    assert_same_logits(reference, model, size, keras_name)


@pytest.fixture(scope="module")
def v2b0_files(tmp_path_factory):
    """A randomised Keras V2-B0 (48 px, 5 classes) in every file format the importer reads."""
    keras.backend.clear_session()
    folder = tmp_path_factory.mktemp("keras_v2b0")
    reference = keras_model("EfficientNetV2B0", 48, classes=5, seed=3)
    reference.save_weights(folder / "v2b0.weights.h5")
    reference.save(folder / "v2b0.keras")
    reference.save(folder / "v2b0_full.h5")  # legacy Keras 2 full-model HDF5
    # Legacy weights-only HDF5 at the file's root: the format keras.applications downloads.
    with h5py.File(folder / "v2b0_full.h5", "r") as src, h5py.File(folder / "v2b0_legacy.h5", "w") as dst:
        for key, value in src["model_weights"].attrs.items():
            dst.attrs[key] = value
        for name in src["model_weights"]:
            src.copy(src["model_weights"][name], dst, name)
    return reference, folder


@pytest.mark.parametrize("filename", ["v2b0.weights.h5", "v2b0.keras", "v2b0_full.h5", "v2b0_legacy.h5"])
def test_every_keras_file_format_imports(v2b0_files, filename):
    reference, folder = v2b0_files
    variant = None if filename.endswith(".keras") else "efficientnet_v2_b0"
    check = filename == "v2b0.weights.h5"  # the command's own logit check (the CLI test covers legacy .h5)
    model, report = import_keras_weights(folder / filename, variant=variant, check=check)
    assert report.normalization == "imagenet" and report.head == "loaded"
    assert (report.max_abs_logit_diff is not None and report.max_abs_logit_diff <= 1e-5) == check
    assert_same_logits(reference, model, 48, filename)


def test_keras_v1_imagenet_files_get_keras_variance_compensation(tmp_path):
    """keras.applications' V1 ImageNet files store the std where the variance belongs (Keras
    compensates when it loads them itself); the importer does the same and ends at ImageNet mean/std."""
    reference = keras_model("EfficientNetB0", 32, classes=4)
    norm = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    norm.set_weights([mean, std, np.array(0)])  # what the ImageNet files hold
    reference.save_weights(tmp_path / "b0.weights.h5")
    model, report = import_keras_weights(tmp_path / "b0.weights.h5", variant="efficientnet_b0")
    assert report.normalization == "imagenet"
    assert "applied keras.applications' ImageNet V1 variance compensation" in str(report)
    norm.set_weights([mean, std**2, np.array(0)])  # = Keras' weights="imagenet" preprocessing
    norm.finalize_state()
    assert_same_logits(reference, model, 32, "B0 ImageNet-style file")


def test_wrong_variant_names_layer_and_shapes(v2b0_files):
    _, folder = v2b0_files
    path = folder / "v2b0.weights.h5"
    with pytest.raises(UserError) as err:
        import_keras_weights(path, variant="efficientnet_v2_s")
    assert str(err.value) == (
        f"{path}: layer 'stem_conv' kernel: expected shape (3, 3, 3, 24) for efficientnet_v2_s, "
        "found (3, 3, 3, 32); check the variant (--variant) the source was made for"
    )
    with pytest.raises(UserError) as err:
        import_keras_weights(path, variant="efficientnet_v2_b1")
    assert str(err.value) == (
        f"{path}: layer 'block1b_project_conv' of efficientnet_v2_b1 is missing from the source; "
        "check the variant (--variant) the source was made for"
    )
    # Half depth lacks 2 Fused-MBConv blocks (4 weighted layers each) and 7 MBConv blocks (8 each).
    shallow = build(get_variant("efficientnet_v2_b0").scaled(depth=0.5), 5)
    with pytest.raises(UserError) as err:
        transfer(shallow, read_source(path, get_variant("efficientnet_v2_b0")))
    assert str(err.value) == (
        f"{path}: layer 'block2b_expand_bn' (64 source layer(s) in all) has no counterpart in "
        "efficientnet_v2_b0; the source is a larger variant or another architecture; "
        "check the variant (--variant) the source was made for"
    )


def test_other_number_of_classes_needs_replace_head(v2b0_files):
    reference, folder = v2b0_files
    path = folder / "v2b0.weights.h5"
    with pytest.raises(UserError) as err:
        import_keras_weights(path, variant="efficientnet_v2_b0", num_classes=3)
    assert str(err.value) == (
        f"{path}: layer 'predictions' kernel: expected shape (1280, 3) for efficientnet_v2_b0, "
        "found (1280, 5); pass --replace-head (replace_head=True) to train a new classifier"
    )
    model, report = import_keras_weights(path, variant="efficientnet_v2_b0", num_classes=3, replace_head=True)
    assert report.head == "replaced (source (1280, 5), model (1280, 3))"
    np.testing.assert_array_equal(model.get_layer("top_conv").kernel, reference.get_layer("top_conv").kernel)


@pytest.mark.parametrize("kind", ["truncated", "text", "truncated_keras"])
def test_damaged_files_fail_cleanly(v2b0_files, tmp_path, kind):
    _, folder = v2b0_files
    if kind == "truncated_keras":
        path = tmp_path / "bad.keras"
        path.write_bytes((folder / "v2b0.keras").read_bytes()[:50000])
        expected = f"cannot read {path}: not a complete .keras model file ("
    else:
        path = tmp_path / "bad.weights.h5"
        data = (folder / "v2b0.weights.h5").read_bytes()[:50000] if kind == "truncated" else b"not hdf5"
        path.write_bytes(data)
        expected = f"cannot read {path}: truncated or not a Keras weights file ("
    with pytest.raises(UserError) as err:
        import_keras_weights(path, variant="efficientnet_v2_b0")
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_bad_arguments_are_user_errors(v2b0_files, tmp_path):
    _, folder = v2b0_files
    cases = [
        (dict(source=folder / "v2b0.weights.h5", variant="efficientnet_v2_x"),
         "unknown EfficientNet variant 'efficientnet_v2_x'"),
        (dict(source=folder / "v2b0.weights.h5"),
         f"{folder / 'v2b0.weights.h5'}: cannot tell which variant the weights are for; pass --variant (one of efficientnet_b0, "),
        (dict(source=tmp_path / "missing.h5", variant="efficientnet_b0"), f"weights file '{tmp_path / 'missing.h5'}' does not exist; pass a regular file"),
        (dict(source=folder / "v2b0.weights.h5", variant="efficientnet_v2_b0", output=tmp_path / "out.h5"),
         f"output '{tmp_path / 'out.h5'}' must end with .weights.h5 or .keras"),
    ]
    for kwargs, start in cases:
        with pytest.raises(UserError) as err:
            import_keras_weights(**kwargs)
        assert str(err.value).startswith(start), str(err.value)


def test_command_writes_weights_that_load_for_fine_tuning(v2b0_files, tmp_path, capsys):
    reference, folder = v2b0_files
    out = tmp_path / "ours.weights.h5"
    assert main_exit(["import-weights", str(folder / "v2b0_legacy.h5"), str(out), "--variant", "efficientnet_v2_b0"]) == 0
    printed = capsys.readouterr().out
    assert "into efficientnet_v2_b0; classifier loaded; input normalization 'imagenet'; max |logit difference|" in printed
    assert "efficientnet.normalization = 'imagenet'" in printed and out.is_file()

    # The engine's --from-weights: same classes -> identical logits.
    model = efficientnet("efficientnet_v2_b0", num_classes=5)
    report = load_pretrained(model, out)
    assert report.head == "loaded"
    assert_same_logits(reference, model, 48, "load_pretrained")

    # Fine-tuning: new classifier, frozen backbone; one step moves only the classifier.
    model = efficientnet("efficientnet_v2_b0", num_classes=2, freeze="backbone")
    report = load_pretrained(model, out, replace_head=True)
    assert report.head == "replaced (source (1280, 5), model (1280, 2))"
    before = [w.numpy().copy() for w in model.weights]
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(tf.constant([0, 1]), model(images(2, 48), training=True), from_logits=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    changed = {w.path for w, b in zip(model.weights, before) if not np.array_equal(w.numpy(), b)}
    assert changed == {"predictions/kernel", "predictions/bias"}

    with pytest.raises(UserError) as err:
        load_pretrained(efficientnet("efficientnet_v2_b0", num_classes=2), out)
    assert str(err.value) == (
        f"{out}: layer 'predictions' kernel: expected shape (1280, 2) for efficientnet_v2_b0, found (1280, 5); "
        "pass --replace-head (replace_head=True) to train a new classifier"
    )
    with pytest.raises(UserError) as err:
        load_pretrained(efficientnet("efficientnet_v2_b0", num_classes=5, normalization="centered"), out)
    assert str(err.value) == (
        f"{out}: the weights expect input normalization 'imagenet' but the model uses 'centered'; "
        "set efficientnet.normalization = 'imagenet'"
    )


def test_load_pretrained_reads_keras_files_and_our_keras_models(v2b0_files, tmp_path):
    reference, folder = v2b0_files
    model = efficientnet("efficientnet_v2_b0", num_classes=5)
    load_pretrained(model, folder / "v2b0.weights.h5")  # a keras.applications file directly
    assert_same_logits(reference, model, 48, "keras file")
    model.save(tmp_path / "ours.keras")
    again = efficientnet("efficientnet_v2_b0", num_classes=5)
    assert load_pretrained(again, tmp_path / "ours.keras").layers == len(weighted_layers(again))
    np.testing.assert_array_equal(again(images(2, 48)), model(images(2, 48)))


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--num-classes", "3"], "found (1280, 5); pass --replace-head (replace_head=True) to train a new classifier"),
        (["--variant", "efficientnet_v2_m"], "layer 'stem_conv' kernel: expected shape (3, 3, 3, 24) for efficientnet_v2_m, found (3, 3, 3, 32)"),
        (["--variant", "efficientnet_v9"], "unknown EfficientNet variant 'efficientnet_v9'"),
    ],
)
def test_command_failures_exit_2_with_one_line_and_write_nothing(v2b0_files, tmp_path, capsys, extra, expected):
    _, folder = v2b0_files
    out = tmp_path / "ours.keras"
    argv = ["import-weights", str(folder / "v2b0.weights.h5"), str(out), "--variant", "efficientnet_v2_b0", *extra]
    assert main_exit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_command_on_a_truncated_file(v2b0_files, tmp_path, capsys):
    _, folder = v2b0_files
    bad = tmp_path / "bad.h5"
    bad.write_bytes((folder / "v2b0_legacy.h5").read_bytes()[:30000])
    assert main_exit(["import-weights", str(bad), str(tmp_path / "out.weights.h5"), "--variant", "efficientnet_v2_b0"]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {bad}: truncated or not a Keras weights file (")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.h5"]

"""`effnet export`: SavedModel, .keras and TFLite round trips with the parity check, and failures."""

import json

import numpy as np
import pytest

from tests.serve.conftest import cli


def reference(trained_run, encoded: list[bytes], weights="auto"):
    """Probabilities of the run's model, loaded here independently of the exporter."""
    import gin
    import tensorflow as tf

    from effnet.config import parse
    from effnet.data import decode_for_eval
    from effnet.runfolder import load_run
    from effnet.registry import get_registry
    from effnet.settings import TrainConfig

    get_registry()
    parse([str(trained_run / "operative_config.gin")], macros={"MODEL_DIR": str(trained_run)})
    run = load_run(TrainConfig(), weights=weights, precision="fp32")
    gin.clear_config()
    images = np.stack([decode_for_eval(tf.constant(e), run.image_size).numpy() for e in encoded]).astype(np.float32)
    reference.weight_bytes = sum(4 * int(np.prod(v.shape)) for v in run.model.weights if "float" in str(v.dtype))
    return images, tf.nn.softmax(run.model(images, training=False)).numpy()


@pytest.fixture(scope="module")
def samples():
    """Four JPEGs of other sizes than the model's (32 to 64 px, so the crop and resize run too)."""
    from effnet.exporter import synthetic_samples

    return synthetic_samples(4, 32, seed=3)


def test_export_round_trips_with_parity(capsys, trained_run, tmp_path, samples):
    out = tmp_path / "export"
    result = cli(capsys, "export", "--model-dir", str(trained_run), "--output", str(out))
    assert result.code == 0, result.err
    report = json.loads((out / "export_report.json").read_text())
    assert [a["format"] for a in report["artifacts"]] == ["saved_model", "keras", "tflite", "tflite_float16", "tflite_dynamic"]
    assert all(a["passed"] and a["samples"] == 16 for a in report["artifacts"])
    assert report["samples"] == "16 validation images of demo" and report["weights"] == "ema"
    lines = result.out.splitlines()
    assert [line.split()[0] for line in lines] == ["saved_model", "keras", "tflite", "tflite_float16", "tflite_dynamic"]
    assert all("max |prob diff|" in line and "top-1 agreement 16/16" in line and line.endswith("ok") for line in lines[:3])
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "labels.txt", "model.keras", "model.tflite",
                                                     "model_dynamic.tflite", "model_float16.tflite", "saved_model"]

    import keras
    import tensorflow as tf

    from effnet.exporter import run_tflite, tflite_interpreter

    images, ref = reference(trained_run, samples)
    # SavedModel: encoded bytes in (preprocessing inside), and float images in
    loaded = tf.saved_model.load(str(out / "saved_model"))
    by_bytes = loaded.signatures["serving_default"](images=tf.constant(samples))
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(), ref, atol=1e-5)
    labels = (trained_run / "labels.txt").read_text().split()
    top = by_bytes["top_k_indices"].numpy()
    assert top.shape == (4, 5) and (top[:, 0] == ref.argmax(-1)).all()
    assert [c.decode() for c in by_bytes["top_k_classes"].numpy()[0]] == [labels[i] for i in top[0]]
    by_images = loaded.signatures["serving_images"](images=tf.constant(images))
    np.testing.assert_allclose(by_images["probabilities"].numpy(), ref, atol=1e-5)
    # every weight stored once (Keras' own model.export stores them twice)
    stored = sum(p.stat().st_size for p in (out / "saved_model" / "variables").glob("variables.data-*"))
    assert reference.weight_bytes <= stored < 1.2 * reference.weight_bytes
    # .keras: the Keras model itself (logits)
    model = keras.saving.load_model(str(out / "model.keras"), compile=False)
    np.testing.assert_allclose(tf.nn.softmax(model(images)).numpy(), ref, atol=1e-5)
    # TFLite: really converted (variables frozen, no resource-variable ops) and running in the interpreter
    for name, atol in (("model.tflite", 1e-5), ("model_float16.tflite", 0.05), ("model_dynamic.tflite", 0.2)):
        content = (out / name).read_bytes()
        interpreter = tflite_interpreter(content)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not ops & {"VAR_HANDLE", "READ_VARIABLE", "FlexDecodeJpeg"}, ops
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC", "MEAN"} <= ops  # SiLU, SE and depthwise convs are there
        probs = run_tflite(content, images)
        assert np.isfinite(probs).all()
        np.testing.assert_allclose(probs, ref, atol=atol)


def test_raw_weights_one_format_and_a_failed_bound(capsys, trained_run, tmp_path, samples):
    import tensorflow as tf

    images_dir = tmp_path / "samples"
    images_dir.mkdir()
    for i, data in enumerate(samples):
        (images_dir / f"{i}.jpg").write_bytes(data)
    out = tmp_path / "export"
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "saved_model",
                 "--weights", "raw", "--samples", str(images_dir), "--top-k", "2")
    assert result.code == 0, result.err
    report = json.loads((out / "export_report.json").read_text())
    assert report["weights"] == "raw" and report["samples"] == "4 given images"
    _, ref = reference(trained_run, samples, weights="raw")
    loaded = tf.saved_model.load(str(out / "saved_model"))
    output = loaded.signatures["serving_default"](images=tf.constant(samples))
    np.testing.assert_allclose(output["probabilities"].numpy(), ref, atol=1e-5)
    assert output["top_k_indices"].shape == (4, 2)

    # float16 weights cannot stay within 1e-9 of the float32 model: the command fails, nothing is left
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "tflite_float16",
                 "--max-diff", "1e-9", "--samples", str(images_dir))
    assert result.code == 2
    assert result.err.splitlines()[-1].startswith("error: tflite_float16 export differs from the model beyond its bounds: "
                                                  "max |prob diff| ")
    assert f"{out / 'model_float16.tflite'} was not written; raise the bound" in result.err
    assert result.out.splitlines()[-1].endswith("FAILED")
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "labels.txt", "saved_model"]  # no temporary


def test_export_bad_formats_and_bounds(capsys, trained_run, tmp_path):
    result = cli(capsys, "export", "--model-dir", str(trained_run), "--format", "tflite16")
    assert (result.code, result.err) == (
        2, "error: --format 'tflite16' is not one of saved_model, keras, tflite, tflite_float16, tflite_dynamic, onnx, "
           "openvino, tflite_int8, openvino_int8, all "
           "(did you mean 'tflite'?)\n")
    result = cli(capsys, "export", "--model-dir", str(trained_run), "--gin-param",
                 "export.max_prob_diff = {'tflite_fp16': 0.1}", "--format", "keras")
    assert result.code == 2
    assert result.err.startswith("error: export bounds name format 'tflite_fp16' (did you mean 'tflite_float16'?)")


def test_parse_formats_and_bounds():
    from effnet.exporter import DEFAULT_MAX_PROB_DIFF, export_bounds, parse_formats

    # `all` is what TensorFlow alone writes without calibration data; the others are asked for by name
    assert parse_formats([]) == parse_formats(["all"]) == list(DEFAULT_MAX_PROB_DIFF)[:5]
    assert parse_formats(["tflite_dynamic,keras", "keras"]) == ["keras", "tflite_dynamic"]
    assert parse_formats(["tflite_int8,all,onnx"])[-2:] == ["onnx", "tflite_int8"]
    bounds = export_bounds(max_prob_diff={"tflite_dynamic": 0.3}, min_top1_agreement={"keras": 0.5},
                           max_top1_drop={"tflite_int8": 0.1})
    assert bounds["tflite_dynamic"] == (0.3, 0.75, 0.03) and bounds["keras"] == (1e-4, 0.5, 0.01)
    assert bounds["tflite_int8"][2] == 0.1

"""`effnet export --format onnx|openvino|tflite_int8` on the demo run, each checked in its own runtime;
`--validate` and export.max_top1_drop; `effnet eval --artifact`; and the bad inputs of the new formats."""

import json
import sys

import numpy as np
import pytest

from tests.extras import requires_module

from tests.serve.conftest import cli
from tests.serve.test_export import reference

pytestmark = [requires_module("onnxruntime", "onnx"), requires_module("tf2onnx", "onnx"),
              requires_module("openvino", "openvino"), requires_module("nncf", "openvino-int8")]


@pytest.fixture(scope="module")
def samples():
    from effnet.exporter import synthetic_samples

    return synthetic_samples(4, 32, seed=3)


@pytest.fixture(scope="module")
def deployed(trained_run, tmp_path_factory):
    """Where the first test exports the demo run (onnx, openvino, tflite_int8); the next ones read it."""
    return tmp_path_factory.mktemp("deploy") / "export"


def test_onnx_openvino_int8_round_trip_on_the_demo_run(capsys, trained_run, deployed, samples):
    out = deployed
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out),
                 "--format", "onnx,openvino,tflite_int8,openvino_int8", "--validate", "--calibration-images", "20")
    assert result.code == 0, result.err
    report = json.loads((out / "export_report.json").read_text())
    assert [a["format"] for a in report["artifacts"]] == ["onnx", "openvino", "tflite_int8", "openvino_int8"]
    assert report["calibration"] == "the first 20 training images of demo" and report["tflite_int8_io"] == "float32"
    assert report["validation_images"] == 18  # 6 classes x 3
    for artifact in report["artifacts"]:
        assert artifact["passed"] and artifact["validation_images"] == 18
        assert artifact["model_top1"] is not None and artifact["top1_drop"] <= artifact["bound_max_top1_drop"]
    onnx_row, vino_row, _, _ = report["artifacts"]
    assert onnx_row["max_prob_diff"] < 1e-5 and vino_row["max_prob_diff"] < 1e-5
    assert onnx_row["top1_drop"] == vino_row["top1_drop"] == 0.0
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "labels.txt", "model.onnx", "model_int8.tflite",
                                                     "openvino", "openvino_int8"]
    assert "validation top-1" in result.out.splitlines()[0] and result.out.splitlines()[0].endswith("ok")
    # stdout is the report, one line per format: no converter's progress bars (NNCF draws them by default)
    assert [line.split()[0] for line in result.out.splitlines()] == ["onnx", "openvino", "tflite_int8", "openvino_int8"]
    assert "Statistics collection" not in result.err and "Traceback" not in result.err

    # each artifact in its own runtime, loaded here without effnet's wrappers, against the model loaded independently
    import onnxruntime as ort
    import openvino as ov

    images, ref = reference(trained_run, samples)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.shape[1:] == [32, 32, 3] and not isinstance(inp.shape[0], int)
    np.testing.assert_allclose(session.run(None, {"images": images})[0], ref, atol=1e-5)
    compiled = ov.Core().compile_model(str(out / "openvino" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(images)[0], ref, atol=1e-5)
    from effnet.exporter import tflite_interpreter

    interpreter = tflite_interpreter((out / "model_int8.tflite").read_bytes())
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.float32 and outp["dtype"] == np.float32  # float I/O by default
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    probs = interpreter.get_tensor(outp["index"])
    assert probs.shape == ref.shape and np.isfinite(probs).all() and np.abs(probs - ref).max() < 0.3


def test_eval_artifact_reports_the_artifact_next_to_the_model(capsys, trained_run, deployed):
    model_dir_before = sorted(p.name for p in trained_run.iterdir())
    result = cli(capsys, "eval", "--model-dir", str(trained_run), "--artifact", str(deployed / "model.onnx"), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["runtime"] == "onnxruntime" and report["images"] == 18 and report["weights"] == "ema"
    assert report["artifact_top1"] == report["model_top1"] and report["artifact_top5"] == report["model_top5"]
    assert 0 <= report["model_top1"] <= 1 and report["top1_drop"] == 0
    # the export's own validation measured the same model top-1
    exported = json.loads((deployed / "export_report.json").read_text())["artifacts"][0]
    assert exported["model_top1"] == pytest.approx(report["model_top1"])
    result = cli(capsys, "eval", "--model-dir", str(trained_run), "--artifact", str(deployed / "model_int8.tflite"),
                 "--limit", "7")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "(tflite)" in lines[0] and "7 images" in lines[0]
    assert lines[2].startswith("artifact") and lines[3].startswith("model") and lines[4].startswith("top-1 drop")
    assert sorted(p.name for p in trained_run.iterdir()) == model_dir_before  # nothing written into the run
    # a path that is no artifact
    result = cli(capsys, "eval", "--model-dir", str(trained_run), "--artifact", str(trained_run / "labels.txt"))
    assert result.code == 2 and result.err.startswith("error: ") and "pass --runtime" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_predict_and_benchmark_serve_from_the_artifacts(capsys, trained_run, deployed, tmp_path, samples):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, data in enumerate(samples):
        (photos / f"{i}.jpg").write_bytes(data)
    base = cli(capsys, "predict", "--model-dir", str(trained_run), str(photos), "--format", "json")
    assert base.code == 0, base.err
    expected = json.loads(base.out)["predictions"]
    for artifact, runtime in (("model.onnx", None), ("openvino", "openvino")):
        args = ["--runtime", runtime] if runtime else []
        result = cli(capsys, "predict", "--model-dir", str(trained_run), "--artifact", str(deployed / artifact), *args,
                     str(photos), "--format", "json")
        assert result.code == 0, result.err
        got = json.loads(result.out)["predictions"]
        assert [p["path"] for p in got] == [p["path"] for p in expected]
        for a, b in zip(got, expected):
            assert [c["class"] for c in a["top_k"]][:1] == [c["class"] for c in b["top_k"]][:1]
            np.testing.assert_allclose([c["probability"] for c in a["top_k"]], [c["probability"] for c in b["top_k"]],
                                       atol=1e-5)
    result = cli(capsys, "predict", "--model-dir", str(trained_run), "--runtime", "onnxruntime", str(photos))
    assert (result.code, result.err.strip()) == (2, "error: --runtime needs --artifact: the exported file or folder to "
                                                    "serve (see effnet export)")

    # benchmark: the model converted on the fly to each runtime, and an exported artifact as it is
    tiny = ("--model", "efficientnet_v2_b0", "--gin-param", "efficientnet.width=0.25", "--gin-param",
            "efficientnet.depth=0.1", "--image-size", "32", "--num-classes", "6", "--batch-size", "2", "--steps", "2",
            "--warmup", "1")
    for runtime in ("onnxruntime", "openvino", "tflite"):
        report_file = tmp_path / f"{runtime}.json"
        result = cli(capsys, "benchmark", "infer", *tiny, "--runtime", runtime, "--json", str(report_file))
        assert result.code == 0, result.err
        report = json.loads(report_file.read_text())
        assert report["runtime"] == runtime and report["batch_size"] == 2 and report["image_size"] == 32
        assert report["img_per_s"] > 0 and report["latency_ms"]["p50"] > 0 and report["params"] > 0
        assert result.out.splitlines()[0].split()[:3] == ["mode", "model", "runtime"]
        assert result.out.splitlines()[1].split()[:3] == ["infer", "efficientnet_v2_b0", runtime]
    report_file = tmp_path / "artifact.json"
    result = cli(capsys, "benchmark", "infer", "--artifact", str(deployed / "model_int8.tflite"), "--batch-size", "3",
                 "--steps", "2", "--warmup", "1", "--json", str(report_file))
    assert result.code == 0, result.err
    report = json.loads(report_file.read_text())
    assert (report["runtime"], report["model"], report["image_size"], report["precision"]) == (
        "tflite", "model_int8.tflite", 32, "as exported")
    result = cli(capsys, "benchmark", "train", *tiny, "--runtime", "onnxruntime")
    assert (result.code, result.err.strip()) == (2, "error: --runtime and --artifact time inference: use `effnet benchmark infer`")


def test_int8_io(capsys, trained_run, tmp_path, samples):
    out = tmp_path / "export"
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "tflite_int8",
                 "--int8-io", "--calibration-images", "8")
    assert result.code == 0, result.err
    report = json.loads((out / "export_report.json").read_text())
    assert report["tflite_int8_io"] == "int8" and report["calibration"] == "the first 8 training images of demo"
    from effnet.runtimes import load

    model = load(out / "model_int8.tflite")
    assert model.detail == "int8 input, int8 output"
    images, ref = reference(trained_run, samples)
    probs = model(images)  # quantized in, dequantized out with the model's own scales
    assert probs.shape == ref.shape and np.abs(probs - ref).max() < 0.3 and abs(probs.sum(-1) - 1).max() < 0.05


def test_bad_inputs_of_the_new_formats(capsys, trained_run, tmp_path, monkeypatch):
    # a calibration set with no readable image: one line, nothing written
    bad = tmp_path / "calibration"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"not a jpeg " * i)
    out = tmp_path / "export"
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "tflite_int8",
                 "--calibration", str(bad))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("error: no readable image among the 3 calibration files")
    assert not out.exists() or list(out.iterdir()) == []
    # the optional package missing (an import that fails, as on a machine without the extra)
    for module, fmt, extra in (("tf2onnx", "onnx", "onnx"), ("onnxruntime", "onnx", "onnx"), ("openvino", "openvino", "openvino"),
                               ("nncf", "openvino_int8", "openvino-int8")):
        monkeypatch.setitem(sys.modules, module, None)
        result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", fmt)
        monkeypatch.delitem(sys.modules, module)
        assert result.code == 2, result.err
        # said at once, before the run is loaded or anything converted: the only line
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert result.err.strip().endswith(f"install it with: pip install 'effnet[{extra}]'"), result.err
        assert not [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else True
    # int8 options without a format that uses them: said, not silently ignored
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "openvino_int8",
                 "--int8-io")
    assert (result.code, result.err.strip()) == (2, "error: --int8-io applies to --format tflite_int8 only (asked for: "
                                                    "openvino_int8; openvino_int8 keeps float input and output); add "
                                                    "tflite_int8 or drop --int8-io")
    result = cli(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format", "onnx", "--calibration",
                 str(bad))
    assert result.code == 2 and result.err.startswith("error: --calibration is for the int8 formats (tflite_int8, "
                                                      "openvino_int8), and none is asked for (asked for: onnx)")
    # a run folder without checkpoints
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "operative_config.gin").write_text((trained_run / "operative_config.gin").read_text())
    result = cli(capsys, "export", "--model-dir", str(empty), "-o", str(out), "--format", "onnx")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "checkpoint" in result.err


def test_a_model_with_an_op_the_converters_cannot_express(capsys, tiny_gin, tmp_path, monkeypatch):
    """A model plugin (tests/engine/faulty_models.py) whose graph has TensorFlow's BesselI0e, which neither
    tf2onnx, OpenVINO's TensorFlow frontend nor TFLite's built-in op set has: each export names the op and
    what to do in one line, exit 2, and writes nothing; the SavedModel, which keeps TensorFlow's ops, exports."""
    import gin

    from effnet.registry import reset_registry

    monkeypatch.setenv("EFFNET_PLUGINS", "tests.engine.faulty_models")
    reset_registry()
    run = tmp_path / "run"
    gin.clear_config()
    try:
        trained = cli(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(run), "--gin-param",
                      "train.model = 'onnx_unconvertible'", "--gin-param", "train.epochs = 1")
        assert trained.code == 0, trained.err[-2000:]
        out = tmp_path / "export"
        for fmt, starts in (
            ("onnx", "error: ONNX conversion: the model uses ops tf2onnx cannot express in opset 17: "),
            ("openvino", "error: OpenVINO conversion: the model uses ops OpenVINO's TensorFlow frontend cannot convert: "),
            ("tflite", "error: TFLite conversion (tflite): the model uses ops outside TFLite's built-in op set: "),
        ):
            result = cli(capsys, "export", "--model-dir", str(run), "-o", str(out), "--format", fmt)
            assert result.code == 2, result.err
            last = result.err.strip().splitlines()[-1]
            assert last.startswith(starts) and "BesselI0e" in last, last
            assert last.endswith("or replace the op in the model plugin") and "internal error" not in result.err, last
            assert not out.exists() or not [p.name for p in out.iterdir()], f"{fmt}: nothing half-written"
        result = cli(capsys, "export", "--model-dir", str(run), "-o", str(out), "--format", "saved_model")
        assert result.code == 0, result.err
        assert (out / "saved_model" / "saved_model.pb").is_file() and (out / "export_report.json").is_file()
    finally:
        gin.clear_config()
        reset_registry()


def test_a_converter_killed_midway_is_exit_1_and_leaves_nothing(trained_run, tmp_path, cache_dir):
    """tf2onnx's child process killed as the kernel's OOM killer would kill it: one line naming the signal and
    what to do, exit 1 (a converter crash), and no model.onnx or report that looks like a finished export."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    out = tmp_path / "export"
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(trained_run), "-o",
                             str(out), "--format", "onnx"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EFFNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"})

    def converter() -> int | None:  # the export's child running tf2onnx, once it runs
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == proc.pid and b"tf2onnx.convert" in cmdline:
                return int(stat.parent.name)
        return None

    deadline = time.monotonic() + 300
    while (child := converter()) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child is not None, "the export never started tf2onnx"
    time.sleep(1.0)  # inside the conversion
    os.kill(child, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("internal error: RuntimeError: ONNX conversion (tf2onnx) was killed by SIGKILL before it "
                           "finished (out of memory?"), last
    assert not (out / "model.onnx").exists() and not (out / "export_report.json").exists()
    assert not out.exists() or not [p.name for p in out.iterdir()], "no temporary folder left behind"


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, cache_dir):
    """A run that learned something (3 demo classes, ~80% validation top-1): a broken calibration shows on it."""
    import gin

    from effnet.cli.main import main
    from effnet.registry import reset_registry
    from tests.serve.conftest import TINY_GIN

    gin_path = tmp_path_factory.mktemp("gin") / "learned.gin"
    gin_path.write_text(TINY_GIN + LEARNED_GIN)
    model_dir = tmp_path_factory.mktemp("runs") / "learned"
    gin.clear_config()
    try:
        main(["train", "--gin", str(gin_path), "--model-dir", str(model_dir)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        gin.clear_config()
        reset_registry()
    final = json.loads((model_dir / "report.json").read_text())["final"]
    assert final["val_top1"] >= 0.6, final  # else the drop below measures nothing
    return model_dir


LEARNED_GIN = """
demo.num_classes = 3
demo.train_per_class = 48
demo.validation_per_class = 10
input_pipeline.area_range = (0.5, 1.0)
train.batch_size = 16
train.epochs = 5
train.checkpoint_every_epochs = 5
train.lr_init = 0.01
train.ema_decay = None
"""


@pytest.mark.slow
def test_all_black_calibration_is_caught_by_the_accuracy_bound(capsys, learned_run, tmp_path):
    from PIL import Image

    black = tmp_path / "black"
    black.mkdir()
    for i in range(8):
        Image.new("RGB", (32, 32)).save(black / f"{i}.jpg")
    out = tmp_path / "export"
    # parity bounds opened wide: only the validation top-1 bound stands between this model and the folder
    loose = ("--max-diff", "1", "--min-agreement", "0")
    result = cli(capsys, "export", "--model-dir", str(learned_run), "-o", str(out), "--format", "tflite_int8",
                 "--validate", "--calibration", str(black), *loose)
    assert result.code == 2, result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("error: tflite_int8 export loses ") and "bound export.max_top1_drop 0.05" in last, last
    assert f"{out / 'model_int8.tflite'} was not written" in last
    assert result.out.splitlines()[-1].endswith("FAILED")
    assert not (out / "model_int8.tflite").exists() and not (out / "export_report.json").exists()
    black_drop = float(last.split("loses ")[1].split(" points")[0])
    # the same model calibrated on its own training images keeps most of its accuracy
    result = cli(capsys, "export", "--model-dir", str(learned_run), "-o", str(out), "--format", "tflite_int8",
                 "--validate", *loose, "--max-top1-drop", "1")
    assert result.code == 0, result.err
    (row,) = json.loads((out / "export_report.json").read_text())["artifacts"]
    print(f"learned run: model top-1 {row['model_top1']:.4f}, int8 (training calibration) {row['validation_top1']:.4f}, "
          f"int8 (all-black calibration) drop {black_drop:.2f} points")
    assert 100 * row["top1_drop"] < black_drop

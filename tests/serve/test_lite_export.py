"""EfficientNet-Lite (ReLU6, no SE) with PyTorch's symmetric padding trains and exports to every format,
each artifact checked against the model by the exporter itself (real TFLite, ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import TINY_GIN, cli


@pytest.mark.slow
def test_a_lite_model_exports_to_every_format(capsys, tmp_path, cache_dir):
    gin_path = tmp_path / "lite.gin"
    gin_path.write_text(TINY_GIN + "\ntrain.model = 'efficientnet_lite0'\nefficientnet.padding = 'symmetric'\ntrain.epochs = 1\n")
    run_dir = tmp_path / "run"
    trained = cli(capsys, "train", "--gin", str(gin_path), "--model-dir", str(run_dir))
    assert trained.code == 0, trained.err
    out = tmp_path / "export"
    result = cli(capsys, "export", "--model-dir", str(run_dir), "-o", str(out), "--format", "all,onnx,openvino,tflite_int8", "--calibration-images", "20")
    assert result.code == 0, result.err
    report = json.loads((out / "export_report.json").read_text())
    formats = [a["format"] for a in report["artifacts"]]
    print(formats)
    assert {"saved_model", "keras", "tflite", "onnx", "openvino", "tflite_int8"} <= set(formats)
    assert all(a["passed"] for a in report["artifacts"])

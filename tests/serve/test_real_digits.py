"""A real-data case for the deployment formats: handwritten digits.

scikit-learn ships a copy of the UCI optical-recognition digits (1,797 scans of digits written by 43
people, 8x8 px, 16 grey levels) inside the package, so nothing is downloaded. They become an image
folder (``<digit>/<n>.png``, dark ink on white, 32 px) that the README's own-images command trains on
(``image_folder`` recipe, 20% held out by file-name hash), then every deployment format is exported
with ``--validate``: its validation top-1 next to the model's on the same held-out scans, which is
what the README's accuracy-cost table records for this case.
"""

import json

import numpy as np
import pytest

from tests.clitools import run_inprocess
from tests.extras import requires_module

pytestmark = [pytest.mark.slow, requires_module("sklearn", "test"), requires_module("onnxruntime", "onnx"),
              requires_module("tf2onnx", "onnx"), requires_module("openvino", "openvino"),
              requires_module("nncf", "openvino-int8")]

FORMATS = ("onnx", "openvino", "tflite_int8", "openvino_int8")


def build_digits(root):
    """scikit-learn's digits as ``root/<digit>/<index>.png``, 32 x 32 RGB; returns the number of images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        paper = (255 - image * (255 / 16)).astype(np.uint8)  # 0..16 ink -> dark ink on white paper
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(paper, "L").resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{index:04d}.png")
    return len(digits.images)


def test_handwritten_digits_int8_costs(tmp_path, monkeypatch, capsys):
    import gin

    from effnet.registry import reset_registry

    monkeypatch.chdir(tmp_path)
    assert build_digits(tmp_path / "digits") == 1797
    gin.clear_config()
    try:
        trained = run_inprocess(capsys, "train", "--gin", "image_folder", "--data-dir", "digits/", "--model-dir",
                                "runs/digits", "--gin-param", "train.image_size = 32", "--gin-param",
                                "input_pipeline.area_range = (0.6, 1.0)", "--gin-param", "train.epochs = 8")
        assert trained.code == 0, trained.err[-3000:]
        exported = run_inprocess(capsys, "export", "--model-dir", "runs/digits", "--format", ",".join(FORMATS),
                                 "--validate", "--calibration-images", "200")
        assert exported.code == 0, exported.err[-3000:]
    finally:
        gin.clear_config()
        reset_registry()
    report = json.loads((tmp_path / "runs" / "digits" / "export" / "export_report.json").read_text())
    rows = {a["format"]: a for a in report["artifacts"]}
    assert list(rows) == list(FORMATS) and all(a["passed"] for a in rows.values())
    model_top1 = rows["onnx"]["model_top1"]
    assert model_top1 >= 0.9, model_top1  # real digits are learnt, else the int8 drops below measure nothing
    assert report["validation_images"] > 300 and report["calibration"] == "the first 200 training images of folder"
    assert rows["onnx"]["top1_drop"] == rows["openvino"]["top1_drop"] == 0.0  # float formats: the model's own answers
    for fmt in ("tflite_int8", "openvino_int8"):  # within the default 5-point bound (the export checked it)
        assert rows[fmt]["top1_drop"] <= rows[fmt]["bound_max_top1_drop"]
    print("\nhandwritten digits, " + f"{report['validation_images']} validation scans: model top-1 {100 * model_top1:.2f}%; "
          + "; ".join(f"{f} {100 * rows[f]['validation_top1']:.2f}% (drop {100 * rows[f]['top1_drop']:.2f} points, "
                      f"max |prob diff| {rows[f]['max_prob_diff']:.2g})" for f in FORMATS))

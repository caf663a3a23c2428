"""The public Python API mirrors the CLI: the same commands, reports returned as data."""

from __future__ import annotations

import json
import shutil

import pytest

import effnet
from tests.serve.conftest import cli


def test_train_returns_the_report_it_writes(tmp_path, tiny_gin):
    model_dir = tmp_path / "api_run"
    report = effnet.train(gin_files=[str(tiny_gin)], bindings=["train.epochs = 1"], model_dir=model_dir)
    written = json.loads((model_dir / "report.json").read_text())
    assert report["final"] == written["final"] and report["model_dir"] == written["model_dir"] == str(model_dir)
    assert report["final"]["global_step"] == 6 and "val_ema_top1" in report["final"]


def test_evaluate_equals_the_cli(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    report = effnet.evaluate(run, weights="raw")
    result = cli(capsys, "eval", "--model-dir", str(run), "--weights", "raw", "--json")
    assert result.code == 0, result.err
    from_cli = json.loads(result.out)
    for key in ("loss", "top1", "top5", "count"):
        assert report["raw"][key] == from_cli["raw"][key]
    assert report["ema"] is None and report["checkpoint_step"] == 12


def test_predict_returns_predictions_and_errors(trained_run, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 200, 90)).save(images / f"{i}.jpg")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    seen = []
    result = effnet.predict(trained_run, [str(images)], top_k=2, on_error=lambda path, reason: seen.append(path))
    assert len(result.predictions) == 3 and [e["path"] for e in result.errors] == seen == [str(images / "broken.jpg")]
    assert all(len(p.indices) == 2 for p in result.predictions)
    assert result.as_dict()["model"] == "efficientnet_v2_b0"


def test_export_and_load_run(trained_run, tmp_path):
    import numpy as np

    report = effnet.export(trained_run, formats=["keras"], output=tmp_path / "export", num_samples=4)
    assert [a["format"] for a in report["artifacts"]] == ["keras"] and (tmp_path / "export" / "model.keras").is_file()
    run = effnet.load_run(trained_run)
    assert run.ema and run.image_size == 32 and len(run.class_names) == run.num_classes == 6
    logits = run.model(np.zeros([2, 32, 32, 3], np.uint8), training=False)
    assert tuple(logits.shape) == (2, 6) and logits.dtype.name == "float32"
    raw = effnet.load_run(trained_run, weights="raw")
    assert not raw.ema


def test_api_errors_are_user_errors(tmp_path):
    with pytest.raises(effnet.UserError, match="does not exist"):
        effnet.load_run(tmp_path / "nowhere")
    with pytest.raises(effnet.UserError, match="not found"):
        effnet.train(gin_files=["no_such_experiment"], model_dir=tmp_path / "x")

"""`effnet benchmark train|infer` on a tiny model: table, JSON, settings from flags and gin, bad input."""

import json

from tests.serve.conftest import TINY_MODEL_PARAMS, cli

TINY = [arg for p in TINY_MODEL_PARAMS for arg in ("--gin-param", p)]


def test_infer_and_train_tables_and_json(capsys, tmp_path):
    path = tmp_path / "infer.json"
    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--batch-size", "3", "--steps", "4", "--warmup", "1", "--num-classes", "7", "--json", str(path))
    assert result.code == 0, result.err
    report = json.loads(path.read_text())
    assert {k: report[k] for k in ("mode", "model", "precision", "batch_size", "image_size", "xla", "steps", "warmup",
                                   "num_classes")} == {
        "mode": "infer", "model": "efficientnet_v2_b0", "precision": "fp32", "batch_size": 3, "image_size": 32,
        "xla": False, "steps": 4, "warmup": 1, "num_classes": 7}
    lat = report["latency_ms"]
    assert report["img_per_s"] > 0 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    # img/s comes from the timed window only: batch * steps / its seconds
    assert report["img_per_s"] == 3 * 4 / report["seconds"]
    lines = result.out.splitlines()
    assert lines[0].split() == ["mode", "model", "precision", "batch", "size", "xla", "img/s", "p50", "ms", "p90", "ms",
                                "p95", "ms", "p99", "ms", "peak", "MiB"]
    assert lines[1].split()[:6] == ["infer", "efficientnet_v2_b0", "fp32", "3", "32", "off"]
    assert lines[2].startswith("(4 timed steps after 1 warm-up steps; peak: process peak RSS (ru_maxrss); CPU")
    memory = report["memory"]  # the process's peak RSS, at least what it held after the build
    assert 0 < memory["baseline_bytes"] <= memory["peak_bytes"]
    assert abs(memory["peak_bytes"] / 2**20 - int(lines[1].split()[-1])) <= 0.5
    assert report["frozen_graph"] is True  # served as effnet predict serves it

    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--batch-size", "2", "--steps", "2", "--warmup", "1", "--xla")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1].split()[:6] == ["infer", "efficientnet_v2_b0", "fp32", "2", "32", "on"]

    result = cli(capsys, "benchmark", "train", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--batch-size", "2", "--steps", "2", "--warmup", "1", "--precision", "bf16",
                 "--gin-param", "benchmark.optimizer = 'sgd'")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1].split()[:6] == ["train", "efficientnet_v2_b0", "bf16", "2", "32", "off"]


def test_settings_come_from_an_experiment(capsys, tiny_gin, tmp_path):
    path = tmp_path / "train.json"
    result = cli(capsys, "benchmark", "train", "--gin", str(tiny_gin), "--steps", "1", "--warmup", "1",
                 "--json", str(path))
    assert result.code == 0, result.err
    report = json.loads(path.read_text())
    # train.model, train.batch_size, train.image_size and train.optimizer of the experiment
    assert (report["model"], report["batch_size"], report["image_size"], report["optimizer"]) == (
        "efficientnet_v2_b0", 8, 32, "rmsprop")


def test_bad_benchmark_settings(capsys):
    result = cli(capsys, "benchmark", "infer", "--steps", "1")
    assert (result.code, result.err) == (
        2, "error: no model to benchmark: pass --model NAME (see `effnet plugins`) or an experiment with --gin\n")
    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "16")
    assert (result.code, result.err) == (
        2, "error: benchmark image size 16 is smaller than efficientnet_v2_b0's minimum of 32 px\n")
    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v3")
    assert result.code == 2 and result.err.startswith("error: unknown model 'efficientnet_v3'")
    result = cli(capsys, "benchmark", "predict")
    assert result.code == 2 and "Invalid value for '{train|infer}'" in result.err
    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--gin-param", "benchmark.frozen_graph = 'yes'")
    assert (result.code, result.err) == (2, "error: benchmark.frozen_graph='yes' must be True or False\n")

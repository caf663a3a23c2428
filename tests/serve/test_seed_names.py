"""The seed's (NVIDIA's EfficientNet TF2 scripts') dllogger metric names in our logs, parsed the way a
dashboard written for the seed parses them: the last record with step [] holding the seed's keys."""

import json
import math
import shutil

import pytest

from tests.serve.conftest import TINY_MODEL_PARAMS, cli

TINY = [arg for p in TINY_MODEL_PARAMS for arg in ("--gin-param", p)]

# The seed README's list of evaluation metrics, plus its training-side keys.
SEED_EVAL_KEYS = ["eval_loss", "eval_accuracy_top_1", "eval_accuracy_top_5", "avg_exp_per_second_eval",
                  "avg_exp_per_second_eval_per_GPU", "avg_time_per_exp_eval", "latency_90pct", "latency_95pct",
                  "latency_99pct"]
SEED_TRAIN_KEYS = ["training_loss", "training_accuracy_top_1", "avg_exp_per_second_training",
                   "avg_exp_per_second_training_per_GPU", "eval_loss", "eval_accuracy_top_1", "eval_accuracy_top_5"]


def seed_parser(path, keys):
    """What a script written for the seed's logs does: JSON after 'DLLL ', the final (step []) record."""
    final = {}
    for line in path.read_text().splitlines():
        if not line.startswith("DLLL "):
            continue
        record = json.loads(line[len("DLLL "):])
        if record.get("type") == "LOG" and record.get("step") == []:
            final.update(record["data"])
    missing = [k for k in keys if k not in final]
    assert not missing, f"seed keys missing from {path.name}: {missing}"
    return {k: final[k] for k in keys}


def test_training_log_carries_the_seed_names(trained_run):
    seed = seed_parser(trained_run / "log.json", SEED_TRAIN_KEYS)
    report = json.loads((trained_run / "report.json").read_text())["final"]
    # same values as our readable names in report.json; accuracy a fraction as in the seed
    assert seed["eval_accuracy_top_1"] == pytest.approx(report["val_top1"])
    assert seed["eval_accuracy_top_5"] == pytest.approx(report["val_top5"])
    assert seed["eval_loss"] == pytest.approx(report["val_loss"])
    assert seed["training_loss"] == pytest.approx(report["train_loss"])
    assert seed["training_accuracy_top_1"] == pytest.approx(report["train_top1"])
    assert 0.0 <= seed["eval_accuracy_top_1"] <= 1.0
    assert seed["avg_exp_per_second_training"] > 0
    assert seed["avg_exp_per_second_training_per_GPU"] == pytest.approx(seed["avg_exp_per_second_training"])  # 1 process
    # the average skips the first logged window (tracing and compilation)
    lines = [json.loads(line[5:]) for line in (trained_run / "log.json").read_text().splitlines()]
    windows = [r["data"]["img_per_s"] for r in lines if isinstance(r.get("step"), list) and len(r["step"]) == 2]
    assert len(windows) == 4
    assert seed["avg_exp_per_second_training"] == pytest.approx(sum(windows[1:]) / 3)
    # our names stay: readable keys are still in the log, stdout and report.json have no seed names
    assert "val_top1" in lines[-1]["data"] and "eval_accuracy_top_1" not in report


def test_eval_log_carries_the_seed_names_in_the_seed_units(capsys, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    result = cli(capsys, "eval", "--model-dir", str(run), "--weights", "raw")
    assert result.code == 0, result.err
    assert "accuracy_top_1" not in result.out and "latency_99pct" not in result.out
    seed = seed_parser(run / "eval_log.json", SEED_EVAL_KEYS)
    ours = json.loads((run / "eval_report.json").read_text())["raw"]
    assert seed["eval_accuracy_top_1"] == pytest.approx(ours["top1"]) and seed["eval_loss"] == pytest.approx(ours["loss"])
    assert seed["eval_accuracy_top_5"] == pytest.approx(ours["top5"])
    assert seed["avg_exp_per_second_eval"] == pytest.approx(ours["img_per_s"])
    assert seed["avg_exp_per_second_eval_per_GPU"] == pytest.approx(ours["img_per_s"])
    assert seed["avg_time_per_exp_eval"] == pytest.approx(1000.0 / ours["img_per_s"])  # ms per image
    for q in (90, 95, 99):
        assert seed[f"latency_{q}pct"] == pytest.approx(ours["latency_ms"][f"p{q}"])  # ms per batch


def test_benchmark_dllogger_file_carries_the_seed_names(capsys, tmp_path):
    log = tmp_path / "bench_log.json"
    result = cli(capsys, "benchmark", "infer", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--batch-size", "2", "--steps", "3", "--warmup", "1", "--json", str(tmp_path / "infer.json"),
                 "--dllogger", str(log))
    assert result.code == 0, result.err
    ours = json.loads((tmp_path / "infer.json").read_text())
    seed = seed_parser(log, ["avg_exp_per_second_eval", "avg_exp_per_second_eval_per_GPU", "avg_time_per_exp_eval",
                             "latency_90pct", "latency_95pct", "latency_99pct"])
    assert seed["avg_exp_per_second_eval"] == pytest.approx(ours["img_per_s"])
    assert seed["latency_99pct"] == pytest.approx(ours["latency_ms"]["p99"])
    assert math.isclose(seed["avg_time_per_exp_eval"], 1000.0 / ours["img_per_s"], rel_tol=1e-9)

    result = cli(capsys, "benchmark", "train", "--model", "efficientnet_v2_b0", *TINY, "--image-size", "32",
                 "--batch-size", "2", "--steps", "2", "--warmup", "1", "--dllogger", str(log))
    assert result.code == 0, result.err
    seed = seed_parser(log, ["avg_exp_per_second_training", "avg_exp_per_second_training_per_GPU"])
    assert seed["avg_exp_per_second_training"] > 0
    params = [json.loads(line[5:]) for line in log.read_text().splitlines() if '"PARAMETER"' in line]
    assert [p["data"]["mode"] for p in params] == ["infer", "train"]  # appended, one parameter record per run


def test_inference_benchmark_of_v2s_uses_the_evaluation_size():
    """The seed evaluates and benchmarks V2-S inference at 384 px; training benchmarks at the last stage's 300."""
    from effnet.settings import BenchmarkConfig
    from effnet.cli.options import load_config

    load_config(["efficientnet_v2_s/amp_8xA100"], [], finalize=False)
    assert BenchmarkConfig(mode="infer").resolved().image_size == 384
    assert BenchmarkConfig(mode="train").resolved().image_size == 300
    assert BenchmarkConfig(mode="infer", image_size=224).resolved().image_size == 224

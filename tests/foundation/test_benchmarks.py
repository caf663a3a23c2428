"""The comparison benchmark's arithmetic (medians, percentiles, ratios, targets) and one real worker job.

Timing itself is not asserted (shared machines); only that the figures are derived correctly.
"""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_percentile_matches_numpy_and_summary_uses_the_median_step():
    from benchmarks.worker import percentile, summary

    values = [5.0, 1.0, 4.0, 2.0, 30.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    s = summary([0.5, 0.25, 10.0], batch=4)  # one slow step (another job) does not move the median
    assert s["img_per_s"] == pytest.approx(4 / 0.5)
    assert s["steps"] == 3 and s["p50_ms"] == pytest.approx(500.0)


def _row(framework, precision, train, infer, p50, xla=False):
    return {"model": "m", "framework": framework, "precision": precision, "xla": xla, "train_img_per_s": train,
            "infer_img_per_s": infer, "latency_p50_ms": p50}


def test_targets_are_ratios_against_the_right_peer():
    from benchmarks.run import targets_of

    rows = [
        _row("effnet", "fp32", 20.0, 100.0, 30.0), _row("effnet", "bf16", 30.0, 200.0, 20.0),
        _row("effnet (unoptimised)", "bf16", 99.0, 999.0, 1.0),  # earlier states never count as ours
        _row("keras", "fp32", 25.0, 120.0, 40.0), _row("keras", "fp32", 5.0, 50.0, 90.0, xla=True),
        _row("timm", "fp32", 25.0, 190.0, 25.0), _row("timm", "bf16", 40.0, 180.0, 22.0),  # timm infers best in fp32
        # like for like: our step without EMA and decay, timm's loop with both
        _row("effnet (bare)", "bf16", 36.0, None, None), _row("timm (recipe)", "bf16", 32.0, None, None),
    ]
    results = {("effnet", "m", "bf16", False, 300, None): [{"train": {"img_per_s": 6.0}}]}
    pipeline = {"cores": 2, "rows": [{"pipeline": "effnet RandAugment(2, 15)", "image_size": 300, "images_per_s_per_core": 12.0},
                                     {"pipeline": "keras.layers.RandAugment(2, 0.5)", "image_size": 300, "images_per_s_per_core": 1.0}]}
    args = Namespace(models=["m"], pipeline_sizes=[128, 300], precisions=["fp32", "bf16"], gpu=False)
    got = {t["name"]: t for t in targets_of(rows, results, pipeline, args)}
    assert got["m: train best effnet / best timm"]["value"] == pytest.approx(30 / 40)
    assert got["m: train best effnet / best timm"]["met"] is False
    assert got["m: train, both with EMA + decay (recipe step)"]["value"] == pytest.approx(30 / 32)
    assert got["m: train, both without (bare step)"]["value"] == pytest.approx(36 / 40)
    assert got["m: infer best effnet / best timm"]["value"] == pytest.approx(200 / 190)  # against timm's best precision
    assert got["m: infer best effnet / best timm"]["met"] is True
    assert got["m: train effnet fp32 / best keras fp32"]["value"] == pytest.approx(20 / 25)  # best of XLA on/off
    assert got["m: batch-1 p50 best effnet / best timm"]["value"] == pytest.approx(20 / 22)
    assert got["m: batch-1 p50 best effnet / best timm"]["met"] is True
    at_300 = got["input pipeline / m bf16 training, per core, 300 px"]
    assert at_300["value"] == pytest.approx(12.0 / (6.0 / 2)) and at_300["met"] is True
    assert got["input pipeline / m bf16 training, per core, 128 px"]["value"] is None  # not measured: no verdict


@pytest.mark.timeout(300)
def test_a_worker_job_runs_in_its_own_process_and_prints_one_json_line():
    job = {"framework": "matmul", "model": None, "precision": None, "xla": False, "size": 32, "threads": 1,
           "matmul_steps": 1}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(job)], cwd=ROOT, capture_output=True,
                          text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])["result"]
    assert set(result) == {"fp32", "bf16"} and all(r["flop_per_s"] > 0 for r in result.values())


def test_deployment_targets_take_the_fastest_path_on_each_side():
    from benchmarks.run import targets_of

    rows = [
        _row("effnet", "bf16", 30.0, 80.0, 33.0),
        _row("effnet-onnxruntime", "fp32", None, 98.0, 14.8), _row("effnet-openvino", "fp32", None, 88.0, 15.9),
        _row("effnet-openvino", "bf16", None, 120.0, 16.5),
        _row("timm", "fp32", 25.0, 90.0, 15.0), _row("timm", "bf16", 40.0, 70.0, 22.0),
        # timm exported to ONNX: its fastest path is OpenVINO bf16 for throughput, ONNX Runtime for latency
        _row("timm-onnxruntime", "fp32", None, 95.0, 14.0), _row("timm-openvino", "bf16", None, 110.0, 14.5),
        # int8 rows are compared with int8 rows only: never the float deployment target's "fastest path"
        _row("effnet-openvino (int8)", "bf16", None, 250.0, 7.0), _row("timm-openvino (int8, effnet loader)", "bf16", None, 200.0, 8.0),
    ]
    args = Namespace(models=["m"], pipeline_sizes=[], precisions=["fp32", "bf16"], gpu=False)
    got = {t["name"]: t for t in targets_of(rows, {}, None, args)}
    assert got["m: infer fastest effnet deployment / fastest timm path"]["value"] == pytest.approx(120 / 110)
    speed = got["m: batch-1 p50 speed, fastest effnet deployment / fastest timm path"]
    assert speed["value"] == pytest.approx(14.0 / 14.8) and speed["met"] is False  # theirs answers sooner
    assert got["m: infer fastest effnet runtime / effnet in TF"]["value"] == pytest.approx(120 / 80)
    assert got["m: infer effnet / timm, both int8 in OpenVINO (same loader)"]["value"] == pytest.approx(250 / 200)
    assert got["m: infer effnet OpenVINO int8 / fastest timm float path"]["value"] == pytest.approx(250 / 110)
    # the PyTorch-only comparisons stay against timm in PyTorch, and TensorFlow's row alone on our side
    assert got["m: infer best effnet / best timm"]["value"] == pytest.approx(80 / 90)
    assert got["m: batch-1 p50 best effnet / best timm"]["value"] == pytest.approx(33 / 15)


def test_deploy_only_plans_serving_rows_for_both_sides_and_nothing_else(monkeypatch):
    import importlib.util

    from benchmarks import run

    real = importlib.util.find_spec
    found = (*run.DEPLOYED, "nncf")  # as if every runtime and NNCF were installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in found else real(name, *a))
    args = Namespace(models=["m"], precisions=["fp32", "bf16"], size=128, batch=16, threads=2, warmup=1, train_steps=2,
                     infer_steps=2, latency_steps=2, baselines=[], no_xla=False, runtimes=True, gpu=False,
                     deploy_only=True, no_pipeline=True, pipeline_sizes=[128, 300])
    jobs, once = run.plan(args, timm_ok=True)
    planned = {(j["framework"], j["precision"]) for j in jobs}
    assert planned == {("effnet", "fp32"), ("effnet", "bf16"), ("timm", "fp32"), ("timm", "bf16"),
                       ("effnet-onnxruntime", "fp32"), ("timm-onnxruntime", "fp32"),  # ONNX Runtime: fp32 only
                       ("effnet-openvino", "fp32"), ("effnet-openvino", "bf16"),
                       ("timm-openvino", "fp32"), ("timm-openvino", "bf16")}
    loader = [j["precision"] for j in jobs if j.get("variant") == "effnet loader"]
    assert loader == ["fp32", "bf16"]  # timm's file through our loader too, in OpenVINO
    int8 = [(j["framework"], j["variant"]) for j in jobs if "int8" in (j.get("variant") or "")]
    assert int8 == [("effnet-openvino", "int8"), ("timm-openvino", "int8"), ("timm-openvino", "int8, effnet loader")]
    assert {j["precision"] for j in jobs if j.get("variant", "").startswith("int8")} == {"bf16"}  # plugin's choice
    assert all(j["measure"] == ["infer", "latency"] for j in jobs)
    assert [j["framework"] for j in once] == ["flops"]
    args.deploy_only = False
    full = {j["framework"] for j in run.plan(args, timm_ok=True)[0]}
    assert {"keras", "matmul", "timm-onnxruntime"} <= full


def test_report_prints_a_finished_run_again(tmp_path, capsys):
    from benchmarks import run

    raw = [{"job": ["effnet-openvino", "m", "bf16", False, 128, None], "results": [{"infer": {"img_per_s": 120.0},
                                                                                    "latency": {"p50_ms": 9.0, "p99_ms": 9.5}}]},
           {"job": ["timm-openvino", "m", "bf16", False, 128, None], "results": [{"infer": {"img_per_s": 100.0},
                                                                                  "latency": {"p50_ms": 11.0, "p99_ms": 12.0}}]}]
    settings = {"models": ["m"], "precisions": ["bf16"], "size": 128, "batch": 16, "threads": 2, "rounds": 1, "gpu": False,
                "pipeline_sizes": [], "deploy_only": True}
    saved = tmp_path / "compare.json"
    saved.write_text(json.dumps({"settings": settings, "raw": raw, "input_pipeline": None}))
    report = run.main(["--report", str(saved)])
    got = {t["name"]: t["value"] for t in report["targets"]}
    assert got["m: infer fastest effnet deployment / fastest timm path"] == pytest.approx(1.2)
    assert got["m: batch-1 p50 speed, fastest effnet deployment / fastest timm path"] == pytest.approx(11 / 9)
    assert "effnet-openvino" in capsys.readouterr().out

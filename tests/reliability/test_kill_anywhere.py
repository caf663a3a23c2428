"""Kill anywhere: a deterministic run is stopped at many points (named fault points inside checkpoint
and small-file writes, evaluations and stage boundaries, plus seeded random times), restarted until it
finishes, and must end bit-identical to the run that was never interrupted (weights, EMA, optimizer
slots, metrics). A point is ``[CONFIG/]NAME:N[:SIGNAL]`` (see effnet/faults.py): SIGKILL by default;
``TERM`` / ``INT`` check the graceful stop during an evaluation. Killed exports must leave nothing
that looks like a finished export, and the same export run again must succeed.

The full set runs under ``make reliability`` (EFFNET_RELIABILITY_FULL=1); the default suite runs a
reduced set. Each point is a real process stopped with a real signal.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from effnet.checkpoint import latest_valid_checkpoint
from tests.engine import runs
from tests.extras import requires_module

pytestmark = pytest.mark.slow

CONFIGS = {
    # 15 steps per epoch, 2 epochs, a checkpoint every 4 steps and at epoch ends: 9 saves, keep 3.
    # 40 validation images in batches of 8: 5 batches per pass, raw then EMA, after each epoch
    # (eval.batch 1-10 after epoch 1, 11-20 after epoch 2).
    "plain": "train.checkpoint_every_steps = 4\n",
    # two progressive stages (32 px for epoch 1, then 40 px for epochs 2-3, dropout changing)
    "staged": ("train.checkpoint_every_steps = 4\ntrain.epochs = 3\ntrain.stage_schedule = 'progressive'\n"
               "train.image_size = 40\nprogressive.n_stages = 2\nprogressive.base = {'image_size': 32, 'dropout': 0.05}\n"),
}

NAMED = [
    "ckpt.after_tf_write:1", "ckpt.after_meta:1", "ckpt.before_rename:1", "ckpt.after_rename:1",
    "ckpt.during_prune:1", "ckpt.after_tf_write:4", "ckpt.before_rename:5", "ckpt.after_rename:4",
    "ckpt.during_prune:3", "ckpt.after_meta:9", "ckpt.before_rename:9", "write.operative_config.gin:1",
    "write.labels.txt:1", "write.report.json:1", "write.training_curves.png:1",
    "eval.batch:3", "eval.batch:8", "eval.batch:14",  # raw and EMA passes, after epoch 1 and epoch 2
    "staged/stage.end:1", "staged/stage.start:2", "staged/eval.batch:7",
    "eval.batch:3:TERM", "eval.batch:17:INT", "staged/eval.batch:12:TERM",  # graceful stops during evaluations
]
RANDOM_TIMES = 6
SEED = 20261129
REDUCED = ["ckpt.before_rename:1", "eval.batch:3:TERM", "random:0"]
FULL = os.environ.get("EFFNET_RELIABILITY_FULL") == "1"
POINTS = [*NAMED, *(f"random:{i}" for i in range(RANDOM_TIMES))] if FULL else REDUCED

# Export: a SavedModel written under a temporary name, reloaded and checked, renamed into place, then
# labels.txt and export_report.json (the mark of a finished export).
EXPORT_NAMED = ["export.after_write:1", "export.before_rename:1", "export.before_report:1",
                "write.export_report.json:1"]
EXPORT_POINTS = EXPORT_NAMED if FULL else ["export.before_rename:1"]
# The deployment formats in one export (onnx, openvino, tflite_int8, in that order): each converted in the
# same temporary folder, checked in its own runtime, renamed into place. after_write:2 = OpenVINO's IR
# written and not yet checked, with the ONNX file already in place.
DEPLOY_FORMATS = ("onnx", "openvino", "tflite_int8")
DEPLOY_NAMED = ["export.after_write:1", "export.before_rename:2", "export.after_write:2", "export.after_write:3",
                "export.before_report:1"]
DEPLOY_POINTS = DEPLOY_NAMED if FULL else ["export.after_write:2"]

RESULTS: dict[str, str] = {}
STOP_LINE = re.compile(r"effnet: stopped by SIG(TERM|INT) at epoch (\d+), step (\d+) of the epoch \(global step (\d+)\), "
                       r"during its evaluation \(after (\d+) batches of a pass\); the resumed run redoes that "
                       r"evaluation; checkpoint (\S+) holds it; run the same command to resume")


@pytest.fixture(scope="module")
def straights(tmp_path_factory):
    """The uninterrupted run of each config (made when first asked for), and how long it took."""
    root = tmp_path_factory.mktemp("kill")
    env = {"EFFNET_CACHE": str(root / "cache")}
    made: dict[str, dict] = {}

    def get(config: str) -> dict:
        if config not in made:
            gin_path = runs.write_gin(root, CONFIGS[config], name=f"{config}.gin")
            started = time.time()
            done = runs.run(runs.cli_args(gin_path, root / config), env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            made[config] = {"dir": root / config, "gin": gin_path, "env": env, "seconds": time.time() - started}
        return made[config]

    yield get
    summary = root / "kill-report.json"
    summary.write_text(json.dumps(RESULTS, indent=1))
    matched = sum(v == "matched" for v in RESULTS.values())
    print(f"\nkill-anywhere: {len(RESULTS)} points tried, {matched} matched ({summary})")


def _kill_at_random_time(args, env, seconds, index, log):
    rng = random.Random(SEED + index)
    delay = rng.uniform(0.15, 0.95) * seconds  # somewhere between start-up and the end
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli.main", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=runs.subprocess_env(env))
    try:
        proc.wait(timeout=delay)
        return False  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _check_graceful_stop(point: str, code: int, log_text: str, run_dir: Path) -> None:
    """A SIGTERM/SIGINT during an evaluation: exit 128+signal, one line saying where, and a checkpoint
    of the epoch's finished training (so the resumed run redoes the evaluation)."""
    signame = point.rsplit(":", 1)[1]
    assert code == 128 + getattr(signal, f"SIG{signame}"), log_text[-3000:]
    last = log_text.strip().splitlines()[-1]
    match = STOP_LINE.fullmatch(last)
    assert match and match[1] == signame, last
    saved = latest_valid_checkpoint(run_dir, warn=None)
    assert str(saved.path) == match[6] and saved.step == int(match[4]), (saved, last)
    assert saved.meta["step_in_epoch"] == int(match[3]) > 0 and saved.meta["epoch"] == int(match[2]) - 1
    assert "Traceback" not in log_text


@pytest.mark.parametrize("point", POINTS)
def test_killed_run_resumes_bit_identical(point, straights, tmp_path):
    config, _, fault = point.rpartition("/")
    straight = straights(config or "plain")
    run_dir = tmp_path / "run"
    args = runs.cli_args(straight["gin"], run_dir)
    with open(tmp_path / "killed.log", "w") as log:
        if fault.startswith("random:"):
            killed = _kill_at_random_time(args, straight["env"], straight["seconds"], int(fault.split(":")[1]), log)
        else:
            proc = subprocess.run([sys.executable, "-m", "effnet.cli.main", *args], stdout=log,
                                  stderr=subprocess.STDOUT, env=runs.subprocess_env({**straight["env"],
                                                                                     "EFFNET_FAULT": fault}))
            if fault.count(":") == 2:
                _check_graceful_stop(fault, proc.returncode, (tmp_path / "killed.log").read_text(), run_dir)
                killed = True
            else:
                killed = proc.returncode == -signal.SIGKILL
                assert killed, f"fault point {fault} was never reached (exit {proc.returncode})"
    restarts = 0
    while True:  # restart until it finishes (a kill never needs more than one restart here)
        again = runs.run(args, env=straight["env"])
        restarts += 1
        if again.returncode == 0 or restarts >= 2:
            break
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "Traceback" not in again.stderr

    expected, got = latest_valid_checkpoint(straight["dir"], warn=None), latest_valid_checkpoint(run_dir, warn=None)
    assert got.step == expected.step
    a, b = runs.checkpoint_tensors(expected.path), runs.checkpoint_tensors(got.path)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{point}: {name}")
    ra = json.loads((straight["dir"] / "report.json").read_text())["final"]
    rb = json.loads((run_dir / "report.json").read_text())["final"]
    for key in ("val_loss", "val_top1", "val_ema_loss", "val_ema_top1", "train_loss", "train_top1", "global_step"):
        assert ra[key] == rb[key], (point, key)
    RESULTS[point] = "matched" if killed else "finished before the kill"


def _export(straight, out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(straight["dir"]),
                           "--format", "saved_model", "--num-samples", "4", "-o", str(out)],
                          capture_output=True, text=True, env=runs.subprocess_env(env), timeout=600)


@pytest.mark.parametrize("point", EXPORT_POINTS)
def test_killed_export_leaves_no_finished_export_and_reruns(point, straights, tmp_path):
    import tensorflow as tf

    straight = straights("plain")
    out = tmp_path / "export"
    killed = _export(straight, out, {**straight["env"], "EFFNET_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, f"fault point {point} was never reached: {killed.stderr[-2000:]}"
    assert not (out / "export_report.json").exists()  # the mark of a finished export is absent
    if point in ("export.after_write:1", "export.before_rename:1"):
        assert not (out / "saved_model").exists()  # the unchecked / unplaced SavedModel is not in place
    leftovers = sorted(p.name for p in out.glob(".tmp-export-*"))

    again = _export(straight, out, straight["env"])
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "export_report.json").read_text())
    assert [a["format"] for a in report["artifacts"]] == ["saved_model"] and report["artifacts"][0]["passed"]
    assert not list(out.glob(".tmp-export-*")) and not list(out.glob(".old-*")), leftovers  # cleaned up
    loaded = tf.saved_model.load(str(out / "saved_model"))
    probs = loaded.signatures["serving_images"](images=tf.zeros([1, 32, 32, 3]))["probabilities"].numpy()
    assert probs.shape == (1, 10) and abs(float(probs.sum()) - 1.0) < 1e-4
    RESULTS[f"export/{point}"] = "matched"


@requires_module("onnxruntime", "onnx")
@requires_module("tf2onnx", "onnx")
@requires_module("openvino", "openvino")
@pytest.mark.parametrize("point", DEPLOY_POINTS)
def test_killed_export_of_the_deployment_formats_reruns(point, straights, tmp_path):
    from effnet import runtimes

    straight = straights("plain")
    out = tmp_path / "export"
    args = [sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(straight["dir"]), "--format",
            ",".join(DEPLOY_FORMATS), "--num-samples", "4", "--calibration-images", "8", "-o", str(out)]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=900,
                            env=runs.subprocess_env({**straight["env"], "EFFNET_FAULT": point}))
    assert killed.returncode == -signal.SIGKILL, f"fault point {point} was never reached: {killed.stderr[-2000:]}"
    assert not (out / "export_report.json").exists()  # the mark of a finished export is absent
    name, _, count = point.partition(":")
    # formats renamed into place before the kill: all of them before the report, else those before the N-th
    placed = len(DEPLOY_FORMATS) if name == "export.before_report" else int(count) - 1
    finals = {"onnx": out / "model.onnx", "openvino": out / "openvino", "tflite_int8": out / "model_int8.tflite"}
    for index, fmt in enumerate(DEPLOY_FORMATS):
        assert finals[fmt].exists() == (index < placed), (point, fmt)  # nothing unchecked is in place

    again = subprocess.run(args, capture_output=True, text=True, timeout=900, env=runs.subprocess_env(straight["env"]))
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "export_report.json").read_text())
    assert [a["format"] for a in report["artifacts"]] == list(DEPLOY_FORMATS)
    assert all(a["passed"] for a in report["artifacts"])
    assert not list(out.glob(".tmp-export-*")) and not list(out.glob(".old-*"))  # the killed run's leftovers are gone
    for fmt, path in finals.items():  # each one loads in its own runtime and gives probabilities
        probs = runtimes.load(path).predict(np.zeros([2, 32, 32, 3], np.float32))
        assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=2e-2), fmt
    RESULTS[f"export-deploy/{point}"] = "matched"

"""Kill anywhere: a deterministic run is SIGKILLed at many points (named fault points inside
checkpoint and small-file writes, plus seeded random times), restarted until it finishes, and must
end bit-identical to the run that was never interrupted (weights, EMA, optimizer slots, metrics).

The full set (20 points) runs under ``make reliability`` (EFFNET_RELIABILITY_FULL=1); the default
suite runs a reduced set of 3. Each point is a real process killed with a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from effnet.checkpoint import latest_valid_checkpoint
from tests.engine import runs

pytestmark = pytest.mark.slow

# 15 steps per epoch, 2 epochs, a checkpoint every 4 steps and at epoch ends: 9 saves, keep 3.
EXTRA = "train.checkpoint_every_steps = 4\n"

NAMED = [
    "ckpt.after_tf_write:1", "ckpt.after_meta:1", "ckpt.before_rename:1", "ckpt.after_rename:1",
    "ckpt.during_prune:1", "ckpt.after_tf_write:4", "ckpt.before_rename:5", "ckpt.after_rename:4",
    "ckpt.during_prune:3", "ckpt.after_meta:9", "ckpt.before_rename:9", "write.operative_config.gin:1",
    "write.labels.txt:1", "write.report.json:1",
]
RANDOM_TIMES = 6
SEED = 20261129
REDUCED = ["ckpt.before_rename:1", "ckpt.during_prune:1", "random:0"]
FULL = os.environ.get("EFFNET_RELIABILITY_FULL") == "1"
POINTS = [*NAMED, *(f"random:{i}" for i in range(RANDOM_TIMES))] if FULL else REDUCED
RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run (and how long it took, for the random kill times)."""
    folder = tmp_path_factory.mktemp("kill")
    env = {"EFFNET_CACHE": str(folder / "cache")}
    gin_path = runs.write_gin(folder, EXTRA)
    started = time.time()
    done = runs.run(runs.cli_args(gin_path, folder / "straight"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    yield {"dir": folder / "straight", "gin": gin_path, "env": env, "seconds": time.time() - started}
    summary = folder / "kill-report.json"
    summary.write_text(json.dumps(RESULTS, indent=1))
    matched = sum(v == "matched" for v in RESULTS.values())
    print(f"\nkill-anywhere: {len(RESULTS)} points tried, {matched} matched bit for bit ({summary})")


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


@pytest.mark.parametrize("point", POINTS)
def test_killed_run_resumes_bit_identical(point, straight, tmp_path):
    run_dir = tmp_path / "run"
    args = runs.cli_args(straight["gin"], run_dir)
    with open(tmp_path / "killed.log", "w") as log:
        if point.startswith("random:"):
            killed = _kill_at_random_time(args, straight["env"], straight["seconds"], int(point.split(":")[1]), log)
        else:
            proc = subprocess.run([sys.executable, "-m", "effnet.cli.main", *args], stdout=log,
                                  stderr=subprocess.STDOUT, env=runs.subprocess_env({**straight["env"],
                                                                                     "EFFNET_FAULT": point}))
            killed = proc.returncode == -signal.SIGKILL
            assert killed, f"fault point {point} was never reached (exit {proc.returncode})"
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

"""SIGTERM (what schedulers send first) and SIGINT: a checkpoint at the next step boundary, exit
128+signal with one line saying where it stopped, and the same command resumes from there."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from effnet.checkpoint import checkpoint_problem, latest_valid_checkpoint
from tests.engine import runs

pytestmark = pytest.mark.slow


def _start_and_signal(tmp_path, signum, cache):
    gin_path = runs.write_gin(tmp_path, "train.epochs = 4\ntrain.log_every_steps = 1\n")
    model_dir = tmp_path / "run"
    log = tmp_path / "train.log"
    args = runs.cli_args(gin_path, model_dir)
    proc = runs.start(args, env={"EFFNET_CACHE": str(cache)}, log=log)
    deadline = time.time() + 600
    while time.time() < deadline and "[train] epoch 1 step 3 " not in log.read_text():  # a few steps in
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signum)
    code = proc.wait(timeout=600)  # a hang guard only; the stop comes at the next step boundary
    return code, log.read_text(), model_dir, args


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_sigterm_checkpoints_stops_and_resumes(tmp_path, cache):
    code, text, model_dir, args = _start_and_signal(tmp_path, signal.SIGTERM, cache)
    assert code == 128 + signal.SIGTERM, text[-3000:]
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(r"effnet: stopped by SIGTERM at epoch (\d+), step (\d+) of the epoch \(global step (\d+)\); "
                         r"checkpoint (\S+) holds it; run the same command to resume", last)
    assert match, last
    saved = latest_valid_checkpoint(model_dir, warn=None)
    assert str(saved.path) == match[4] and saved.step == int(match[3]) and checkpoint_problem(saved.path) is None
    assert saved.step < 4 * 15 and "Traceback" not in text
    again = runs.run(args, env={"EFFNET_CACHE": str(cache)})
    assert again.returncode == 0, again.stderr[-3000:]
    params = [json.loads(line[5:]) for line in (model_dir / "log.json").read_text().splitlines()
              if '"PARAMETER"' in line]
    assert params[-1]["data"]["resumed_from"] == str(saved.path)
    assert latest_valid_checkpoint(model_dir, warn=None).step == 4 * 15


def test_sigint_checkpoints_and_stops(tmp_path, cache):
    code, text, model_dir, _ = _start_and_signal(tmp_path, signal.SIGINT, cache)
    assert code == 128 + signal.SIGINT, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("effnet: stopped by SIGINT at epoch 1, step ")
    assert latest_valid_checkpoint(model_dir, warn=None) is not None


# --------------------------------------------------------------------------------------------------
# Signals to the whole process group (`kill -TERM -- -PGID`: timeout, systemd, Slurm). The stderr
# filter (effnet/cli/quiet.py) is in the group too and must outlive the signal, or the line is lost.


def _start_in_own_group(tmp_path, cache, extra_env=None):
    import os
    import subprocess
    import sys

    gin_path = runs.write_gin(tmp_path, "train.epochs = 4\ntrain.log_every_steps = 1\n")
    model_dir = tmp_path / "run"
    log = tmp_path / "train.log"
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli.main", *runs.cli_args(gin_path, model_dir)], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env=runs.subprocess_env({"EFFNET_CACHE": str(cache), **(extra_env or {})}))
    assert os.getpgid(proc.pid) == proc.pid
    return proc, log, model_dir


def _wait_for(proc, log, text):
    deadline = time.time() + 600
    while time.time() < deadline and text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)


def _stopped_line(text, name):
    last = text.strip().splitlines()[-1]
    assert re.fullmatch(rf"effnet: stopped by {name} at epoch \d+, step \d+ of the epoch \(global step \d+\); "
                        r"checkpoint \S+ holds it; run the same command to resume", last), text[-3000:]
    assert "Traceback" not in text and "internal error" not in text


@pytest.mark.parametrize("signum,times", [(signal.SIGTERM, 2), (signal.SIGINT, 1), (signal.SIGHUP, 1)],
                         ids=["TERM_twice", "INT", "HUP"])
def test_signal_to_the_process_group_keeps_the_line(tmp_path, cache, signum, times):
    import os

    proc, log, model_dir = _start_in_own_group(tmp_path, cache)
    _wait_for(proc, log, "[train] epoch 1 step 3 ")
    for _ in range(times):
        os.killpg(proc.pid, signum)
        time.sleep(0.05)
    code = proc.wait(timeout=600)
    text = log.read_text()
    assert code == 128 + signum, text[-3000:]
    _stopped_line(text, signal.Signals(signum).name)
    saved = latest_valid_checkpoint(model_dir, warn=None)
    assert saved is not None and checkpoint_problem(saved.path) is None
    assert not (model_dir / ".effnet.lock").exists(), "a stopped run lets go of its folder's lock"


def test_sigterm_to_the_group_during_a_checkpoint_write(tmp_path, cache):
    """The group gets SIGTERM between TensorFlow's write and the manifest of the first checkpoint: that
    checkpoint is finished, the run stops right after it and says so."""
    proc, log, model_dir = _start_in_own_group(tmp_path, cache, {"EFFNET_FAULT": "ckpt.after_tf_write:1:TERM-GROUP"})
    code = proc.wait(timeout=600)
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    _stopped_line(text, "SIGTERM")
    saved = latest_valid_checkpoint(model_dir, warn=None)
    assert saved is not None and checkpoint_problem(saved.path) is None and saved.path.name in text.splitlines()[-1]

"""One training per run folder: a lock (pid, host) held by the process that trains there, the same lock
as a sweep's root (effnet.files.take_lock). A second one is refused in one line naming the holder; a lock
left by a process that is gone is taken over with a notice; only the writing process (rank 0) locks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.clitools import run_inprocess
from tests.reliability.test_catalogue import error_line

HOLD = """
import sys, time
from effnet.runfolder import lock_run_folder
lock = lock_run_folder(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A real other process holding the run folder's lock."""
    model_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(model_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield model_dir, proc
    proc.kill()
    proc.wait()


def test_second_training_in_a_locked_folder_is_refused(capsys, holder, tiny_gin):
    model_dir, proc = holder
    line = error_line(run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(model_dir)))
    assert line == (f"error: model dir '{model_dir}' is in use by another effnet train (pid {proc.pid} on host "
                    f"{socket.gethostname()} since {json.loads((model_dir / '.effnet.lock').read_text())['started']} "
                    f"holds {model_dir / '.effnet.lock'}); wait for it to end or pass another --model-dir")
    assert sorted(p.name for p in model_dir.iterdir()) == [".effnet.lock"], "the refused run wrote nothing"


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(holder):
    from effnet.runfolder import lock_run_folder

    model_dir, proc = holder
    proc.kill()  # SIGKILL: no chance to let go; the kernel releases the flock, the file still names it
    proc.wait()
    notices = []
    lock = lock_run_folder(model_dir, notice=notices.append)
    try:
        assert len(notices) == 1 and f"from pid {proc.pid} on host {socket.gethostname()}" in notices[0]
        assert "that process is gone" in notices[0]
        assert json.loads((model_dir / ".effnet.lock").read_text())["pid"] != proc.pid
    finally:
        lock.release()
    assert not (model_dir / ".effnet.lock").exists()
    again = lock_run_folder(model_dir, notice=notices.append)  # let go cleanly: no notice next time
    again.release()
    assert len(notices) == 1


def test_only_the_writing_process_locks_and_a_refused_run_leaves_no_folder(tmp_path):
    from effnet.runfolder import lock_run_folder

    assert lock_run_folder(tmp_path / "rank1", is_writer=False) is None
    assert not (tmp_path / "rank1").exists()
    lock = lock_run_folder(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run" / ".effnet.lock").is_file()
    lock.release()  # nothing else was written: the folder it made goes again
    assert not (tmp_path / "new" / "run").exists()


@pytest.mark.slow
def test_two_trainings_started_apart_one_is_refused(tmp_path, cache_dir):
    from tests.engine import runs

    gin_path = runs.write_gin(tmp_path, "train.epochs = 4\n")  # long enough for the second to start
    model_dir = tmp_path / "run"
    args = runs.cli_args(gin_path, model_dir)
    first = runs.start(args, env={"EFFNET_CACHE": str(cache_dir)}, log=tmp_path / "first.log")
    deadline = time.time() + 300
    while not (model_dir / ".effnet.lock").exists() and time.time() < deadline:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)
    second = runs.run(args, env={"EFFNET_CACHE": str(cache_dir)})
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"error: model dir '{model_dir}' is in use by another effnet train (pid {first.pid} " in second.stderr
    assert not (model_dir / ".effnet.lock").exists(), "the finished run let go of its lock"

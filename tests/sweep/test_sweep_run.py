"""A real sweep end to end: four tiny variants as `effnet train` subprocesses, one failing on purpose
(train.batch_size=6 with train.grad_accum_steps=4 is a user error, exit 2), the sweep SIGKILLed in
the middle of the second run, then run again through a launcher: the finished run is skipped, the
interrupted one resumes from its checkpoint, the failing one is recorded with its error line; the
comparison's columns are exactly the two varied bindings and the picture has one curve per run."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet import compare
from effnet.checkpoint import list_checkpoints
from tests.clitools import run_inprocess
from tests.engine import runs

pytestmark = pytest.mark.slow

NAMES = ["batch_size=8,grad_accum_steps=1", "batch_size=8,grad_accum_steps=4",
         "batch_size=6,grad_accum_steps=1", "batch_size=6,grad_accum_steps=4"]
FAST = "train.steps_per_epoch = 2\ntrain.eval_batch_size = 8\ntrain.plot = False\ntrain.deterministic = False\n"


def _parameters(folder: Path) -> list[dict]:
    lines = [json.loads(line[5:]) for line in (folder / "log.json").read_text().splitlines() if line.startswith("DLLL ")]
    return [r["data"] for r in lines if r.get("step") == "PARAMETER"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sweep_survives_a_failure_and_a_sigkill(tmp_path, capsys):
    gin = runs.write_gin(tmp_path, FAST)
    root = tmp_path / "sweep"
    env = runs.subprocess_env({"EFFNET_CACHE": str(tmp_path / "cache")})
    args = [sys.executable, "-m", "effnet.cli.main", "sweep", "--gin", str(gin), "--model-dir", str(root),
            "--vary", "train.batch_size=[8, 6]", "--vary", "train.grad_accum_steps=[1, 4]"]

    # 1. Start the sweep; kill it (SIGKILL, no chance to clean up) once run 2 has its epoch-1 checkpoint.
    first = subprocess.Popen(args, stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT, env=env)
    second_run = root / NAMES[1]
    runs.kill_when(first, lambda: bool(list_checkpoints(second_run)) and not (second_run / "report.json").exists())
    summary = json.loads((root / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "running", "pending", "pending"]
    orphan = summary["runs"][1]["pid"]
    deadline = time.time() + 60
    while _alive(orphan) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(orphan), "the run the sweep started must not outlive the sweep"
    assert not (second_run / "report.json").exists()

    # 2. The same sweep again, each run started through a launcher that records what it launched.
    launched = tmp_path / "launched.txt"
    launcher = f"{sys.executable} {Path(__file__).with_name('launcher.py')} {launched}"
    again = subprocess.run([*args, "--launcher", launcher, "--format", "json"], capture_output=True, text=True, env=env,
                           timeout=900)
    assert again.returncode == 2, again.stdout + again.stderr
    assert again.stderr.count("\n") == 1 and again.stderr.startswith(f"error: 1 of 4 runs did not finish, e.g. {NAMES[3]}: ")
    assert f"[1/4] {NAMES[0]}: finished earlier, skipped" in again.stdout
    assert f"[2/4] {NAMES[1]}: resuming" in again.stdout

    summary = json.loads((root / "sweep.json").read_text())
    records = {r["name"]: r for r in summary["runs"]}
    assert list(records) == NAMES
    assert [r["status"] for r in records.values()] == ["done", "done", "done", "failed"]
    failed = records[NAMES[3]]
    assert failed["exit_code"] == 2
    assert "train.batch_size=6 is not divisible by train.grad_accum_steps=4" in failed["error"]
    assert failed["bindings"] == {"train.batch_size": "6", "train.grad_accum_steps": "4"}
    assert [r["exit_code"] for r in records.values()][:3] == [0, 0, 0]

    # skipped: run 1 trained once; resumed: run 2's second attempt started from its checkpoint
    assert len(_parameters(root / NAMES[0])) == 1
    attempts = _parameters(second_run)
    assert len(attempts) == 2 and attempts[0]["resumed_from"] == "" and "ckpt-" in attempts[1]["resumed_from"]
    assert [line.split(" --model-dir ")[1].split()[0] for line in launched.read_text().splitlines()] == \
        [str(root / n) for n in NAMES[1:]]

    # 3. The comparison: columns are exactly what differs, one curve per run that evaluated.
    shown = json.loads(again.stdout[again.stdout.index("\n{") + 1:again.stdout.index("\ncurves of")])
    assert shown["columns"] == ["train.batch_size", "train.grad_accum_steps"]
    result = run_inprocess(capsys, "compare", str(root), "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["columns"] == ["train.batch_size", "train.grad_accum_steps"]
    assert [(r["name"], r["status"]) for r in data["runs"]] == list(zip(NAMES, ["done", "done", "done", "failed"]))
    assert data["runs"][3]["error"] == failed["error"]
    assert all(0 <= r["metrics"]["val_top1"] <= 1 and r["metrics"]["global_step"] == 4 for r in data["runs"][:3])
    assert (root / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = compare.plot(compare.compare(compare.collect([root])), tmp_path / "again.png")
    assert [n for _, n in drawn] == [2, 2, 2]
    assert [label for label, _ in drawn] == [n.replace(",", ", ") + " [EMA]" for n in NAMES[:3]]

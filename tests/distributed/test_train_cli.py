"""The seed's experiments by their short names, through the real CLI, on one and two processes.

A test-size override file turns ``s_amp_8xA100.gin`` (which binds ``train.backend = 'horovod'`` and
``train.replicas = 8``) into a few steps of a tiny EfficientNetV2 on the built-in demo data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.clitools import run_inprocess
from tests.distributed.conftest import ROOT, _env, effnet_cmd, horovodrun_cmd, needs_horovod, run, tail
from tests.engine.runs import checkpoint_tensors

AUDIT = Path(__file__).resolve().parent / "audit"

SMALL = """
train.model = 'efficientnet_v2_b0'
efficientnet.width = 0.25
efficientnet.depth = 0.25
train.dataset = 'demo'
demo.num_classes = 5
demo.image_size = 32
demo.train_per_class = 8
demo.validation_per_class = 5     # 25 examples: batches of 4 leave a partial last batch on every worker
demo.train_shards = 2
demo.validation_shards = 1
train.image_size = 32
train.eval_image_size = 32
train.batch_size = 4
train.epochs = 1
train.steps_per_epoch = 6
train.checkpoint_every_steps = 2
train.deterministic = True
train.stage_schedule = 'single'
train.augmenters = []
train.precision = 'fp32'
train.xla = False
train.log_every_steps = 1
train.plot = False
"""


def small_gin(tmp_path: Path) -> Path:
    path = tmp_path / "small.gin"
    path.write_text(SMALL)
    return path


def test_config_resolves_the_seed_short_name(capsys):
    result = run_inprocess(capsys, "config", "--gin", "s_amp_8xA100.gin", "--model-dir", "/tmp/x", "--data-dir", "/data")
    assert result.code == 0, result.err
    assert "train.backend = 'horovod'" in result.out and "train.replicas = 8" in result.out
    assert "train.model = 'efficientnet_v2_s'" in result.out and "train.batch_size = 460" in result.out
    for name in ("s_tf32_8xA100", "s_amp_8xV100", "s_fp32_8xV100", "s_lamb_80xA100"):
        assert run_inprocess(capsys, "config", "--gin", name, "--model-dir", "/x", "--data-dir", "/d").code == 0


def test_a_missing_name_lists_the_closest_across_folders(capsys):
    result = run_inprocess(capsys, "config", "--gin", "amp_8xA100")
    assert result.code == 2
    assert ("(did you mean 'efficientnet_b0/amp_8xA100', 'efficientnet_b4/amp_8xA100', "
            "'efficientnet_lite/amp_8xA100' or 'efficientnet_v2_s/amp_8xA100'?)") in result.err
    result = run_inprocess(capsys, "config", "--gin", "efficientnet_v2/amp_8xA100.gin")
    assert "(did you mean 'efficientnet_v2_s/amp_8xA100', " in result.err


NOTICE = re.compile(r"effnet: this experiment was written for 8 replicas \(global batch 32, lr 0\.00125\); running on "
                    r"(\d) gives global batch (\d+) and lr ([0-9.e-]+); (.*)")


def test_the_8_gpu_experiment_runs_on_one_process_and_says_so(tmp_path):
    model_dir = tmp_path / "run"
    proc = run(effnet_cmd("train", "--gin", "s_amp_8xA100.gin", "--gin", str(small_gin(tmp_path)),
                          "--data-dir", str(tmp_path), "--model-dir", str(model_dir)))
    assert proc.returncode == 0, tail(proc)
    lines = [line for line in proc.stderr.splitlines() if "written for" in line]
    assert len(lines) == 1, proc.stderr
    found = NOTICE.fullmatch(lines[0])
    assert found, lines[0]
    assert found.groups()[:3] == ("1", "4", "0.00015625")
    assert found.group(4) == ("train.grad_accum_steps=8 with train.batch_size=32 keeps the micro-batch of 4 "
                              "and matches it")
    report = json.loads((model_dir / "report.json").read_text())
    assert report["parameters"]["global_batch"] == 4 and report["parameters"]["processes"] == 1


def _rank0_json(stdout: str) -> dict:
    """The JSON document rank 0 printed (horovodrun prefixes each line with [rank]<stdout>:)."""
    lines = [line.split(":", 1)[1] for line in stdout.splitlines() if line.startswith("[0]<stdout>:")]
    return json.loads("\n".join(lines))


def train_cmd(tmp_path: Path, model_dir: Path) -> list[str]:
    return horovodrun_cmd(2, *effnet_cmd("train", "--gin", "s_amp_8xA100.gin", "--gin", str(small_gin(tmp_path)),
                                         "--data-dir", str(tmp_path), "--model-dir", str(model_dir)))


@pytest.fixture(scope="module")
def horovod_run(tmp_path_factory):
    """An uninterrupted two-process run of s_amp_8xA100.gin (test size), with every rank's writes recorded."""
    if needs_horovod.args[0]:
        pytest.skip("Horovod is not installed")
    tmp_path = tmp_path_factory.mktemp("hvd")
    model_dir, audit = tmp_path / "run", tmp_path / "audit"
    audit.mkdir()
    env = {"EFFNET_AUDIT_DIR": str(audit), "EFFNET_AUDIT_WATCH": str(model_dir), "PYTHONPATH": f"{AUDIT}:{ROOT}"}
    proc = run(train_cmd(tmp_path, model_dir), env=env)
    return tmp_path, model_dir, audit, proc


@needs_horovod
def test_two_horovod_processes_train_and_evaluate_the_seed_experiment(horovod_run):
    tmp_path, model_dir, audit, proc = horovod_run
    assert proc.returncode == 0, tail(proc)
    output = proc.stdout + proc.stderr
    notices = [line for line in output.splitlines() if "written for" in line]
    assert len(notices) == 1 and notices[0].startswith("[0]<stderr>:"), notices  # once, from the writer
    found = NOTICE.fullmatch(notices[0].split(":", 1)[1])
    assert found and found.groups()[:3] == ("2", "8", "0.0003125"), notices[0]
    assert "train.grad_accum_steps=4 with train.batch_size=16" in found.group(4)
    report = json.loads((model_dir / "report.json").read_text())
    assert report["parameters"]["global_batch"] == 8 and report["parameters"]["processes"] == 2
    assert report["final"]["global_step"] == 6

    # Only rank 0 wrote into the model dir: Python-level writes per rank, and TensorFlow's own files
    # (event files carry the writer's pid in their names).
    logs = {p.name: p.read_text().splitlines() for p in audit.glob("rank*.log")}
    by_rank = {r: [line for name, lines in logs.items() if name.startswith(f"rank{r}-") for line in lines] for r in (0, 1)}
    assert by_rank[1] == [], by_rank[1][:5]
    written = {line.split(" ", 1)[1] for line in by_rank[0]}
    for name in ("operative_config.gin", "labels.txt", "report.json"):
        assert any(Path(p).name.startswith(name) or Path(p).name.startswith(f".{name}") for p in written), name
    assert any("/checkpoints/.tmp-ckpt-000000006" in p for p in written)
    rank0_pids = {name.split("-")[1].split(".")[0] for name in logs if name.startswith("rank0-")}
    events = list(model_dir.rglob("events.out.tfevents.*"))
    pids = [re.fullmatch(r"events\.out\.tfevents\.\d+\..+\.(\d+)\.\d+\.v2", e.name).group(1) for e in events]
    assert events and set(pids) <= rank0_pids, ([e.name for e in events], rank0_pids)

    # Evaluation on two workers counts every example once: exactly the numbers of one worker.
    two = run(horovodrun_cmd(2, *effnet_cmd("eval", "--model-dir", str(model_dir), "--json")))
    assert two.returncode == 0, tail(two)
    one = run(effnet_cmd("eval", "--model-dir", str(model_dir), "--json", "--gin-param", "train.backend = 'single'"))
    assert one.returncode == 0, tail(one)
    two_report, one_report = _rank0_json(two.stdout), json.loads(one.stdout)
    assert (two_report["processes"], one_report["processes"]) == (2, 1)
    for which in ("raw", "ema"):
        assert two_report[which]["count"] == one_report[which]["count"] == 25
        for key in ("loss", "top1", "top5"):
            assert two_report[which][key] == pytest.approx(one_report[which][key], rel=1e-6, abs=1e-7), (which, key)
        # the confusion matrix and calibration bins are summed over the ranks, not taken from rank 0
        two_pc, one_pc = two_report[which]["per_class"], one_report[which]["per_class"]
        assert two_pc["confusion"] == one_pc["confusion"] and sum(n for *_, n in two_pc["confusion"]) == 25
        assert [c["support"] for c in two_pc["classes"]] == [5] * 5
        assert two_pc["balanced_accuracy"] == pytest.approx(one_pc["balanced_accuracy"])
        assert ([b["count"] for b in two_report[which]["calibration"]["bins"]]
                == [b["count"] for b in one_report[which]["calibration"]["bins"]])


def worker_pids(model_dir: Path, rank: int) -> list[int]:
    """The Python processes of ``rank`` working on ``model_dir`` (not their shell wrappers, nor the
    stderr filter each ``effnet`` process forks at start, effnet/cli/quiet.py: a child of another match)."""
    found = _python_pids(model_dir, rank)
    parents = {}
    for pid in found:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # gone meanwhile
            continue
        parents[pid] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return [pid for pid, parent in parents.items() if parent not in found]


def _python_pids(model_dir: Path, rank: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if (f"HOROVOD_RANK={rank}".encode() in environ and "python" in Path(exe).name
                and str(model_dir).encode() in cmdline and b"effnet.cli.main" in cmdline):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@needs_horovod
def test_kill_a_worker_mid_epoch_then_relaunch_equals_the_uninterrupted_run(horovod_run):
    tmp_path, reference_dir, _, reference = horovod_run
    assert reference.returncode == 0, tail(reference)
    model_dir = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(tmp_path, model_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (model_dir / "checkpoints" / "ckpt-000000002").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint at step 2"
            time.sleep(0.05)
        rank1 = worker_pids(model_dir, rank=1)
        assert len(rank1) == 1, rank1
        os.kill(rank1[0], signal.SIGKILL)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    lost = [line for line in output.splitlines() if "lost rank 1 of 2" in line]
    assert lost and lost[0].startswith("[0]<stderr>:error: horovod: lost rank 1 of 2; rank 0 stops"), output[-3000:]
    assert not (model_dir / "report.json").exists()  # it did stop mid-run

    again = run(train_cmd(tmp_path, model_dir))
    assert again.returncode == 0, tail(again)
    assert json.loads((model_dir / "report.json").read_text())["parameters"]["resumed_from"].endswith("ckpt-000000002")
    final, expected = checkpoint_tensors(model_dir / "checkpoints" / "ckpt-000000006"), \
        checkpoint_tensors(reference_dir / "checkpoints" / "ckpt-000000006")
    assert final.keys() == expected.keys() and len(final) > 10
    for name, value in expected.items():
        np.testing.assert_allclose(final[name], value, rtol=1e-5, atol=1e-6, err_msg=name)

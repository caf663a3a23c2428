"""Exact resume: a run killed with SIGKILL mid-training and restarted ends with the same weights and
metrics as a run that was never interrupted (deterministic ops), for one stage and for two."""

import json

import numpy as np
import pytest

from effnet.checkpoint import latest_checkpoint, list_checkpoints
from tests.engine import runs

pytestmark = pytest.mark.slow

SCENARIOS = {
    # 15 steps per epoch, 2 epochs; checkpoints every 4 steps and at epoch ends; killed once step 8 is saved
    "single_stage": ("train.checkpoint_every_steps = 4\n", 8),
    # two progressive stages (32 px, then 40 px, with dropout changing); killed inside stage 2
    "two_stages": ("train.checkpoint_every_steps = 4\ntrain.epochs = 3\ntrain.stage_schedule = 'progressive'\n"
                   "train.image_size = 40\nprogressive.n_stages = 2\n"
                   "progressive.base = {'image_size': 32, 'dropout': 0.05}\n", 20),
}


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {"EFFNET_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_and_resume_matches_uninterrupted(tmp_path, cache_env, scenario):
    extra, kill_at = SCENARIOS[scenario]
    gin_path = runs.write_gin(tmp_path, extra)

    straight = tmp_path / "straight"
    done = runs.run(runs.cli_args(gin_path, straight), env=cache_env)
    assert done.returncode == 0, done.stdout + done.stderr

    resumed = tmp_path / "resumed"
    proc = runs.start(runs.cli_args(gin_path, resumed), env=cache_env, log=tmp_path / "killed.log")
    runs.kill_when(proc, lambda: any(c.step >= kill_at for c in list_checkpoints(resumed)))
    interrupted_at = latest_checkpoint(resumed).step
    final_steps = latest_checkpoint(straight).step
    assert interrupted_at < final_steps, "the kill must land before the end"
    again = runs.run(runs.cli_args(gin_path, resumed), env=cache_env)
    assert again.returncode == 0, again.stdout + again.stderr
    log = [json.loads(line[5:]) for line in (resumed / "log.json").read_text().splitlines()]
    params = [r for r in log if r.get("step") == "PARAMETER"]
    assert params[-1]["data"]["resumed_from"].endswith(f"ckpt-{interrupted_at:09d}")

    a = runs.checkpoint_tensors(latest_checkpoint(straight).path)
    b = runs.checkpoint_tensors(latest_checkpoint(resumed).path)
    assert latest_checkpoint(resumed).step == final_steps
    assert sorted(a) == sorted(b) and any(k.startswith("ema/") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ra = json.loads((straight / "report.json").read_text())["final"]
    rb = json.loads((resumed / "report.json").read_text())["final"]
    for key in ("val_loss", "val_top1", "val_ema_loss", "val_ema_top1", "train_loss", "train_top1", "global_step"):
        assert ra[key] == rb[key], key

"""`effnet sweep --search optuna` for real: tiny `effnet train` trials on the demo data, an Optuna study in
SQLite, MLflow (SQLite store) as the tracker.

1. Four trials, the sweep SIGKILLed while its second trial trains, the same command again: the study and
   `effnet compare` hold exactly four finished-or-pruned trials, best first, and each trial's metrics are
   in MLflow once (one MLflow run per trial, no step twice).
2. Two sweep processes share one study on localhost: exactly the asked number of trials, none twice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effnet import compare
from effnet.checkpoint import list_checkpoints
from tests.engine import runs
from tests.extras import requires_module

pytestmark = [pytest.mark.slow, requires_module("optuna", "optuna"), requires_module("mlflow", "mlflow")]

FAST = """
train.epochs = 2
train.steps_per_epoch = 2
train.log_every_steps = 1
train.eval_batch_size = 8
train.plot = False
train.deterministic = False
"""
SPACE = ["--vary", "train.lr_init=loguniform(1e-3, 1e-1)", "--vary", "train.label_smoothing=uniform(0, 0.2)"]


def _sweep(gin: Path, root: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "effnet.cli.main", "sweep", "--gin", str(gin), "--model-dir", str(root),
            "--search", "optuna", "--trials", str(trials), *SPACE, *extra]


@pytest.mark.timeout(2400)  # four trials, each a TF process: ~5 min on an idle 2-core machine, 15+ on a busy one
def test_killed_and_rerun_study_has_every_trial_once_in_optuna_compare_and_mlflow(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gin = runs.write_gin(tmp_path, FAST + f"loggers.names = ('dllogger', 'mlflow')\nmlflow.tracking_uri = '{uri}'\nmlflow.artifact_location = '{tmp_path}/artifacts'\n")
    root = tmp_path / "search"
    env = runs.subprocess_env({"EFFNET_CACHE": str(tmp_path / "cache")})
    cmd = _sweep(gin, root, 4)

    first = subprocess.Popen(cmd, stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT, env=env)

    def second_trial_training():
        folders = sorted(root.glob("trial001,*"))
        return bool(folders) and bool(list_checkpoints(folders[0])) and not (folders[0] / "report.json").exists()

    runs.kill_when(first, second_trial_training)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'study.db'}")
    states = [t.state for t in study.get_trials()]
    assert states[0] in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert states[1] == optuna.trial.TrialState.RUNNING  # the killed sweep left it running

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=2000)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 2/4" in again.stdout and "resuming" in again.stdout, again.stdout

    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'study.db'}")
    trials = study.get_trials()
    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in ok for t in trials), [t.state for t in trials]
    assert len({t.params["train.lr_init"] for t in trials}) == 4  # the re-run sweep proposes new values
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(t.user_attrs["folder"] for t in trials) and len(set(folders)) == 4

    # effnet compare: the four trials, best first; the best trial's bindings as a --gin-param line
    table = compare.collect([root])
    assert sorted(r.name for r in table) == folders
    assert {r.status for r in table} <= {"done", "pruned"}
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value)
    assert table[0].name == best.user_attrs["folder"]
    assert f"best: trial {best.number} val_ema_top1" in again.stdout
    assert "--gin-param train.lr_init=" in again.stdout or "--gin-param 'train.lr_init=" in again.stdout

    # MLflow: one run per trial, in the sweep's experiment, every step once; finished trials have all 4 steps
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("search")
    mruns = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in mruns) == folders
    by_name = {r.info.run_name: r for r in mruns}
    for t in trials:
        run = by_name[t.user_attrs["folder"]]
        steps = [int(m.step) for m in client.get_metric_history(run.info.run_id, "loss")]
        assert len(steps) == len(set(steps)), (t.number, steps)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert steps == [1, 2, 3, 4], (t.number, steps)
            assert run.info.status == "FINISHED"
            assert run.data.params["train.lr_init"] == repr(t.params["train.lr_init"])


@pytest.mark.timeout(1800)
def test_two_sweep_processes_share_one_study(tmp_path):
    import optuna
    gin = runs.write_gin(tmp_path, FAST.replace("train.epochs = 2", "train.epochs = 1"))
    root = tmp_path / "shared"
    env = runs.subprocess_env({"EFFNET_CACHE": str(tmp_path / "cache")})
    cmd = _sweep(gin, root, 3, "--pruner", "none", "--storage", f"sqlite:///{tmp_path / 'shared.db'}")
    procs = [subprocess.Popen(cmd, stdout=open(tmp_path / f"p{i}.log", "w"), stderr=subprocess.STDOUT, env=env)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(900) == 0, [(tmp_path / f"p{i}.log").read_text()[-2000:] for i in range(2)]
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert owners <= {p.pid for p in procs}
    assert len({t.user_attrs["folder"] for t in trials}) == 3

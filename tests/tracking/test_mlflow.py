"""The ``mlflow`` logger against real MLflow stores: a local SQLite store (a run SIGKILLed after its first
epoch and resumed: one tracker run, every step once, the artifacts and a pyfunc model that predicts),
an ``mlflow server`` on localhost (the HTTP client), and a tracker that refuses (the run still finishes,
its folder complete, one warning). Everything is read back through MLflow's client API."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.checkpoint import list_checkpoints
from tests.engine import runs
from tests.extras import requires_module

pytestmark = [pytest.mark.slow, requires_module("mlflow", "mlflow")]

FAST = """
train.steps_per_epoch = 4
train.log_every_steps = 1
train.eval_batch_size = 8
train.plot = True
train.deterministic = False
loggers.names = ('dllogger', 'mlflow')
"""


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _only_run(uri, experiment="effnet"):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1, [r.info.run_name for r in found]
    return client, found[0]


def _steps(client, run_id, key):
    return [int(m.step) for m in client.get_metric_history(run_id, key)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(1800)  # two TF processes and an export: ~13 min on a busy 2-core machine
def test_sqlite_store_kill_and_resume_is_one_run_with_every_step_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gin = runs.write_gin(tmp_path, FAST + f"mlflow.tracking_uri = '{uri}'\nmlflow.artifact_location = '{tmp_path}/artifacts'\nmlflow.log_model = True\n")
    model_dir = tmp_path / "run"
    env = {"EFFNET_CACHE": str(tmp_path / "cache")}
    args = runs.cli_args(gin, model_dir)

    first = runs.start(args, env=env, log=tmp_path / "first.log")
    runs.kill_when(first, lambda: bool(list_checkpoints(model_dir)))  # SIGKILL after epoch 1's checkpoint
    assert not (model_dir / "report.json").exists()
    state = json.loads((model_dir / "mlflow_run.json").read_text())

    second = runs.run(args, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    client, run = _only_run(uri)
    assert run.info.run_id == state["run_id"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    rid = run.info.run_id
    # 2 epochs x 4 steps, a window at every step; an evaluation after each epoch
    assert _steps(client, rid, "loss") == list(range(1, 9))
    assert _steps(client, rid, "lr") == list(range(1, 9))
    assert _steps(client, rid, "val_top1") == [4, 8]
    assert _steps(client, rid, "val_ema_top1") == [4, 8]
    epochs = {int(m.step): m.value for m in client.get_metric_history(rid, "epoch")}
    assert epochs[1] == 1 and epochs[8] == 2
    assert _steps(client, rid, "final_val_top1") == [8]
    assert {m.value for m in client.get_metric_history(rid, "stage")} == {1.0}  # logged at each (re)start of the stage
    # the final values are the run's report
    report = json.loads((model_dir / "report.json").read_text())
    assert client.get_metric_history(rid, "final_val_top1")[0].value == pytest.approx(report["final"]["val_top1"])
    # parameters: operative-config bindings as gin writes them, and the batch plan
    params = run.data.params
    assert params["train.lr_init"] == "0.02"
    assert params["train.model"] == "'efficientnet_v2_b0'"
    assert params["efficientnet.width"] == "0.25"
    assert params["global_batch"] == "8" and params["processes"] == "1"
    artifacts = {a.path for a in client.list_artifacts(rid)}
    assert {"report.json", "training_curves.png", "operative_config.gin", "labels.txt"} <= artifacts
    # the logged model predicts from encoded images like the exported SavedModel
    from PIL import Image

    import mlflow.pyfunc

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="JPEG")
    out = model.predict([buf.getvalue(), buf.getvalue()])
    assert len(out) == 2
    assert {"probabilities", "top_k_classes", "top_k_probabilities"} <= set(out.columns), list(out.columns)
    labels = (model_dir / "labels.txt").read_text().split()
    row = out.iloc[0]
    assert len(row["probabilities"]) == len(labels) and abs(float(sum(row["probabilities"])) - 1) < 1e-4
    assert row["top_k_classes"][0].decode() == labels[int(row["probabilities"].argmax())]


def test_http_server_and_a_tracker_that_refuses(tmp_path):
    """One `mlflow server` on localhost takes a run over HTTP; a closed port never stops a run."""
    port = _free_port()
    store = f"sqlite:///{tmp_path / 'server.db'}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                _client(uri).search_experiments()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                assert time.time() < deadline, "mlflow server did not start"
                time.sleep(1)
        gin = runs.write_gin(tmp_path, FAST + f"mlflow.tracking_uri = '{uri}'\ntrain.epochs = 1\n")
        env = {"EFFNET_CACHE": str(tmp_path / "cache")}
        done = runs.run(runs.cli_args(gin, tmp_path / "http_run"), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        client, run = _only_run(uri)
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id, "loss") == [1, 2, 3, 4]
        assert "report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        server.terminate()
        server.wait(30)

    # the same server, gone: the run finishes, its folder is complete, one warning and a count
    down = runs.run(runs.cli_args(gin, tmp_path / "down_run"), env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads((tmp_path / "down_run" / "report.json").read_text())["final"]["global_step"] == 4
    assert (tmp_path / "down_run" / "operative_config.gin").is_file()
    warnings = [line for line in down.stderr.splitlines() if "does not answer" in line]
    assert len(warnings) == 1, down.stderr
    dropped = [line for line in down.stderr.splitlines() if "metric values were not sent" in line]
    assert len(dropped) == 1, down.stderr

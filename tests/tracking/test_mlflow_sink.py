"""The ``mlflow`` sink on its own (no training): a real local SQLite store read back through MLflow's client,
a second process-worth of the same run folder continuing the same MLflow run without sending a step twice,
and a tracker that is down: one warning, every value counted as not sent, close() returns."""

from __future__ import annotations

import io
import socket

import pytest

from tests.extras import requires_module

pytestmark = requires_module("mlflow", "mlflow")


def _sink(tmp_path, uri, stream, **kw):
    from effnet.plugins.trackers import MLflowSink

    return MLflowSink(tmp_path / "run", tracking_uri=uri, artifact_location=str(tmp_path / "artifacts"), stream=stream, **kw)


def _train(sink, epoch, steps):
    for s in steps:
        sink.log_metrics((epoch, s), {"loss": 1.0 / s, "top1": 0.1 * s, "global_step": s, "lr": 0.01})


def test_resumed_sink_continues_the_run_and_sends_each_step_once(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "operative_config.gin").write_text("train.lr_init = 0.02\ntrain.optimizer = 'rmsprop'\n")
    err = io.StringIO()
    first = _sink(tmp_path, uri, err)
    first.log_params({"global_batch": 8, "resumed_from": ""})
    first.log_metrics((0,), {"stage": 1, "image_size": 32}, kind="stage")
    _train(first, 1, [1, 2, 3])
    first.log_metrics((1,), {"val_top1": 0.5, "global_step": 3}, kind="eval")
    first.close()  # like a run stopped by SIGTERM: no final record
    second = _sink(tmp_path, uri, err)
    second.log_params({"global_batch": 8, "resumed_from": "ckpt-2"})
    _train(second, 1, [3])  # the resumed run redoes step 3
    _train(second, 2, [4, 5, 6])
    second.log_metrics((2,), {"val_top1": 0.75, "global_step": 6}, kind="eval")
    second.log_metrics((), {"val_top1": 0.75, "global_step": 6}, kind="final")
    second.close()
    assert err.getvalue() == ""

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("effnet").experiment_id])
    rid = run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert [int(m.step) for m in client.get_metric_history(rid, "loss")] == [1, 2, 3, 4, 5, 6]
    assert [(int(m.step), m.value) for m in client.get_metric_history(rid, "val_top1")] == [(3, 0.5), (6, 0.75)]
    assert [(int(m.step), m.value) for m in client.get_metric_history(rid, "epoch")] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert [(int(m.step), m.value) for m in client.get_metric_history(rid, "stage_image_size")] == [(1, 32)]
    assert [int(m.step) for m in client.get_metric_history(rid, "final_val_top1")] == [6]
    params = run.data.params
    assert params["train.lr_init"] == "0.02" and params["train.optimizer"] == "'rmsprop'"
    assert params["global_batch"] == "8" and params["resumed_from"] == ""  # parameters are kept from the first log


def test_a_tracker_that_is_down_costs_one_warning_and_a_count(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    err = io.StringIO()
    sink = _sink(tmp_path, f"http://127.0.0.1:{port}", err, close_timeout=20)
    sink.log_params({"global_batch": 8})
    for epoch in range(1, 11):
        _train(sink, epoch, range(epoch * 100 - 99, epoch * 100 + 1))  # 1000 windows: loss, top1, lr and epoch
    sink.close()
    lines = err.getvalue().splitlines()
    assert len([x for x in lines if "does not answer" in x]) == 1, lines
    assert [x for x in lines if "not sent" in x] == [
        f"effnet: MLflow at http://127.0.0.1:{port}: 4000 metric values were not sent ({sink.last_error}); the run folder has them all"]
    assert len((tmp_path / "run" / "mlflow_journal.jsonl").read_text().splitlines()) == 1000

"""Logger plugins: the dllogger JSON-lines format, TensorBoard scalars, stdout, rank-0 gating."""

import io
import json
import datetime

import pytest

from effnet.loggers import make_loggers


def read_dllogger(path):
    lines = path.read_text().splitlines()
    assert all(line.startswith("DLLL ") for line in lines)
    return [json.loads(line[5:]) for line in lines]


def test_dllogger_format(tmp_path):
    import numpy as np

    log = make_loggers(model_dir=tmp_path, names=("dllogger",))
    log.log_params({"batch_size": 8, "lr": np.float32(0.5), "model": "x"})
    log.log_metadata("top1", {"unit": "%", "format": ":.2f"})
    log.log_metrics((1, 10), {"loss": np.float32(2.5), "top1": 0.25})
    log.log_metrics((), {"val_top1": 0.9}, kind="final")
    log.close()
    records = read_dllogger(tmp_path / "log.json")
    params, meta, train, final = records
    assert params["type"] == "LOG" and params["step"] == "PARAMETER"
    assert params["data"] == {"batch_size": 8, "lr": 0.5, "model": "x"}
    assert meta == {**meta, "type": "METADATA", "metric": "top1", "metadata": {"unit": "%", "format": ":.2f"}}
    assert train["step"] == [1, 10] and train["data"] == {"loss": 2.5, "top1": 0.25}
    assert final["step"] == []
    for record in records:
        float(record["timestamp"])
        float(record["elapsedtime"])
        assert datetime.datetime.fromisoformat(record["datetime"]).tzinfo is not None


def test_only_the_writer_writes(tmp_path):
    log = make_loggers(model_dir=tmp_path, is_writer=False)
    log.log_metrics((1, 1), {"loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars(tmp_path):
    import tensorflow as tf

    log = make_loggers(model_dir=tmp_path, names=("tensorboard",))
    log.log_metrics((1, 5), {"loss": 1.5, "global_step": 5})
    log.log_metrics((1, 6), {"loss": float("nan"), "global_step": 6})  # non-finite values are skipped
    log.close()
    files = list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert len(files) == 1
    values = []
    for raw in tf.data.TFRecordDataset(str(files[0])):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        for v in event.summary.value:
            values.append((event.step, v.tag, tf.make_ndarray(v.tensor).item()))
    assert ("loss" in [t for _, t, _ in values]) and (5, "loss", 1.5) in values
    assert not any(step == 6 and tag == "loss" for step, tag, _ in values)


def test_stdout_lines_and_progress_bar():
    from effnet.plugins.loggers import StdoutLogger

    stream = io.StringIO()
    log = StdoutLogger(stream=stream, bar=True)
    for i in range(1, 4):
        log.progress(i, 3, {"loss": 1.0 / i}, desc="epoch 1")
    log.log_metrics((1, 3), {"loss": 0.3333333, "img_per_s": 123456.0})
    text = stream.getvalue()
    assert "[##############################] 3/3" in text
    assert "[train] epoch 1 step 3  loss 0.3333  img_per_s 1.235e+05\n" in text


@pytest.mark.parametrize("name", ["dllogger", "tensorboard"])
def test_file_loggers_without_model_dir_write_nothing(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    log = make_loggers(model_dir=None, names=(name,))
    log.log_metrics((1, 1), {"loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []

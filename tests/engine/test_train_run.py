"""`effnet train` end to end on tiny real runs: artifacts, modes, fine-tuning and every bad input."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from effnet.checkpoint import latest_checkpoint, list_checkpoints
from tests.clitools import run_inprocess
from tests.engine import runs


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_env(cache, monkeypatch):
    monkeypatch.setenv("EFFNET_CACHE", str(cache))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    """One tiny finished run (2 epochs) shared by several tests."""
    import os

    folder = tmp_path_factory.mktemp("trained")
    gin_path = runs.write_gin(folder)
    old = os.environ.get("EFFNET_CACHE")
    os.environ["EFFNET_CACHE"] = str(cache)
    try:
        from effnet.cli.main import main

        try:
            main(runs.cli_args(gin_path, folder / "run"))
        except SystemExit as exc:
            assert exc.code == 0
    finally:
        if old is None:
            os.environ.pop("EFFNET_CACHE")
        else:
            os.environ["EFFNET_CACHE"] = old
    return folder / "run", gin_path


def dllogger(path):
    return [json.loads(line[5:]) for line in path.read_text().splitlines()]


def test_a_run_writes_everything(trained):
    run_dir, _ = trained
    names = {p.name for p in run_dir.iterdir()}
    assert {"operative_config.gin", "labels.txt", "log.json", "report.json", "training_curves.png",
            "tensorboard", "checkpoints"} <= names
    assert run_dir.joinpath("labels.txt").read_text().splitlines()[:3] == ["disc", "square", "triangle"]
    operative = run_dir.joinpath("operative_config.gin").read_text()
    assert "train.model = 'efficientnet_v2_b0'" in operative and "efficientnet.width = 0.25" in operative
    # what eval/predict/export rebuild the run from must hold the pipeline and logger settings too
    assert "input_pipeline.shuffle_buffer = 64" in operative and "loggers.names = " in operative
    ckpts = list_checkpoints(run_dir)
    assert [c.step for c in ckpts] == [15, 30]
    assert ckpts[-1].path.joinpath("operative_config.gin").read_text() == operative
    assert ckpts[-1].meta["epoch"] == 2 and ckpts[-1].meta["model"] == "efficientnet_v2_b0"

    records = dllogger(run_dir / "log.json")
    params = next(r for r in records if r.get("step") == "PARAMETER")["data"]
    assert params["global_batch"] == 8 and params["total_steps"] == 30 and params["base_lr"] == pytest.approx(0.02 * 8 / 128)
    train = [r for r in records if r["type"] == "LOG" and isinstance(r.get("step"), list) and len(r.get("step")) == 2]
    assert [r["step"] for r in train] == [[1, 5], [1, 10], [1, 15], [2, 20], [2, 25], [2, 30]]
    assert {"loss", "top1", "top5", "lr", "img_per_s"} <= set(train[0]["data"])
    evals = [r for r in records if isinstance(r.get("step"), list) and len(r.get("step")) == 1 and "val_top1" in r["data"]]
    assert len(evals) == 2 and {"val_ema_top1", "val_top5"} <= set(evals[-1]["data"])
    final = [r for r in records if r.get("step") == []]
    assert final and "val_ema_top1" in final[-1]["data"]

    report = json.loads(run_dir.joinpath("report.json").read_text())
    assert report["final"]["global_step"] == 30
    assert 0.0 <= report["final"]["val_top1"] <= 1.0
    assert run_dir.joinpath("training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard" / "eval").glob("events.out.tfevents.*"))


def test_finished_run_restarted_does_nothing_more(trained, capsys):
    run_dir, gin_path = trained
    before = [c.step for c in list_checkpoints(run_dir)]
    result = run_inprocess(capsys, *runs.cli_args(gin_path, run_dir))
    assert result.code == 0, result.err
    assert [c.step for c in list_checkpoints(run_dir)] == before


def test_more_epochs_continue_from_the_checkpoint(trained, tmp_path, capsys):
    run_dir, gin_path = trained
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    result = run_inprocess(capsys, *runs.cli_args(gin_path, copy, "train.epochs = 3"))
    assert result.code == 0, result.err
    assert latest_checkpoint(copy).step == 45 and latest_checkpoint(copy).meta["epoch"] == 3


def test_checkpoint_of_another_architecture(trained, capsys):
    run_dir, gin_path = trained
    result = run_inprocess(capsys, *runs.cli_args(gin_path, run_dir, "train.model = 'efficientnet_b0'"))
    assert result.code == 2
    assert result.err == (
        f"error: model dir '{run_dir}' holds a checkpoint of efficientnet_v2_b0 with 10 classes (ckpt-000000030); "
        "this run builds efficientnet_b0 with 10 classes; use a fresh --model-dir or the config that wrote it\n"
    )


def test_fine_tune_from_weights_with_a_new_head(trained, tmp_path, capsys):
    run_dir, gin_path = trained
    five = ["demo.num_classes = 5", "train.epochs = 1"]
    refused = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "ft0", *five), "--from-weights", str(run_dir))
    assert refused.code == 2
    assert refused.err.startswith(f"error: checkpoint {latest_checkpoint(run_dir).path}/ckpt: ")
    assert "predictions/kernel has shape (" in refused.err and "; pass --replace-head to train a new classifier" in refused.err
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "ft", *five), "--from-weights", str(run_dir),
                           "--replace-head")
    assert result.code == 0, result.err

    # the backbone started from the source's EMA weights: check the loader directly
    import keras

    from effnet import registry
    from effnet.config import parse
    from effnet.weights import load_weights

    parse([str(gin_path)], ["train.model_dir = 'x'"])
    model = registry.get("model", "efficientnet_v2_b0")(num_classes=5)
    head_before = np.array(model.get_layer("predictions").kernel.value)
    info = load_weights(model, run_dir, replace_head=True)
    assert info["ema"] and info["skipped"] == ["predictions/kernel", "predictions/bias"]
    np.testing.assert_array_equal(np.array(model.get_layer("predictions").kernel.value), head_before)
    keras.backend.clear_session()


def test_batch_not_divisible_by_accumulation(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path)
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r", "train.grad_accum_steps = 3"))
    assert result.code == 2
    assert result.err == ("error: train.batch_size=8 is not divisible by train.grad_accum_steps=3; "
                          "pick a batch size that is a multiple of the accumulation steps\n")


def test_image_size_below_the_network_minimum(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path)
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r", "train.image_size = 16"))
    assert result.code == 2
    assert result.err == ("error: image size 16 (stage 1) is smaller than efficientnet_v2_b0's minimum of 32 px; "
                          "raise train.image_size (or the stage schedule's base image_size)\n")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_persistent_non_finite_loss_stops_with_checkpoint_intact(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_PLUGINS", "tests.engine.faulty_models")
    gin_path = runs.write_gin(tmp_path, "train.model = 'nan_after'\nnan_after.after = 5\n"
                                        "train.checkpoint_every_steps = 2\ntrain.max_nonfinite_steps = 3\n")
    run_dir = tmp_path / "r"
    result = run_inprocess(capsys, *runs.cli_args(gin_path, run_dir))
    assert result.code == 2
    good = run_dir / "checkpoints" / "ckpt-000000004"
    assert result.err == (
        "error: loss or gradients were non-finite for 3 consecutive steps (epoch 1, step 8); stopped; "
        f"the last good checkpoint {good} is intact; lower train.lr_init, check the data, or raise "
        "train.max_nonfinite_steps\n"
    )
    assert [c.step for c in list_checkpoints(run_dir)] == [2, 4]  # nothing saved inside the streak
    tensors = runs.checkpoint_tensors(good)
    assert all(np.all(np.isfinite(v)) for v in tensors.values() if v.dtype.kind == "f")


def test_bf16_accumulation_and_deferred_mixing_train(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "train.precision = 'bf16'\ntrain.grad_accum_steps = 2\ntrain.epochs = 1\n"
                                        "train.augmenters = ['randaugment', 'mixup', 'cutmix']\n"
                                        "randaugment.magnitude = 5.0\ntrain.deferred_mixing = True\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r"))
    assert result.code == 0, result.err
    records = dllogger(tmp_path / "r" / "log.json")
    train = [r for r in records if isinstance(r.get("step"), list) and len(r.get("step")) == 2]
    assert train[-1]["step"] == [1, 15] and np.isfinite(train[-1]["data"]["loss"])


def _unshare_available() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not shutil.which("unshare") or not _unshare_available(),
                                  reason="needs `unshare -m` and tmpfs mounts (root in a sandbox)")


def _run_on_mount(tmp_path, mount_opts, gin_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    import os
    import shlex
    import sys

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "effnet.cli.main",
                                            *runs.cli_args(gin_path, mnt / "run")])
    script = f"mount -t tmpfs -o {mount_opts} tmpfs {shlex.quote(str(mnt))} && exec {cmd}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=runs.subprocess_env({"EFFNET_CACHE": os.environ["EFFNET_CACHE"]}), timeout=600)


@needs_mounts
def test_read_only_model_dir(tmp_path):
    result = _run_on_mount(tmp_path, "ro,size=1m", runs.write_gin(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: model dir '{tmp_path}/mnt/run' is not writable: Read-only file system; pass a writable --model-dir"
    )


@needs_mounts
def test_full_model_dir(tmp_path):
    # 400 kB: the logs fit, the first checkpoint (~1.5 MB with optimizer slots and EMA) does not
    result = _run_on_mount(tmp_path, "size=400k", runs.write_gin(tmp_path))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write checkpoint {tmp_path}/mnt/run/checkpoints/ckpt-000000015: ")
    assert last.endswith("; no earlier checkpoint exists; free some space or point --model-dir elsewhere")
    assert "Traceback" not in result.stderr
    # the first save has no earlier checkpoint to measure: the need comes from the variables' sizes
    match = re.search(r": No space left on device \(this checkpoint needs at least [\d.]+ MiB \((\d+) bytes\): its "
                      r"variables, meta.json and manifest.json; (?:[\d.]+ KiB \()?(\d+) bytes\)? free\); ", last)
    assert match, last
    need, free = int(match[1]), int(match[2])
    assert need > 400 * 1024 > free  # more than the whole filesystem; less than it is free


def _write_tfrecords(folder, labels_by_split, size=32):
    import io

    import tensorflow as tf
    from PIL import Image

    from effnet.data import make_example

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, labels in labels_by_split.items():
        with tf.io.TFRecordWriter(str(folder / f"{split}-00000-of-00001")) as writer:
            for label in labels:
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
                writer.write(make_example(buffer.getvalue(), int(label), f"class{label}"))


def test_label_outside_the_classes_stops_training_with_one_line(tmp_path, capsys):
    data = tmp_path / "records"
    _write_tfrecords(data, {"train": [1, 2, 3, 99] * 4, "validation": [1, 2]})  # 1-based; 99 > 3 classes
    gin_path = runs.write_gin(tmp_path, "train.dataset = 'tfrecord'\ntfrecord.data_dir = %DATA_DIR\n"
                                        "tfrecord.num_classes = 3\ntrain.batch_size = 4\ntrain.epochs = 1\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r"), "--data-dir", str(data))
    assert result.code == 2, result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert "98" in result.err and "train-00000-of-00001" in result.err, result.err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_data_dir(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "train.dataset = 'tfrecord'\ntfrecord.data_dir = %DATA_DIR\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r"), "--data-dir", str(tmp_path / "nope"))
    assert result.code == 2
    assert result.err.startswith("error: ") and str(tmp_path / "nope") in result.err and result.err.count("\n") == 1

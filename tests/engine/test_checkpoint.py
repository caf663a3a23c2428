"""Checkpoints: atomic writes, retention, listing, restore errors."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from effnet import checkpoint
from effnet.errors import UserError


def make_objects(value=1.0, shape=(3,)):
    return {"w": tf.Variable(tf.fill(shape, value)), "step": tf.Variable(0, dtype=tf.int64)}


def test_save_list_restore(tmp_path):
    objs = make_objects(2.0)
    manager = checkpoint.CheckpointManager(tmp_path, objs, keep=2)
    path = manager.save(10, {"epoch": 1}, extra_files={"operative_config.gin": "train.epochs = 1\n"})
    assert path.name == "ckpt-000000010"
    assert sorted(p.name for p in path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index", "manifest.json", "meta.json", "operative_config.gin"]
    assert json.loads((path / "meta.json").read_text()) == {"epoch": 1, "step": 10}
    fresh = make_objects(0.0)
    restorer = checkpoint.CheckpointManager(tmp_path, fresh)
    info = checkpoint.latest_checkpoint(tmp_path)
    restorer.restore(info)
    np.testing.assert_array_equal(fresh["w"].numpy(), [2.0, 2.0, 2.0])


def test_retention_keeps_last_k_and_best(tmp_path):
    objs = make_objects()
    manager = checkpoint.CheckpointManager(tmp_path, objs, keep=2, best_metric="val_top1")
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
        manager.save(step, {"metrics": {"val_top1": acc}})
    assert [c.step for c in checkpoint.list_checkpoints(tmp_path)] == [2, 4, 5]


def test_killed_write_leaves_no_valid_looking_checkpoint(tmp_path, monkeypatch):
    objs = make_objects()
    manager = checkpoint.CheckpointManager(tmp_path, objs)
    manager.save(1, {})

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_fsync_tree", crash)
    with pytest.raises(UserError) as err:
        manager.save(2, {})
    assert re.fullmatch(
        rf"could not write checkpoint {tmp_path}/checkpoints/ckpt-000000002: No space left on device "
        r"\(this checkpoint needs at least \d+ bytes: its variables, meta.json and manifest.json; "
        r"[\d.]+ \w+ \(\d+ bytes\) free\); "
        r"the last complete checkpoint ckpt-000000001 is intact; free some space or point --model-dir elsewhere",
        str(err.value))
    assert [c.step for c in checkpoint.list_checkpoints(tmp_path)] == [1]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_partial_folders_are_ignored_and_cleaned(tmp_path):
    objs = make_objects()
    manager = checkpoint.CheckpointManager(tmp_path, objs)
    manager.save(1, {})
    # what a SIGKILL during a write leaves: a temporary folder, maybe with some files
    partial = tmp_path / "checkpoints" / ".tmp-ckpt-000000002-999"
    partial.mkdir()
    (partial / "ckpt.index").write_bytes(b"half")
    # and a renamed folder without meta.json cannot exist, but a damaged one must not count either
    damaged = tmp_path / "checkpoints" / "ckpt-000000003"
    damaged.mkdir()
    (damaged / "meta.json").write_text("{not json")
    assert checkpoint.latest_checkpoint(tmp_path).step == 1
    assert manager.remove_partial() == [partial]


def test_restore_shape_mismatch_is_a_user_error(tmp_path):
    checkpoint.CheckpointManager(tmp_path, make_objects(shape=(3,))).save(1, {})
    other = checkpoint.CheckpointManager(tmp_path, make_objects(shape=(4,)))
    with pytest.raises(UserError) as err:
        other.restore(checkpoint.latest_checkpoint(tmp_path), what="model B")
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {tmp_path}/checkpoints/ckpt-000000001 does not fit model B: ")
    assert msg.endswith("; use a fresh --model-dir or the matching config")
    assert "\n" not in msg


def test_unwritable_model_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        checkpoint.ensure_writable(blocker / "run")
    assert str(err.value) == f"model dir '{blocker}/run' is not writable: Not a directory; pass a writable --model-dir"


def test_needed_bytes_is_close_to_a_real_checkpoint(tmp_path):
    """The space a failed save asks for comes from the variables' sizes: a real Keras model with its
    optimizer slots, written for real, is at least that big and not much bigger."""
    import keras

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(300), keras.layers.Dense(10)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    manager = checkpoint.CheckpointManager(tmp_path, checkpoint.checkpoint_objects(model, optimizer))
    texts = {"meta.json": json.dumps({"epoch": 1, "step": 7}, indent=2, sort_keys=True),
             "operative_config.gin": "train.epochs = 1\n"}
    weights = sum(int(np.prod(v.shape)) * 4 for v in model.variables)
    assert manager.variable_bytes() >= 3 * weights  # weights plus Adam's two slots
    need = manager.needed_bytes(texts)
    path = manager.save(7, {"epoch": 1}, extra_files={"operative_config.gin": texts["operative_config.gin"]})
    written = sum(p.stat().st_size for p in path.iterdir())
    assert need <= written <= need * 1.05 + 4096, (need, written)


def _legacy(tmp_path, value=2.0):
    """A real checkpoint written by the current code, made to look like an older effnet's: no manifest."""
    path = checkpoint.CheckpointManager(tmp_path, make_objects(value)).save(4, {"epoch": 1})
    (path / "manifest.json").unlink()
    return path


def test_checkpoint_without_manifest_is_used_with_one_warning(tmp_path):
    path = _legacy(tmp_path)
    assert checkpoint.checkpoint_problem(path) is None and checkpoint.is_legacy(path)
    warnings = []
    for _ in range(3):
        assert checkpoint.latest_checkpoint(tmp_path, warn=warnings.append).path == path
    assert warnings == [f"checkpoint {path} has no manifest.json (written by an older effnet); "
                        f"sizes and checksums cannot be verified"]
    fresh = make_objects(0.0)
    checkpoint.CheckpointManager(tmp_path, fresh).restore(checkpoint.latest_checkpoint(tmp_path, warn=None))
    np.testing.assert_array_equal(fresh["w"].numpy(), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("damage", ["truncated data", "missing data", "missing index", "garbage index",
                                    "missing meta"])
def test_damaged_checkpoint_without_manifest_is_named(tmp_path, damage):
    path = _legacy(tmp_path)
    data = next(path.glob("ckpt.data-*"))
    if damage == "truncated data":
        os.truncate(data, data.stat().st_size // 2)
        victim, words = data, "truncated or damaged"
    elif damage == "missing data":
        data.unlink()
        victim, words = path / "ckpt.data-00000-of-00001", "is missing"
    elif damage == "missing index":
        (path / "ckpt.index").unlink()
        victim, words = path / "ckpt.index", "is missing"
    elif damage == "garbage index":
        (path / "ckpt.index").write_bytes(b"\x00garbage" * 10)
        victim, words = path / "ckpt.index", "cannot be read"
    else:
        (path / "meta.json").unlink()
        victim, words = path / "meta.json", "is missing"
    problem = checkpoint.checkpoint_problem(path)
    assert problem is not None and problem.startswith(str(victim)) and words in problem, problem
    with pytest.raises(UserError, match=re.escape(f"checkpoint {path} is damaged: {victim}")):
        checkpoint.verify_checkpoint(path)
    assert checkpoint.latest_checkpoint(tmp_path, warn=None) is None

"""train_dataset / eval_dataset: contract shapes, determinism, resuming, sharding, bad records."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tensorflow as tf

import effnet.data as D
from effnet.data.pipeline import _train_records, pipeline_options
from effnet.distribute import ShardInfo
from effnet.errors import UserError

from .conftest import encode, solid, write_records


def batches(ds):
    return [{k: v.numpy() for k, v in b.items() if k != "mix"} for b in ds]


def test_train_batches_follow_the_contract(demo_source):
    out = batches(D.train_dataset(demo_source, image_size=24, batch_size=6, steps=5, epoch=0))
    assert len(out) == 5  # 5 * 6 = 30 < 80 examples; and also when the data runs out (below)
    for b in out:
        assert b["image"].shape == (6, 24, 24, 3) and b["image"].dtype == np.uint8
        assert b["label"].shape == (6, 10) and b["label"].dtype == np.float32
        assert np.all(b["label"].sum(1) == 1)
    # More batches than one pass holds: the shard's data repeats, the count is exact.
    many = D.train_dataset(demo_source, image_size=16, batch_size=32, steps=7, epoch=0)
    assert sum(1 for _ in many) == 7


def test_same_seed_same_batches_and_resume(demo_source):
    def run(**kw):
        return batches(D.train_dataset(demo_source, image_size=16, batch_size=8, steps=6, epoch=1, **kw))

    full = run(seed=3)
    again = run(seed=3, options=pipeline_options(num_parallel_calls=1))  # parallelism does not matter
    assert all(np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"]) for a, b in zip(full, again))
    other = run(seed=4)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(full, other))
    other_epoch = batches(D.train_dataset(demo_source, image_size=16, batch_size=8, steps=6, epoch=2, seed=3))
    assert not np.array_equal(full[0]["image"], other_epoch[0]["image"])
    resumed = run(seed=3, start_step=4)
    assert len(resumed) == 2
    for a, b in zip(full[4:], resumed):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])


def _origins(source, shard, count, min_files=4):
    opts = pipeline_options(min_files_per_shard=min_files)
    ds = _train_records(source, "train", shard, seed=0, epoch=0, opts=opts).take(count)
    return [o.decode() for _, _, o in ds.as_numpy_iterator()]


@pytest.mark.parametrize("min_files", [1, 4])  # 4 files: file-level with 1 per shard vs element-level
def test_two_workers_see_disjoint_data_covering_the_set(demo_source, min_files):
    total = demo_source.info().num_examples["train"]
    a = _origins(demo_source, ShardInfo(2, 0), total, min_files)
    b = _origins(demo_source, ShardInfo(2, 1), total, min_files)
    # Each worker's first pass is a prefix of its stream; together the two passes are the data set.
    matches = [k for k in range(total + 1)
               if len(set(a[:k])) == k and len(set(b[:total - k])) == total - k
               and not set(a[:k]) & set(b[:total - k]) and len(set(a[:k]) | set(b[:total - k])) == total]
    assert matches, "no split of the first pass into two disjoint covering parts"
    if min_files == 4:
        assert matches == [total // 2]  # element-level: exactly every other record
    everything = {o for _, _, o in demo_source.read_files("train", tf.data.Dataset.from_tensor_slices(demo_source.files("train"))).as_numpy_iterator()}
    assert {o.encode() for o in a[:matches[0]] + b[:total - matches[0]]} == everything


def test_file_order_is_shuffled_per_epoch(demo_source):
    opts = pipeline_options(min_files_per_shard=1)
    firsts = set()
    for epoch in range(6):
        ds = _train_records(demo_source, "train", ShardInfo(), seed=0, epoch=epoch, opts=opts).take(1)
        firsts.add(next(ds.as_numpy_iterator())[2].decode().split(" record ")[0])
    assert len(firsts) > 1


def _digest(image):
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_eval_shards_cover_every_example_once(demo_source):
    def collect(shard, **kw):
        out = []
        for b in D.eval_dataset(demo_source, image_size=16, batch_size=7, shard=shard, **kw):
            assert b["image"].dtype == tf.uint8 and b["label"].dtype == tf.int32
            out += [(_digest(im), int(l)) for im, l in zip(b["image"].numpy(), b["label"].numpy())]
        return out

    whole = collect(ShardInfo())
    assert len(whole) == 30 and len(set(whole)) == 30
    for n in (2, 3):  # 2 files: file-level for 2 shards, element-level for 3
        parts = [collect(ShardInfo(n, i)) for i in range(n)]
        assert sum(len(p) for p in parts) == 30 and set().union(*map(set, parts)) == set(whole)


def test_deferred_mixing_equals_mixing_in_the_pipeline(demo_source):
    from effnet.plugins.augment import cutmix, mixup

    augs = [mixup(alpha=0.4), cutmix(alpha=1.0)]
    kw = dict(image_size=16, batch_size=8, steps=4, epoch=0, seed=1, augmenters=augs)
    mixed = batches(D.train_dataset(demo_source, **kw))
    deferred = list(D.train_dataset(demo_source, deferred_mixing=True, **kw))
    choices = set()
    for a, b in zip(mixed, deferred):
        assert a["image"].dtype == np.float32 and b["image"].dtype == tf.uint8 and "mix" in b
        choices.add(int(b["mix"]["choice"]))
        images, labels = tf.function(D.apply_deferred_mixing)(b, augs)
        np.testing.assert_allclose(images.numpy(), a["image"], atol=1e-3)
        np.testing.assert_allclose(labels.numpy(), a["label"], atol=1e-6)
        np.testing.assert_allclose(a["label"].sum(1), 1.0, atol=1e-5)
        assert 0 <= a["image"].min() and a["image"].max() <= 255


def _dataset_with(tmp_path, records, num_classes=3):
    root = tmp_path / "d"
    write_records(root / "train-00000-of-00001", records)
    write_records(root / "validation-00000-of-00001", records)
    return D.TFRecordSource(str(root), num_classes=num_classes)


def test_corrupt_image_fails_with_its_record_or_is_skipped(tmp_path, capfd):
    good = encode(solid((50, 60, 70)))
    source = _dataset_with(tmp_path, [(good, 1, "a"), (good, 2, "b"), (good[:300], 3, "c"), (good, 1, "a")])
    path = f"{source.data_dir}/validation-00000-of-00001"
    with pytest.raises(tf.errors.OpError) as info:
        list(D.eval_dataset(source, image_size=8, batch_size=2))
    error = D.translate_error(info.value)
    assert str(error) == (f"could not read or decode 1 record(s): {path} record 2; remove or fix them (`effnet data "
                          f"stats --check DATA_DIR` lists all bad records), or set input_pipeline.on_error='skip' to skip them")
    skip = pipeline_options(on_error="skip", shuffle_buffer=0)
    out = list(D.eval_dataset(source, image_size=8, batch_size=2, options=skip))
    assert [int(l) for b in out for l in b["label"]] == [0, 1, 0]
    err = capfd.readouterr().err
    assert (f"effnet: warning: skipped 1 record(s) that could not be read or decoded: {path} record 2 "
            f"(1 skipped so far; input_pipeline.on_error='skip')") in err
    train = list(D.train_dataset(source, image_size=8, batch_size=3, steps=3, epoch=0, options=skip))
    assert len(train) == 3


def test_trailing_corrupt_record_is_caught_in_eval(tmp_path):
    good = encode(solid((50, 60, 70)))
    source = _dataset_with(tmp_path, [(good, 1, "a"), (b"\x89PNG broken", 2, "b")])
    with pytest.raises(tf.errors.OpError) as info:
        list(D.eval_dataset(source, image_size=8, batch_size=4))
    assert "record 1;" in str(D.translate_error(info.value))


def test_label_out_of_range_is_one_line(tmp_path):
    good = encode(solid((50, 60, 70)))
    source = _dataset_with(tmp_path, [(good, 1, "a"), (good, 5, "e")], num_classes=3)
    path = f"{source.data_dir}/train-00000-of-00001"
    with pytest.raises(tf.errors.OpError) as info:
        list(D.train_dataset(source, image_size=8, batch_size=2, steps=2, epoch=0,
                             options=pipeline_options(shuffle_buffer=0)))
    assert str(D.translate_error(info.value)) == (
        f"label 4 of {path} record 1 is outside [0, 3); labels are read as image/class/label - 1 (label_offset); "
        f"set tfrecord.num_classes and tfrecord.label_offset to match the data")
    zero_based = _dataset_with(tmp_path / "z", [(good, 0, "a")], num_classes=3)
    with pytest.raises(tf.errors.OpError) as info:
        list(D.eval_dataset(zero_based, image_size=8, batch_size=2))
    assert "label -1 of" in str(D.translate_error(info.value))


def test_argument_and_option_errors(demo_source):
    with pytest.raises(UserError) as info:
        pipeline_options(on_error="skp")
    assert str(info.value).splitlines()[0] == "input_pipeline.on_error='skp' is not one of fail, skip (did you mean 'skip'?)"
    with pytest.raises(UserError, match=r"^start_step=9 must be in \[0, steps=5\]$"):
        D.train_dataset(demo_source, image_size=8, batch_size=2, steps=5, epoch=0, start_step=9)
    with pytest.raises(UserError, match=r"^shard index 2 is outside \[0, 2\)$"):
        D.eval_dataset(demo_source, image_size=8, batch_size=2, shard=ShardInfo(2, 2))


def test_translate_error_passes_unrelated_errors():
    assert D.translate_error(ValueError("x")) is None
    loss = tf.errors.DataLossError(None, None, "truncated record at 464' failed with Read less bytes than requested")
    assert str(D.translate_error(loss)).startswith("a TFRecord file of the dataset is truncated or corrupt (truncated record at 464")


def test_gin_bindings_reach_the_pipeline(demo_source):
    import gin

    gin.parse_config("input_pipeline.area_range = (1.0, 1.0)\ninput_pipeline.random_flip = False\n"
                     "input_pipeline.aspect_ratio_range = (1.0, 1.0)\ninput_pipeline.shuffle_buffer = 0")
    # A crop pinned to the whole image counts as "no box found", and the reference then falls back
    # to the evaluation centre crop: with no flip, every training image equals an eval image.
    train = next(iter(D.train_dataset(demo_source, image_size=32, batch_size=4, steps=1, epoch=0)))
    records = list(demo_source.read_files("train", tf.data.Dataset.from_tensor_slices(demo_source.files("train")))
                   .as_numpy_iterator())
    lookup = {_digest(D.decode_for_eval(tf.constant(e), 32).numpy()) for e, _, _ in records}
    assert all(_digest(im) in lookup for im in train["image"].numpy())
    gin.parse_config("input_pipeline.random_flip = True")
    flipped = next(iter(D.train_dataset(demo_source, image_size=32, batch_size=8, steps=1, epoch=0)))
    assert not all(_digest(im) in lookup for im in flipped["image"].numpy())


def test_eval_whole_frame_keeps_the_long_side():
    """input_pipeline.eval_whole_frame: the whole (non-square) image, resized, instead of a centre crop."""
    import io

    import tensorflow as tf
    from PIL import Image

    from effnet.data.preprocess import decode_for_eval

    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :10] = 255  # a white band at the left edge, outside any centre square
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    encoded = tf.constant(buffer.getvalue())
    cropped = decode_for_eval(encoded, 12, 1.0).numpy()
    whole = decode_for_eval(encoded, 12, 1.0, whole_frame=True).numpy()
    assert cropped.max() == 0  # the centre square of the short side never sees the band
    assert whole[:, 0].min() == 255 and whole[:, -1].max() == 0  # the band is kept, squeezed to the left
    assert pipeline_options(eval_whole_frame=True).eval_whole_frame is True
    import pytest

    from effnet.errors import UserError

    with pytest.raises(UserError, match="input_pipeline.eval_whole_frame='yes' must be True or False"):
        pipeline_options(eval_whole_frame="yes")

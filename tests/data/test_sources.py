"""Sources, the `effnet data convert` round trip, counting and the decoders."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import effnet.data as D
from effnet.cli.main import main
from effnet.errors import UserError

from .conftest import COLORS, encode, make_folder, solid, write_records


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _eval_all(source, size=16, split="validation", shard=None):
    kw = {"shard": shard} if shard else {}
    images, labels = [], []
    for batch in D.eval_dataset(source, image_size=size, batch_size=4, split=split, **kw):
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_folder_to_tfrecords_round_trip(folder, tmp_path, capsys):
    dst = tmp_path / "records"
    code, out, err = run_cli(["data", "convert", str(folder), str(dst), "--train-shards", "3"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in dst.glob("train-*")) == [f"train-0000{i}-of-00003" for i in range(3)]
    assert "train: 12 examples in 3 files" in out and "classes: 3 (blue, green, red)" in out
    source = D.TFRecordSource(str(dst))
    info = source.info()
    assert info.num_classes == 3 and info.class_names == ["blue", "green", "red"]
    assert info.num_examples == {"train": 12, "validation": 6}
    for src in (source, D.FolderSource(str(folder))):
        images, labels = _eval_all(src)
        assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
        for image, label in zip(images, labels):
            expected = np.array(COLORS[info.class_names[label]])
            assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
            assert np.abs(image.reshape(-1, 3).mean(0) - expected).max() < 4, (label, image.reshape(-1, 3).mean(0))


def test_convert_refuses_to_overwrite_and_reports_bad_images(folder, tmp_path, capsys):
    (folder / "train" / "red" / "broken.jpg").write_bytes(b"not an image at all")
    dst = tmp_path / "out"
    code, _, err = run_cli(["data", "convert", str(folder), str(dst)], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: {folder}/train/red/broken.jpg: not a readable image (not a recognised image format); "
        f"remove it, or pass --on-error skip"
    )
    assert not list(dst.glob("train-*")) and not list(dst.glob(".*tmp"))
    code, out, err = run_cli(["data", "convert", str(folder), str(dst), "--on-error", "skip"], capsys)
    assert code == 0 and "skipping" in err and "broken.jpg" in err and "1 skipped" in err
    code, _, err = run_cli(["data", "convert", str(folder), str(dst)], capsys)
    assert code == 2 and "already holds TFRecord files" in err


def test_unusual_image_formats_decode_to_rgb():
    rgb = solid((200, 100, 50), 20, 30)
    rgba = np.dstack([rgb, np.full((20, 30), 9, np.uint8)])
    gray_value = int(round(0.299 * 200 + 0.587 * 100 + 0.114 * 50))
    cases = {
        "grayscale jpeg": (encode(rgb, "JPEG", "L"), (gray_value,) * 3),
        "cmyk jpeg": (encode(rgb, "JPEG", "CMYK"), (200, 100, 50)),
        "png with alpha": (encode(rgba, "PNG"), (200, 100, 50)),
        "grayscale png": (encode(rgb, "PNG", "L"), (gray_value,) * 3),
        "bmp": (encode(rgb, "BMP"), (200, 100, 50)),
        "gif": (encode(rgb, "GIF"), None),
    }
    for name, (data, expected) in cases.items():
        image = D.decode_for_eval(tf.constant(data), 8).numpy()
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8, name
        if expected is not None:
            assert np.abs(image.reshape(-1, 3).mean(0) - expected).max() < 6, (name, image.reshape(-1, 3).mean(0))
        train = D.decode_for_train(tf.constant(data), 8, tf.constant([1, 2]))
        assert train.shape == (8, 8, 3) and train.dtype == tf.uint8, name


def test_eval_centre_crop_takes_the_middle():
    # Left third black, middle white, right third black: the centre crop (16/48 of the short side) is all white.
    pixels = np.zeros((48, 96, 3), np.uint8)
    pixels[:, 32:64] = 255
    image = D.decode_for_eval(tf.constant(encode(pixels, "PNG")), 16).numpy()
    assert image.min() == 255
    whole = D.decode_for_eval(tf.constant(encode(pixels, "PNG")), 16, crop_fraction=1.0).numpy()
    assert whole.min() == 0  # the full short side (48 of 96 wide, centred) reaches the black edges


def test_record_counts_are_cached_and_detect_truncation(tmp_path):
    path = write_records(tmp_path / "d" / "train-00000-of-00001", [(encode(solid((1, 2, 3))), 1, "a")] * 5)
    count = D.count_records(str(path))
    assert (count.records, count.error) == (5, None) and count.valid_bytes == path.stat().st_size
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    count = D.count_records(str(path))
    assert count.records == 4 and "record 4" in count.error


def test_truncated_tfrecord_fails_or_is_read_up_to_the_damage(tmp_path, capfd):
    root = tmp_path / "d"
    good = encode(solid((10, 200, 10)))
    write_records(root / "validation-00000-of-00001", [(good, 1, "a"), (good, 2, "b")])
    path = write_records(root / "train-00000-of-00001", [(good, 1, "a")] * 4 + [(good, 2, "b")] * 2)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UserError) as info:
        D.TFRecordSource(str(root), num_classes=2, on_error="fail").files("train")
    assert str(info.value).startswith(f"TFRecord file {path}: record 5 at byte ")
    assert str(info.value).endswith("re-copy or re-create it, or set input_pipeline.on_error='skip' to read its 5 intact records and go on")
    source = D.TFRecordSource(str(root), num_classes=2, on_error="skip")
    assert source.info().num_examples["train"] == 5
    assert "reading its 5 intact records only" in capfd.readouterr().err
    labels = [int(l) for _, l in source.records("train")]
    assert labels == [0, 0, 0, 0, 1]


def test_bad_data_dirs_and_splits(tmp_path):
    with pytest.raises(UserError) as info:
        D.TFRecordSource(str(tmp_path / "nope"))
    assert str(info.value) == (f"tfrecord dataset: data folder {str(tmp_path / 'nope')!r} does not exist; pass an "
                               f"existing --data-dir or set tfrecord.data_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^image folder dataset: data folder '.*empty' is empty; put the dataset"):
        D.FolderSource(str(tmp_path / "empty"))
    root = tmp_path / "d"
    write_records(root / "train-00000-of-00001", [(encode(solid((1, 2, 3))), 1, "a")])
    (root / "valid-00000-of-00001").write_bytes(b"")
    with pytest.raises(UserError) as info:
        D.TFRecordSource(str(root)).files("validation")
    assert str(info.value) == (
        f"no TFRecord files matching 'validation-*' for split 'validation' in {root} (did you mean 'valid'?); "
        f"found prefixes: train, valid; convert an image folder with `effnet data convert SRC {root}`"
    )
    (tmp_path / "imgs" / "training").mkdir(parents=True)
    with pytest.raises(UserError, match=r"has no train/ or validation/ sub-folder \(found: training\)"):
        D.FolderSource(str(tmp_path / "imgs"))


def test_wrong_record_layout_is_named(tmp_path):
    import tensorflow as tf

    root = tmp_path / "d"
    root.mkdir()
    with tf.io.TFRecordWriter(str(root / "train-00000-of-00001")) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))})).SerializeToString())
    with pytest.raises(UserError, match=r"records have no image/encoded or image/class/label \(keys: image\); the tfrecord dataset expects the ImageNet layout"):
        D.TFRecordSource(str(root)).info()


def test_folder_source_validation_classes_must_exist_in_train(tmp_path):
    root = make_folder(tmp_path / "f", per_class=(1, 1), formats=("png",))
    (root / "validation" / "purple").mkdir()
    with pytest.raises(UserError, match=r"has class folder\(s\) purple that the training split does not have"):
        D.FolderSource(str(root)).files("validation")


def test_demo_dataset_is_imagenet_layout_and_cached(demo_source):
    import json
    from pathlib import Path

    info = demo_source.info()
    assert info.num_classes == 10 and len(set(info.class_names)) == 10
    assert info.num_examples == {"train": 80, "validation": 30}
    root = Path(demo_source.data_dir)
    assert len(list(root.glob("train-*-of-00004"))) == 4 and len(list(root.glob("validation-*"))) == 2
    meta = json.loads((root / "effnet-dataset.json").read_text())
    assert meta["num_classes"] == 10 and meta["label_offset"] == 1
    raw = next(iter(tf.data.TFRecordDataset(str(sorted(root.glob("train-*"))[0]))))
    ex = tf.train.Example.FromString(raw.numpy()).features.feature
    assert ex["image/encoded"].bytes_list.value[0][:2] == b"\xff\xd8"  # a real JPEG
    label = ex["image/class/label"].int64_list.value[0]
    assert 1 <= label <= 10 and ex["image/class/text"].bytes_list.value[0].decode() == info.class_names[label - 1]
    # Classes differ visually: mean images of two classes are far apart relative to noise.
    images, labels = _eval_all(demo_source, size=32)
    assert sorted(np.bincount(labels).tolist()) == [3] * 10
    from effnet.plugins.data.shapes import demo_source as make

    again = make(cache_dir=None, image_size=32, num_classes=10, train_per_class=8, validation_per_class=3,
                 train_shards=4, validation_shards=2, seed=0, jpeg_quality=90)
    assert again.data_dir == demo_source.data_dir
    assert not [p for p in root.parent.iterdir() if ".tmp" in p.name]


def test_demo_generation_is_seeded(tmp_path):
    from effnet.plugins.data.shapes import render

    a = render(3, 32, np.random.default_rng([0, 0, 5]))
    b = render(3, 32, np.random.default_rng([0, 0, 5]))
    c = render(3, 32, np.random.default_rng([0, 0, 6]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_stats_check_lists_corrupt_records(tmp_path, capsys):
    root = tmp_path / "d"
    good = encode(solid((10, 200, 10)))
    write_records(root / "train-00000-of-00001", [(good, 1, "a"), (b"\xff\xd8garbage", 2, "b"), (good, 3, "c")])
    write_records(root / "validation-00000-of-00001", [(good, 1, "a")])
    code, out, err = run_cli(["data", "stats", str(root), "--check"], capsys)
    assert code == 2
    assert f"  unreadable: {root}/train-00000-of-00001 record 1: " in out
    assert "train: 3 examples in 1 files" in out
    assert err.strip().splitlines()[-1].startswith(f"error: 1 bad record(s) in {root} (listed above)")

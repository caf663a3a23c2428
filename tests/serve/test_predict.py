"""`effnet predict` on real JPEG/PNG/BMP/GIF files written here, a corrupt one, and bad input."""

import csv
import io
import json
import shutil

import numpy as np
import pytest

from tests.serve.conftest import cli


@pytest.fixture(scope="session")
def validation_images(trained_run, tmp_path_factory):
    """The run's 18 validation images as files: the original JPEG bytes, and their pixels as PNG and BMP.

    Names carry the label: ``<index>_<label>.jpg`` / ``.png`` / ``.bmp``.
    """
    import gin
    import tensorflow as tf

    from effnet.registry import get_registry, reset_registry
    from effnet.config import parse

    folder = tmp_path_factory.mktemp("validation")
    get_registry()
    parse([str(trained_run / "operative_config.gin")], finalize=False)
    source = get_registry().get("dataset", "demo")()
    gin.clear_config()
    reset_registry()
    (folder / "jpeg").mkdir()
    (folder / "png" / "nested").mkdir(parents=True)
    for i, (encoded, label) in enumerate(source.records("validation").as_numpy_iterator()):
        (folder / "jpeg" / f"{i:02d}_{label}.jpg").write_bytes(encoded)
        pixels = tf.io.decode_jpeg(encoded, channels=3)
        (folder / "png" / "nested" / f"{i:02d}_{label}.png").write_bytes(tf.io.encode_png(pixels).numpy())
        (folder / "bmp").mkdir(exist_ok=True)
        (folder / "bmp" / f"{i:02d}_{label}.bmp").write_bytes(_bmp(pixels.numpy()))
    return folder


def _bmp(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")
    return buffer.getvalue()


def by_name(report):
    return {p["path"].rsplit("/", 1)[-1].split(".")[0]: p["top_k"] for p in report["predictions"]}


def test_predict_agrees_with_eval_and_across_formats(capsys, trained_run, validation_images, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    evaluated = cli(capsys, "eval", "--model-dir", str(run), "--weights", "ema", "--json")
    assert evaluated.code == 0, evaluated.err
    result = cli(capsys, "predict", "--model-dir", str(run), str(validation_images / "jpeg"), "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["weights"] == "ema" and report["step"] == 12 and report["image_size"] == 32
    jpeg = by_name(report)
    assert len(jpeg) == 18
    # the file loop and the evaluation's tf.data pipeline: the same preprocessing, the same answers
    hits = sum(top[0]["index"] == int(name.split("_")[1]) for name, top in jpeg.items())
    assert hits / 18 == pytest.approx(json.loads(evaluated.out)["ema"]["top1"])
    for top in jpeg.values():
        probs = [t["probability"] for t in top]
        assert len(top) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
    labels = (trained_run / "labels.txt").read_text().split()
    assert {t["class"] for top in jpeg.values() for t in top} <= set(labels)
    assert all(t["class"] == labels[t["index"]] for top in jpeg.values() for t in top)

    # the same pixels as PNG and as BMP (both lossless), the PNGs found through a quoted recursive glob,
    # in other batch sizes: identical probabilities
    result = cli(capsys, "predict", "--model-dir", str(run), str(validation_images / "png" / "**" / "*.png"),
                 "--format", "json", "--batch-size", "4")
    assert result.code == 0, result.err
    png = by_name(json.loads(result.out))
    result = cli(capsys, "predict", "--model-dir", str(run), str(validation_images / "bmp"), "--format", "json",
                 "--batch-size", "7")
    assert result.code == 0, result.err
    bmp = by_name(json.loads(result.out))
    assert sorted(png) == sorted(bmp) == sorted(jpeg)
    for name in png:
        assert [t["index"] for t in png[name]] == [t["index"] for t in bmp[name]]
        np.testing.assert_allclose([t["probability"] for t in png[name]], [t["probability"] for t in bmp[name]],
                                   rtol=1e-5, atol=1e-6)


def write_mixed_folder(root, validation_images):
    """Several formats and sizes, one corrupt JPEG, one text file named .png, one file to skip."""
    from PIL import Image

    root.mkdir()
    source = sorted((validation_images / "jpeg").iterdir())
    pixels = np.asarray(Image.open(source[0]).convert("RGB"))
    big = Image.fromarray(pixels).resize((97, 61))
    big.save(root / "wide.jpg", quality=92)
    Image.fromarray(pixels).convert("L").save(root / "gray.png")
    Image.fromarray(pixels).resize((13, 9)).save(root / "small.bmp")  # smaller than the model's 32 px
    Image.fromarray(pixels).save(root / "anim.gif", save_all=True, append_images=[Image.fromarray(255 - pixels)])
    (root / "broken.jpg").write_bytes(source[1].read_bytes()[:40])
    (root / "notes.png").write_text("not an image\n")
    (root / "readme.txt").write_text("skipped: not an image extension\n")
    return root


def test_corrupt_files_are_reported_one_line_each_and_the_rest_predicted(capsys, trained_run, validation_images, tmp_path):
    folder = write_mixed_folder(tmp_path / "mixed", validation_images)
    result = cli(capsys, "predict", "--model-dir", str(trained_run), str(folder), "--format", "csv", "--top-k", "2")
    assert result.code == 2
    err = [line for line in result.err.splitlines() if not line.startswith("predicting ")]
    assert len(err) == 3
    assert err[0].startswith(f"error: {folder / 'broken.jpg'} is not a readable JPEG/PNG/BMP/GIF image (")
    assert err[1].startswith(f"error: {folder / 'notes.png'} is not a readable JPEG/PNG/BMP/GIF image (Unknown image file format")
    assert err[2] == "error: 2 of 6 file(s) could not be read as images (listed above); the other 4 were predicted"
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert sorted({r["path"].rsplit("/", 1)[-1] for r in rows}) == ["anim.gif", "gray.png", "small.bmp", "wide.jpg"]
    assert len(rows) == 8 and {r["rank"] for r in rows} == {"1", "2"}
    assert all(0 <= float(r["probability"]) <= 1 for r in rows)


def test_table_output_labels_file_and_output_file(capsys, trained_run, validation_images, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"class-{i}\n" for i in range(6)) + "\n")  # a trailing empty line is fine
    images = sorted((validation_images / "jpeg").iterdir())[:3]
    out = tmp_path / "out" / "predictions.txt"
    result = cli(capsys, "predict", "--model-dir", str(trained_run), *map(str, images), "--labels", str(labels),
                 "--top-k", "3", "--output", str(out), "--weights", "raw")
    assert result.code == 0, result.err
    assert result.out == ""
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["image", "top-1", "top-2", "top-3"]
    assert [line.split()[0] for line in lines[1:]] == [str(p) for p in images]
    assert all(line.split()[1].startswith("class-") and line.split()[2].endswith("%") for line in lines[1:])
    assert "raw weights" in result.err


def test_bad_inputs_are_one_line_exit_2(capsys, trained_run, tmp_path):
    image = trained_run / "labels.txt"  # exists; the labels check fails before anything is decoded
    missing = tmp_path / "missing.jpg"
    result = cli(capsys, "predict", "--model-dir", str(trained_run), str(missing))
    assert (result.code, result.err) == (2, f"error: image path '{missing}' does not exist; pass existing files, folders or globs\n")

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    result = cli(capsys, "predict", "--model-dir", str(trained_run), str(empty))
    assert (result.code, result.err) == (
        2, f"error: folder '{empty}' has no images (.jpg, .jpeg, .png, .bmp, .gif), searched recursively; pass another "
           f"folder or the files\n")

    result = cli(capsys, "predict", "--model-dir", str(trained_run), str(tmp_path / "*.jpg"))
    assert (result.code, result.err) == (
        2, f"error: glob '{tmp_path / '*.jpg'}' matches no images (.jpg, .jpeg, .png, .bmp, .gif); check the pattern "
           f"(quote it to let effnet expand it)\n")

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    result = cli(capsys, "predict", "--model-dir", str(trained_run), str(image), "--labels", str(labels))
    assert (result.code, result.err.splitlines()[-1]) == (
        2, f"error: labels file '{labels}' has 3 lines but the model has 6 classes; give one class name per line, "
           f"in label order")

    result = cli(capsys, "predict", "--model-dir", str(trained_run))
    assert result.code == 2 and result.err.startswith("error: no images given: pass image files, folders or globs")


def test_find_images_order_and_duplicates(tmp_path):
    from effnet.images import find_images

    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ("a/2.JPG", "a/1.png", "a/deep/3.gif", "a/.hidden/4.jpg", "a/x.txt", "b.bmp"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([str(tmp_path / "a"), str(tmp_path / "b.bmp"), str(tmp_path / "a" / "1.png"),
                         str(tmp_path / "a" / "x.txt")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.png", "a/2.JPG", "a/deep/3.gif", "b.bmp", "a/x.txt"]

"""Small datasets made on the fly: a tiny demo, image folders with known pixels, TFRecord writers."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Solid colours per class: easy to check after JPEG round trips (tolerance ~3 levels).
COLORS = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (220, 30, 40)}


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(pixels)
    if mode:
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **({"quality": 98} if fmt == "JPEG" else {}) | kw)
    return buffer.getvalue()


def solid(color, h=36, w=48) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (h, w, 3)).copy()


def make_folder(root: Path, per_class=(4, 2), formats=("jpg", "png")) -> Path:
    """root/<split>/<class>/<i>.<fmt> with solid class colours; returns root."""
    for split, count in zip(("train", "validation"), per_class):
        for name, color in COLORS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                fmt = formats[i % len(formats)]
                (folder / f"{i}.{fmt}").write_bytes(encode(solid(color), "JPEG" if fmt == "jpg" else fmt.upper()))
    return root


def write_records(path: Path, items) -> Path:
    """Write (encoded, label_1_based, text) items as one ImageNet-layout TFRecord file."""
    import tensorflow as tf

    from effnet.data import make_example

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for encoded, label, text in items:
            writer.write(make_example(encoded, label, text))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    import gin

    import effnet.data.options  # noqa: F401 - defines input_pipeline

    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path_factory.getbasetemp() / "effnet-cache"))
    # The tiny test sets would otherwise fill the 10000-record default buffer by repeating ~100 times.
    gin.parse_config("input_pipeline.shuffle_buffer = 64")


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory):
    """A small demo dataset (10 classes, 8 train + 3 validation images each, 32 px, 4+2 files)."""
    os.environ["EFFNET_CACHE"] = str(tmp_path_factory.getbasetemp() / "effnet-cache")
    from effnet.plugins.data.shapes import demo_source as make

    return make(cache_dir=None, image_size=32, num_classes=10, train_per_class=8, validation_per_class=3,
                train_shards=4, validation_shards=2, seed=0, jpeg_quality=90)


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "images")

"""The demo dataset: ten shape classes drawn with Pillow, stored as JPEG TFRecords (ImageNet layout).

Every image is a function of (seed, split, index): a noisy, dull background, one shape in a colour
from its class's hue band, at a random scale, rotation and offset near the centre (so the
evaluation centre crop keeps it). Shape and hue both identify the class, so a small EfficientNetV2
learns the demo at 64 px within a few minutes on a CPU.

The files are written once into a temporary folder that is renamed into place when complete, so
an interrupted generation never leaves a folder that looks finished.
"""

from __future__ import annotations

import hashlib
import colorsys
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from effnet.data import TFRecordSource, cache_root, make_example, write_metadata, write_shards
from effnet.errors import UserError

VERSION = 2  # 2: class-specific hue bands
CLASS_NAMES = ("disc", "square", "triangle", "star", "plus", "ring", "half_disc", "two_dots", "bar", "frame")
SUPERSAMPLE = 3


def _polygon(cx, cy, r, angle, n, inner=None):
    points = []
    steps = n * 2 if inner else n
    for k in range(steps):
        radius = r if not inner or k % 2 == 0 else r * inner
        a = angle + 2 * math.pi * k / steps
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def _rect(cx, cy, half_len, half_wid, angle):
    c, s = math.cos(angle), math.sin(angle)
    corners = [(-half_len, -half_wid), (half_len, -half_wid), (half_len, half_wid), (-half_len, half_wid)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def draw_shape(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float, angle: float, color) -> None:
    name = CLASS_NAMES[label]
    if name == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, r * 1.05, angle, 4), fill=color)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.15, angle, 3), fill=color)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, r * 1.2, angle, 5, inner=0.42), fill=color)
    elif name == "plus":
        draw.polygon(_rect(cx, cy, r, r * 0.28, angle), fill=color)
        draw.polygon(_rect(cx, cy, r, r * 0.28, angle + math.pi / 2), fill=color)
    elif name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(1, int(r * 0.32)))
    elif name == "half_disc":
        start = math.degrees(angle)
        draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, start + 180, fill=color)
    elif name == "two_dots":
        d = r * 0.62
        for sign in (-1, 1):
            x, y = cx + sign * d * math.cos(angle), cy + sign * d * math.sin(angle)
            draw.ellipse([x - r * 0.38, y - r * 0.38, x + r * 0.38, y + r * 0.38], fill=color)
    elif name == "bar":
        draw.polygon(_rect(cx, cy, r * 1.1, r * 0.24, angle), fill=color)
    elif name == "frame":
        draw.polygon(_polygon(cx, cy, r * 1.1, angle, 4), outline=color, width=max(1, int(r * 0.3)))
    else:  # pragma: no cover
        raise ValueError(name)


def _luma(color) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def class_color(label: int, num_classes: int, rng: np.random.Generator):
    """A saturated colour whose hue band belongs to the class (shape and colour both identify it)."""
    hue = (label / max(num_classes, 1) + rng.uniform(-0.25, 0.25) / max(num_classes, 1)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    return tuple(int(round(255 * c)) for c in rgb)


def render(label: int, size: int, rng: np.random.Generator, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """One uint8 RGB image of class ``label``.

    The shape is drawn in a colour from the class's own hue band on a dull, contrasting
    background: shape and colour both carry the class, so a small network learns the demo in a
    few minutes on a CPU (with colours random for every class, a small EfficientNetV2 needed far
    longer than the quickstart's five-minute budget).
    """
    big = size * SUPERSAMPLE
    color = class_color(label, num_classes, rng)
    while True:
        grey = int(rng.integers(0, 256))
        background = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.integers(-20, 21, 3))
        if abs(_luma(color) - _luma(background)) > 60:
            break
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    r = big * rng.uniform(0.17, 0.27)
    cx = big * (0.5 + rng.uniform(-0.08, 0.08))
    cy = big * (0.5 + rng.uniform(-0.08, 0.08))
    draw_shape(draw, label, cx, cy, r, rng.uniform(0, 2 * math.pi), color)
    canvas = canvas.filter(ImageFilter.GaussianBlur(SUPERSAMPLE * 0.3)).resize((size, size), Image.Resampling.BOX)
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels += rng.normal(0.0, 10.0, pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _examples(split_id: int, split_name: str, per_class: int, num_classes: int, size: int, seed: int, quality: int):
    total = per_class * num_classes
    order = np.random.default_rng([seed, split_id, 99]).permutation(total)
    for index in order:
        label = int(index % num_classes)
        rng = np.random.default_rng([seed, split_id, int(index)])
        pixels = render(label, size, rng, num_classes)
        yield make_example(encode_jpeg(pixels, quality), label + 1, CLASS_NAMES[label], "JPEG", size, size,
                           f"{split_name}_{int(index):06d}.jpg")


def generate(out_dir: str | os.PathLike, *, image_size: int, num_classes: int, train_per_class: int,
             validation_per_class: int, train_shards: int, validation_shards: int, seed: int, jpeg_quality: int,
             progress=None) -> Path:
    """Write the demo dataset into ``out_dir`` (atomically: temporary folder, then rename)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split_id, (split, per_class, shards) in enumerate(
            (("train", train_per_class, train_shards), ("validation", validation_per_class, validation_shards))
        ):
            examples = _examples(split_id, split, per_class, num_classes, image_size, seed, jpeg_quality)
            write_shards(tmp, split, examples, shards, progress=progress)
        write_metadata(tmp, CLASS_NAMES[:num_classes], num_classes, label_offset=1,
                       extra={"demo": {"version": VERSION, "image_size": image_size, "seed": seed}})
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "effnet-dataset.json").is_file():  # someone else finished first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def demo_dir(cache_dir, **settings) -> Path:
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    return root / f"demo-{VERSION}-{key}"


def demo_source(cache_dir=None, *, image_size, num_classes, train_per_class, validation_per_class, train_shards,
                validation_shards, seed, jpeg_quality) -> TFRecordSource:
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise UserError(f"demo.num_classes={num_classes} must be between 2 and {len(CLASS_NAMES)}")
    if image_size < 16:
        raise UserError(f"demo.image_size={image_size} is too small; use 16 or more")
    for name, value in (("train_per_class", train_per_class), ("validation_per_class", validation_per_class),
                        ("train_shards", train_shards), ("validation_shards", validation_shards)):
        if value < 1:
            raise UserError(f"demo.{name}={value} must be at least 1")
    settings = dict(image_size=image_size, num_classes=num_classes, train_per_class=train_per_class,
                    validation_per_class=validation_per_class, train_shards=train_shards,
                    validation_shards=validation_shards, seed=seed, jpeg_quality=jpeg_quality)
    path = demo_dir(cache_dir, **settings)
    if not (path / "effnet-dataset.json").is_file():
        generate(path, **settings)
    return TFRecordSource(str(path), num_classes=num_classes, class_names=CLASS_NAMES[:num_classes],
                          gin_name="demo.cache_dir")

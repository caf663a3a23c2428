"""Input-pipeline throughput: images/s per CPU core of the training pipeline with RandAugment(2, 15),
ours next to the same pipeline with ``keras.layers.RandAugment``, at 128 and 300 px, in one run.

The data are synthetic ImageNet-like JPEGs (500x375, quality 90) written as TFRecords in a
temporary folder, so the run needs no dataset. Usage::

    python -m benchmarks.input_pipeline [--images 256] [--batches 20] [--out runs/benchmarks/input_pipeline.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_dataset(root: Path, images: int) -> str:
    import numpy as np
    from PIL import Image

    from effnet.data import make_example, write_metadata, write_shards
    from effnet.plugins.data.shapes import CLASS_NAMES, render

    def examples(split, count, offset):
        for k in range(count):
            label = k % len(CLASS_NAMES)
            rng = np.random.default_rng([offset, k])
            small = Image.fromarray(render(label, 96, rng)).resize((500, 375), Image.Resampling.BICUBIC)
            pixels = np.asarray(small, np.float32) + rng.normal(0, 8, (375, 500, 3))
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
            yield make_example(buffer.getvalue(), label + 1, CLASS_NAMES[label], "JPEG", 375, 500)

    write_shards(root, "train", examples("train", images, 0), 8)
    write_shards(root, "validation", examples("validation", 16, 1), 1)
    write_metadata(root, CLASS_NAMES, len(CLASS_NAMES))
    return str(root)


def keras_randaugment(magnitude: float, num_ops: int = 2):
    """The same pipeline's augmenter slot filled with keras.layers.RandAugment.

    Keras's ``factor`` is a strength in [0, 1]; RandAugment's magnitude scale goes to 30 in the
    paper, so M=15 maps to 0.5. (Its ops and their ranges differ from the recipe's; this is a
    speed comparison.)
    """
    import keras
    import tensorflow as tf

    from effnet.data import Augmenter

    class KerasRandAugment(Augmenter):
        level = "image"

        def __init__(self):
            self.layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops, factor=min(1.0, magnitude / 30))

        def __call__(self, image, seed):
            out = self.layer(tf.cast(image, tf.float32))
            return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    return KerasRandAugment()


def measure(source, augmenter, image_size: int, batch_size: int, batches: int, warmup: int = 3) -> float:
    from effnet.data import train_dataset

    ds = train_dataset(source, image_size=image_size, batch_size=batch_size, steps=warmup + batches, epoch=0,
                       augmenters=[augmenter])
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 300])
    parser.add_argument("--out", default="runs/benchmarks/input_pipeline.json")
    args = parser.parse_args(argv)

    import gin

    import effnet.data.options  # noqa: F401
    from effnet.data import TFRecordSource
    from effnet.plugins.augment import randaugment

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gin.parse_config(f"input_pipeline.shuffle_buffer = {args.images}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = TFRecordSource(make_dataset(Path(tmp), args.images))
        for size in args.sizes:
            for name, aug in (("effnet RandAugment(2, 15)", randaugment(num_layers=2, magnitude=15)),
                              ("keras.layers.RandAugment(2, 0.5)", keras_randaugment(15))):
                rate = measure(source, aug, size, args.batch_size, args.batches)
                rows.append({"pipeline": name, "image_size": size, "images_per_s": rate, "images_per_s_per_core": rate / cores})
    for size in args.sizes:
        ours, theirs = [r for r in rows if r["image_size"] == size]
        ours["ratio_vs_keras"] = ours["images_per_s"] / theirs["images_per_s"]
    print(f"Input pipeline, train crop + flip + RandAugment, batch {args.batch_size}, {cores} cores, 500x375 JPEGs")
    print(f"{'pipeline':<34} {'size':>5} {'img/s':>9} {'img/s/core':>11} {'vs keras':>9}")
    for r in rows:
        ratio = f"{r['ratio_vs_keras']:.2f}x" if "ratio_vs_keras" in r else ""
        print(f"{r['pipeline']:<34} {r['image_size']:>5} {r['images_per_s']:>9.1f} {r['images_per_s_per_core']:>11.1f} {ratio:>9}")
    result = {"benchmark": "input_pipeline", "cores": cores, "batch_size": args.batch_size, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

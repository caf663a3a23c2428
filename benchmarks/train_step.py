"""Training throughput of effnet's step next to keras.applications + model.fit, same model, same run.

Both train EfficientNetV2-S (1000 classes) on synthetic 0-255 images with RMSprop; effnet's step
also does label smoothing, the L2 term, the finiteness check and the EMA update, which model.fit
does not, so a ratio near 1 means the engine adds little. Warm-up steps (tracing) are excluded.
Usage::

    python -m benchmarks.train_step [--size 128] [--batch 16] [--steps 12] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data(batch, size, classes=1000, seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = tf.constant(rng.integers(0, 256, (batch, size, size, 3)).astype("uint8"))
    labels = tf.one_hot(rng.integers(0, classes, batch), classes)
    return images, labels


def effnet_step(precision, batch, size, steps, warmup):
    import keras

    from effnet import precision as precision_mod
    from effnet import registry
    from effnet.ema import ExponentialMovingAverage
    from effnet.step import TrainStep

    keras.backend.clear_session()
    precision_mod.configure(precision)
    model = registry.get("model", "efficientnet_v2_s")(num_classes=1000)
    optimizer = registry.get("optimizer", "rmsprop")(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    step = TrainStep(model, optimizer, global_batch=batch, label_smoothing=0.1, weight_decay=5e-6,
                     ema=ExponentialMovingAverage(model, 0.9999))
    images, labels = _data(batch, size)
    batch_dict = {"image": images, "label": labels}
    for _ in range(warmup):
        step.apply(batch_dict)
    start = time.perf_counter()
    for _ in range(steps):
        ok = step.apply(batch_dict)
    ok.numpy()
    return steps * batch / (time.perf_counter() - start)


def keras_fit(precision, batch, size, steps, warmup):
    import keras
    import tensorflow as tf

    from effnet import precision as precision_mod

    keras.backend.clear_session()
    precision_mod.configure(precision)
    model = keras.applications.EfficientNetV2S(weights=None, classes=1000, classifier_activation=None,
                                                input_shape=(size, size, 3))
    model.compile(keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3),
                  keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), jit_compile=False)
    images, labels = _data(batch, size)
    ds = tf.data.Dataset.from_tensors((tf.cast(images, tf.float32), labels)).repeat()
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", default="runs/benchmarks/train_step.json")
    args = parser.parse_args(argv)
    rows = []
    for precision in args.precisions:
        ours = effnet_step(precision, args.batch, args.size, args.steps, args.warmup)
        peer = keras_fit(precision, args.batch, args.size, args.steps, args.warmup)
        rows.append({"precision": precision, "effnet_img_per_s": ours, "keras_fit_img_per_s": peer, "ratio": ours / peer})
    print(f"EfficientNetV2-S training, {args.size} px, batch {args.batch}, {args.steps} timed steps, CPU, no XLA")
    print(f"{'precision':<10}{'effnet img/s':>14}{'keras fit img/s':>17}{'ratio':>8}")
    for r in rows:
        print(f"{r['precision']:<10}{r['effnet_img_per_s']:>14.1f}{r['keras_fit_img_per_s']:>17.1f}{r['ratio']:>8.2f}")
    result = {"size": args.size, "batch": args.batch, "steps": args.steps, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

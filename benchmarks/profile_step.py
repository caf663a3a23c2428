"""Where one training step (or forward pass) spends its time, op type by op type, from a TF profiler trace.

Runs our model's training step (:class:`effnet.step.TrainStep`, as ``effnet benchmark`` does) a
few times under ``tf.profiler.experimental``, then reads the trace (XSpace protobuf) and sums the
wall time of each TensorFlow op type on the host's op threads. Usage::

    python -m benchmarks.profile_step [--model efficientnet_v2_s] [--precision bf16] [--size 128]
        [--batch 16] [--mode train|infer] [--gin 'efficientnet.fused_bn = False'] [--top 25]

The trace stays in ``--logdir`` (default runs/benchmarks/profile) for TensorBoard's profiler.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_times(logdir: str) -> tuple[collections.Counter, collections.Counter]:
    """(total microseconds, count) per op type from the newest .xplane.pb under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = max(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True), key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    total, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            if "TensorFlow Ops" not in line.name and "tf_Compute" not in line.name and not line.name.startswith("tf_"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                # op events are named "name:type"; sum by type
                if ":" not in name:  # executor bookkeeping ("Process"), not an op
                    continue
                op_type = name.rsplit(":", 1)[-1]
                if op_type == "Process":
                    continue
                total[op_type] += event.duration_ps / 1e6
                count[op_type] += 1
    return total, count


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_v2_s")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gin", action="append", default=[], help="model bindings, e.g. 'efficientnet.fused_bn = False'")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--logdir", default="runs/benchmarks/profile")
    parser.add_argument("--out", default=None, help="JSON output (default: <logdir>/ops.json)")
    args = parser.parse_args(argv)

    import gin
    import numpy as np
    import tensorflow as tf

    import effnet.plugins.models  # noqa: F401 - registers the `efficientnet` configurable
    from effnet import precision as precision_mod
    from effnet import registry
    from effnet.ema import ExponentialMovingAverage
    from effnet.models import InferenceFunction
    from effnet.step import TrainStep

    gin.parse_config(args.gin)
    precision_mod.configure(args.precision)
    model = registry.get("model", args.model)(num_classes=1000)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("uint8"))
    if args.mode == "train":
        optimizer = registry.get("optimizer", "rmsprop")(learning_rate=1e-4)
        optimizer.build(model.trainable_variables)
        step = TrainStep(model, optimizer, global_batch=args.batch, label_smoothing=0.1, weight_decay=5e-6,
                         ema=ExponentialMovingAverage(model, 0.9999))
        batch = {"image": images, "label": tf.one_hot(rng.integers(0, 1000, args.batch), 1000)}
        run = lambda: step.apply(batch).numpy()  # noqa: E731
    else:
        forward = InferenceFunction(model)  # as effnet predict / eval serve it (weights frozen into the graph)
        run = lambda: forward(images).numpy()  # noqa: E731
    for _ in range(2):
        run()
    logdir = str(Path(args.logdir) / time.strftime("%Y%m%d-%H%M%S"))
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    wall = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()
    total, count = op_times(logdir)
    op_sum = sum(total.values()) / args.steps
    print(f"{args.model} {args.mode} {args.precision} batch {args.batch} at {args.size} px: {1000 * wall:.0f} ms/step wall, "
          f"{1000 * op_sum / 1e6:.0f} ms of op time per step (summed over threads)")
    print(f"{'op type':<40}{'ms/step':>10}{'share':>8}{'calls/step':>12}")
    rows = []
    for op, us in total.most_common(args.top):
        rows.append({"op": op, "ms_per_step": us / 1000 / args.steps, "share": us / max(sum(total.values()), 1e-9),
                     "calls_per_step": count[op] / args.steps})
        print(f"{op[:39]:<40}{rows[-1]['ms_per_step']:>10.1f}{100 * rows[-1]['share']:>7.1f}%{rows[-1]['calls_per_step']:>12.0f}")
    result = {"settings": {k: v for k, v in vars(args).items()}, "wall_ms_per_step": 1000 * wall, "ops": rows, "trace": logdir}
    out = Path(args.out or Path(args.logdir) / "ops.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""Gradient allreduce cost per training step: EfficientNetV2-S, 2 Horovod/Gloo workers on localhost.

For each wire format (float32, and float16 via ``horovod.fp16_allreduce``) it measures, on two
processes started with ``horovodrun -np 2 -H localhost:2 --gloo``:

* the time of one ``hvd.grouped_allreduce`` of tensors shaped like EfficientNetV2-S's gradients
  (21.5M float32 values, what the step sums once per update);
* the time of one full training step through the ``horovod`` backend (forward, backward, the
  allreduce, RMSprop, EMA) at a small CPU-sized batch;

and reports the allreduce's share of the step. Usage::

    python -m benchmarks.allreduce [--size 128] [--batch 8] [--steps 5] [--reps 10]

(it starts horovodrun itself; needs Horovod, see scripts/install_horovod.sh). On a GPU node the
same script with ``--np 8`` measures NCCL instead of Gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _worker(args) -> int:
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet import registry
    from effnet.ema import ExponentialMovingAverage
    from effnet.step import TrainStep
    from effnet.plugins.backends import HorovodBackend

    results = {}
    model = optimizer = None
    backend = HorovodBackend()
    backend.setup()
    for fp16 in (False, True):
        backend.fp16_allreduce = fp16
        if model is None:
            keras.utils.set_random_seed(0)
            model = registry.get("model", "efficientnet_v2_s")(num_classes=1000)
            optimizer = registry.get("optimizer", "rmsprop")(learning_rate=1e-3)
            optimizer.build(model.trainable_variables)
            ema = ExponentialMovingAverage(model, 0.9999)
            backend.broadcast_variables([*model.variables, *optimizer.variables, *ema.averages])
        shapes = [v.shape for v in model.trainable_variables]
        grads = [tf.random.normal(s, seed=i) * 1e-3 for i, s in enumerate(shapes)]

        @tf.function
        def reduce_only(values):
            return backend.all_reduce_sum(values, gradients=True)

        for _ in range(2):
            reduce_only(grads)[0].numpy()
        start = time.perf_counter()
        for _ in range(args.reps):
            out = reduce_only(grads)
            out[0].numpy()
        allreduce_s = (time.perf_counter() - start) / args.reps

        step = TrainStep(model, optimizer, global_batch=args.batch * backend.size, backend=backend,
                         label_smoothing=0.1, weight_decay=5e-6, ema=ema)
        rng = np.random.default_rng(backend.rank)
        batch = {"image": tf.constant(rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("uint8")),
                 "label": tf.one_hot(rng.integers(0, 1000, args.batch), 1000)}
        for _ in range(2):
            step.apply(batch).numpy()
        start = time.perf_counter()
        for _ in range(args.steps):
            ok = step.apply(batch)
        ok.numpy()
        step_s = (time.perf_counter() - start) / args.steps
        key = "fp16" if fp16 else "fp32"
        results[key] = {"allreduce_ms": 1000 * allreduce_s, "step_ms": 1000 * step_s,
                        "share": allreduce_s / step_s,
                        "megabytes": sum(int(np.prod(s)) for s in shapes) * (2 if fp16 else 4) / 1e6}
    if backend.rank == 0:
        Path(args.out).write_text(json.dumps({"processes": backend.size, "size": args.size, "batch": args.batch,
                                              "params": int(sum(np.prod(s) for s in shapes)), **results}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="per worker")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default="runs/benchmarks/allreduce.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    runner = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which("horovodrun")
    if runner is None:
        print("benchmarks.allreduce: horovodrun not found; install Horovod with scripts/install_horovod.sh", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    # The workers import this module by name (run as __main__, tf.function tracing of the step failed).
    worker = "import sys; from benchmarks.allreduce import main; sys.exit(main(sys.argv[1:]))"
    cmd = [runner, "-np", str(args.np), "-H", f"localhost:{args.np}", "--gloo", sys.executable, "-c", worker,
           "--worker", "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--reps", str(args.reps), "--out", str(out.resolve())]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print("\n".join((proc.stdout + proc.stderr).splitlines()[-30:]), file=sys.stderr)
        return proc.returncode
    result = json.loads(out.read_text())
    print(f"EfficientNetV2-S ({result['params'] / 1e6:.1f}M gradients), {result['processes']} Gloo workers on localhost, "
          f"{result['size']} px, batch {result['batch']} per worker")
    print(f"{'wire':<6}{'MB':>8}{'allreduce ms':>15}{'step ms':>10}{'share':>8}")
    for key in ("fp32", "fp16"):
        r = result[key]
        print(f"{key:<6}{r['megabytes']:>8.1f}{r['allreduce_ms']:>15.1f}{r['step_ms']:>10.1f}{100 * r['share']:>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

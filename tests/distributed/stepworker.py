"""One process of a distributed step test: trains a tiny model with effnet.step.TrainStep through a backend.

    python -m tests.distributed.stepworker --backend horovod --out DIR [--accum 2] [--nan-update 1 --nan-rank 1]

Run under ``horovodrun``, with a ``TF_CONFIG`` (multi_worker), or alone (single / mirrored). Every
replica trains on its own rows of the same deterministic global batches: update ``u`` uses rows
``[u*G, (u+1)*G)`` of one array, whoever holds them, so the run must equal a single process that
takes the whole global batch ``G`` at once. After every update the process records a checksum of
all model, optimizer and EMA weights; at the end it saves a checkpoint through the backend's
protocol and writes ``DIR/rank<r>.npz`` (weights and checksums) and ``DIR/rank<r>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = 3
SIZE = 8


def make_data(updates: int, global_batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (updates * global_batch, SIZE, SIZE, 3)).astype("float32")
    labels = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, updates * global_batch)]
    return images, labels


def build(args, backend):
    import keras
    import tensorflow as tf

    from effnet.ema import ExponentialMovingAverage
    from effnet.step import TrainStep

    with backend.scope():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(4, 3, name="conv")(x)
        if args.batchnorm:  # the BatchNorm our models use (fused kernel; sync BN must still take effect)
            from effnet.plugins.models.layers import FusedBatchNorm

            x = FusedBatchNorm(name="bn")(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(CLASSES, dtype="float32", name="logits")(x)
        model = keras.Model(inputs, outputs)
        optimizer = keras.optimizers.RMSprop(learning_rate=0.05, rho=0.9, momentum=0.9, epsilon=1e-3)
        optimizer.build(model.trainable_variables)
        ema = ExponentialMovingAverage(model, 0.99)
    global_step = backend.variable(tf.zeros([], tf.int64), name="global_step")
    if args.sync_bn:
        backend.enable_sync_batchnorm(model)
    step = TrainStep(model, optimizer, global_batch=args.global_batch, backend=backend, weight_decay=1e-3,
                     label_smoothing=0.1, accumulation_steps=args.accum, ema=ema, global_step=global_step)
    return model, optimizer, ema, global_step, step


def state_variables(model, optimizer, ema, global_step):
    return [*model.variables, *optimizer.variables, *ema.averages, global_step]


def checksum(variables) -> str:
    import numpy as np

    h = hashlib.sha256()
    for v in variables:
        h.update(np.ascontiguousarray(np.asarray(v.numpy() if hasattr(v, "numpy") else v)).tobytes())
    return h.hexdigest()


def copies_identical(variables) -> bool:
    """Whether every per-device copy of each (mirrored) variable holds the same value."""
    import keras
    import numpy as np

    for v in variables:
        v = v.value if isinstance(v, keras.Variable) else v
        copies = getattr(v, "values", None)
        if copies and len(copies) > 1 and hasattr(copies[0], "numpy"):
            first = copies[0].numpy()
            if any(not np.array_equal(first, c.numpy(), equal_nan=True) for c in copies[1:]):
                return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="single")
    p.add_argument("--cpu-devices", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--model-dir")
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--micro", type=int, default=4, help="per replica micro-batch")
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--global-batch", type=int, help="examples per update (default micro x accum x replicas)")
    p.add_argument("--batchnorm", action="store_true")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--fp16-allreduce", action="store_true")
    p.add_argument("--nan-update", type=int, default=-1)
    p.add_argument("--nan-replica", type=int, default=-1)
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from effnet import checkpoint as ckpt_mod
    from effnet import registry

    factory = registry.get("backend", args.backend)
    kwargs = {"horovod": {"fp16_allreduce": args.fp16_allreduce}, "mirrored": {"cpu_devices": args.cpu_devices}}
    backend = factory(**kwargs.get(args.backend, {}))
    backend.setup()
    replicas, local = backend.num_replicas, backend.local_replicas
    args.global_batch = args.global_batch or args.micro * args.accum * replicas
    micro = args.global_batch // (args.accum * replicas)
    model, optimizer, ema, global_step, step = build(args, backend)
    backend.broadcast_variables(state_variables(model, optimizer, ema, global_step))

    images, labels = make_data(args.updates, args.global_batch)
    if 0 <= args.nan_update:
        # one NaN pixel in the first micro-batch of replica `nan_replica` in update `nan_update`
        row = args.nan_update * args.global_batch + max(args.nan_replica, 0) * micro * args.accum
        images[row, 0, 0, 0] = np.nan
    # This process's rows, in the order its pipeline yields process batches (micro x local replicas):
    # in update u, global replica j owns the block u*G + j*micro*accum of micro*accum rows, one
    # micro-batch after the other.
    first_replica = backend.rank * local
    order = []
    for u in range(args.updates):
        for m in range(args.accum):
            for j in range(first_replica, first_replica + local):
                start = u * args.global_batch + j * micro * args.accum + m * micro
                order.extend(range(start, start + micro))
    ds = tf.data.Dataset.from_tensor_slices({"image": images[order], "label": labels[order]}).batch(micro * local)
    dist = backend.distribute_dataset(ds)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    sums, finite, identical = [], [], []
    it = iter(dist)
    for u in range(args.updates):
        for _ in range(args.accum - 1):
            step.accumulate(next(it))
        finite.append(bool(np.asarray(step.apply(next(it)))))
        sums.append(checksum(state_variables(model, optimizer, ema, global_step)))
        identical.append(copies_identical(state_variables(model, optimizer, ema, global_step)))
    window = step.read_window()

    saved = None
    if args.model_dir:
        manager = ckpt_mod.CheckpointManager(args.model_dir, {"model": list(model.variables), "optimizer": optimizer,
                                                              "global_step": global_step, "ema": ema},
                                             is_writer=backend.is_writer, every_process_saves=backend.every_process_saves)
        saved = manager.save(int(global_step.numpy()), {"stage": 0, "epoch": 0, "step_in_epoch": 0})
        discarded = manager.last_discarded
    else:
        discarded = None
    backend.barrier()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
    weights.update({f"ema{i}": np.asarray(v.numpy()) for i, v in enumerate(ema.averages)})
    np.savez(out / f"rank{backend.rank}.npz", **weights)
    (out / f"rank{backend.rank}.json").write_text(json.dumps({
        "rank": backend.rank, "size": backend.size, "replicas": replicas, "local_replicas": local,
        "checksums": sums, "finite": finite, "copies_identical": identical, "global_step": int(global_step.numpy()),
        "iterations": int(optimizer.iterations.numpy()), "window": window, "is_writer": backend.is_writer,
        "saved": str(saved) if saved else None, "discarded": str(discarded) if discarded else None,
        "discarded_exists": bool(discarded and Path(discarded).exists()),
    }))
    backend.shutdown()
    return 0


if __name__ == "__main__":
    from effnet.errors import UserError

    try:
        sys.exit(main())
    except UserError as exc:  # as the CLI does: one line, exit code 2
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)

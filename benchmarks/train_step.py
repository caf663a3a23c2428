"""Training throughput of effnet's step next to keras.applications' own training, same model, same run.

A shorthand for the training column of :mod:`benchmarks.run` without the other peers: both train
EfficientNetV2-S (1000 classes) on synthetic 0-255 images with RMSprop, each in its own process
(:mod:`benchmarks.worker`); effnet's step also does label smoothing, the L2 term, the finiteness
check and the EMA update, which keras' ``train_on_batch`` does not. Usage::

    python -m benchmarks.train_step [--size 128] [--batch 16] [--steps 8] [--precisions fp32 bf16] [--xla]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.run import _cores, run_job


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_v2_s")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--xla", action="store_true", help="keras.applications with XLA (jit_compile) too")
    parser.add_argument("--out", default="runs/benchmarks/train_step.json")
    args = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    base = {"model": args.model, "size": args.size, "batch": args.batch, "threads": _cores(), "warmup": max(1, args.warmup),
            "train_steps": args.steps, "infer_steps": 0, "latency_steps": 0, "measure": ["train"]}
    rows = []
    for precision in args.precisions:
        ours = run_job({**base, "framework": "effnet", "precision": precision, "xla": False}, log)
        for xla in [False, True] if args.xla else [False]:
            peer = run_job({**base, "framework": "keras", "precision": precision, "xla": xla}, log)
            a, b = ours and ours["train"]["img_per_s"], peer and peer["train"]["img_per_s"]
            rows.append({"precision": precision, "keras_xla": xla, "effnet_img_per_s": a, "keras_img_per_s": b,
                         "ratio": a / b if a and b else None})
    print(f"{args.model} training, {args.size} px, batch {args.batch}, median of {args.steps} steps, CPU")
    print(f"{'precision':<10}{'keras xla':>10}{'effnet img/s':>14}{'keras img/s':>13}{'ratio':>8}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        print(f"{r['precision']:<10}{'on' if r['keras_xla'] else 'off':>10}{fmt(r['effnet_img_per_s'], '.1f'):>14}"
              f"{fmt(r['keras_img_per_s'], '.1f'):>13}{fmt(r['ratio'], '.2f'):>8}")
    result = {"size": args.size, "batch": args.batch, "steps": args.steps, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

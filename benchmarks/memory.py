"""Peak memory of one training step per image size and batch, each in a fresh process.

Every (precision, size, batch) is measured by :func:`effnet.memory.probe`: a child process builds
the model, RMSprop, the EMA and effnet's training step, runs ``--updates`` optimizer updates of
``--accumulation`` micro-batches (default one step of one batch; the planner measures two updates
of two, which adds the accumulators and the second compiled step) on synthetic images and reports
its peak: on CPU the process's peak RSS (``ru_maxrss``) and the RSS after the build, so
``step = peak - baseline`` is what the step adds; on a GPU the allocator's peak. Usage::

    python -m benchmarks.memory --model efficientnet_v2_s --sizes 128 192 256 300 --batches 8 16 32
        [--precisions fp32 bf16] [--num-classes 1000] [--gin-param "efficientnet.width = 0.25"]

Prints one table and writes ``runs/benchmarks/memory_<model>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from effnet.memory import GIB, Fit, ProbeSpec, probe

MIB = 1024**2


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_v2_s")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256, 300])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--optimizer", default="rmsprop")
    parser.add_argument("--accumulation", type=int, default=1,
                        help="micro-batches per update (the planner measures 2: accumulators and both compiled steps)")
    parser.add_argument("--updates", type=int, default=1, help="optimizer updates per measurement")
    parser.add_argument("--gin-param", action="append", default=[], help="model knobs, e.g. 'efficientnet.width = 0.25'")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    gin_text = "\n".join(args.gin_param) + "\n" if args.gin_param else ""
    rows = []
    for precision in args.precisions:
        for size in args.sizes:
            for batch in args.batches:
                started = time.perf_counter()
                spec = ProbeSpec(model=args.model, image_size=size, batch=batch, num_classes=args.num_classes,
                                 precision=precision, optimizer=args.optimizer,
                                 accumulation=args.accumulation, updates=args.updates)
                r = probe(spec, gin_text=gin_text)
                r.update(precision=precision, seconds=round(time.perf_counter() - started, 1))
                rows.append(r)
                print(f"{precision} {size} px batch {batch}: peak {r['peak_bytes'] / MIB:.0f} MiB "
                      f"({r['seconds']} s)", file=sys.stderr, flush=True)
    fits = []
    for precision in args.precisions:
        for size in args.sizes:
            points = [(r["batch"], r["peak_bytes"]) for r in rows if r["precision"] == precision and r["image_size"] == size]
            if len(points) >= 2:
                fit = Fit.through([points[0], points[-1]])
                fits.append({"precision": precision, "image_size": size, "fixed_bytes": fit.fixed,
                             "per_image_bytes": fit.per_image})
    device = rows[0]["device"] if rows else "?"
    print(f"{args.model}, peak memory of one training step ({rows[0]['measure'] if rows else ''}; {device})")
    print(f"{'precision':<10}{'size':>6}{'batch':>7}{'peak MiB':>10}{'after build MiB':>17}{'step adds MiB':>15}")
    for r in rows:
        print(f"{r['precision']:<10}{r['image_size']:>6}{r['batch']:>7}{r['peak_bytes'] / MIB:>10.0f}"
              f"{r['baseline_bytes'] / MIB:>17.0f}{(r['rss_peak_bytes'] - r['baseline_bytes']) / MIB:>15.0f}")
    if fits:
        print(f"{'precision':<10}{'size':>6}{'fixed MiB':>11}{'MiB/image':>11}  (fit through the smallest and largest batch)")
        for f in fits:
            print(f"{f['precision']:<10}{f['image_size']:>6}{f['fixed_bytes'] / MIB:>11.0f}{f['per_image_bytes'] / MIB:>11.1f}")
    result = {"model": args.model, "gin": gin_text, "accumulation": args.accumulation, "updates": args.updates, "device": device, "rows": rows, "fits": fits,
              "total_gib_measured": max((r["peak_bytes"] for r in rows), default=0) / GIB}
    out = Path(args.out or f"runs/benchmarks/memory_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

"""effnet next to keras.applications and timm in one run: ``python -m benchmarks.run`` (``make bench``).

What it measures, on synthetic inputs, every framework with the same thread count, each job in its
own process (:mod:`benchmarks.worker`) so the frameworks' thread pools never share a process:

* EfficientNetV2-S and EfficientNet-B0: training step and inference at batch 16, 128 px, and
  batch-1 latency (p50/p99), for effnet (fp32, bf16), keras.applications (fp32, bf16, XLA off and
  on) and timm's tf_efficientnetv2_s / tf_efficientnet_b0 in PyTorch (fp32, bf16 autocast,
  channels_last);
* our model exported as ``effnet export`` writes it and run in ONNX Runtime (fp32) and OpenVINO
  (f32, and bf16 as the CPU plugin's own choice) through :func:`effnet.runtimes.load`, rows
  ``effnet-onnxruntime`` / ``effnet-openvino``; timm's model exported to ONNX by ``torch.onnx.export``
  and run in the same runtimes as their documentation runs a model, rows ``timm-onnxruntime`` /
  ``timm-openvino``, and through our loader (``timm-openvino (effnet loader)``: graph against graph);
  with NNCF installed, both models quantized to int8 (``(int8)`` rows). Each artifact is converted in
  a child process and timed in a process that holds the runtime alone (when effnet[onnx] /
  effnet[openvino] are installed; ``--no-runtimes`` skips them), with the fastest deployment path's
  ratio against the fastest timm path;
* a 4096^2 matmul (fp32 and bf16) in the same run, and each row's achieved FLOP/s as a fraction
  of it (training counted as 3x the forward FLOPs, which TF's profiler counts on our graph);
* the input pipeline (:mod:`benchmarks.input_pipeline`): images/s per core with RandAugment(2, 15)
  at 128 and 300 px, against what our training step consumes per core at those sizes.

``--deploy-only`` measures the serving rows alone (inference and batch-1 latency of effnet in TF and
each runtime, timm in PyTorch and each runtime): the deployment comparison in a quarter of the time.

Jobs run in rounds (``--rounds``), each round every job once in the same order, so a load that
comes and goes on a shared machine hits every framework alike; a figure is the median over rounds
of per-step medians. Ratios between frameworks are the figures of merit, not absolute numbers.
Prints one table and writes runs/benchmarks/compare.json (and input_pipeline.json).

The timm rows need the benchmark extra: ``pip install -e '.[bench]'``; without it they are
skipped with a note. On a machine with a GPU the defaults switch to the seed's setting (AMP, XLA,
batch 460 at 300 px) and the seed's published throughput is printed next to ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Earlier states of our model, as gin bindings and what they differ in, for the before/after rows
# of docs/performance.md (--baselines NAME ...; measured for the first model only).
BASELINES = {
    "unoptimised": (["efficientnet.fused_bn = False", "efficientnet.fold_bn = False", "rmsprop.fused = False",
                     "benchmark.frozen_graph = False"], ["train", "infer", "latency"]),
    "no-fold": (["efficientnet.fold_bn = False"], ["infer", "latency"]),  # folding changes inference only
    "live-weights": (["benchmark.frozen_graph = False"], ["infer", "latency"]),  # live variables instead of frozen weights
}

# The same work per training step on both sides. Our step does what the recipe does besides the
# update, an EMA of every weight and L2 weight decay; timm's bare loop (the "timm" rows) does neither.
# Two like-for-like rows are always measured (training only): our step without both ("effnet
# (bare)", these bindings) and timm's loop with both ("timm (recipe)": timm's ModelEmaV3 with
# warm-up and RMSprop's weight_decay, which like ours adds decay * w to the gradient).
BARE_STEP = ["benchmark.ema_decay = None", "benchmark.weight_decay = 0.0"]

# The seed's published figures for EfficientNetV2-S on one A100 (AMP, XLA, 300 px training, batch 460).
SEED_GPU_REFERENCE = {"train_img_per_s": 950.0, "infer_img_per_s": 2062.0}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _has_gpu() -> bool:
    code = "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == 0


def run_job(job: dict, log) -> dict | None:
    """Run one worker process; its last output line is the JSON result."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(job)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(job["threads"])})
    lines = proc.stdout.strip().splitlines()
    label = " ".join(str(job[k]) for k in ("framework", "model", "precision", "size") if job.get(k) is not None)
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"   {label}: FAILED ({tail})")
        return None
    log(f"   {label}{' xla' if job.get('xla') else ''}: {time.perf_counter() - started:.0f} s")
    return json.loads(lines[-1])["result"]


def median_of(results: list[dict], key: str, field: str) -> float | None:
    values = [r[key][field] for r in results if r and key in r]
    return statistics.median(values) if values else None


# Deployment runtimes measured with our exported model (effnet export's converters) and with timm's model exported
# by torch.onnx; ONNX Runtime runs fp32 only, OpenVINO f32 and (for bf16) its CPU plugin's own choice.
DEPLOYED = ("onnxruntime", "openvino")
# the peer's paths: timm in PyTorch, and timm exported to ONNX in each deployment runtime
PEER_PATHS = ("timm",) + tuple(f"timm-{runtime}" for runtime in DEPLOYED)


def plan(args, timm_ok: bool) -> tuple[list[dict], list[dict]]:
    """(measured jobs, one-off jobs). Labels: framework, model, precision, xla."""
    serving = ["infer", "latency"]
    base = {"size": args.size, "batch": args.batch, "threads": args.threads, "warmup": args.warmup,
            "train_steps": args.train_steps, "infer_steps": args.infer_steps, "latency_steps": args.latency_steps,
            "measure": serving if args.deploy_only else ["train", "infer", "latency"]}
    training = not args.deploy_only  # --deploy-only: the serving comparison alone (no training, keras, pipeline)
    jobs = []
    for model in args.models:
        for precision in args.precisions:
            jobs.append({**base, "framework": "effnet", "model": model, "precision": precision, "xla": args.gpu})
            if training:
                jobs.append({**base, "framework": "effnet", "model": model, "precision": precision, "xla": args.gpu,
                             "variant": "bare", "gin": BARE_STEP, "measure": ["train"]})
            for variant in args.baselines if model == args.models[0] else []:
                bindings, measure = BASELINES[variant]
                jobs.append({**base, "framework": "effnet", "model": model, "precision": precision, "xla": args.gpu,
                             "variant": variant, "gin": bindings, "measure": [m for m in measure if m in base["measure"]]})
            for xla in (([True] if args.gpu else [False, True]) if not args.no_xla else [False]) if training else []:
                jobs.append({**base, "framework": "keras", "model": model, "precision": precision, "xla": xla})
            for runtime in DEPLOYED if not args.gpu and args.runtimes else []:
                if importlib.util.find_spec(runtime) is None or (runtime == "onnxruntime" and precision != "fp32"):
                    continue
                for framework in ("effnet", "timm") if timm_ok else ("effnet",):
                    jobs.append({**base, "framework": f"{framework}-{runtime}", "model": model, "precision": precision,
                                 "xla": False, "measure": serving})
                if timm_ok and runtime == "openvino":  # timm's file through our loader: graph against graph
                    jobs.append({**base, "framework": f"timm-{runtime}", "model": model, "precision": precision,
                                 "xla": False, "measure": serving, "variant": "effnet loader"})
                if runtime == "openvino" and precision == "bf16" and importlib.util.find_spec("nncf") is not None:
                    # int8 IRs through NNCF (effnet export --format openvino_int8; timm's ONNX the same way), the
                    # float parts in the plugin's own precision; calibrated on random images (speed only)
                    for framework, variant in (("effnet", "int8"), ("timm", "int8"), ("timm", "int8, effnet loader")):
                        if framework == "effnet" or timm_ok:
                            jobs.append({**base, "framework": f"{framework}-{runtime}", "model": model,
                                         "precision": precision, "xla": False, "measure": serving, "variant": variant})
            if timm_ok and not args.gpu:
                jobs.append({**base, "framework": "timm", "model": model, "precision": precision, "xla": False})
                if training:
                    jobs.append({**base, "framework": "timm", "model": model, "precision": precision, "xla": False,
                                 "variant": "recipe", "measure": ["train"]})
    if training:
        jobs.append({**base, "framework": "matmul", "model": None, "precision": None, "xla": False, "matmul_steps": 10})
    once = [{**base, "framework": "flops", "model": model, "precision": None, "xla": False} for model in args.models]
    # what the training step consumes at the recipe's last progressive size (the input pipeline's hardest case)
    for size in [] if args.no_pipeline or not training else args.pipeline_sizes:  # only the pipeline comparison reads them
        if size != args.size:
            once.append({**base, "framework": "effnet", "model": args.models[0], "precision": args.precisions[-1],
                         "xla": args.gpu, "size": size, "measure": ["train"], "train_steps": max(3, args.train_steps // 2)})
    return jobs, once


def key_of(job: dict) -> tuple:
    return (job["framework"], job["model"], job["precision"], job["xla"], job["size"], job.get("variant"))


def format_table(rows: list[dict]) -> list[str]:
    header = ["model", "framework", "prec", "xla", "train img/s", "infer img/s", "b1 p50 ms", "b1 p99 ms",
              "train/best timm", "infer/best timm", "train %peak", "infer %peak"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    table = [header]
    for r in rows:
        table.append([r["model"], r["framework"], r["precision"], "on" if r["xla"] else "off",
                      fmt(r["train_img_per_s"], ".1f"), fmt(r["infer_img_per_s"], ".1f"),
                      fmt(r["latency_p50_ms"], ".1f"), fmt(r["latency_p99_ms"], ".1f"),
                      fmt(r.get("train_vs_best_timm"), ".2f"), fmt(r.get("infer_vs_best_timm"), ".2f"),
                      fmt(r.get("train_fraction_of_matmul") and 100 * r["train_fraction_of_matmul"], ".0f"),
                      fmt(r.get("infer_fraction_of_matmul") and 100 * r["infer_fraction_of_matmul"], ".0f")])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in table]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_v2_s", "efficientnet_b0"])
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 (CPU), amp (GPU)")
    parser.add_argument("--size", type=int, default=None, help="default: 128 (CPU), 300 (GPU)")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 (CPU), 460 (GPU)")
    parser.add_argument("--threads", type=int, default=_cores())
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--infer-steps", type=int, default=10)
    parser.add_argument("--latency-steps", type=int, default=30)
    parser.add_argument("--pipeline-sizes", type=int, nargs="+", default=[128, 300])
    parser.add_argument("--pipeline-batches", type=int, default=12)
    parser.add_argument("--no-xla", action="store_true", help="skip keras.applications with XLA (slow to compile on CPUs)")
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--baselines", nargs="*", default=[], choices=sorted(BASELINES),
                        help="also measure our model as it was before an optimisation (extra effnet rows)")
    parser.add_argument("--no-runtimes", dest="runtimes", action="store_false",
                        help="skip our model exported to ONNX Runtime / OpenVINO (rows effnet-onnxruntime, effnet-openvino)")
    parser.add_argument("--deploy-only", action="store_true",
                        help="only serving: inference and batch-1 latency of effnet (TF and each runtime) and timm "
                             "(PyTorch and exported to each runtime); no training, keras.applications or input pipeline")
    parser.add_argument("--out", default="runs/benchmarks/compare.json")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="measure nothing: print the table and targets of a finished run's compare.json again")
    args = parser.parse_args(argv)
    if args.report:
        return report_again(Path(args.report))
    args.no_pipeline = args.no_pipeline or args.deploy_only
    args.warmup = max(1, args.warmup)
    args.gpu = _has_gpu()
    args.precisions = args.precisions or (["amp"] if args.gpu else ["fp32", "bf16"])
    args.size = args.size or (300 if args.gpu else 128)
    args.batch = args.batch or (460 if args.gpu else 16)
    timm_ok = importlib.util.find_spec("timm") is not None and importlib.util.find_spec("torch") is not None
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if not timm_ok:
        log("timm/torch not installed (pip install -e '.[bench]'): the timm rows are skipped")

    jobs, once = plan(args, timm_ok)
    results: dict[tuple, list[dict]] = {}
    pipeline = None
    for r in range(args.rounds):
        log(f"== round {r + 1}/{args.rounds}")
        for job in jobs:
            results.setdefault(key_of(job), []).append(run_job(job, log))
            summarise(args, jobs, results, pipeline, final=False)  # a partial report survives an interrupted run

    for job in once:
        log(f"== one-off: {job['framework']} {job['model']} {job['size']} px")
        results.setdefault(key_of(job), []).append(run_job(job, log))
        summarise(args, jobs, results, pipeline, final=False)
    if not args.no_pipeline:
        log("== input pipeline")
        pipeline_out = str(Path(args.out).with_name("input_pipeline.json"))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", "--sizes", *map(str, args.pipeline_sizes),
                               "--batches", str(args.pipeline_batches), "--out", pipeline_out],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if proc.returncode == 0:
            pipeline = json.loads(Path(pipeline_out).read_text())
        else:
            log(f"   input pipeline FAILED: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return summarise(args, jobs, results, pipeline, final=True)


def report_again(path: Path) -> dict:
    """The table and targets of a finished run, recomputed from its raw results (``--report``)."""
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["settings"], out=None)  # printed only: the saved run stays as it is
    results = {tuple(entry["job"]): entry["results"] for entry in saved["raw"]}
    jobs = [{"framework": k[0], "model": k[1], "precision": k[2], "xla": k[3], "size": k[4], "batch": args.batch,
             **({"variant": k[5]} if k[5] else {})} for k in results
            if k[0] not in ("flops",) and not (k[0] == "effnet" and k[4] != args.size)]
    return summarise(args, jobs, results, saved.get("input_pipeline"), final=True)


def summarise(args, jobs, results, pipeline, final: bool) -> dict:
    """Rows, ratios and targets from the results so far; printed when ``final``, written to JSON always."""
    matmul = [r for r in results.get(("matmul", None, None, False, args.size, None), []) if r]
    peak = {p: statistics.median(m[p]["flop_per_s"] for m in matmul) for p in ("fp32", "bf16")} if matmul else {}
    flops = {model: (results.get(("flops", model, None, False, args.size, None)) or [None])[0] for model in args.models}

    rows = []
    for job in jobs:
        if job["framework"] == "matmul":
            continue
        rs = [r for r in results.get(key_of(job), []) if r]
        row = {"model": job["model"], "framework": job["framework"] + (f" ({job['variant']})" if job.get("variant") else ""),
               "precision": job["precision"], "xla": job["xla"],
               "size": job["size"], "batch": job["batch"],
               "train_img_per_s": median_of(rs, "train", "img_per_s"), "infer_img_per_s": median_of(rs, "infer", "img_per_s"),
               "latency_p50_ms": median_of(rs, "latency", "p50_ms"), "latency_p99_ms": median_of(rs, "latency", "p99_ms"),
               "params": rs[0].get("params") if rs else None, "rounds": len(rs)}
        fwd = flops.get(job["model"]) and flops[job["model"]]["forward_flops"]
        matmul_peak = peak.get("bf16" if job["precision"] in ("bf16", "amp") else "fp32")
        if fwd and matmul_peak:
            for mode, factor in (("train", 3.0), ("infer", 1.0)):
                if row[f"{mode}_img_per_s"]:
                    row[f"{mode}_fraction_of_matmul"] = row[f"{mode}_img_per_s"] * factor * fwd / matmul_peak
        rows.append(row)
    for row in rows:  # against timm at its best precision for this model and mode (bf16 is not always faster)
        for mode in ("train", "infer"):
            best_timm = max((t[f"{mode}_img_per_s"] for t in rows if t["framework"] == "timm" and t["model"] == row["model"]
                             and t[f"{mode}_img_per_s"]), default=None)
            if best_timm and row[f"{mode}_img_per_s"]:
                row[f"{mode}_vs_best_timm"] = row[f"{mode}_img_per_s"] / best_timm

    targets = targets_of(rows, results, pipeline, args)
    lines = [f"EfficientNet on {'GPU' if args.gpu else 'CPU'}: batch {args.batch} at {args.size} px, batch-1 latency, "
             f"{args.threads} threads per framework, median of {args.rounds} round(s)"]
    lines += format_table(rows)
    if peak:
        lines.append("matmul 4096^2: " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peak.items())
                     + "; %peak = img/s x FLOPs/img (train: 3x forward) / matmul FLOP/s at the row's precision")
    if flops:
        lines.append("forward GFLOP/img: " + ", ".join(f"{m} {f['forward_flops'] / 1e9:.2f}" for m, f in flops.items() if f))
    if args.gpu:
        ours = next((r for r in rows if r["framework"] == "effnet" and r["model"] == "efficientnet_v2_s"), None)
        if ours:
            lines.append(f"seed reference (1x A100, AMP): train {SEED_GPU_REFERENCE['train_img_per_s']:.0f} img/s, "
                         f"infer {SEED_GPU_REFERENCE['infer_img_per_s']:.0f} img/s; ours here: train "
                         f"{ours['train_img_per_s'] or float('nan'):.0f}, infer {ours['infer_img_per_s'] or float('nan'):.0f}")
    lines.append("targets:")
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        verdict = "n/a" if t["value"] is None else ("MET" if t["met"] else "not met")
        lines.append(f"  {t['name']:<58} {value:>6} (goal {t['goal']}) {verdict}")
    if final:
        print("\n".join(lines))
    report = {"benchmark": "compare", "device": "GPU" if args.gpu else "CPU", "cores": _cores(), "settings": {
        k: v for k, v in vars(args).items() if k != "out"}, "matmul_flop_per_s": peak, "forward_flops": flops,
        "complete": final, "rows": rows, "targets": targets, "input_pipeline": pipeline,
        "seed_gpu_reference": SEED_GPU_REFERENCE if args.gpu else None,
        "raw": [{"job": list(k), "results": v} for k, v in results.items()]}
    if args.out is None:  # --report: nothing is written
        return report
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if final:
        print(f"wrote {out}")
    return report


def targets_of(rows, results, pipeline, args) -> list[dict]:
    """The issue's figures of merit as ratios (None when a side was not measured)."""
    def find(framework, model, precision=None, xla=None):
        return [r for r in rows if r["framework"] == framework and r["model"] == model
                and (precision is None or r["precision"] == precision) and (xla is None or r["xla"] == xla)]

    def best(rs, field, pick=max):
        values = [r[field] for r in rs if r[field] is not None]
        return pick(values) if values else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    def deployed(model, with_tf=True):  # our float model in every runtime measured (TensorFlow's own rows too)
        return [r for r in rows if r["model"] == model and "int8" not in r["framework"]
                and (r["framework"].startswith("effnet-") or (with_tf and r["framework"] == "effnet"))]

    def peer_paths(model):  # timm in PyTorch and exported to each runtime: a user's fastest alternative
        return [r for r in rows if r["model"] == model and r["framework"] in PEER_PATHS]

    def speedup(ours_ms, theirs_ms):  # latency as a speed ratio (theirs / ours): >= 1 means we answer sooner
        return theirs_ms / ours_ms if ours_ms and theirs_ms is not None else None

    out = []
    for model in args.models:
        ours, timm = find("effnet", model), find("timm", model)
        for name, value, goal in (
            (f"{model}: train best effnet / best timm", ratio(best(ours, "train_img_per_s"), best(timm, "train_img_per_s")), ">= 1"),
            (f"{model}: train, both with EMA + decay (recipe step)",
             ratio(best(ours, "train_img_per_s"), best(find("timm (recipe)", model), "train_img_per_s")), ">= 1"),
            (f"{model}: train, both without (bare step)",
             ratio(best(find("effnet (bare)", model), "train_img_per_s"), best(timm, "train_img_per_s")), ">= 1"),
            (f"{model}: infer best effnet / best timm", ratio(best(ours, "infer_img_per_s"), best(timm, "infer_img_per_s")), ">= 1"),
            (f"{model}: train effnet fp32 / best keras fp32", ratio(best(find("effnet", model, "fp32"), "train_img_per_s"),
                                                                   best(find("keras", model, "fp32"), "train_img_per_s")), ">= 1"),
            (f"{model}: batch-1 p50 best effnet / best timm", ratio(best(ours, "latency_p50_ms", min),
                                                                   best(find("timm", model), "latency_p50_ms", min)), "<= 1"),
            (f"{model}: infer fastest effnet deployment / fastest timm path",
             ratio(best(deployed(model), "infer_img_per_s"), best(peer_paths(model), "infer_img_per_s")), ">= 1"),
            (f"{model}: batch-1 p50 speed, fastest effnet deployment / fastest timm path",
             speedup(best(deployed(model), "latency_p50_ms", min), best(peer_paths(model), "latency_p50_ms", min)), ">= 1"),
            (f"{model}: infer effnet / timm in OpenVINO, same loader (graph only)",
             ratio(best(find("effnet-openvino", model), "infer_img_per_s"),
                   best(find("timm-openvino (effnet loader)", model), "infer_img_per_s")), ">= 1"),
            (f"{model}: batch-1 p50 speed effnet / timm in OpenVINO, same loader",
             speedup(best(find("effnet-openvino", model), "latency_p50_ms", min),
                     best(find("timm-openvino (effnet loader)", model), "latency_p50_ms", min)), ">= 1"),
            (f"{model}: infer effnet / timm, both int8 in OpenVINO (same loader)",
             ratio(best(find("effnet-openvino (int8)", model), "infer_img_per_s"),
                   best(find("timm-openvino (int8, effnet loader)", model), "infer_img_per_s")), ">= 1"),
            (f"{model}: infer effnet OpenVINO int8 / fastest timm float path",
             ratio(best(find("effnet-openvino (int8)", model), "infer_img_per_s"),
                   best(peer_paths(model), "infer_img_per_s")), ">= 1"),
            (f"{model}: batch-1 p50 speed effnet OpenVINO int8 / fastest timm float path",
             speedup(best(find("effnet-openvino (int8)", model), "latency_p50_ms", min),
                     best(peer_paths(model), "latency_p50_ms", min)), ">= 1"),
            (f"{model}: infer fastest effnet runtime / effnet in TF", ratio(best(deployed(model, False), "infer_img_per_s"),
                                                                           best(ours, "infer_img_per_s")), ">= 1"),
        ):
            out.append({"name": name, "value": value, "goal": goal,
                        "met": None if value is None else (value >= 1 if goal == ">= 1" else value <= 1)})
    if pipeline:
        cores = pipeline["cores"]
        model = args.models[0]
        for size in args.pipeline_sizes:
            ours = next((r for r in pipeline["rows"] if r["image_size"] == size and r["pipeline"].startswith("effnet")), None)
            step = (results.get(("effnet", model, args.precisions[-1], args.gpu, size, None)) or [])
            consumed = median_of([r for r in step if r], "train", "img_per_s")
            value = ratio(ours and ours["images_per_s_per_core"], consumed and consumed / cores)
            out.append({"name": f"input pipeline / {model} {args.precisions[-1]} training, per core, {size} px",
                        "value": value, "goal": ">= 2", "met": None if value is None else value >= 2,
                        "pipeline_img_per_s_per_core": ours and ours["images_per_s_per_core"],
                        "model_img_per_s_per_core": consumed and consumed / cores})
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

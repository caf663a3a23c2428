"""``effnet eval``: a training run's checkpoint evaluated on raw and EMA weights.

:func:`evaluate_run` reports loss, top-1, top-5, throughput and true per-batch latency percentiles
(p50/p90/p95/p99) with :class:`effnet.metrics.Evaluator`. The step is traced before timing
(:meth:`~effnet.metrics.Evaluator.warm_up`), so latencies are those of steady-state batches;
throughput is examples over the wall time of the whole pass (input pipeline included). Results go
to the run's loggers (``dllogger.filename``; the CLI binds it to ``eval_log.json``) and, on the
writing process, to ``<model_dir>/eval_report.json``.

Per weights it also reports what the model gets wrong (:mod:`effnet.perclass`): precision, recall,
F1 and support per class, macro/weighted averages, balanced accuracy, the top confused pairs and the
expected calibration error, from a confusion matrix and calibration bins summed over every process;
on a writable run folder the matrix as CSV and PNG and a reliability diagram (runfolder.EVAL_FILES).
``show_errors=N`` draws the N most confident mistakes of all processes as a contact sheet.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from effnet import data, perclass, registry, runfolder
from effnet.assembly import eval_batch
from effnet import precision as precision_mod
from effnet.errors import UserError
from effnet.files import is_writable, undone_on_failure, write_json_atomic
from effnet.loggers import configured_names, make_loggers
from effnet.memory import planned_micro_batch
from effnet.metrics import QUANTILES, Evaluator, gather_mistakes, latency_summary

REPORT_NAME = runfolder.EVAL_REPORT


def result_dict(result, class_names=None) -> dict:
    """An :class:`EvalResult` as the report's JSON, with per-batch latency percentiles, and with the
    per-class figures and calibration when the result has a confusion matrix."""
    ms = [1000.0 * s for s in result.batch_seconds]
    out = {
        "loss": float(result.loss), "top1": float(result.top1), "top5": float(result.top5),
        "count": int(result.count), "seconds": float(result.seconds), "img_per_s": float(result.images_per_second),
        "batches": len(ms),
        "latency_ms": {k: v for k, v in latency_summary(ms).items() if k not in ("min", "max")},
    }
    if result.confusion is not None:
        out["per_class"] = perclass.per_class_report(result.confusion, class_names)
        nonzero = np.argwhere(result.confusion > 0)
        # sparse: at most one entry per example whatever the number of classes
        out["per_class"]["confusion"] = [[int(t), int(p), int(result.confusion[t, p])] for t, p in nonzero]
        out["calibration"] = perclass.calibration_report(result.calibration)
    return out


def _logger_names(names):
    """The run's metric sinks without ``stdout``, unless given explicitly.

    ``effnet eval`` prints its own table, and ``--json`` output must stay parseable.
    """
    if names is not None:
        return list(names)
    return [n for n in configured_names() if n != "stdout"]


def evaluate_run(cfg, checkpoint: str = "latest", weights: str = "both", split: str = "validation",
                 report_name: str | None = REPORT_NAME, logger_names=None, show_errors: int = 0) -> dict:
    """Evaluate ``cfg.model_dir``'s checkpoint; returns the report (also written as ``report_name``).

    ``weights``: ``both`` (raw, then EMA when the checkpoint has it), ``raw`` or ``ema``.
    ``logger_names``: metric sinks by registered name (default: the configured ones but ``stdout``).
    ``show_errors``: draw the N most confident mistakes per weights (``eval_errors_<weights>.png``).
    """
    if weights not in ("both", "raw", "ema"):
        raise UserError(f"--weights {weights!r} is not one of both, raw, ema")
    # at most 200: a readable sheet, and what several processes gather through one sum stays small
    if not isinstance(show_errors, int) or isinstance(show_errors, bool) or not 0 <= show_errors <= 200:
        raise UserError(f"--show-errors {show_errors!r} is not a number of mistakes from 0 to 200")
    backend = registry.get("backend", cfg.plugin("backend"))()
    backend.setup()
    info = runfolder.select_checkpoint(cfg.model_dir, checkpoint)
    runfolder.check_architecture(info, cfg.model)
    source = registry.get("dataset", cfg.dataset)()
    num_classes = int(source.info().num_classes)
    runfolder.check_architecture(info, cfg.model, num_classes)
    ema_present = runfolder.resolve_weights("auto", info)
    passes = {"both": ["raw", "ema"] if ema_present else ["raw"], "raw": ["raw"], "ema": ["ema"]}[weights]
    if "ema" in passes and not ema_present:
        raise UserError(f"checkpoint {info.path} has no EMA weights (the run had train.ema_decay = None); use --weights raw")

    run = runfolder.load_run(cfg, info, weights=passes[0], scope=backend.scope())
    batch = eval_batch(cfg, planned_micro_batch(cfg.model_dir))  # as the training run's evaluation
    shard = backend.shard_info()

    model_dir = Path(cfg.model_dir)
    # A run folder someone shared read-only is still evaluated; then nothing is written into it.
    writes = backend.is_writer and is_writable(model_dir)
    with undone_on_failure(model_dir, skip=("checkpoints",)) if writes else contextlib.nullcontext():
        return _evaluate(cfg, backend, info, source, num_classes, passes, run, split, batch, shard, model_dir, writes,
                         report_name, logger_names, show_errors)


def _class_names(num_classes, model_dir, source) -> list[str]:
    names = runfolder.class_names_for(num_classes, model_dir=model_dir, dataset_names=lambda: source.info().class_names)
    return list(names) if names else [str(i) for i in range(num_classes)]


def _write_files(report: dict, result, which: str, names, model_dir: Path, size: int, mistakes) -> dict:
    """The per-weights files next to the report; returns their paths by kind (PNGs need matplotlib)."""
    files = {}
    template = {k: model_dir / v.format(weights=which) for k, v in runfolder.EVAL_FILES.items()}
    files["confusion_csv"] = perclass.write_confusion_csv(result.confusion, names, template["confusion_csv"])
    files["confusion_png"] = perclass.plot_confusion(result.confusion, names, template["confusion_png"], title=which)
    files["reliability_png"] = perclass.plot_reliability(report["calibration"], template["reliability_png"],
                                                         title=which)
    if mistakes is not None:
        files["errors_png"] = perclass.plot_mistakes(mistakes, names, template["errors_png"], title=which)
    return {k: str(v) for k, v in files.items() if v is not None}


def _evaluate(cfg, backend, info, source, num_classes, passes, run, split, batch, shard, model_dir, writes,
              report_name, logger_names, show_errors) -> dict:
    model, size = run.model, run.image_size
    xla = precision_mod.default_xla(cfg.xla)
    log = make_loggers(model_dir=model_dir, is_writer=writes, names=_logger_names(logger_names))
    params = {"mode": "eval", "model": cfg.model, "dataset": cfg.dataset, "split": split,
              "checkpoint": str(info.path), "checkpoint_step": info.step, "image_size": size, "batch_size": batch,
              "precision": cfg.precision, "xla": xla, "processes": backend.size, "weights": ",".join(passes)}
    report = {**params, "model_dir": str(model_dir), "num_classes": num_classes, "raw": None, "ema": None,
              "report_file": str(model_dir / report_name) if writes and report_name else None}
    try:
        log.log_params(params)
        for metric, unit in (("loss", None), ("top1", "%"), ("top5", "%"), ("img_per_s", "images/s"), ("latency", "ms")):
            log.log_metadata(f"eval_{metric}", {"unit": unit, "format": ":.4f"})
        names = _class_names(num_classes, model_dir, source)
        evaluator = Evaluator(model, backend, jit_compile=xla, freeze=True, num_classes=num_classes,
                              keep_errors=show_errors)
        started = time.perf_counter()
        evaluator.warm_up((size, size, 3), [batch, batch - 1])
        report["warmup_seconds"] = time.perf_counter() - started
        final: dict[str, float] = {}
        for which in passes:
            if which != passes[0]:
                runfolder.load_checkpoint_weights(model, info, cfg.model, use_ema=which == "ema")
                evaluator.refresh()  # the frozen forward pass holds the previous weights
                evaluator.warm_up((size, size, 3), [batch, batch - 1])
            ds = data.eval_dataset(source, image_size=size, batch_size=batch, split=split, shard=shard)
            with data.translated():
                result = evaluator(ds, progress=lambda d, t, m, w=which: log.progress(d, t, m, desc=f"eval {w}"))
            report[which] = result_dict(result, names)
            mistakes = None
            if show_errors:
                mistakes = gather_mistakes(backend, result.errors, show_errors, (size, size, 3))
                report[which]["errors"] = [
                    {"true": m.label, "true_name": names[m.label], "predicted": m.predicted,
                     "predicted_name": names[m.predicted], "confidence": m.confidence,
                     "true_probability": m.label_probability} for m in mistakes]
            if writes:
                report[which]["files"] = _write_files(report[which], result, which, names, model_dir, size, mistakes)
            prefix = "eval_" if which == "raw" else "eval_ema_"
            values = report[which]
            final.update({f"{prefix}{k}": values[k] for k in ("loss", "top1", "top5", "count", "img_per_s")})
            final.update({f"{prefix}latency_{q}_ms": v for q, v in values["latency_ms"].items()})
            figures = {"balanced_accuracy": values["per_class"]["balanced_accuracy"],
                       "macro_f1": values["per_class"]["macro_f1"], "ece": values["calibration"]["ece"]}
            final.update({f"{prefix}{k}": v for k, v in figures.items() if v is not None})
        log.log_metrics((), {**final, "global_step": info.step}, kind="eval")
    finally:
        log.close()
    if report["report_file"]:
        write_json_atomic(report["report_file"], report)
    return report


def summary_lines(report: dict) -> list[str]:
    """The eval report as a small table."""
    header = ("weights", "loss", "top-1", "top-5", "images", "img/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms")
    rows = [header]
    for which in ("raw", "ema"):
        r = report.get(which)
        if not r:
            continue
        lat = r["latency_ms"]
        rows.append((which, f"{r['loss']:.4f}", f"{100 * r['top1']:.2f}%", f"{100 * r['top5']:.2f}%", str(r["count"]),
                     f"{r['img_per_s']:.1f}", *(f"{lat[f'p{q}']:.2f}" for q in QUANTILES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{report['model']} on {report['dataset']}/{report['split']}, {Path(report['checkpoint']).name} "
             f"(step {report['checkpoint_step']}), {report['image_size']} px, batch {report['batch_size']}, "
             f"{report['precision']}, XLA {'on' if report['xla'] else 'off'}, {report['processes']} process(es)"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    for which in ("raw", "ema"):
        r = report.get(which)
        if r and r.get("per_class"):
            lines += per_class_lines(which, r)
    return lines


def _pct(value) -> str:
    return "undefined" if value is None else f"{100 * value:.2f}%"


def per_class_lines(which: str, r: dict, worst: int = 3, confusions: int = 3) -> list[str]:
    """A few lines per weights: balanced accuracy, macro F1, ECE, the worst classes, the top confusions."""
    pc, cal = r["per_class"], r["calibration"]
    f1 = "undefined" if pc["macro_f1"] is None else f"{pc['macro_f1']:.4f}"
    lines = [f"{which}: balanced accuracy {_pct(pc['balanced_accuracy'])}, macro F1 {f1}, ECE {_pct(cal['ece'])}"]
    rows = perclass.worst_classes(pc, worst)
    if rows:
        lines.append("  lowest recall: " + "; ".join(
            f"{c['name']} {_pct(c['recall'])} of {c['support']} (precision {_pct(c['precision'])})" for c in rows))
    if pc["never_predicted"]:
        shown = pc["never_predicted"][:5]
        more = len(pc["never_predicted"]) - len(shown)
        lines.append("  never predicted: " + ", ".join(shown) + (f" and {more} more" if more else ""))
    pairs = pc["top_confusions"][:confusions]
    lines.append("  top confusions: " + ("; ".join(
        f"{p['true_name']} -> {p['predicted_name']} {p['count']} ({100 * p['share']:.0f}% of {p['true_name']})"
        for p in pairs) if pairs else "none"))
    return lines


__all__ = ["REPORT_NAME", "evaluate_run", "per_class_lines", "result_dict", "summary_lines"]

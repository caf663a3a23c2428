"""Compare training runs: one table of what differs and how well each did, one picture of their curves.

For each run folder this reads (as data, never as code):

- ``operative_config.gin``: every binding the run used, parsed by :mod:`effnet.gintext` (``import``
  lines are skipped, never executed);
- ``report.json``: the final numbers (raw and EMA validation top-1/top-5 and loss, steps);
- ``log.json``: dllogger lines: the validation curve, training img/s, wall time summed over every
  attempt (a resumed run's report only times its last attempt);
- the sweep's ``sweep.json`` in the parent folder, when there is one: the variant's bindings, and
  whether a run failed (with its error line) or is running.

:func:`compare` keeps as columns exactly the bindings whose values differ between the runs (a binding
that only some runs have, such as ``progressive.*`` when only some runs are progressive, follows from
another column and is left out). Runs that differ only in ``train.seed`` are one variant: their
rows merge into the mean and spread over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from effnet.errors import UserError
from effnet.layout import LOG
from effnet.files import read_json_dict
from effnet.paths import is_regular, open_input, what_is
from effnet.gintext import parse_bindings, short_labels
from effnet.runfolder import OPERATIVE_CONFIG, REPORT

__all__ = ["FORMATS", "METRICS", "PER_CLASS_METRICS", "PLOT_METRICS", "Comparison", "Run", "collect", "compare", "pid_alive", "report_complete", "plot", "read_run", "render"]

SUMMARY = "sweep.json"  # written by effnet sweep in the folder that holds its runs
RUN_DIR_KEYS = {"MODEL_DIR", "train.model_dir"}  # every run has its own folder: never a column
SEED_KEY = "train.seed"
FORMATS = ("table", "csv", "json", "markdown")
MAX_CONFIG_BYTES = 4 << 20

# (key in the run's metrics, column name, kind) in table order
METRICS = [
    ("val_top1", "top1", "pct"), ("val_top5", "top5", "pct"),
    ("val_ema_top1", "ema_top1", "pct"), ("val_ema_top5", "ema_top5", "pct"),
    ("val_loss", "loss", "num"), ("val_ema_loss", "ema_loss", "num"),
    ("global_step", "steps", "int"), ("wall_seconds", "wall_s", "sec"), ("img_per_s", "img/s", "sec"),
]
# shown when a run has them (training evaluations since per-class figures: balanced accuracy, macro F1)
PER_CLASS_METRICS = [
    ("val_balanced_accuracy", "bal_acc", "pct"), ("val_macro_f1", "macro_f1", "num"),
    ("val_ema_balanced_accuracy", "ema_bal_acc", "pct"), ("val_ema_macro_f1", "ema_macro_f1", "num"),
]
CURVE_METRICS = ("val_top1", "val_top5", "val_ema_top1", "val_ema_top5", "val_loss", "val_ema_loss")
PLOT_METRICS = ("top1", *CURVE_METRICS)  # 'top1': the EMA weights' top-1 where a run keeps an EMA, else the raw


@dataclass
class Run:
    folder: Path
    name: str
    status: str  # done | failed | running | incomplete | pending | invalid
    error: str | None = None
    bindings: dict[str, str] = field(default_factory=dict)
    full_config: bool = False  # bindings come from an operative config (else only the sweep's variant)
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)  # evaluations: {'epoch', 'global_step', 'val_top1', ...}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _read_log(path: Path) -> tuple[list[dict], list[float], float | None]:
    """(evaluation points, training img/s windows, wall seconds over all attempts) from dllogger lines."""
    evals: dict[int, dict] = {}
    rates: list[float] = []
    sessions: list[float] = []
    try:  # a FIFO or a device here never blocks us (read_run names it as invalid)
        f = open_input(path, "log", "r", encoding="utf-8", errors="replace")
    except (OSError, UserError):
        return [], [], None
    with f:
        for line in f:
            if not line.startswith("DLLL "):
                continue
            try:
                record = json.loads(line[5:])
            except ValueError:
                continue  # the half-written last line of a killed run
            if not isinstance(record, dict):
                continue
            try:
                elapsed = float(record.get("elapsedtime", "nan"))
            except (TypeError, ValueError):
                elapsed = math.nan
            if record.get("step") == "PARAMETER":
                sessions.append(0.0)
            elif sessions and math.isfinite(elapsed):
                sessions[-1] = max(sessions[-1], elapsed)
            data = record.get("data")
            step = record.get("step")
            if record.get("type") != "LOG" or not isinstance(data, dict) or not isinstance(step, list):
                continue
            rate = _number(data.get("img_per_s"))
            if rate is not None:
                rates.append(rate)
            if len(step) == 1 and any(k in data for k in CURVE_METRICS):
                point = {k: _number(data.get(k)) for k in CURVE_METRICS if _number(data.get(k)) is not None}
                point["epoch"] = _number(step[0])
                point["global_step"] = _number(data.get("global_step"))
                evals[point["global_step"] if point["global_step"] is not None else len(evals)] = point  # a resumed run may repeat one
    curve = sorted(evals.values(), key=lambda p: (p["global_step"] or 0, p["epoch"] or 0))
    return curve, rates, (sum(sessions) if sessions else None)


def report_complete(folder: str | Path) -> bool:
    """A run is finished when its report.json parses and counts every planned step."""
    report = read_json_dict(Path(folder) / REPORT)
    if report is None or not isinstance(report.get("final"), dict):
        return False
    step = report["final"].get("global_step")
    if not isinstance(step, int) or isinstance(step, bool):
        return False
    params = report.get("parameters")
    total = params.get("total_steps") if isinstance(params, dict) else None
    return not isinstance(total, int) or step >= total


def pid_alive(pid, folder: Path) -> bool:
    """Is ``pid`` a live (not zombie) process working on ``folder``? (Linux /proc; elsewhere: it exists.)"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return False
        return state != "Z" and str(folder) in cmdline
    return True


def _sweep_record(folder: Path) -> dict | None:
    summary = read_json_dict(folder.parent / SUMMARY)
    if summary is None:
        return None
    runs = summary.get("runs") if isinstance(summary, dict) else None
    for record in runs if isinstance(runs, list) else []:
        if isinstance(record, dict) and record.get("name") == folder.name:
            return record
    return None


def read_run(folder: str | Path, record: dict | None = None) -> Run:
    """Everything compare needs from one run folder (``record``: its sweep.json entry, looked up if None)."""
    folder = Path(folder)
    record = record if record is not None else _sweep_record(folder)
    run = Run(folder=folder, name=folder.name, status="pending")
    if record and isinstance(record.get("bindings"), dict):
        run.bindings = {str(k): str(v) for k, v in record["bindings"].items()}
        if record.get("seed") is not None:
            run.bindings[SEED_KEY] = str(record["seed"])
    config = folder / OPERATIVE_CONFIG
    for own in (config, folder / LOG, folder / REPORT):  # a FIFO, device or link loop: named, never read
        if os.path.lexists(own) and not is_regular(own):
            return Run(folder, folder.name, "invalid", f"{own} is {what_is(own)}, not a regular file")
    if config.is_file():
        try:
            if config.stat().st_size > MAX_CONFIG_BYTES:
                raise UserError(f"{config}: {config.stat().st_size} bytes is too large for an operative config")
            text = config.read_text(encoding="utf-8")
            bindings = {b.key: b.value for b in parse_bindings(text, str(config))}
        except UnicodeDecodeError:
            return Run(folder, folder.name, "invalid", f"{config}: not a UTF-8 text file")
        except UserError as exc:
            return Run(folder, folder.name, "invalid", str(exc))
        run.bindings = {**run.bindings, **bindings}
        run.full_config = True
    log_name = _unquote(run.bindings.get("dllogger.filename", repr(LOG))) if run.full_config else LOG
    if "/" in log_name or "\\" in log_name or log_name in ("", ".", ".."):
        log_name = LOG  # only a file inside the run folder is read
    run.curve, rates, wall = _read_log(folder / log_name)
    if run.curve:
        per_class = {key for key, _, _ in PER_CLASS_METRICS}
        run.metrics.update({k: v for k, v in run.curve[-1].items()
                            if k in CURVE_METRICS or k in per_class or k == "global_step"})
    report_path = folder / REPORT
    report_ok = False
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
            final = report["final"]
            if not isinstance(final, dict):
                raise TypeError
        except ValueError as exc:
            return Run(folder, folder.name, "invalid", f"{report_path}: not valid JSON ({exc})", run.bindings, run.full_config)
        except (OSError, KeyError, TypeError):
            return Run(folder, folder.name, "invalid", f"{report_path}: no 'final' numbers in it", run.bindings, run.full_config)
        report_ok = report_complete(folder)
        run.metrics.update({k: _number(v) for k, v in final.items() if _number(v) is not None})
        if wall is None and _number(final.get("seconds")) is not None:
            wall = final["seconds"]
    if rates:
        run.metrics["img_per_s"] = statistics.median(rates)
    if wall is not None:
        run.metrics["wall_seconds"] = wall
    started = run.full_config or bool(run.curve) or (folder / "checkpoints").is_dir()
    if report_ok:
        run.status = "done"
    elif record and record.get("status") == "pruned":  # stopped by a search's pruner (effnet.search)
        run.status = "pruned"
    elif record and record.get("status") == "failed":
        run.status, run.error = "failed", str(record.get("error") or "failed")
    elif record and record.get("status") == "running" and pid_alive(record.get("pid"), folder):
        run.status = "running"
    elif started:
        run.status = "incomplete"  # stopped (it resumes when trained again), or training outside a sweep
    elif not record:
        raise UserError(f"{folder}: not an effnet run folder (no {OPERATIVE_CONFIG}, {REPORT} or {LOG}); "
                        f"pass run folders or a sweep folder")
    return run


def collect(paths: Sequence[str | Path]) -> list[Run]:
    """Run folders from the arguments; a sweep folder (with sweep.json) stands for all its runs, in sweep order."""
    if not paths:
        raise UserError("no runs to compare: pass run folders, or a sweep folder (effnet sweep --model-dir)")
    runs: list[Run] = []
    seen: set[Path] = set()
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise UserError(f"{path}: no such folder; pass run folders (e.g. runs/sweep/*) or a sweep folder")
        if not path.is_dir():
            raise UserError(f"{path}: not a folder; pass run folders or a sweep folder (the one with {SUMMARY})")
        summary_path = path / SUMMARY
        if summary_path.is_file() and not (path / OPERATIVE_CONFIG).exists():
            try:
                summary = json.loads(summary_path.read_text())
                records = summary["runs"]
                if not isinstance(records, list):
                    raise TypeError
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"{summary_path}: not a sweep summary (no 'runs' list); pass the run folders instead") from None
            for record in records:
                if not isinstance(record, dict) or not isinstance(record.get("name"), str) or "/" in record["name"] \
                        or record["name"] in ("", ".", ".."):
                    raise UserError(f"{summary_path}: a run entry without a valid 'name'; pass the run folders instead")
                folder = path / record["name"]
                if folder.resolve() not in seen:
                    seen.add(folder.resolve())
                    runs.append(read_run(folder, record))
            continue
        if path.resolve() not in seen:
            seen.add(path.resolve())
            runs.append(read_run(path))
    return runs


# --------------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Row:
    label: str
    runs: list[Run]
    bindings: dict[str, str]
    stats: dict[str, tuple[float, float | None, int]]  # metric -> (mean, std or None, n)

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        if len(self.runs) == 1:
            return self.runs[0].status
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def errors(self) -> list[str]:
        return [f"{r.name}: {r.error}" for r in self.runs if r.error]


@dataclass
class Comparison:
    runs: list[Run]
    columns: list[str]  # the bindings that differ
    rows: list[Row]
    grouped: bool  # rows merge several seeds

    def label(self, run: Run) -> str:
        """What differs, for a legend: 'ema_decay=None, stage_schedule=single'."""
        if not self.columns:
            return run.name
        labels = short_labels(self.columns)
        return ", ".join(f"{labels[c]}={_unquote(run.bindings.get(c, '?'))}" for c in self.columns)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def _differing(runs: Sequence[Run]) -> list[str]:
    full = [r for r in runs if r.full_config]
    keys = sorted({k for r in runs for k in r.bindings} - RUN_DIR_KEYS)
    columns = []
    for key in keys:
        if any(key not in r.bindings for r in full):
            continue  # only some runs have it: it follows from another binding
        if len({r.bindings[key] for r in runs if key in r.bindings}) > 1:
            columns.append(key)
    return [c for c in columns if c != SEED_KEY] + [c for c in columns if c == SEED_KEY]


def _stats(runs: Sequence[Run]) -> dict[str, tuple[float, float | None, int]]:
    done = [r for r in runs if r.status == "done"]
    source = done if done else (runs if len(runs) == 1 else [])  # a single unfinished run shows its latest numbers
    out = {}
    for key, _, _ in [*METRICS, *PER_CLASS_METRICS]:
        values = [r.metrics[key] for r in source if key in r.metrics]
        if values:
            out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))
    return out


def compare(runs: Sequence[Run]) -> Comparison:
    columns = _differing(runs)
    variant_columns = [c for c in columns if c != SEED_KEY]
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.bindings.get(c, "?") for c in variant_columns), []).append(run)
    grouped = SEED_KEY in columns and any(len(g) > 1 for g in groups.values())
    rows = []
    if grouped:
        for key, members in groups.items():
            names = {re.sub(r",?seed=\d+$", "", r.name) for r in members}
            label = names.pop() if len(names) == 1 else " + ".join(r.name for r in members)
            bindings = dict(zip(variant_columns, key))
            bindings[SEED_KEY] = ",".join(r.bindings.get(SEED_KEY, "?") for r in members)
            rows.append(Row(label or "base", members, bindings, _stats(members)))
    else:
        for run in runs:
            rows.append(Row(run.name, [run], {c: run.bindings.get(c, "?") for c in columns}, _stats([run])))
    return Comparison(list(runs), columns, rows, grouped)


# --------------------------------------------------------------------------------------------------
# Output


def _fmt(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{value:.0f}"
    if kind == "sec":
        return f"{value:.1f}"
    return f"{value:.4f}"


def _cell(stat, kind: str) -> str:
    if stat is None:
        return "-"
    mean, std, _ = stat
    text = _fmt(mean, kind)
    return f"{text} ± {_fmt(std, kind)}" if std is not None else text


def _shown(comparison: Comparison) -> list[tuple[str, str, str]]:
    """The metric columns: METRICS, then the per-class figures some row has."""
    return [*METRICS, *(m for m in PER_CLASS_METRICS if any(m[0] in row.stats for row in comparison.rows))]


def _headers(comparison: Comparison) -> list[str]:
    return ["run", *comparison.columns, "status",
            *(name + (" %" if kind == "pct" else "") for _, name, kind in _shown(comparison))]


def _table_rows(comparison: Comparison) -> list[list[str]]:
    shown = _shown(comparison)
    return [[row.label, *(row.bindings.get(c, "?") for c in comparison.columns), row.status,
             *(_cell(row.stats.get(key), kind) for key, _, kind in shown)] for row in comparison.rows]


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison as an aligned table, CSV, JSON or a Markdown table."""
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(_as_json(comparison), indent=2) + "\n"
    if fmt == "csv":
        return _as_csv(comparison)
    headers, rows = _headers(comparison), _table_rows(comparison)
    notes = [f"{e}" for row in comparison.rows for e in row.errors]
    if comparison.grouped:
        notes.insert(0, "numbers are mean ± sample standard deviation over the finished seeds")
    if fmt == "markdown":
        def esc(text):
            return str(text).replace("|", "\\|")
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        lines += [""] + [f"- {esc(n)}" for n in notes] if notes else []
        return "\n".join(lines) + "\n"
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _as_json(comparison: Comparison) -> dict:
    def run_json(r: Run) -> dict:
        return {"name": r.name, "folder": str(r.folder), "status": r.status, "error": r.error,
                "bindings": {c: r.bindings.get(c) for c in comparison.columns},
                "metrics": r.metrics, "evaluations": len(r.curve)}

    return {
        "columns": comparison.columns,
        "grouped": comparison.grouped,
        "rows": [{"label": row.label, "status": row.status, "bindings": row.bindings,
                  "metrics": {key: {"mean": s[0], "std": s[1], "n": s[2]} for key, s in row.stats.items()},
                  "runs": [r.name for r in row.runs], "errors": row.errors} for row in comparison.rows],
        "runs": [run_json(r) for r in comparison.runs],
    }


def _as_csv(comparison: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    metric_cols, shown = [], _shown(comparison)
    for key, _, _ in shown:
        metric_cols += [key] + ([f"{key}_std"] if comparison.grouped else [])
    writer.writerow(["run", *comparison.columns, "status", *metric_cols, *(["n"] if comparison.grouped else []), "error"])
    for row in comparison.rows:
        values = []
        for key, _, _ in shown:
            stat = row.stats.get(key)
            values.append("" if stat is None else repr(stat[0]))
            if comparison.grouped:
                values.append("" if stat is None or stat[1] is None else repr(stat[1]))
        n = [sum(r.status == "done" for r in row.runs)] if comparison.grouped else []
        writer.writerow([row.label, *(row.bindings.get(c, "?") for c in comparison.columns), row.status, *values, *n,
                         "; ".join(row.errors)])
    return out.getvalue()


def _curve_key(run: Run, metric: str) -> str | None:
    """The log key drawn for ``metric``; 'top1' is the EMA weights' top-1 when the run keeps an EMA, else the raw one."""
    keys = ("val_ema_top1", "val_top1") if metric == "top1" else (metric,)
    return next((k for k in keys if any(k in p for p in run.curve)), None)


def plot(comparison: Comparison, path: str | Path, metric: str = "top1") -> list[tuple[str, int]]:
    """Overlay every run's validation curve (``metric`` against epochs) in one PNG.

    ``metric`` is one of :data:`PLOT_METRICS`; the default 'top1' draws the top-1 of the weights a
    run would be used with: its EMA when it keeps one (marked "EMA" in the legend), else the raw
    weights. Returns what it drew: ``(legend label, number of points)`` per curve, one per run with
    at least one evaluation. Needs matplotlib (``pip install 'effnet[plot]'``).
    """
    if metric not in PLOT_METRICS:
        raise UserError(f"plot metric {metric!r} is not one of {', '.join(PLOT_METRICS)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UserError("drawing the curves needs matplotlib: pip install 'effnet[plot]' (or leave out --plot)") from None
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn: list[tuple[str, int]] = []
    missing: list[str] = []
    colours: dict[tuple, str] = {}
    for run in comparison.runs:
        key = _curve_key(run, metric)
        points = [(p["epoch"], p[key]) for p in run.curve if key in p and p.get("epoch") is not None] if key else []
        if not points:
            missing.append(f"{run.name} ({run.status})")
            continue
        label = comparison.label(run)
        if metric == "top1" and key == "val_ema_top1":
            label += " [EMA]"
        if run.status != "done":
            label += f" ({run.status})"
        if comparison.grouped:  # one colour per variant, one curve per seed
            group = tuple(run.bindings.get(c) for c in comparison.columns if c != SEED_KEY)
            colour = colours.setdefault(group, f"C{len(colours) % 10}")
        else:
            colour = f"C{len(drawn) % 10}"
        xs, ys = zip(*points)
        scale = 100 if "top" in key else 1
        ax.plot(xs, [scale * y for y in ys], marker="o", color=colour, label=label,
                linestyle="-" if run.status == "done" else "--")
        drawn.append((label, len(points)))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if metric == "top1":
        ax.set_ylabel("validation top-1 (%), EMA weights where kept")
    else:
        ax.set_ylabel(metric.replace("val_", "validation ").replace("_", " ") + (" (%)" if "top" in metric else ""))
    title = "what differs: " + (", ".join(comparison.columns) if comparison.columns else "nothing")
    if missing:
        title += f"\nno evaluation yet: {', '.join(missing)}"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return drawn

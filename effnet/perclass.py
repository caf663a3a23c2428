"""What a classifier gets wrong: per-class figures, confusions and calibration from summed counts.

Everything here is computed from two arrays that are plain sums over examples, so they can be
summed over batches and processes before any division (every example counts once):

- the confusion matrix ``C[true, predicted]`` (predicted = arg max of the logits, the first on a tie);
- the calibration bins ``B[bin] = (examples, sum of confidences, correct)`` where the confidence is
  the largest softmax probability and ``bin = min(floor(confidence * bins), bins - 1)``.

A figure whose denominator is zero (the precision of a class that is never predicted, the recall of
a class with no example) is undefined: ``None`` in the report (``null`` in JSON), never NaN, and it
is left out of the macro averages' denominators (each average says how many classes it covers).
The PNGs need matplotlib (``pip install 'effnet[plot]'``); without it they are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effnet.files import atomic_path

#: Equal-width confidence bins of the expected calibration error (the usual 15 of Guo et al. 2017).
CALIBRATION_BINS = 15
#: The confusion-matrix PNG shows every class up to this many; beyond, the most-confused block.
MAX_PLOTTED_CLASSES = 30


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def per_class_report(confusion, class_names=None, top_pairs: int = 10) -> dict:
    """Precision, recall, F1 and support per class, their averages, balanced accuracy, top confusions.

    ``confusion[i, j]`` counts examples of true class ``i`` predicted as ``j``.
    """
    c = np.asarray(confusion, np.float64)
    n = c.shape[0]
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    support, predicted, hits = c.sum(axis=1), c.sum(axis=0), np.diag(c)
    total = float(c.sum())
    classes = []
    for i in range(n):
        precision, recall = _ratio(hits[i], predicted[i]), _ratio(hits[i], support[i])
        if precision is None or recall is None:
            f1 = None if (precision is None and recall is None) or support[i] == 0 else 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        classes.append({"class": i, "name": names[i], "precision": precision, "recall": recall, "f1": f1,
                        "support": int(support[i]), "predicted": int(predicted[i])})

    def macro(key):
        values = [k[key] for k in classes if k[key] is not None]
        return (float(np.mean(values)) if values else None), len(values)

    def weighted(key):
        pairs = [(k[key], k["support"]) for k in classes if k[key] is not None and k["support"] > 0]
        den = sum(s for _, s in pairs)
        return float(sum(v * s for v, s in pairs) / den) if den else None

    averages = {}
    for key in ("precision", "recall", "f1"):
        value, covered = macro(key)
        averages[f"macro_{key}"] = value
        averages[f"macro_{key}_classes"] = covered
        averages[f"weighted_{key}"] = weighted(key)
    recall_macro, _ = macro("recall")
    off = c.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top_pairs]
    pairs = []
    for flat in order:
        t, p = divmod(int(flat), n)
        if off[t, p] <= 0:
            break
        pairs.append({"true": t, "true_name": names[t], "predicted": p, "predicted_name": names[p],
                      "count": int(off[t, p]), "share": float(off[t, p] / support[t])})
    return {
        "accuracy": _ratio(hits.sum(), total),
        "balanced_accuracy": recall_macro,  # mean recall over the classes that have examples
        **averages,
        "never_predicted": [names[i] for i in range(n) if predicted[i] == 0 and support[i] > 0],
        "classes": classes,
        "top_confusions": pairs,
    }


def calibration_report(bins) -> dict:
    """Expected calibration error and the reliability diagram's points from summed bins."""
    b = np.asarray(bins, np.float64)
    total = b[:, 0].sum()
    width = 1.0 / len(b)
    points, ece, mce = [], 0.0, 0.0
    for i, (count, conf, correct) in enumerate(b):
        if count <= 0:
            points.append({"low": i * width, "high": (i + 1) * width, "count": 0, "confidence": None, "accuracy": None})
            continue
        gap = abs(correct / count - conf / count)
        ece += count / total * gap
        mce = max(mce, gap)
        points.append({"low": i * width, "high": (i + 1) * width, "count": int(count),
                       "confidence": float(conf / count), "accuracy": float(correct / count)})
    return {"ece": float(ece) if total else None, "mce": float(mce) if total else None,
            "mean_confidence": _ratio(b[:, 1].sum(), total), "accuracy": _ratio(b[:, 2].sum(), total),
            "bins": points}


def worst_classes(report: dict, k: int = 3) -> list[dict]:
    """The ``k`` classes with examples and the lowest recall (ties: the larger support first)."""
    rows = [c for c in report["classes"] if c["support"] > 0]
    return sorted(rows, key=lambda c: (c["recall"], -c["support"], c["class"]))[:k]


def write_confusion_csv(confusion, class_names, path) -> Path:
    """The whole matrix: a header row of predicted names, one row per true class."""
    import csv
    import io

    c = np.asarray(confusion, np.int64)
    names = list(class_names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, c):
        writer.writerow([name, *(int(v) for v in row)])
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())
    return path


def plotted_classes(confusion, limit: int = MAX_PLOTTED_CLASSES) -> list[int]:
    """Which classes the confusion PNG shows: all of them, or a block of ``limit`` around the mistakes.

    Beyond ``limit`` classes the block is filled from the largest off-diagonal cells down, taking
    both classes of each pair, so the biggest confusions are inside the block (not a class whose
    mistakes all went elsewhere); a class without mistakes fills no place. Label order is kept so
    the diagonal stays a diagonal.
    """
    c = np.asarray(confusion, np.float64)
    n = c.shape[0]
    if n <= limit:
        return list(range(n))
    off = c.copy()
    np.fill_diagonal(off, 0)
    chosen: dict[int, None] = {}
    for flat in np.argsort(-off, axis=None, kind="stable"):
        t, p = divmod(int(flat), n)
        if off[t, p] <= 0:
            break
        for k in (t, p):
            if len(chosen) < limit:
                chosen.setdefault(k)
        if len(chosen) >= limit:
            break
    if not chosen:  # no mistake at all: the first classes
        return list(range(limit))
    return sorted(chosen)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, plt, path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def plot_confusion(confusion, class_names, path, title: str = "") -> Path | None:
    """Row-normalised confusion matrix (recall on the diagonal) as a PNG; None without matplotlib.

    Up to :data:`MAX_PLOTTED_CLASSES` classes every class is drawn; beyond, the block of the largest
    confusions (:func:`plotted_classes`; the title says how many of how many). Cells give counts.
    """
    plt = _pyplot()
    if plt is None:
        return None
    c = np.asarray(confusion, np.float64)
    n = c.shape[0]
    keep = plotted_classes(c)
    names = [str(class_names[i]) for i in keep]
    sub = c[np.ix_(keep, keep)]
    support = c.sum(axis=1)[keep][:, None]
    shares = np.divide(sub, support, out=np.zeros_like(sub), where=support > 0)
    k = len(keep)
    side = min(max(4.5, 0.42 * k + 2.5), 16)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    short = [name if len(name) <= 18 else name[:17] + "…" for name in names]
    fontsize = 9 if k <= 15 else 7
    ax.set_xticklabels(short, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(short, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            if sub[i, j] > 0:
                text = f"{int(sub[i, j])}\n{100 * shares[i, j]:.0f}%" if k <= 15 else f"{int(sub[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if k <= 15 else 6,
                        color="white" if shares[i, j] > 0.5 else "black")
    what = f"all {n} classes" if k == n else f"the {k} classes of the largest confusions, of {n}"
    ax.set_title(f"{title + ': ' if title else ''}confusion matrix, {what}\n(colour: share of the true class; "
                 f"numbers: examples{'' if k == n else '; every class in the CSV'})",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_reliability(calibration: dict, path, title: str = "") -> Path | None:
    """Reliability diagram: accuracy against confidence per bin, with the examples per bin below."""
    plt = _pyplot()
    if plt is None:
        return None
    bins = calibration["bins"]
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = bins[0]["high"] - bins[0]["low"]
    lows = [b["low"] for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    conf = [b["confidence"] if b["confidence"] is not None else b["low"] + width / 2 for b in bins]
    ax.bar(lows, acc, width=width, align="edge", edgecolor="black", color="#4c72b0", label="accuracy")
    ax.bar(lows, [c - a if b["count"] else 0 for c, a, b in zip(conf, acc, bins)], bottom=acc, width=width,
           align="edge", edgecolor="#c44e52", color="#c44e52", alpha=0.35, hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ece = calibration["ece"]
    ax.set_title(f"{title + ': ' if title else ''}reliability, ECE {100 * ece:.2f}%" if ece is not None else "reliability",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_n.bar(lows, [b["count"] for b in bins], width=width, align="edge", color="gray", edgecolor="black")
    ax_n.set_xlabel("confidence (largest softmax probability)")
    ax_n.set_ylabel("examples")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_mistakes(mistakes, class_names, path, title: str = "") -> Path | None:
    """A contact sheet of mistakes (most confident first): each image with its true and predicted class."""
    plt = _pyplot()
    if plt is None:
        return None
    n = len(mistakes)
    cols = min(max(n, 1), 6)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.7 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")

    def name(i):
        text = str(class_names[i]) if class_names is not None and i < len(class_names) else str(i)
        return text if len(text) <= 16 else text[:15] + "…"

    for ax, m in zip(axes.ravel(), mistakes):
        ax.imshow(m.image, interpolation="nearest")
        ax.set_title(f"true: {name(m.label)} ({100 * m.label_probability:.0f}%)\npred: {name(m.predicted)} "
                     f"({100 * m.confidence:.0f}%)", fontsize=8, color="#a00000")
    what = f"the {n} most confident mistakes" if n else "no mistakes"
    fig.suptitle(f"{title + ': ' if title else ''}{what}", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


__all__ = ["plot_mistakes", "CALIBRATION_BINS", "MAX_PLOTTED_CLASSES", "calibration_report", "per_class_report", "plot_confusion",
           "plot_reliability", "plotted_classes", "worst_classes", "write_confusion_csv"]

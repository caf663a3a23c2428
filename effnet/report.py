"""The end-of-run summary and the training-curve PNG."""

from __future__ import annotations

from pathlib import Path

from effnet.files import atomic_path


def plot_history(history: list[dict], path: Path) -> Path | None:
    """Loss and top-1 over steps (training windows and evaluations) as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [(h["step"], h["train"]) for h in history if "train" in h]
    evals = [(h["step"], h["eval"]) for h in history if "eval" in h]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([s for s, _ in train], [t["loss"] for _, t in train], label="train loss")
        ax_acc.plot([s for s, _ in train], [100 * t["top1"] for _, t in train], label="train top-1")
    for key, label in (("val_loss", "val loss"), ("val_ema_loss", "val loss (EMA)")):
        points = [(s, e[key]) for s, e in evals if key in e]
        if points:
            ax_loss.plot(*zip(*points), marker="o", label=label)
    for key, label in (("val_top1", "val top-1"), ("val_ema_top1", "val top-1 (EMA)")):
        points = [(s, 100 * e[key]) for s, e in evals if key in e]
        if points:
            ax_acc.plot(*zip(*points), marker="o", label=label)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_xlabel("optimizer step")
    ax_acc.set_ylabel("top-1 accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path


def summary_lines(report: dict) -> list[str]:
    final = report["final"]
    lines = [f"effnet: trained {report['model']} on {report['dataset']} -> {report['model_dir']}"]
    for key in ("global_step", "seconds", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                "val_ema_loss", "val_ema_top1", "val_ema_top5"):
        if key in final:
            value = final[key]
            if "top" in key:
                text = f"{100 * value:.2f}%"
            elif isinstance(value, float):
                text = f"{value:.4f}" if key != "seconds" else f"{value:.1f}"
            else:
                text = str(value)
            lines.append(f"  {key:<14} {text}")
    return lines

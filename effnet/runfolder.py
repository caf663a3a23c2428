"""A training run's folder: its layout, choosing a checkpoint, class names, and loading the run.

Used by training (which writes it) and by eval, predict and export (which read it)::

    <model_dir>/
      operative_config.gin        every value the run used (OPERATIVE_CONFIG)
      labels.txt                  class names, one per line, in label order (LABELS)
      report.json                 the final numbers (REPORT); training_curves.png (CURVES)
      eval_report.json            written by `effnet eval` (EVAL_REPORT), with eval_log.json (EVAL_LOG) and,
                                  per weights (raw, ema): eval_confusion_<w>.csv/.png, eval_reliability_<w>.png
                                  (EVAL_FILES), eval_errors_<w>.png with --show-errors
      checkpoints/ckpt-<step>/    TF checkpoint, meta.json, a copy of the operative config

Typical use, after gin holds the run's config (``effnet.load_run(path)`` does both)::

    run = load_run(TrainConfig(), checkpoint="best", weights="auto")
    run.model, run.num_classes, run.image_size, run.ema
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from effnet import checkpoint as ckpt
from effnet import precision as precision_mod
from effnet.errors import UserError
from effnet.files import take_lock, write_text_atomic
from effnet.paths import check_input, read_text
from effnet.models import build_model, check_image_size
from effnet.weights import load_weights

from effnet.layout import CURVES, EVAL_FILES, EVAL_LOG, EVAL_REPORT, LABELS, LOCK, OPERATIVE_CONFIG, REPORT  # noqa: F401

WEIGHT_CHOICES = ("auto", "ema", "raw")


def run_config_file(model_dir) -> Path:
    """``<model_dir>/operative_config.gin``, or a UserError saying what is missing."""
    if model_dir is None:
        raise UserError("no model dir: pass --model-dir with the folder of a training run")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise UserError(f"model dir {str(folder)!r} does not exist; pass the --model-dir of a training run")
    path = folder / OPERATIVE_CONFIG
    if os.path.lexists(path):  # a FIFO, a device or a link loop is named, never read
        check_input(path, "run config", hint=f"; {OPERATIVE_CONFIG} of a training run is a text file")
    if not path.is_file():
        raise UserError(
            f"model dir {str(folder)!r} has no {OPERATIVE_CONFIG} (looked for {path}); it is not a training run "
            f"folder: pass the --model-dir of a run, or its experiment with --gin"
        )
    return path


def _best_metric(found, preferred: Sequence[str]) -> str | None:
    for metric in preferred:
        if any(metric in c.meta.get("metrics", {}) for c in found):
            return metric
    return None


def select_checkpoint(model_dir, which: str = "latest", prefer_ema: bool = True):
    """The checkpoint ``which`` names: ``latest``, ``best`` (by validation top-1 in meta.json) or a path.

    A path may be a ``ckpt-*`` folder (or its ``ckpt`` prefix / ``ckpt.index``) or another run
    folder (its latest checkpoint). Returns a :class:`effnet.checkpoint.CheckpointInfo`.
    """
    which = str(which or "latest")
    model_dir = Path(model_dir)
    looked_for = f"{ckpt.SUBDIR}/{ckpt.PREFIX}*/ holding {ckpt.TF_PREFIX}.index and {ckpt.META}"
    if which in ("latest", "best"):
        found = ckpt.list_checkpoints(model_dir)
        if not found:
            where = "does not exist" if not model_dir.exists() else "has no complete checkpoint"
            raise UserError(
                f"model dir {str(model_dir)!r} {where} (looked for {model_dir / looked_for}); train first with "
                f"`effnet train --model-dir {model_dir}`, or pass --checkpoint PATH"
            )
        if which == "latest":
            ckpt.note_legacy(found[-1].path)
            return found[-1]
        order = ("val_ema_top1", "val_top1") if prefer_ema else ("val_top1", "val_ema_top1")
        metric = _best_metric(found, order)
        if metric is None:
            raise UserError(
                f"no checkpoint in {model_dir / ckpt.SUBDIR} has a validation metric ({' or '.join(order)}) in its "
                f"{ckpt.META}; the run did not evaluate: use --checkpoint latest"
            )
        scored = [c for c in found if metric in c.meta.get("metrics", {})]
        best = max(scored, key=lambda c: (c.meta["metrics"][metric], c.step))
        ckpt.note_legacy(best.path)
        return best
    path = Path(which)
    if path.name in (ckpt.TF_PREFIX, ckpt.TF_PREFIX + ".index"):
        path = path.parent
    if os.path.lexists(path):  # a FIFO, a device or a symlink loop is named for what it is
        check_input(path, "--checkpoint", folder=None, hint=f"; pass 'latest', 'best', a {ckpt.PREFIX}* folder or a run folder")
    if not path.exists():
        raise UserError(
            f"--checkpoint {which!r} does not exist; pass 'latest', 'best', a {ckpt.PREFIX}* folder or a run folder"
        )
    if path.is_dir() and (path / (ckpt.TF_PREFIX + ".index")).is_file():
        ckpt.verify_checkpoint(path)  # an explicitly named checkpoint: no fallback, one line naming the file
        try:
            meta = json.loads((path / ckpt.META).read_text())
        except (OSError, ValueError):
            meta = {}
        return ckpt.CheckpointInfo(path, int(meta.get("step", _step_from_name(path.name))), meta)
    if path.is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is not None:
            return latest
    raise UserError(
        f"--checkpoint {which!r} is not a checkpoint: looked for {path / (ckpt.TF_PREFIX + '.index')} and for "
        f"{path / looked_for}; pass 'latest', 'best', a {ckpt.PREFIX}* folder or a run folder"
    )


def _step_from_name(name: str) -> int:
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


def num_classes_of(info, model_dir=None) -> int:
    """The number of classes a checkpoint was trained with (meta.json, else labels.txt of the run)."""
    value = info.meta.get("num_classes")
    if isinstance(value, int) and value > 0:
        return value
    for folder in (info.path.parent.parent, Path(model_dir) if model_dir else None):
        if folder is not None and (folder / LABELS).is_file():
            return len(read_labels(folder / LABELS))
    raise UserError(
        f"checkpoint {info.path} has no num_classes in its meta.json and there is no labels.txt next to it; "
        f"pass a checkpoint written by `effnet train`"
    )


def check_architecture(info, model_name: str, num_classes: int | None = None) -> None:
    """UserError when the checkpoint's meta.json names another model (or class count) than the config."""
    found_model = info.meta.get("model")
    found_classes = info.meta.get("num_classes")
    if found_model is not None and found_model != model_name:
        raise UserError(
            f"checkpoint {info.path} holds {found_model} with {found_classes} classes, but the config builds "
            f"{model_name}; use the config that wrote it (its run's operative_config.gin) or another --checkpoint"
        )
    if num_classes is not None and found_classes is not None and int(found_classes) != int(num_classes):
        raise UserError(
            f"checkpoint {info.path} holds {found_model or model_name} with {found_classes} classes, but the "
            f"dataset has {num_classes}; evaluate it on the dataset it was trained for"
        )


def load_checkpoint_weights(model, info, model_name: str, use_ema: bool) -> bool:
    """Load raw or EMA weights of ``info`` into ``model``; returns whether EMA weights were loaded.

    A checkpoint written by another architecture (same model name, other knobs) is a UserError
    that names the first variable that does not fit.
    """
    try:
        result = load_weights(model, info.path, use_ema=use_ema)
    except UserError as exc:
        detail = str(exc).split("; pass --replace-head")[0]
        raise UserError(
            f"{detail}; the checkpoint was written by another architecture than the configured {model_name}: use "
            f"the config that wrote it (its run's operative_config.gin)"
        ) from None
    return bool(result.get("ema"))


def resolve_weights(choice: str, info) -> bool:
    """``auto|ema|raw`` -> whether to load EMA weights (``auto``: EMA when the checkpoint has them)."""
    if choice not in WEIGHT_CHOICES:
        raise UserError(f"--weights {choice!r} is not one of {', '.join(WEIGHT_CHOICES)}")
    if choice == "raw":
        return False
    present = ckpt.has_ema(info.tf_prefix)
    if choice == "ema" and not present:
        raise UserError(f"checkpoint {info.path} has no EMA weights (the run had train.ema_decay = None); use --weights raw")
    return present


def lock_run_folder(model_dir, is_writer: bool = True, notice=None):
    """Make ``model_dir`` (proved writable) and hold its lock for a training run; None on other ranks.

    A second training in the same folder is refused in one line naming the holder (pid, host); a lock
    left by a process that is gone is taken over with a notice on stderr. Release it with
    ``lock.release()``: a folder this created and that stayed empty (a run refused before its first
    file) is removed with it.
    """
    if not is_writer:  # under several processes only the writer (rank 0) holds it
        return None
    import sys

    folder = Path(model_dir)
    created = None if folder.exists() else folder
    ckpt.ensure_writable(folder)

    def refuse(holder: str) -> str:
        return (f"model dir {str(folder)!r} is in use by another effnet train ({holder} holds {folder / LOCK}); "
                f"wait for it to end or pass another --model-dir")

    def took_over(holder: str) -> None:
        message = (f"effnet: took over the lock of {folder} from {holder} (that process is gone; it stopped "
                   f"without letting go)")
        (notice or (lambda text: print(text, file=sys.stderr, flush=True)))(message)

    try:
        return take_lock(folder / LOCK, refuse, took_over, created_folder=created)
    except BaseException:
        if created is not None:
            try:
                created.rmdir()
            except OSError:
                pass
        raise


# --------------------------------------------------------------------------------------------------
# Class names


def read_labels(path) -> list[str]:
    """Class names, one per line (trailing empty lines ignored)."""
    path = Path(path)
    check_input(path, "labels file", hint="; pass a text file with one class name per line")
    try:  # read without blocking: a FIFO or a device is named (check_input, open_input), never read
        lines = read_text(path, "labels file").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"labels file {str(path)!r} cannot be read: {exc}; pass a UTF-8 text file with one class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def write_labels(model_dir, names: Sequence[str]) -> Path:
    return write_text_atomic(Path(model_dir) / LABELS, "".join(f"{name}\n" for name in names))


def class_names_for(num_classes: int, labels_file=None, model_dir=None, dataset_names: Callable[[], list[str] | None] | None = None):
    """Class names: ``labels_file`` > ``<model_dir>/labels.txt`` > ``dataset_names()``; None if none known.

    A file whose line count differs from ``num_classes`` is a UserError.
    """
    candidates = []
    if labels_file:
        candidates.append(Path(labels_file))
    elif model_dir is not None and (Path(model_dir) / LABELS).is_file():
        candidates.append(Path(model_dir) / LABELS)
    for path in candidates:
        names = read_labels(path)
        if len(names) != num_classes:
            raise UserError(
                f"labels file {str(path)!r} has {len(names)} lines but the model has {num_classes} classes; "
                f"give one class name per line, in label order"
            )
        return names
    if dataset_names is not None:
        try:
            names = dataset_names()
        except Exception:  # noqa: BLE001 - names are optional; an unreachable dataset just means indices
            names = None
        if names and len(names) == num_classes:
            return list(names)
    return None


# --------------------------------------------------------------------------------------------------
# Loading a run


@dataclass
class LoadedRun:
    """A model with a run's weights, and what was chosen to get there."""

    cfg: object  # effnet.settings.TrainConfig
    model: object  # keras.Model
    checkpoint: object  # effnet.checkpoint.CheckpointInfo
    num_classes: int
    ema: bool  # EMA weights loaded
    image_size: int  # the run's evaluation image size
    class_names: list[str] | None = None  # filled by effnet.load_run

    def describe(self) -> str:
        return (f"{self.cfg.model} ({self.num_classes} classes) from {self.checkpoint.path} "
                f"(step {self.checkpoint.step}), {'EMA' if self.ema else 'raw'} weights, {self.image_size} px")


def load_run(cfg, checkpoint="latest", weights: str = "auto", precision: str | None = None, scope=None) -> LoadedRun:
    """Parse nothing, build everything: checkpoint choice, architecture checks, model, weights.

    ``cfg`` is the run's :class:`effnet.settings.TrainConfig` (gin must already hold the run's config;
    :func:`effnet.load_run` parses a run folder's operative config first).
    ``checkpoint``: ``latest``, ``best``, a path, or a :class:`effnet.checkpoint.CheckpointInfo`.
    ``precision`` overrides ``cfg.precision`` (e.g. ``"fp32"`` for export).
    """
    if isinstance(checkpoint, ckpt.CheckpointInfo):
        info = checkpoint
    else:
        info = select_checkpoint(cfg.model_dir, checkpoint, prefer_ema=weights != "raw")
    check_architecture(info, cfg.model)
    num_classes = num_classes_of(info, cfg.model_dir)
    use_ema = resolve_weights(weights, info)
    precision_mod.configure(precision or cfg.precision)
    model = build_model(cfg.model, num_classes, scope=scope, fresh_session=True)
    size = cfg.eval_size
    check_image_size(model, size, cfg.model, "train.eval_image_size")
    ema = load_checkpoint_weights(model, info, cfg.model, use_ema)
    return LoadedRun(cfg, model, info, num_classes, ema, size)


__all__ = ["CURVES", "EVAL_LOG", "EVAL_REPORT", "LABELS", "LOCK", "OPERATIVE_CONFIG", "REPORT", "WEIGHT_CHOICES", "LoadedRun",
           "check_architecture", "class_names_for", "load_checkpoint_weights", "load_run", "lock_run_folder",
           "num_classes_of", "read_labels", "resolve_weights", "run_config_file", "select_checkpoint", "write_labels"]

"""Checkpoints that a crash cannot corrupt.

Each checkpoint is a folder ``<model_dir>/checkpoints/ckpt-<step>`` holding a TF checkpoint
(``ckpt.index`` / ``ckpt.data-*``: model, optimizer with loss scale, EMA, counters), ``meta.json``
(step, epoch, stage, data position, metrics, model name) and a copy of the operative gin config.
It is written under a temporary name and renamed when complete, so a folder named ``ckpt-*`` is
always whole: a run killed mid-write leaves only a ``.tmp-*`` folder, removed on the next start.
Retention keeps the last ``keep`` checkpoints plus the best one by a metric.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.errors import UserError

SUBDIR = "checkpoints"
PREFIX = "ckpt-"
TF_PREFIX = "ckpt"
META = "meta.json"

# The checkpoint's object graph: what each group of variables is called inside ``ckpt.index``.
MODEL_VARIABLES = "model_variables"  # every model variable, in model.variables order
EMA = "ema"  # the EMA's averages, in effnet.ema.averaged_variables(model) order


def variable_key(group: str, index: int) -> str:
    """The name of variable ``index`` of ``group`` inside a checkpoint (tf.train.Checkpoint's layout)."""
    path = f"{EMA}/averages" if group == EMA else group
    return f"{path}/{index}/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_objects(model, optimizer=None, ema=None, **extra) -> dict:
    """The objects a training checkpoint tracks, under the names :func:`variable_key` reads back."""
    objects = {MODEL_VARIABLES: list(model.variables), **extra}
    if optimizer is not None:
        objects["optimizer"] = optimizer
    if ema is not None:
        objects[EMA] = ema
    return objects


def has_ema(prefix: str) -> bool:
    """Whether the TF checkpoint at ``prefix`` (``.../ckpt``) holds EMA averages."""
    import tensorflow as tf

    return variable_key(EMA, 0) in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    meta: dict

    @property
    def tf_prefix(self) -> str:
        return str(self.path / TF_PREFIX)


def checkpoint_dir(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / SUBDIR


def list_checkpoints(model_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """Complete checkpoints in ``model_dir``, oldest first."""
    found = []
    root = checkpoint_dir(model_dir)
    if not root.is_dir():
        return []
    for path in root.iterdir():
        if not path.name.startswith(PREFIX) or not path.is_dir():
            continue
        try:
            meta = json.loads((path / META).read_text())
            step = int(meta["step"])
        except (OSError, ValueError, KeyError):
            continue
        if (path / (TF_PREFIX + ".index")).is_file():
            found.append(CheckpointInfo(path, step, meta))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(model_dir: str | os.PathLike) -> CheckpointInfo | None:
    found = list_checkpoints(model_dir)
    return found[-1] if found else None


def ensure_writable(model_dir: str | os.PathLike) -> Path:
    """Create ``model_dir`` and prove a file can be written there (UserError otherwise)."""
    path = Path(model_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".effnet-write-test-{os.getpid()}"
        with open(probe, "w") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise UserError(f"model dir {str(path)!r} is not writable: {exc.strerror or exc}; pass a writable --model-dir") from None
    return path


def _fsync_tree(path: Path) -> None:
    for item in path.rglob("*"):
        if item.is_file():
            with open(item, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Writes, lists, restores and prunes the checkpoints of one run."""

    def __init__(self, model_dir, objects: dict[str, Any], keep: int = 3, best_metric: str | None = None,
                 higher_is_better: bool = True, is_writer: bool = True):
        import tensorflow as tf

        self.model_dir = Path(model_dir)
        self.root = checkpoint_dir(model_dir)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.keep = max(1, int(keep))
        self.best_metric = best_metric
        self.higher_is_better = higher_is_better
        self.is_writer = is_writer

    def remove_partial(self) -> list[Path]:
        """Delete leftovers of writes that were killed (``.tmp-*`` folders)."""
        removed = []
        if self.is_writer and self.root.is_dir():
            for path in self.root.glob(".tmp-*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def save(self, step: int, meta: dict, extra_files: dict[str, str] | None = None) -> Path | None:
        """Write checkpoint ``step`` atomically; returns its folder (None on non-writing ranks)."""
        if not self.is_writer:
            return None
        final = self.root / f"{PREFIX}{step:09d}"
        tmp = self.root / f".tmp-{PREFIX}{step:09d}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            self.checkpoint.write(str(tmp / TF_PREFIX))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            (tmp / META).write_text(json.dumps({**meta, "step": int(step)}, indent=2, sort_keys=True, default=float))
            _fsync_tree(tmp)
            if final.exists():  # same step saved again (e.g. end of run right after a periodic save)
                shutil.rmtree(final)
            os.rename(tmp, final)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            latest = latest_checkpoint(self.model_dir)
            kept = f"the last complete checkpoint {latest.path.name} is intact" if latest else "no earlier checkpoint exists"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("\n")[0]
            # TensorFlow's writer reports errno text inside its own error type.
            space = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}
            full = next((text for code, text in space.items()
                         if (isinstance(exc, OSError) and exc.errno == code) or text in reason), None)
            if full:
                reason, what = full, "free some space or point --model-dir elsewhere"
            else:
                what = "check the model dir's permissions and free space"
            raise UserError(f"could not write checkpoint {final}: {reason}; {kept}; {what}") from exc
        self._prune()
        return final

    def _prune(self) -> None:
        found = list_checkpoints(self.model_dir)
        keep = {c.path for c in found[-self.keep:]}
        scored = [c for c in found if self.best_metric and self.best_metric in c.meta.get("metrics", {})]
        if scored:
            pick = max if self.higher_is_better else min
            keep.add(pick(scored, key=lambda c: c.meta["metrics"][self.best_metric]).path)
        for c in found:
            if c.path not in keep:
                shutil.rmtree(c.path, ignore_errors=True)

    def restore(self, info: CheckpointInfo, what: str = "this run") -> None:
        """Load ``info`` into the tracked objects; a shape mismatch becomes a UserError."""
        import tensorflow as tf

        try:
            status = self.checkpoint.read(info.tf_prefix)
            status.assert_existing_objects_matched()
        except (ValueError, tf.errors.InvalidArgumentError, AssertionError) as exc:
            detail = str(exc).strip().split("\n")[0][:300]
            raise UserError(
                f"checkpoint {info.path} does not fit {what}: {detail}; use a fresh --model-dir or the matching config"
            ) from None
        except tf.errors.OpError as exc:
            raise UserError(f"checkpoint {info.path} cannot be read: {exc.message.splitlines()[0]}; delete it to resume from the one before") from None


__all__ = ["EMA", "MODEL_VARIABLES", "CheckpointInfo", "CheckpointManager", "checkpoint_dir", "checkpoint_objects", "ensure_writable",
           "has_ema", "latest_checkpoint", "list_checkpoints", "variable_key"]

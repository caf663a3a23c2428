"""Checkpoints that a crash cannot corrupt.

Each checkpoint is a folder ``<model_dir>/checkpoints/ckpt-<step>`` holding a TF checkpoint
(``ckpt.index`` / ``ckpt.data-*``: model, optimizer with loss scale, EMA, counters), ``meta.json``
(step, epoch, stage, data position, metrics, model name) and a copy of the operative gin config.
It is written under a temporary name and renamed when complete, so a folder named ``ckpt-*`` is
always whole: a run killed mid-write leaves only a ``.tmp-*`` folder, removed on the next start.
Retention keeps the last ``keep`` checkpoints plus the best one by a metric, and never deletes the
newest valid one.

Integrity: before the rename, ``manifest.json`` records the size and SHA-256 of every file in the
folder. :func:`verify_checkpoint` checks a folder against it (a missing file, a truncated or
overwritten one, a garbled manifest); :func:`list_checkpoints` and :func:`latest_checkpoint` skip
damaged checkpoints with one warning each naming the bad file, so resuming and ``latest`` fall back
to the newest valid checkpoint. A folder without a manifest was written by an effnet from before
manifests: it is used when TensorFlow reads its index and every tensor of its data shards, with one
warning that its sizes and checksums cannot be verified (:func:`note_legacy`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.errors import UserError
from effnet.layout import CHECKPOINTS
from effnet.paths import read_text
from effnet.faults import point
from effnet.files import file_digest

SUBDIR = CHECKPOINTS
PREFIX = "ckpt-"
TF_PREFIX = "ckpt"
META = "meta.json"
MANIFEST = "manifest.json"

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


def _step_of(path: Path) -> int | None:
    digits = path.name[len(PREFIX):]
    return int(digits) if digits.isdigit() else None


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def write_manifest(folder: Path) -> Path:
    """Record size and SHA-256 of every file in ``folder`` (written last, before the rename)."""
    files = {}
    for item in sorted(folder.rglob("*")):
        if item.is_file() and item.name != MANIFEST:
            files[item.relative_to(folder).as_posix()] = {"size": item.stat().st_size, "sha256": _sha256(item)}
    path = folder / MANIFEST
    path.write_text(json.dumps({"version": 1, "files": files}, indent=2, sort_keys=True))
    return path


# (folder, (name, size, mtime_ns) of each file) -> problem or None; a checkpoint is hashed once per process.
_VERIFIED: dict[tuple, str | None] = {}
_WARNED: set[tuple] = set()


def _fingerprint(folder: Path) -> tuple:
    try:
        return (str(folder), tuple(sorted((i.name, i.stat().st_size, i.stat().st_mtime_ns)
                                          for i in folder.iterdir())))
    except OSError:
        return (str(folder), None)


def checkpoint_problem(folder: str | os.PathLike, full: bool = True) -> str | None:
    """What is wrong with the checkpoint folder (naming the bad file), or None if it is whole.

    ``full`` compares SHA-256 sums; otherwise only that every file exists with its recorded size.
    """
    folder = Path(folder)
    key = (_fingerprint(folder), full)
    if key in _VERIFIED:
        return _VERIFIED[key]
    problem = _problem(folder, full)
    _VERIFIED[key] = problem
    return problem


def _problem(folder: Path, full: bool) -> str | None:
    manifest_path = folder / MANIFEST
    if not os.path.lexists(manifest_path):
        return _legacy_problem(folder, full)
    try:
        manifest = json.loads(read_text(manifest_path, "manifest"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except FileNotFoundError:
        return _legacy_problem(folder, full)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, UserError) as exc:
        return f"{manifest_path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"
    for name in (TF_PREFIX + ".index", META):
        if name not in files:
            return f"{manifest_path} does not list {name}"
    for name, entry in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if not isinstance(entry, dict) or size != entry.get("size"):
            return f"{path} has {size} bytes, the manifest says {entry.get('size') if isinstance(entry, dict) else '?'} (truncated or replaced)"
        if full:
            try:
                digest = _sha256(path)
            except OSError as exc:
                return f"{path} cannot be read: {exc.strerror or exc}"
            if digest != entry.get("sha256"):
                return f"{path} does not match its SHA-256 in the manifest (damaged)"
    return None


def _legacy_problem(folder: Path, full: bool) -> str | None:
    """A checkpoint without a manifest (written before effnet had them): whole enough to use when its
    ``meta.json`` parses, TensorFlow reads its index and every data shard exists; with ``full``, every
    tensor is read too (TensorFlow checks each one's CRC32C), so truncation and damage are found."""
    import tensorflow as tf

    meta = folder / META
    if not os.path.lexists(meta):
        return f"{meta} is missing"
    try:
        if not isinstance(json.loads(read_text(meta, "meta.json")), dict):
            return f"{meta} is not a JSON object"
    except FileNotFoundError:
        return f"{meta} is missing"
    except (OSError, ValueError, UnicodeDecodeError, UserError) as exc:
        return f"{meta} is damaged ({type(exc).__name__})"
    index = folder / (TF_PREFIX + ".index")
    if not index.is_file():
        return f"{index} is missing"
    shards = sorted(folder.glob(TF_PREFIX + ".data-*-of-*"))
    if not shards:
        return f"{folder / (TF_PREFIX + '.data-00000-of-00001')} is missing"
    count = shards[0].name.rsplit("-of-", 1)[-1]
    for i in range(int(count) if count.isdigit() else 1):
        shard = folder / f"{TF_PREFIX}.data-{i:05d}-of-{count}"
        if not shard.is_file():
            return f"{shard} is missing"
    try:
        reader = tf.train.load_checkpoint(str(folder / TF_PREFIX))
        names = list(reader.get_variable_to_shape_map())
    except (tf.errors.OpError, ValueError) as exc:
        return f"{index} cannot be read ({_first_line(exc)})"
    if full:
        for name in names:
            try:
                reader.get_tensor(name)
            except (tf.errors.OpError, ValueError, IndexError) as exc:
                where = shards[0] if len(shards) == 1 else f"{folder / TF_PREFIX}.data-*"
                return f"{where} cannot be read: truncated or damaged ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(text.strip().split("\n")[0].split())[:200] or type(exc).__name__


def is_legacy(folder: str | os.PathLike) -> bool:
    """Whether a checkpoint folder has no manifest (written by an effnet from before manifests)."""
    return not (Path(folder) / MANIFEST).exists()


def note_legacy(folder: str | os.PathLike, warn: Callable[[str], None] | None = None) -> None:
    """One warning (per folder and process) that checkpoint ``folder`` cannot be verified."""
    folder = Path(folder)
    warn = warn or warn_stderr
    key = (str(folder), "legacy")
    if is_legacy(folder) and key not in _WARNED:
        _WARNED.add(key)
        warn(f"checkpoint {folder} has no {MANIFEST} (written by an older effnet); sizes and checksums "
             f"cannot be verified")


def verify_checkpoint(info: CheckpointInfo | str | os.PathLike, full: bool = True) -> None:
    """Raise a one-line UserError naming the damaged file if checkpoint ``info`` is not whole
    (a whole checkpoint without a manifest passes, with one warning)."""
    folder = info.path if isinstance(info, CheckpointInfo) else Path(info)
    problem = checkpoint_problem(folder, full)
    if problem:
        raise UserError(f"checkpoint {folder} is damaged: {problem}; pass another --checkpoint "
                        f"(or delete this one to fall back to the one before)")
    note_legacy(folder)


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _scan(model_dir) -> list[CheckpointInfo]:
    """Every ``ckpt-*`` folder, oldest first, whole or not (meta may be empty)."""
    found = []
    root = checkpoint_dir(model_dir)
    if not root.is_dir():
        return []
    for path in root.iterdir():
        step = _step_of(path)
        if not path.name.startswith(PREFIX) or step is None or not path.is_dir():
            continue
        try:
            meta = json.loads(read_text(path / META, META))  # a FIFO here is never read
            step = int(meta["step"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, UserError):
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        found.append(CheckpointInfo(path, step, meta))
    return sorted(found, key=lambda c: c.step)


def list_checkpoints(model_dir: str | os.PathLike, verify: bool = True,
                     warn: Callable[[str], None] | None = warn_stderr) -> list[CheckpointInfo]:
    """Whole checkpoints in ``model_dir``, oldest first.

    With ``verify`` (the default) each is checked against its manifest; a damaged one is left out
    with one warning (per folder and process) naming the bad file, through ``warn`` (None: silent).
    """
    found = []
    for info in _scan(model_dir):
        problem = checkpoint_problem(info.path) if verify else (
            None if info.meta and (info.path / (TF_PREFIX + ".index")).is_file() else "incomplete")
        if problem is None:
            found.append(info)
            continue
        key = (str(info.path), problem)
        if verify and warn is not None and key not in _WARNED:
            _WARNED.add(key)
            warn(f"skipping damaged checkpoint {info.path.name}: {problem}")
    return found


def latest_valid_checkpoint(model_dir: str | os.PathLike,
                            warn: Callable[[str], None] | None = warn_stderr) -> CheckpointInfo | None:
    """The newest checkpoint that matches its manifest (damaged newer ones are skipped with a warning;
    one without a manifest is used, with a warning that it cannot be verified)."""
    for info in reversed(_scan(model_dir)):
        problem = checkpoint_problem(info.path)
        if problem is None:
            if warn is not None:
                note_legacy(info.path, warn)
            return info
        key = (str(info.path), problem)
        if warn is not None and key not in _WARNED:
            _WARNED.add(key)
            warn(f"skipping damaged checkpoint {info.path.name}: {problem}")
    return None


def latest_checkpoint(model_dir: str | os.PathLike, warn: Callable[[str], None] | None = warn_stderr) -> CheckpointInfo | None:
    return latest_valid_checkpoint(model_dir, warn=warn)


DAMAGED_PREFIX = "damaged-"


def set_aside_damaged(model_dir: str | os.PathLike, warn: Callable[[str], None] | None = warn_stderr) -> list[Path]:
    """When a run folder holds checkpoints but none is whole, training starts over: rename each damaged
    ``ckpt-*`` folder to ``damaged-ckpt-*`` (kept for inspection; retention only counts ``ckpt-*``) and
    say so in one warning. Returns the new paths (empty when there was nothing damaged)."""
    found = _scan(model_dir)
    if not found or latest_valid_checkpoint(model_dir, warn=None) is not None:
        return []
    kept = []
    for info in found:
        target = info.path.with_name(DAMAGED_PREFIX + info.path.name)
        try:
            os.rename(info.path, target)
            kept.append(target)
        except OSError:
            kept.append(info.path)
    if warn is not None:
        warn(f"no whole checkpoint in {checkpoint_dir(model_dir)}: this run starts over from step 0; the damaged "
             f"checkpoint(s) are kept for inspection as {', '.join(p.name for p in kept)} (delete them when done)")
    return kept


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
                 higher_is_better: bool = True, is_writer: bool = True, every_process_saves: bool = False):
        import tensorflow as tf

        self.model_dir = Path(model_dir)
        self.root = checkpoint_dir(model_dir)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.keep = max(1, int(keep))
        self.best_metric = best_metric
        self.higher_is_better = higher_is_better
        self.is_writer = is_writer
        # Under some backends (MultiWorkerMirroredStrategy) writing a checkpoint runs collective ops, so
        # every process must call save(); the others write into a temporary folder that is deleted.
        self.every_process_saves = every_process_saves
        self.last_discarded: Path | None = None  # where a non-writing process last wrote (already removed)

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
            if self.every_process_saves:
                scratch = Path(tempfile.mkdtemp(prefix=f"effnet-ckpt-{os.getpid()}-"))
                try:
                    self.checkpoint.write(str(scratch / TF_PREFIX))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                self.last_discarded = scratch
            return None
        final = self.root / f"{PREFIX}{step:09d}"
        tmp = self.root / f".tmp-{PREFIX}{step:09d}-{os.getpid()}"
        meta_text = json.dumps({**meta, "step": int(step)}, indent=2, sort_keys=True, default=float)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            self.checkpoint.write(str(tmp / TF_PREFIX))
            point("ckpt.after_tf_write")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            (tmp / META).write_text(meta_text)
            point("ckpt.after_meta")
            write_manifest(tmp)
            _fsync_tree(tmp)
            point("ckpt.before_rename")
            if final.exists():  # same step saved again (e.g. end of run right after a periodic save)
                shutil.rmtree(final)
            os.rename(tmp, final)
            point("ckpt.after_rename")
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            latest = latest_checkpoint(self.model_dir, warn=None)
            kept = f"the last complete checkpoint {latest.path.name} is intact" if latest else "no earlier checkpoint exists"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("\n")[0]
            # TensorFlow's writer reports errno text inside its own error type.
            space = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}
            full = next((text for code, text in space.items()
                         if (isinstance(exc, OSError) and exc.errno == code) or text in reason), None)
            if full:
                try:
                    need = self.needed_bytes({META: meta_text, **(extra_files or {})})
                except Exception:  # noqa: BLE001 - the estimate must never hide the real error
                    need = None
                free = _free_bytes(self.root)
                needs = (f"this checkpoint needs at least {_human(need)}: its variables, {META} and {MANIFEST}; "
                         if need is not None else "")
                reason = f"{full} ({needs}{_human(free)} free)"
                what = "free some space or point --model-dir elsewhere"
            else:
                what = "check the model dir's permissions and free space"
            raise UserError(f"could not write checkpoint {final}: {reason}; {kept}; {what}") from exc
        self._prune()
        return final

    def variable_bytes(self) -> int:
        """The bytes of every variable this manager's checkpoint saves (each counted once)."""
        import keras
        import tensorflow as tf

        seen, total = set(), 0
        for obj in tf.train.TrackableView(self.checkpoint).descendants():
            var = obj.value if isinstance(obj, keras.Variable) else obj
            if isinstance(var, tf.Variable) and id(var) not in seen:
                seen.add(id(var))
                total += int(var.shape.num_elements() or 0) * var.dtype.size
        return total

    def needed_bytes(self, texts: dict[str, str]) -> int:
        """A lower bound of a checkpoint's size: its variables, the small files ``texts`` (name ->
        content) and the manifest listing them (TensorFlow's index adds a little more)."""
        names = [TF_PREFIX + ".index", TF_PREFIX + ".data-00000-of-00001", *texts]
        manifest = json.dumps({"version": 1, "files": {n: {"size": 10 ** 9, "sha256": "0" * 64} for n in names}},
                              indent=2, sort_keys=True)
        return self.variable_bytes() + sum(len(t.encode()) for t in texts.values()) + len(manifest)

    def _prune(self) -> None:
        # Damaged folders count for "the last K" (they are deleted in time), but the newest valid
        # checkpoint is always kept, whatever K says.
        found = _scan(self.model_dir)
        keep = {c.path for c in found[-self.keep:]}
        newest_valid = latest_checkpoint(self.model_dir, warn=None)
        if newest_valid is not None:
            keep.add(newest_valid.path)
        scored = [c for c in list_checkpoints(self.model_dir, warn=None)
                  if self.best_metric and self.best_metric in c.meta.get("metrics", {})]
        if scored:
            pick = max if self.higher_is_better else min
            keep.add(pick(scored, key=lambda c: c.meta["metrics"][self.best_metric]).path)
        for c in found:
            if c.path not in keep:
                shutil.rmtree(c.path, ignore_errors=True)
                point("ckpt.during_prune")

    def restore(self, info: CheckpointInfo, what: str = "this run") -> None:
        """Load ``info`` into the tracked objects; a damaged checkpoint or a shape mismatch is a UserError."""
        import tensorflow as tf

        verify_checkpoint(info)
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


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _human(n: int | None) -> str:
    """``1.5 MiB (1572864 bytes)``: readable, and exact for scripts and tests."""
    if n is None:
        return "an unknown amount"
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n} bytes)"
        size /= 1024
    return f"{n} bytes"


# Public names for other writers (export) that say the same about a full disk.
human_bytes = _human
free_bytes = _free_bytes


__all__ = ["EMA", "MANIFEST", "MODEL_VARIABLES", "CheckpointInfo", "CheckpointManager", "set_aside_damaged", "checkpoint_dir",
           "checkpoint_objects", "checkpoint_problem", "ensure_writable", "has_ema", "is_legacy", "latest_checkpoint",
           "latest_valid_checkpoint", "list_checkpoints", "note_legacy", "variable_key", "verify_checkpoint",
           "write_manifest"]

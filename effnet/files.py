"""Writing small files so that a crash never leaves half of one: a temporary name, then a rename."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from effnet.faults import point


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    A failure inside the block removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        point(f"write.{path.name}")  # kill-anywhere tests: between the write and the rename
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_writable(folder) -> bool:
    """Whether a file can be created in the existing ``folder`` (a real probe: read-only mounts,
    permissions and full disks all count, also for root)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".effnet-write-test-"):
            return True
    except OSError:
        return False


def check_writable(path, what: str, is_folder: bool = True) -> Path:
    """UserError unless ``path`` (a folder, or a file's folder) can be written, checked before any work.

    A folder that does not exist yet is probed by creating it, and removed again.
    """
    from effnet.errors import UserError

    path = Path(path)
    folder = path if is_folder else path.parent
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ok = is_writable(folder)
        reason = "" if ok else "cannot create files there"
    except OSError as exc:
        ok, reason = False, exc.strerror or str(exc)
    finally:
        for created in missing:  # leave nothing behind: the real write creates it again
            try:
                created.rmdir()
            except OSError:
                pass
    if not ok:
        raise UserError(f"{what} {str(path)!r} is not writable ({reason}); pick a writable place")
    return path


@contextlib.contextmanager
def undone_on_failure(folder, skip: tuple[str, ...] = ()):
    """If the block fails, put ``folder``'s files back as they were: new files removed, files that
    grew cut back to their old size (logs appended to), so a failed command leaves nothing that
    looks like its result. Sub-folders named in ``skip`` are not watched."""
    folder = Path(folder)

    def files() -> dict[Path, int]:
        found = {}
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file() and not any(part in skip for part in path.relative_to(folder).parts):
                found[path] = path.stat().st_size
        return found

    before = files()
    try:
        yield
    except BaseException:
        for path, size in files().items():
            try:
                if path not in before:
                    path.unlink()
                elif size > before[path]:
                    os.truncate(path, before[path])
            except OSError:
                pass
        raise


def file_digest(path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in 1 MiB blocks (``algorithm``: any hashlib name)."""
    import hashlib

    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(value):
    """numpy/tensor scalars become numbers, anything else (paths ...) its string."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_json_dict(path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


__all__ = ["atomic_path", "check_writable", "file_digest", "is_writable", "read_json_dict", "undone_on_failure", "write_json_atomic", "write_text_atomic"]

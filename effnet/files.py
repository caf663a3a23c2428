"""Writing small files so that a crash never leaves half of one: a temporary name, then a rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from effnet.faults import point
from effnet.paths import check_writable, is_writable, open_input


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
    from effnet.errors import UserError

    try:  # never blocks on a FIFO nor reads a device: a special file is "unreadable" here
        with open_input(path, "file") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, UserError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


# --------------------------------------------------------------------------------------------------
# Folder locks: one writer at a time (a training run's folder, a sweep's root)


class FolderLock:
    """A held lock file (``flock``; the kernel releases it when the holder dies, however it dies).

    The file names its holder (pid, host, start time) so that a refusal can say who holds it, and a
    lock left by a process that is gone is recognised and taken over with a notice.
    """

    def __init__(self, path: Path, handle, created_folder: Path | None = None):
        self.path, self._handle, self.created_folder = path, handle, created_folder

    def release(self) -> None:
        """Remove the lock file (while still holding it) and let go; a folder this lock created and that
        stayed empty is removed too (a refused run leaves no empty folder behind)."""
        if self._handle is None or self._handle.closed:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            self._handle.close()
        if self.created_folder is not None:
            try:
                self.created_folder.rmdir()  # only when empty
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_holder(text: str) -> dict:
    """The holder a lock file names ({} when it names none)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def holder_words(holder: dict) -> str:
    if not holder:
        return "a process that did not say who it is"
    since = f" since {holder['started']}" if holder.get("started") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


def take_lock(path, refusal, notice=None, created_folder: Path | None = None) -> FolderLock | None:
    """Hold the lock file ``path`` (its folder must exist) or raise ``UserError(refusal(holder_words))``.

    A lock file that names a holder but is not held was left by a process that is gone: it is taken
    over and ``notice(words)`` says so. Not POSIX (no ``fcntl``): no lock (None).
    """
    import datetime
    import socket

    from effnet.errors import UserError

    try:
        import fcntl
    except ImportError:
        return None
    path = Path(path)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a filesystem without locks
                if os.fstat(handle.fileno()).st_size == 0:
                    path.unlink(missing_ok=True)
                handle.close()
                return None
            handle.seek(0)
            words = holder_words(lock_holder(handle.read(4096)))
            handle.close()
            raise UserError(refusal(words)) from None
        try:  # the file locked must still be the one at ``path`` (a holder removes it as it lets go)
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:
            handle.close()
            continue
        handle.seek(0)
        previous = lock_holder(handle.read(4096))
        if previous and notice is not None:
            notice(holder_words(previous))
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        return FolderLock(path, handle, created_folder)


__all__ = ["FolderLock", "holder_words", "lock_holder", "take_lock", "atomic_path", "check_writable", "file_digest", "is_writable", "read_json_dict", "undone_on_failure", "write_json_atomic", "write_text_atomic"]

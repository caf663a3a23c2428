"""Paths a user names, checked in one place before any work starts.

Outputs (:func:`check_output`): the target is absent or a regular file (a folder for folder
outputs), is not one of the command's inputs, is not inside a run folder's checkpoints or one of a
run folder's own files (unless writing there is the command's job), its name fits the filesystem,
and its folder exists (or can be created) and is writable. Every command that writes where the
user says calls it first: ``predict -o``, ``compare -o/--plot``, ``import-weights OUTPUT``,
``export -o``, ``data convert DST``.

Inputs (:func:`check_input`, :func:`open_input`, :func:`read_text`, :func:`read_bytes`): a file is
a regular file (a folder where one is expected), never a FIFO, a device, a socket or a symlink
loop we could block on or read forever. :func:`open_input` opens with ``O_NONBLOCK`` and checks the
opened file (no race between the check and the open). Each refusal is one line naming the path and
what it actually is (:func:`what_is`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from effnet.errors import UserError
from effnet.layout import RUN_MARKERS, RUN_OWN

def what_is(path) -> str:
    """What ``path`` actually is, in words: 'a regular file', 'a FIFO (named pipe)', 'a symlink loop' ..."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if exc.errno == errno.ENAMETOOLONG:
            return "a name too long for the filesystem"
        if os.path.islink(path):
            return f"a broken symlink (to {os.readlink(path)!r})"
        if exc.errno == errno.ENOENT:
            return "missing"
        if exc.errno == errno.ENOTDIR:
            return "missing (a part of its path is a file, not a folder)"
        return f"unreadable ({exc.strerror or exc})"
    return _kind(st.st_mode, path)


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int, path=None) -> str:
    link = " (through a symlink)" if path is not None and os.path.islink(path) else ""
    return next((name for test, name in _KINDS if test(mode)), "a special file") + link


# --------------------------------------------------------------------------------------------------
# Inputs


def check_input(path, what: str, folder: bool | None = False, hint: str = "") -> Path:
    """``path`` if it is a regular file (``folder=True``: a folder; ``None``: either), else a UserError
    naming what it is. ``what`` names the role ("labels file", "--checkpoint")."""
    path = Path(path)
    kind = what_is(path)
    wanted = {False: ("a regular file",), True: ("a folder",), None: ("a regular file", "a folder")}[folder]
    if kind.split(" (through")[0] in wanted:
        return path
    expected = {False: "a regular file", True: "a folder", None: "a file or a folder"}[folder]
    if kind == "missing":
        raise UserError(f"{what} {str(path)!r} does not exist{hint or f'; pass {expected}'}")
    raise UserError(f"{what} {str(path)!r} is {kind}, not {expected}{hint or '; pass ' + expected}")


def open_input(path, what: str, mode: str = "rb", encoding: str | None = None, errors: str | None = None):
    """Open a user's file for reading, refusing anything but a regular file without ever blocking.

    The open itself uses ``O_NONBLOCK`` (a FIFO with no writer does not block it) and the opened file
    is checked with ``fstat``, so the file checked is the file read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        kind = what_is(path)
        if kind == "missing":
            raise UserError(f"{what} {str(path)!r} does not exist; pass a regular file") from None
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{what} {str(path)!r} is {kind}, not a regular file; pass a regular file") from None
        raise UserError(f"{what} {str(path)!r} cannot be read ({exc.strerror or exc}); pass a readable regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {str(path)!r} is {_kind(st.st_mode, path)}, not a regular file; pass a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding, errors=errors)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, what: str) -> bytes:
    with open_input(path, what, "rb") as f:
        return f.read()


def read_text(path, what: str, encoding: str = "utf-8") -> str:
    """The text of a user's regular file (UnicodeDecodeError is left to the caller, who knows the format)."""
    return read_bytes(path, what).decode(encoding)


def is_regular(path) -> bool:
    """Whether ``path`` is a regular file (symlinks followed; loops, FIFOs and devices are not)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Outputs


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


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop somewhere above
        return Path(os.path.abspath(path))


def _is_within(path: Path, folder: Path) -> bool:
    try:
        _resolved(path).relative_to(_resolved(folder))
        return True
    except ValueError:
        return False


def is_run_folder(folder) -> bool:
    folder = Path(folder)
    return (folder / RUN_MARKERS[0]).is_file() or (folder / RUN_MARKERS[1]).is_dir()


def run_folder_part(path) -> tuple[Path, str] | None:
    """(run folder, own part) when ``path`` is a run folder's own file or inside its checkpoints."""
    target = _resolved(Path(path))
    for folder in target.parents:  # every enclosing run (a checkpoint folder holds a config copy too)
        if is_run_folder(folder):
            first = target.relative_to(folder).parts[0]
            if first in RUN_OWN:
                return folder, first
    return None


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
        return True
    except OSError:  # missing, or a name too long to look up
        return False


def _check_length(path: Path, what: str) -> None:
    probe = Path(os.path.abspath(path))
    while not _exists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
        path_max = os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > name_max:
        raise UserError(f"{what} {_short(path)!r} has a name of {longest} bytes; the filesystem allows {name_max}: "
                        f"pick a shorter name")
    total = len(os.fsencode(os.path.abspath(path)))
    if total >= path_max:
        raise UserError(f"{what} {_short(path)!r} is {total} bytes long; the filesystem allows {path_max - 1}: "
                        f"pick a shorter path")


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]}"


def check_output(path, what: str, *, folder: bool = False, inputs: Iterable = (), own_ok: bool = False,
                 allow_existing_folder: bool = True) -> Path:
    """``path`` if a command may write there; else a UserError naming the path and the reason.

    ``folder``: the output is a folder (``export -o``, ``data convert DST``), else a file.
    ``inputs``: the command's input files and folders; the output may be none of them, and a folder
    output may not lie inside an input folder nor hold one.
    ``own_ok``: writing a run folder's own file is this command's job.
    """
    path = Path(path)
    _check_length(path, what)
    kind = what_is(path)
    expected = "a folder" if folder else "a regular file"
    if not kind.startswith("missing"):  # a missing folder on the way is check_writable's to name
        bare = kind.split(" (through")[0]
        if bare != expected:
            if kind.startswith("a broken symlink"):
                raise UserError(f"{what} {str(path)!r} is {kind}; writing would follow it: remove the link or pick "
                                f"another path")
            raise UserError(f"{what} {str(path)!r} is {kind}, not {expected}; writing there would replace it: pick "
                            f"{'a folder' if folder else 'a file name'} that is absent or {expected}")
        if folder and not allow_existing_folder:
            raise UserError(f"{what} {str(path)!r} already exists; pick a new folder")
    for item in inputs:
        if item is None:
            continue
        item = Path(item)
        if _same(path, item) or _resolved(path) == _resolved(item):
            raise UserError(f"{what} {str(path)!r} is also an input of this command ({str(item)!r}); writing would "
                            f"overwrite it: pick another path")
        if folder and item.is_dir() and _is_within(path, item):
            raise UserError(f"{what} {str(path)!r} is inside the input folder {str(item)!r}; pick a folder outside it")
        if folder and _is_within(item, path) and path.exists():
            raise UserError(f"{what} {str(path)!r} holds the input {str(item)!r}; pick a folder outside it")
    if not own_ok:
        part = run_folder_part(path)
        if part is not None:
            run, own = part
            what_part = "checkpoints" if own == "checkpoints" else f"own file {own}"
            raise UserError(f"{what} {str(path)!r} is inside the run folder {str(run)!r} ({what_part}); writing there "
                            f"would damage the run: pick a path outside it")
        if folder and is_run_folder(path):
            raise UserError(f"{what} {str(path)!r} is a training run's folder; writing there would mix with its "
                            f"files: pick a sub-folder or another folder")
    check_writable(path, what, is_folder=folder)
    return path


__all__ = ["RUN_OWN", "check_input", "check_output", "check_writable", "is_writable", "is_regular", "is_run_folder", "open_input", "read_bytes",
           "read_text", "run_folder_part", "what_is"]

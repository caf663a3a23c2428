"""Records which process writes into a watched folder (Python audit hooks; loaded via PYTHONPATH).

With EFFNET_AUDIT_DIR and EFFNET_AUDIT_WATCH set, every Python-level write, mkdir, rename or
removal under EFFNET_AUDIT_WATCH is logged to EFFNET_AUDIT_DIR/rank<HOROVOD_RANK>-<pid>.log.
(TensorFlow's C++ file writes are not seen; the tests identify those by the pid in their names.)
"""

import os
import sys

_out = os.environ.get("EFFNET_AUDIT_DIR")
_watch = os.environ.get("EFFNET_AUDIT_WATCH")
if _out and _watch:
    _watch = os.path.realpath(_watch)
    _rank = os.environ.get("HOROVOD_RANK", "none")
    _log = open(os.path.join(_out, f"rank{_rank}-{os.getpid()}.log"), "a", buffering=1)
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    _PATH_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate", "os.symlink"}

    def _hook(event, args):
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        elif event in _PATH_EVENTS:
            path, writing = args[0], True
        else:
            return
        if not writing or not isinstance(path, (str, bytes, os.PathLike)):
            return
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if full == _watch or full.startswith(_watch + os.sep):
            _log.write(f"{event} {full}\n")

    sys.addaudithook(_hook)

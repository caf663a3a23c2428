"""Named fault-injection points for the kill-anywhere tests (a leaf module: no effnet imports).

``EFFNET_FAULT=NAME[:N]`` makes the process SIGKILL itself the N-th time (default 1) it reaches
the point ``NAME``: a real, uncatchable kill at an exact place (between a checkpoint's file writes
and its rename, before an atomic rename of the operative config ...). Unset, a point costs one
dictionary lookup. Points: ``ckpt.after_tf_write``, ``ckpt.after_meta``, ``ckpt.before_rename``,
``ckpt.after_rename``, ``ckpt.during_prune``, ``write.<file name>`` (before the rename of an
atomically written small file).
"""

from __future__ import annotations

import os
import signal

ENV = "EFFNET_FAULT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "point"]

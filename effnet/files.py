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


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


__all__ = ["atomic_path", "file_digest", "write_json_atomic", "write_text_atomic"]

"""Writing small files so that a crash never leaves half of one: a temporary name, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path

from effnet.faults import point


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    point(f"write.{path.name}")
    os.replace(tmp, path)
    return path


def _json_default(value):
    """numpy/tensor scalars become numbers, anything else (paths ...) its string."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


__all__ = ["write_json_atomic", "write_text_atomic"]

"""What TensorFlow's native code says: its op-error text in one line, and captured C-level stderr.

Decoders and runtimes (libjpeg, TFLite's XNNPACK delegate) write straight to file descriptor 2;
op errors carry node names, op tags and tracebacks. Both are folded into one line of our own
wherever a user-caused failure is reported.
"""

from __future__ import annotations

import os
import re
import sys

from effnet.errors import one_line


def tf_error_text(message: str) -> str:
    """The informative line of a TensorFlow op error (no node names, op tags or traceback)."""
    for line in str(message).splitlines():
        if not line.strip() or line.startswith((" ", "\t")) or line.startswith(("Graph execution error", "Detected at node")):
            continue
        line = re.sub(r"\{\{[^}]*\}\}", "", line)
        line = re.sub(r"\[\[.*?\]\]", "", line)
        line = re.sub(r"\[Op:.*$", "", line)
        line = one_line(line).rstrip(" .")
        if line:
            return line
    return ""


class captured_stderr:  # noqa: N801 - used like a function
    """Collect what C libraries write to file descriptor 2 instead of showing it.

    ``with captured_stderr() as c: ...`` then ``c.text()``.
    """

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._text = ""
        self._file = tempfile.TemporaryFile(mode="w+b")
        try:
            self._saved = os.dup(2)
        except OSError:  # no fd 2 (embedded interpreters): nothing to capture
            self._saved = None
            return self
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False

    def text(self) -> str:
        return self._text


__all__ = ["captured_stderr", "tf_error_text"]

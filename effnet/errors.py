"""Errors a user can cause, and the helpers that make their messages useful.

Every mistake a user can make (a typo in a gin file, a missing data directory, an unknown plugin
name) raises :class:`UserError`. The CLI prints its message on one line and exits with code 2;
anything else is an internal failure (exit code 1). A good message says what was wrong, where
(file:line, key, value) and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["Interrupted", "UserError", "closest", "did_you_mean", "one_line"]


class UserError(Exception):
    """A problem with the user's input: configuration, files, names or values.

    The message must fit on one line and should end with what to do about it.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(one_line(message))


class Interrupted(Exception):
    """A run stopped on request (SIGTERM, SIGINT) after saving where it was.

    Not an error: the CLI prints the message (where it stopped, the checkpoint, how to resume) and
    exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), as schedulers expect.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(one_line(message))
        self.exit_code = exit_code


def one_line(text: str) -> str:
    """Collapse whitespace and newlines so a message prints on a single line."""
    return " ".join(str(text).split())


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None if nothing is close."""
    candidates = [str(c) for c in candidates]
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    if match:
        return lowered[match[0]]
    # Substring matches catch prefixes such as 'v2_s' for 'efficientnet_v2_s'.
    subs = [c for c in candidates if str(name).lower() in c.lower()]
    return subs[0] if len(subs) == 1 else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A suffix " (did you mean 'x'?)" when a candidate is close to ``name``, else ""."""
    match = closest(name, candidates)
    return f" (did you mean {match!r}?)" if match else ""

"""Asking a training run to stop cleanly: from a signal (SIGTERM, SIGINT) or from a loop callback.

A :class:`StopRequest` is what the loop reads at its step boundaries (and between evaluation
batches). Whoever asks, the stop is the same: a checkpoint at the position reached, then the run
ends; running the same command resumes from there. :func:`catch_signals` turns SIGTERM (what
schedulers send before killing), SIGINT and SIGHUP (a closed terminal) into requests for the duration of a ``with`` block; a
second SIGINT stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass

#: Signals that ask a run to stop at the next step boundary: SIGTERM (what schedulers send before
#: killing), SIGINT (Ctrl-C) and SIGHUP (a closed terminal).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class StopRequest:
    """Whether, why and with which exit code a run was asked to stop (nothing asked: ``asked`` is False)."""

    signum: int | None = None  # the signal that asked, if any
    reason: str = ""  # who asked and why, e.g. "callback 'early_stopping': val_top1 did not improve ..."
    exit_code: int = 0  # 0: the run ends normally (report written); else it ends with this code

    @property
    def asked(self) -> bool:
        return self.signum is not None or bool(self.reason)

    def ask(self, reason: str, exit_code: int = 0) -> None:
        """Ask for a stop at the next decision point (the first request wins)."""
        if not self.asked:
            self.reason, self.exit_code = reason, int(exit_code)

    def ask_signal(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            self.reason = f"stopped by {signal.Signals(signum).name}"
            self.exit_code = 128 + signum

    @property
    def by_signal(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def catch_signals(request: StopRequest):
    """SIGTERM, SIGINT and SIGHUP ask ``request`` for a stop while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def ask(signum, frame):
        if request.by_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.ask_signal(signum)
        print(f"effnet: {signal.Signals(signum).name} received; saving a checkpoint at the next step boundary "
              f"or evaluation batch (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    previous = {signum: signal.signal(signum, ask) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["STOP_SIGNALS", "StopRequest", "catch_signals"]

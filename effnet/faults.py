"""Named fault-injection points for the kill-anywhere tests (a leaf module: no effnet imports).

``EFFNET_FAULT=NAME[:N[:SIGNAL]]`` makes the process send itself ``SIGNAL`` (default ``KILL``: a
real, uncatchable SIGKILL; ``TERM`` / ``INT`` test the graceful stop) the N-th time (default 1) it
reaches the point ``NAME``, at an exact place. ``SIGNAL-GROUP`` (e.g. ``TERM-GROUP``) sends it to the
whole process group instead (``os.killpg``: how ``timeout``, systemd and Slurm stop a job, so the
stderr filter of effnet/cli/quiet.py gets it too). Unset, a point costs one environment lookup.

Points:

- ``ckpt.after_tf_write``, ``ckpt.after_meta``, ``ckpt.before_rename``, ``ckpt.after_rename``,
  ``ckpt.during_prune``: inside a checkpoint's writes (effnet/checkpoint.py);
- ``write.<file name>``: before the rename of an atomically written small file
  (``operative_config.gin``, ``labels.txt``, ``report.json``, ``training_curves.png``,
  ``eval_report.json``, ``export_report.json``; effnet/files.py);
- ``eval.batch``: after each evaluation batch (training's evaluations and ``effnet eval``;
  effnet/metrics.py);
- ``stage.end`` (after a stage's last epoch, its checkpoint written) and ``stage.start`` (before a
  stage's values are applied, also for the first stage): progressive stage boundaries
  (effnet/trainer.py);
- ``export.after_write`` (an artifact written under its temporary name, not yet checked),
  ``export.before_rename`` (checked, not yet renamed into place), ``export.before_report`` (every
  artifact in place, labels and ``export_report.json`` not yet written): effnet/exporter.py.
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
    target, _, rest = spec.partition(":")
    if target != name:
        return
    count, _, signame = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        signame, group = (signame[:-6], True) if signame.endswith("-GROUP") else (signame, False)
        signum = getattr(signal, f"SIG{signame or 'KILL'}")
        if group:
            os.killpg(os.getpgrp(), signum)
        else:
            os.kill(os.getpid(), signum)


__all__ = ["ENV", "point"]

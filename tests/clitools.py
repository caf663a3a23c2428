"""Helpers to run the `effnet` command in-process or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_inprocess(capsys, *args: str) -> Result:
    """Call effnet.cli.main.main(args) and capture its exit code and output."""
    from effnet.cli.main import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def run_subprocess(*args: str, env: dict | None = None, cwd=None, timeout: float = 600) -> Result:
    """Run `python -m effnet.cli.main ARGS` in a fresh interpreter."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "effnet.cli.main", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)

"""Launching real processes on localhost: horovodrun (gloo), TF_CONFIG workers, plain subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.extras import requires

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def horovod_available() -> bool:
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        return False
    return shutil.which("horovodrun", path=str(BIN)) is not None or shutil.which("horovodrun") is not None


needs_horovod = requires(horovod_available(), "Horovod", "make test installs it with scripts/install_horovod.sh")


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def horovodrun_cmd(np: int, *command: str) -> list[str]:
    runner = shutil.which("horovodrun", path=str(BIN)) or "horovodrun"
    return [runner, "-np", str(np), "-H", f"localhost:{np}", "--gloo", *command]


def run(cmd, timeout=300, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(env), cwd=cwd or ROOT)


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def run_workers(n: int, command: list[str], timeout=300, env=None) -> list[subprocess.CompletedProcess]:
    """Start ``n`` processes with their own TF_CONFIG (free localhost ports) and wait for all."""
    ports = free_ports(n)
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=_env({**(env or {}), "TF_CONFIG": tf_config(ports, i)})) for i in range(n)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def effnet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "effnet.cli.main", *args]


def tail(proc) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])

"""Keep TensorFlow's native start-up chatter off the first screen of every ``effnet`` command.

TensorFlow's C++ libraries write to file descriptor 2 before Python can configure them: absl's
"All log messages before absl::InitializeLog() is called are written to STDERR", oneDNN and
cudart notices, and on a machine without a GPU an ``E0000 ... failed call to cuInit`` line that
newcomers read as a failure. ``TF_CPP_MIN_LOG_LEVEL`` does not reach the lines printed before
absl is initialised, and the cuInit line is logged at error level.

:func:`install` puts a filter between fd 2 and the terminal: a forked child process reads a pipe
that replaces fd 2 and copies every line to the real stderr except the known start-up lines in
:data:`NOISE`. Everything else (Python tracebacks, effnet's own messages, real TensorFlow
warnings and errors, progress bars) passes unchanged. The filter is a separate process so that
a native crash of the main process still has every line it wrote delivered. At exit the main
process restores fd 2 and waits for the filter to drain.

Not installed when called in-process (tests), with ``--debug`` / ``EFFNET_DEBUG=1``, with
``EFFNET_TF_LOGS=1``, with ``TF_CPP_MIN_LOG_LEVEL=0`` (the user asked for every TensorFlow line),
or where ``os.fork`` does not exist.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import time

# One pattern per known start-up line. The glog prefix is "<L><MMDD> <time> <thread> <file>:<line>] ".
_GLOG = r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    _GLOG.replace("[IWEF]", "I"),  # any INFO line (TF_CPP_MIN_LOG_LEVEL=2 hides the later ones)
    _GLOG + r".*failed call to cuInit",
    _GLOG + r".*Unable to register cu(DNN|FFT|BLAS) factory",
    _GLOG + r".*could not open file to read NUMA node",
    _GLOG + r".*TF-TRT Warning: Could not find TensorRT",
    _GLOG + r".*computation placer already registered",
    r"^To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"^This TensorFlow binary is optimized to use available CPU instructions",
))

# A partial line (no newline yet) that could still become a noise line is held back briefly;
# anything else (a progress bar redrawn with "\r") is forwarded at once.
_MAYBE_NOISE = re.compile(r"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IWEF][\d:. ]*(\d+ [\w.:]*\]?.*)?|To enable.*|This Tensor.*)$")


#: Signals a job's whole process group receives when it is stopped; the filter ignores them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


def is_noise(line: str) -> bool:
    return any(p.search(line) for p in NOISE)


def filter_stream(read_fd: int, write_fd: int, hold_seconds: float = 0.2) -> None:
    """Copy ``read_fd`` to ``write_fd`` until EOF, dropping :data:`NOISE` lines."""
    import select

    pending = b""

    def emit(data: bytes) -> None:
        while data:
            try:
                data = data[os.write(write_fd, data):]
            except InterruptedError:
                continue
            except OSError:  # the reader went away: keep draining so the writer never blocks
                return

    while True:
        ready, _, _ = select.select([read_fd], [], [], hold_seconds if pending else None)
        if not ready:  # a held partial line did not grow into a noise line: show it
            emit(pending)
            pending = b""
            continue
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            emit(pending)
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [line + b"\n" for line in lines if not is_noise(line.decode("utf-8", "replace"))]
        if pending and not _MAYBE_NOISE.match(pending.decode("utf-8", "replace").rsplit("\r", 1)[-1]):
            out.append(pending)
            pending = b""
        emit(b"".join(out))


def wanted(argv: list[str] | None) -> bool:
    """Whether to filter: only for the real command line, and only when nobody asked for more."""
    if argv is not None or not hasattr(os, "fork"):
        return False
    if "--debug" in sys.argv[1:]:
        return False
    for name in ("EFFNET_DEBUG", "EFFNET_TF_LOGS"):
        if os.environ.get(name, "").lower() in ("1", "true", "yes", "on"):
            return False
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() != "0"


def install(argv: list[str] | None = None) -> bool:
    """Filter fd 2 for the rest of this process (see the module docstring); True when installed."""
    if not wanted(argv):
        return False
    try:
        os.fstat(2)
    except OSError:  # no stderr at all
        return False
    read_fd, write_fd = os.pipe()
    # no stop signal may reach the filter between the fork and its SIG_IGN: held until both sides are set
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    pid = os.fork()
    if pid == 0:  # the filter process
        code = 0
        try:
            # Ctrl-C, and SIGTERM/SIGHUP sent to the whole process group (`kill -TERM -- -PGID`, timeout,
            # systemd, Slurm): the filter outlives them and drains until the main process has said where
            # it stopped and closed the pipe (EOF), so no line is lost
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            if held is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(write_fd)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # hold nobody's stdout pipe open
            os.closerange(3, read_fd)
            os.closerange(read_fd + 1, 4096)
            filter_stream(read_fd, 2)
        except BaseException:  # noqa: BLE001 - never run the parent's code in the child
            code = 1
        finally:
            os._exit(code)
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held meanwhile is delivered now
    os.close(read_fd)
    sys.stderr.flush()
    real = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    atexit.register(_finish, real, pid)
    return True


def _finish(real: int, pid: int, timeout: float = 5.0) -> None:
    """Restore fd 2 and let the filter print what it still holds before this process exits."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(real, 2)  # closes our end of the pipe; the filter sees EOF once child processes let go
    os.close(real)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


__all__ = ["NOISE", "STOP_SIGNALS", "filter_stream", "install", "is_noise", "wanted"]

"""A clean first screen: TensorFlow's native start-up lines are filtered from stderr, real errors are not."""

import os
import re
import subprocess
import sys
import threading

import pytest

from effnet.cli import quiet

# Lines TensorFlow 2.21 prints on a CPU-only machine before effnet's first line (copied from a real run).
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795994397.329084    7980 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1795994397.329422    7980 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1795994405.999652    7980 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
NOISE_MARKERS = re.compile(r"absl::InitializeLog|oneDNN custom operations|cudart_stub|cuInit|^[IWE]0000 ", re.M)


def _filtered(chunks, hold_seconds=0.2):
    """Feed ``chunks`` through a real pipe into quiet.filter_stream; return what reaches the other end."""
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    worker = threading.Thread(target=quiet.filter_stream, args=(src_r, dst_w, hold_seconds))
    worker.start()
    for chunk in chunks:
        os.write(src_w, chunk.encode())
    os.close(src_w)
    worker.join(10)
    os.close(dst_w)
    out = b""
    while data := os.read(dst_r, 65536):
        out += data
    os.close(src_r)
    os.close(dst_r)
    return out.decode()


def test_filter_drops_startup_lines_and_keeps_real_errors():
    real_error = ("E0000 00:00:1795994405.999652    7980 op_kernel.cc:1857] OP_REQUIRES failed at "
                  "decode_image_op.cc:74 : INVALID_ARGUMENT: Unknown image file format")
    text = "\n".join([*STARTUP, "demo dataset: /tmp/x", real_error, "Traceback (most recent call last):",
                      "W0000 00:00:1.5    7980 some_op.cc:9] a real warning", ""])
    out = _filtered([text[:37], text[37:200], text[200:]])  # lines split across reads
    assert out == "\n".join(["demo dataset: /tmp/x", real_error, "Traceback (most recent call last):",
                             "W0000 00:00:1.5    7980 some_op.cc:9] a real warning", ""])


def test_partial_lines_are_forwarded_at_once_or_after_a_short_hold():
    # a progress bar redraws with "\r" and no newline: it must not wait for the end of the line
    assert _filtered(["\rtrain  [####......]  4/10", "\rtrain  [##########]  10/10\n"]) == \
        "\rtrain  [####......]  4/10\rtrain  [##########]  10/10\n"
    # text that might still become a noise line is held briefly, then shown; the end of the stream shows it too
    assert _filtered(["W", "hat a line without newline"]) == "What a line without newline"
    assert _filtered(["Error: no newline at the end"]) == "Error: no newline at the end"


def test_wanted_only_for_the_real_command_line(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("EFFNET_DEBUG", raising=False)
    monkeypatch.delenv("EFFNET_TF_LOGS", raising=False)
    monkeypatch.setattr(sys, "argv", ["effnet", "plugins"])
    assert quiet.wanted(None)
    assert not quiet.wanted(["plugins"])  # called in-process (tests, notebooks): leave fd 2 alone
    monkeypatch.setattr(sys, "argv", ["effnet", "--debug", "plugins"])
    assert not quiet.wanted(None)
    monkeypatch.setattr(sys, "argv", ["effnet", "plugins"])
    for name, value in (("EFFNET_DEBUG", "1"), ("EFFNET_TF_LOGS", "1"), ("TF_CPP_MIN_LOG_LEVEL", "0")):
        monkeypatch.setenv(name, value)
        assert not quiet.wanted(None), name
        monkeypatch.delenv(name)


def _effnet(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EFFNET_DEBUG")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "effnet.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_first_screen_of_real_commands_has_no_native_noise(tmp_path):
    plugins = _effnet("plugins")
    assert plugins.returncode == 0 and plugins.stdout.startswith("KIND")
    assert plugins.stderr == ""

    demo = _effnet("data", "demo", env_extra={"EFFNET_CACHE": os.environ.get("EFFNET_CACHE", str(tmp_path / "cache"))})
    assert demo.returncode == 0, demo.stderr
    assert not NOISE_MARKERS.search(demo.stderr), demo.stderr
    assert demo.stderr.startswith("demo dataset: ")  # effnet's own line is the first one
    assert "classes: 10" in demo.stdout

    # a user error still arrives, on one line, before the process is gone
    bad = _effnet("train", "--gin", str(tmp_path / "missing.gin"), "--model-dir", str(tmp_path / "run"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: gin file") and not NOISE_MARKERS.search(bad.stderr)


@pytest.mark.parametrize("flag", ["--debug", "TF_CPP_MIN_LOG_LEVEL=0"])
def test_asking_for_more_turns_the_filter_off(tmp_path, flag):
    """With --debug or TF_CPP_MIN_LOG_LEVEL=0 fd 2 is the process's own stderr again (no filter process)."""
    probe = ("import os, sys; from effnet.cli import quiet; sys.argv = ['effnet'] + sys.argv[1:]; "
             "print(quiet.install(None))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = [sys.executable, "-c", probe]
    if flag == "--debug":
        args.append("--debug")
    else:
        env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    assert subprocess.run(args, capture_output=True, text=True, env=env).stdout.strip() == "False"
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-c", probe + "; os.write(2, b'I0000 00:00:1.0 1 port.cc:1] x\\nkept\\n')"],
                          capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "True" and done.stderr == "kept\n"

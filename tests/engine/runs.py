"""Tiny real training runs shared by the engine tests (real demo JPEG TFRecords, real EfficientNetV2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TINY_GIN = """
include 'base/train.gin'
train.model = 'efficientnet_v2_b0'
efficientnet.width = 0.25
efficientnet.depth = 0.25
efficientnet.dropout_rate = 0.2
efficientnet.drop_path_rate = 0.2
efficientnet.bn_momentum = 0.9
train.dataset = 'demo'
demo.image_size = 32
demo.train_per_class = 12
demo.validation_per_class = 4
demo.train_shards = 4
demo.validation_shards = 1
input_pipeline.shuffle_buffer = 64
train.image_size = 32
train.eval_image_size = 32
train.batch_size = 8
train.epochs = 2
train.log_every_steps = 5
train.checkpoint_every_epochs = 1
train.lr_init = 0.02
cosine.warmup_epochs = 0.5
train.ema_decay = 0.9
train.deterministic = True
train.plot = True
"""


def write_gin(folder: Path, extra: str = "", name: str = "tiny.gin") -> Path:
    path = Path(folder) / name
    path.write_text(TINY_GIN + extra)
    return path


def cli_args(gin_path: Path, model_dir: Path, *params: str) -> list[str]:
    args = ["train", "--gin", str(gin_path), "--model-dir", str(model_dir)]
    for p in params:
        args += ["--gin-param", p]
    return args


def subprocess_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def start(args: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "effnet.cli.main", *args], stdout=out, stderr=subprocess.STDOUT,
                            env=subprocess_env(env))


def run(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet.cli.main", *args], capture_output=True, text=True,
                          env=subprocess_env(env), timeout=timeout)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (polling every 20 ms)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before it could be killed")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting to kill the run")


def checkpoint_tensors(ckpt_folder: Path) -> dict:
    """Every model and EMA tensor of a checkpoint (what 'the same weights' means)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(ckpt_folder / "ckpt"))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model_variables/", "ema/", "optimizer/"))]
    return {n: reader.get_tensor(n) for n in names}

"""One tiny trained run per session (real demo JPEG TFRecords, a real EfficientNetV2 at 1/4 width and
depth, 32 px, 6 classes, 2 epochs with EMA), reused by every eval/predict/export test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.engine import runs

# The engine tests' tiny run, with what these tests want different (later gin bindings win).
TINY_GIN = runs.TINY_GIN + """
efficientnet.dropout_rate = 0.0
efficientnet.drop_path_rate = 0.0
demo.num_classes = 6
demo.train_per_class = 8
demo.validation_per_class = 3
demo.train_shards = 2
train.log_every_steps = 3
cosine.warmup_epochs = 1
train.deterministic = False
train.plot = False
loggers.names = ('dllogger',)
"""

TINY_MODEL_PARAMS = ("efficientnet.width=0.25", "efficientnet.depth=0.25")


def cli(capsys, *args):
    from tests.clitools import run_inprocess

    return run_inprocess(capsys, *args)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "effnet-cache"
    os.environ["EFFNET_CACHE"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _serve_state(cache_dir, monkeypatch):
    """The demo data cache in the session's temp folder; float32 policy after every test."""
    monkeypatch.setenv("EFFNET_CACHE", str(cache_dir))
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def tiny_gin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gin") / "tiny.gin"
    path.write_text(TINY_GIN)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_gin, cache_dir) -> Path:
    """A finished training run folder (read-only for the tests: copy it to change it)."""
    import gin

    from effnet.cli.main import main
    from effnet.registry import reset_registry

    model_dir = tmp_path_factory.mktemp("runs") / "tiny"
    gin.clear_config()
    try:
        main(["train", "--gin", str(tiny_gin), "--model-dir", str(model_dir)])
    except SystemExit as exc:
        assert exc.code in (0, None), f"training the tiny run failed with exit code {exc.code}"
    finally:
        gin.clear_config()
        reset_registry()
    report = json.loads((model_dir / "report.json").read_text())
    assert report["final"]["global_step"] == 12
    return model_dir


def read_dllogger(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines and all(line.startswith("DLLL ") for line in lines)
    return [json.loads(line[5:]) for line in lines]

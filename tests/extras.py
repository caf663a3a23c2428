"""Tests that need an optional tool (Horovod, ONNX Runtime, OpenVINO, MLflow, W&B, Optuna, PyTorch).

Where the tool is missing they are skipped with the command that installs it, except under
`.ci/run`, which sets ``EFFNET_REQUIRE_EXTRAS=1``: `make test` installs every extra there, so a
missing one is a broken install step and fails the run instead of hiding behind a skip.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def required() -> bool:
    return os.environ.get("EFFNET_REQUIRE_EXTRAS") == "1"


def requires(found: bool, what: str, install: str):
    """A skip mark for ``what`` when not ``found`` (``install`` says how to get it); an error under CI."""
    if not found and required():
        raise RuntimeError(f"{what} is missing although `make test` installs it ({install}); "
                           f"EFFNET_REQUIRE_EXTRAS=1 makes that an error instead of a skip")
    return pytest.mark.skipif(not found, reason=f"{what} is not installed ({install})")


def requires_module(module: str, extra: str):
    """:func:`requires` for an importable module that comes with ``effnet[extra]``."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return requires(found, f"the {module!r} module", f"pip install 'effnet[{extra}]', or make test")

"""Shared test set-up: quiet TensorFlow, a clean registry and gin state per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFNET_TEST", "1")

import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_global_state():
    """gin bindings and the plugin registry are process-global: reset them around every test."""
    from effnet.config import set_trust
    from effnet.registry import reset_registry

    gin.clear_config()
    yield
    gin.clear_config()
    reset_registry()
    set_trust(False)  # what --trust-config set in an in-process CLI call

"""Hypothesis fuzz of gin input through `effnet config`: whatever the text, the exit code is 0 or 2
(never an internal error), and no gin text can make effnet run a module's code."""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.clitools import run_inprocess

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NAMES = st.sampled_from(["train", "efficientnet", "input_pipeline", "cosine", "rmsprop", "loggers", "demo",
                         "trian", "x", "train/efficientnet", "@train", "%MODEL_DIR", "evil_gin_module", "os",
                         "__gin__", "effnet.plugins.models", ""])
PARAMS = st.sampled_from(["epochs", "lr_init", "width", "image_size", "names", "area_range", "model", "", "0"])
VALUES = st.one_of(
    st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=20).map(repr),
    st.sampled_from(["None", "True", "(1, 2)", "[", "]", "{'a': 1}", "@train()", "@evil_gin_module.x()", "%X",
                     "%MODEL_DIR", "'/etc/passwd'", "(", "1e400", "-", "\\", "'", '"""', "@", "()", "[[[[1]]]]"]),
)
KEYWORDS = st.sampled_from(["import evil_gin_module", "import os", "from os import path", "include '/etc/passwd'",
                            "include 'base/train.gin'", "include '../../etc/passwd'", "from __gin__ import dynamic_registration",
                            "include 'self.gin'", "train.epochs = 1", "MACRO = 3", "# comment", ""])
BINDING = st.builds(lambda scope, name, param, value: f"{scope}.{name}.{param} = {value}" if scope == "scope"
                    else f"{name}.{param} = {value}", st.sampled_from(["", "scope"]), NAMES, PARAMS, VALUES)
LINE = st.one_of(BINDING, KEYWORDS, st.text(max_size=40))
GIN_TEXT = st.lists(LINE, max_size=8).map("\n".join)


@pytest.fixture
def marker(tmp_path, monkeypatch):
    pkg = tmp_path / "pydir"
    pkg.mkdir()
    flag = tmp_path / "MARKER"
    (pkg / "evil_gin_module.py").write_text(f"from pathlib import Path\nPath({str(flag)!r}).write_text('ran')\nx = 1\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFNET_TRUST_CONFIG", raising=False)
    yield flag
    sys.modules.pop("evil_gin_module", None)


def check(result, flag):
    assert result.code in (0, 2), result.err[-3000:]
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err[-3000:]
    if result.code == 2:
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert not flag.exists(), "a gin text ran a module's code"


@FUZZ
@given(param=st.one_of(LINE, GIN_TEXT))
def test_fuzz_gin_param(param, marker, capsys):
    check(run_inprocess(capsys, "config", "--gin-param", param), marker)


@FUZZ
@given(text=GIN_TEXT, raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_fuzz_gin_file(text, raw, marker, capsys, tmp_path):
    path = tmp_path / "self.gin"
    if raw is None:
        path.write_text(text)
    else:
        path.write_bytes(raw)
    check(run_inprocess(capsys, "config", "--gin", str(path)), marker)

"""The plugin examples in docs/architecture.md are real: copied out of the page, loaded as a plugin, trained with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.clitools import run_inprocess
from tests.engine import runs

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _example_module(folder: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3, "docs/architecture.md should hold the model, optimizer and augmenter examples"
    (folder / "doc_example_plugin.py").write_text("\n\n".join(blocks))
    return "doc_example_plugin"


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    from effnet.registry import reset_registry

    module = _example_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EFFNET_PLUGINS", module)
    reset_registry()
    yield module  # stays imported: gin refuses to register its configurables twice in one process
    reset_registry()


def test_each_example_is_short_and_registers(example_plugin):
    from effnet import registry

    for kind, name in (("model", "tiny_convnet"), ("optimizer", "nesterov"), ("augmenter", "invert")):
        assert registry.get(kind, name) is not None
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        assert len([line for line in block.splitlines() if line.strip()]) <= 20


def test_training_with_the_example_plugins(example_plugin, tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "\n".join([
        "train.model = 'tiny_convnet'",
        "train.optimizer = 'nesterov'",
        "train.augmenters = ['invert']",
        "invert.probability = 0.3",
        "train.epochs = 1",
        "train.ema_decay = None",
    ]) + "\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "run"))
    assert result.code == 0, result.err
    operative = (tmp_path / "run" / "operative_config.gin").read_text()
    assert "train.model = 'tiny_convnet'" in operative and "invert.probability = 0.3" in operative
    import json

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["model"] == "tiny_convnet" and report["final"]["global_step"] > 0

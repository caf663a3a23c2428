"""A missing integration is a one-line error naming the extra to install (the package made unimportable)."""

from __future__ import annotations

import sys

import pytest

from effnet.errors import UserError


@pytest.mark.parametrize("logger, module", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_tracker_names_its_extra(tmp_path, monkeypatch, logger, module):
    from effnet.loggers import make_loggers

    monkeypatch.setitem(sys.modules, module, None)  # `import mlflow` now raises ImportError
    with pytest.raises(UserError) as err:
        make_loggers(model_dir=tmp_path, names=[logger])
    from effnet.errors import one_line

    assert f"pip install 'effnet[{logger}]'" in one_line(str(err.value))  # what the CLI prints (gin adds a line)


def test_a_missing_optuna_names_its_extra(monkeypatch):
    from effnet.search import _optuna

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UserError, match=r"pip install 'effnet\[optuna\]'"):
        _optuna()

"""Plugin discovery, name lookup and the errors a plugin author or user can cause."""

import textwrap

import pytest

from effnet.errors import UserError
from effnet.registry import KINDS, Registry, env_flag
from tests.clitools import run_inprocess


def write_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_builtins_are_registered_like_any_plugin():
    registry = Registry(autoload=False)
    assert {"dllogger", "stdout", "tensorboard"} <= set(registry.names("logger"))
    assert "single" in registry.names("backend")
    entry = registry.entry("logger", "stdout")
    assert entry.plugin == "effnet.plugins.loggers" and entry.source == "built-in"
    # every kind of hook point exists, even if nothing fills it yet
    assert set(KINDS) == {"model", "optimizer", "lr_schedule", "augmenter", "stage_schedule",
                          "dataset", "logger", "backend", "callback"}


def test_unknown_name_lists_available_and_closest():
    registry = Registry(autoload=False)
    with pytest.raises(UserError) as err:
        registry.get("logger", "tensorbord")
    assert str(err.value) == (
        "unknown logger 'tensorbord' (did you mean 'tensorboard'?); "
        "available loggers: dllogger, mlflow, stdout, tensorboard, wandb"
    )
    with pytest.raises(UserError, match=r"^unknown backend 'zzz'; available backends: .*single"):
        registry.get("backend", "zzz")


def test_duplicate_name_names_both_origins(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, "dup_logger_plugin", """
        import effnet
        @effnet.hookimpl
        def effnet_loggers():
            return {"stdout": lambda model_dir=None: None}
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    with pytest.raises(UserError) as err:
        Registry(autoload=False)
    assert str(err.value) == (
        "logger 'stdout' is registered twice: by effnet.plugins.loggers (built-in) and by "
        "dup_logger_plugin ($EFFNET_PLUGINS); uninstall one of them or rename the logger"
    )


def test_misspelt_hook_is_caught_at_load(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, "typo_plugin", """
        def effnet_modles():
            return {}
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    with pytest.raises(UserError) as err:
        Registry(autoload=False)
    assert str(err.value).startswith(
        "plugin 'typo_plugin' ($EFFNET_PLUGINS) implements unknown hook 'effnet_modles' "
        "(did you mean 'effnet_models'?); known hooks: effnet_augmenters, "
    )


def test_marked_misspelt_hook_is_caught_too(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, "typo_marked_plugin", """
        import effnet
        @effnet.hookimpl
        def optimizers():
            return {}
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    with pytest.raises(UserError, match=r"implements unknown hook 'optimizers' \(did you mean 'effnet_optimizers'\?\)"):
        Registry(autoload=False)


def test_hook_returning_wrong_type(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, "bad_return_plugin", """
        def effnet_models():
            return ["not", "a", "dict"]
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    with pytest.raises(UserError) as err:
        Registry(autoload=False)
    assert str(err.value) == (
        "plugin 'bad_return_plugin' ($EFFNET_PLUGINS): effnet_models() must return a dict of "
        "name -> factory, got list"
    )


def test_plugin_that_fails_to_import(monkeypatch):
    monkeypatch.setenv("EFFNET_PLUGINS", "no_such_module_xyz")
    with pytest.raises(UserError) as err:
        Registry(autoload=False)
    assert str(err.value) == (
        "plugin module 'no_such_module_xyz' from $EFFNET_PLUGINS failed to import: "
        "ModuleNotFoundError: No module named 'no_such_module_xyz'; fix or remove it from $EFFNET_PLUGINS"
    )


def test_cli_reports_plugin_errors_in_one_line(tmp_path, monkeypatch, capsys):
    name = write_module(tmp_path, monkeypatch, "dup2_plugin", """
        def effnet_backends():
            return {"single": object}
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    result = run_inprocess(capsys, "plugins")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert result.err.startswith("error: backend 'single' is registered twice: by effnet.plugins.backends (built-in)")


def test_crashing_plugin_hook_is_named(tmp_path, monkeypatch, capsys):
    """A hook that raises is the plugin's fault: one line naming it (issue #10), the traceback with --debug."""
    name = write_module(tmp_path, monkeypatch, "crash_plugin", """
        def effnet_models():
            raise RuntimeError("boom")
    """)
    monkeypatch.setenv("EFFNET_PLUGINS", name)
    result = run_inprocess(capsys, "plugins")
    assert result.code == 2
    assert result.err == ("error: plugin 'crash_plugin' ($EFFNET_PLUGINS): effnet_models() raised RuntimeError: boom; "
                          "fix or uninstall the plugin, or set EFFNET_DISABLE_PLUGIN_AUTOLOAD=1\n")
    assert "model" in result.out and "efficientnet_v2_s" in result.out  # the other plugins are still listed
    result = run_inprocess(capsys, "--debug", "plugins")
    assert result.code == 2
    assert "Traceback (most recent call last)" in result.err and 'raise RuntimeError("boom")' in result.err


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("ON", True), ("0", False),
                                            ("false", False), ("", False), ("no", False)])
def test_env_flag_parses_booleans(monkeypatch, value, expected):
    monkeypatch.setenv("X_FLAG", value)
    assert env_flag("X_FLAG") is expected


def test_env_flag_rejects_garbage(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(UserError, match=r"^environment variable X_FLAG='maybe' is not a boolean; use 1 or 0$"):
        env_flag("X_FLAG")

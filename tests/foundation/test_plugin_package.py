"""A real, separately pip-installed plugin package, discovered through the `effnet` entry point."""

import json

from tests.clitools import run_subprocess


def test_effnet_plugins_lists_the_installed_package(plugin_env):
    result = run_subprocess("plugins", "--json", env=plugin_env)
    assert result.code == 0, result.err
    listing = json.loads(result.out)
    rows = {(e["kind"], e["name"]): e for e in listing["entries"]}
    assert rows[("model", "tiny_cnn")]["source"] == "effnet-testplugin 0.3.0"
    assert rows[("model", "tiny_cnn")]["plugin"] == "testplugin"
    assert rows[("optimizer", "plain_sgd")]["source"] == "effnet-testplugin 0.3.0"
    assert rows[("logger", "stdout")]["source"] == "built-in"
    assert any(p.endswith("effnet_testplugin/gin") for p in listing["gin_paths"])

    table = run_subprocess("plugins", env=plugin_env)
    assert table.code == 0
    line = next(line for line in table.out.splitlines() if "tiny_cnn" in line)
    assert line.split() == ["model", "tiny_cnn", "testplugin", "effnet-testplugin", "0.3.0"]


def test_config_resolves_the_plugins_gin_file(plugin_env):
    result = run_subprocess("config", "--gin", "testplugin_exp", "--gin-param", "tiny_cnn.width = 4", env=plugin_env)
    assert result.code == 0, result.err
    assert "plain_sgd.momentum = 0.9" in result.out
    assert "tiny_cnn.width = 4" in result.out
    assert "effnet_testplugin/gin/testplugin_exp.gin" in result.out


def test_autoload_off_hides_the_plugin(plugin_env):
    env = {**plugin_env, "EFFNET_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = run_subprocess("plugins", "--json", env=env)
    assert result.code == 0, result.err
    listing = json.loads(result.out)
    assert "tiny_cnn" not in {e["name"] for e in listing["entries"]}
    assert listing["autoload"] is False
    missing = run_subprocess("config", "--gin", "testplugin_exp", env=env)
    assert missing.code == 2
    assert missing.err.startswith("error: gin file 'testplugin_exp' not found")
    # "0" means on, not off (a classic bug in boolean environment variables)
    on = run_subprocess("plugins", "--json", env={**plugin_env, "EFFNET_DISABLE_PLUGIN_AUTOLOAD": "0"})
    assert "tiny_cnn" in {e["name"] for e in json.loads(on.out)["entries"]}


def test_plugin_model_builds_through_the_registry(with_plugin):
    from effnet.registry import Registry

    registry = Registry()
    model = registry.get("model", "tiny_cnn")(num_classes=3)
    assert model.output_shape == (None, 3)

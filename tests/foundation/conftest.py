import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugin_pkg"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    """The test plugin package, really pip-installed into a folder of its own.

    Returns the folder; put it on PYTHONPATH (subprocesses) or sys.path to make the plugin visible.
    Installing with --target keeps the test environment itself untouched.
    """
    target = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN_SRC)],
        check=True, cwd=build, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert (target / "effnet_testplugin").is_dir()
    return target


@pytest.fixture
def with_plugin(plugin_site, monkeypatch):
    """Make the installed plugin visible to this process (entry points are read from sys.path)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    import importlib

    importlib.invalidate_caches()
    yield plugin_site
    sys.modules.pop("effnet_testplugin", None)


@pytest.fixture
def plugin_env(plugin_site):
    path = os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}

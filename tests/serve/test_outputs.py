"""What a command leaves behind: read-only run folders, unwritable outputs, failed evaluations, broken plugins."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest

from tests.engine import runs
from tests.engine.test_train_run import needs_mounts
from tests.serve.conftest import cli


@pytest.fixture
def run_copy(trained_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(trained_run, path)
    return path


@needs_mounts
def test_eval_on_a_read_only_run_folder_writes_nothing(run_copy, cache_dir):
    before = sorted(p.name for p in run_copy.iterdir())
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "effnet.cli.main", "eval", "--model-dir", str(run_copy),
                                            "--weights", "raw"])
    folder = shlex.quote(str(run_copy))
    script = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && exec {cmd}"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                            env=runs.subprocess_env({"EFFNET_CACHE": str(cache_dir)}))
    assert result.returncode == 0, result.stderr
    assert "raw" in result.stdout and "top-1" in result.stdout
    assert f"note: {run_copy} is not writable: evaluated without writing eval_report.json or logs there" in result.stderr
    assert sorted(p.name for p in run_copy.iterdir()) == before


def test_a_failed_eval_leaves_no_log_and_no_report(run_copy, capsys):
    log = run_copy / "eval_log.json"
    assert not log.exists()
    # every validation image is larger than this limit: evaluation fails inside its first pass
    result = cli(capsys, "eval", "--model-dir", str(run_copy), "--gin-param", "input_pipeline.max_image_pixels = 16")
    assert result.code == 2, result.err
    assert len(result.err.strip().splitlines()) == 1 and result.err.startswith("error: ")
    assert not log.exists() and not (run_copy / "eval_report.json").exists()

    ok = cli(capsys, "eval", "--model-dir", str(run_copy), "--weights", "raw")
    assert ok.code == 0, ok.err
    size = log.stat().st_size
    again = cli(capsys, "eval", "--model-dir", str(run_copy), "--gin-param", "input_pipeline.max_image_pixels = 16")
    assert again.code == 2
    assert log.stat().st_size == size  # the earlier evaluation's lines stay, the failed one's are gone


@pytest.mark.parametrize("command", ["predict", "export"])
def test_output_into_an_unwritable_place_fails_before_any_work(trained_run, tmp_path, capsys, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "out" / ("p.csv" if command == "predict" else "export")
    from PIL import Image

    image = tmp_path / "one.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(image)
    args = ["predict", "--model-dir", str(trained_run), str(image), "-o", str(target)] \
        if command == "predict" else ["export", "--model-dir", str(trained_run), "--format", "keras", "-o", str(target)]
    result = cli(capsys, *args)
    assert result.code == 2
    assert result.err.startswith(f"error: --output {'file' if command == 'predict' else 'folder'} '{target}' is not "
                                 f"writable (")
    assert result.err.endswith("; pick a writable place\n") and result.out == ""
    assert blocker.read_text() == "not a folder"


BROKEN_HOOK = '''
import effnet

@effnet.hookimpl
def effnet_models():
    return {"fine": lambda num_classes: None, **{}["missing"]}
'''

BROKEN_IMPORT = "raise RuntimeError('this plugin cannot be imported')\n"


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    from effnet.registry import reset_registry

    (tmp_path / "hook_raises.py").write_text(BROKEN_HOOK)
    (tmp_path / "import_fails.py").write_text(BROKEN_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    yield tmp_path
    for name in ("hook_raises", "import_fails"):
        sys.modules.pop(name, None)
    reset_registry()


def test_a_plugin_hook_that_raises_is_named(plugin_folder, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_PLUGINS", "hook_raises")
    result = cli(capsys, "config", "--gin", "quickstart")
    assert result.code == 2
    assert result.err == ("error: plugin 'hook_raises' ($EFFNET_PLUGINS): effnet_models() raised KeyError: 'missing'; "
                          "fix or uninstall the plugin, or set EFFNET_DISABLE_PLUGIN_AUTOLOAD=1\n")


def test_effnet_plugins_lists_the_others_past_broken_plugins(plugin_folder, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_PLUGINS", "import_fails,hook_raises")
    result = cli(capsys, "plugins")
    assert result.code == 2
    rows = [line.split()[:2] for line in result.out.splitlines()[1:]]
    assert ["model", "efficientnet_v2_s"] in rows and ["optimizer", "rmsprop"] in rows
    errors = result.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("error: plugin module 'import_fails' from $EFFNET_PLUGINS failed to import: "
                                "RuntimeError: this plugin cannot be imported")
    assert errors[1].startswith("error: plugin 'hook_raises' ($EFFNET_PLUGINS): effnet_models() raised KeyError")

"""A catalogue of hostile and mistaken inputs: every one ends in exit 0 (with the right outcome) or in
exit 2 with one line that names the file/key/value, and leaves nothing on disk that looks valid.

Families: gin files and --gin-param (safety: no code run, no file outside the search path read or
echoed), value ranges, checkpoints (damaged, incomplete, retention), images (decoded-size limits),
TFRecords (CRC damage, truncation), plugins and the CLI itself. Most run in-process for speed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.clitools import run_inprocess
from tests.reliability import hostile

MARKER_MODULE = '''
from pathlib import Path
Path({marker!r}).write_text("code from a gin file ran")
'''


def error_line(result, code: int = 2) -> str:
    """The single error line of a failed command (warnings may come before it; no traceback)."""
    assert result.code == code, (result.code, result.err[-2000:])
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err[-2000:]
    lines = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.err[-2000:]
    assert result.err.rstrip("\n").splitlines()[-1] == lines[0]
    return lines[0]


def predict_error(result, image) -> str:
    """predict lists each unreadable file on its own line, then one summary line; exit 2."""
    summary = error_line_last(result)
    assert "could not be read as images" in summary
    named = [line for line in result.err.splitlines() if line.startswith(f"error: {image} ")]
    assert len(named) == 1, result.err[-2000:]
    return named[0]


def error_line_last(result, code: int = 2) -> str:
    assert result.code == code, (result.code, result.err[-2000:])
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err[-2000:]
    return result.err.rstrip("\n").splitlines()[-1]


@pytest.fixture
def exp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFNET_TRUST_CONFIG", raising=False)
    return tmp_path


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module that, if imported, leaves a marker file: proof that a gin file ran code."""
    marker = tmp_path / "MARKER"
    pkg = tmp_path / "pydir"
    write(pkg / "evil_gin_module.py", MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(pkg))
    yield marker
    sys.modules.pop("evil_gin_module", None)


# ==================================================================================================
# 1. gin: safety and damaged files (`effnet config`)

SECRET = "TOP-SECRET-LINE-DO-NOT-ECHO"


@pytest.fixture
def secret(tmp_path):
    return write(tmp_path / "outside" / "secret.txt", SECRET + " = 1\n")


GIN_CASES = {
    # name: (files {relative path: text}, --gin file, --gin-param, fragment of the error)
    "include_absolute_outside": ({"exp/a.gin": "include '{secret}'\n"}, "exp/a.gin", None,
                                 "is outside the gin search path"),
    "include_dotdot_outside": ({"exp/a.gin": "include '../outside/secret.txt'\n"}, "exp/a.gin", None,
                               "is outside the gin search path"),
    "include_self": ({"exp/self.gin": "include 'self.gin'\n"}, "exp/self.gin", None, "gin include cycle"),
    "include_cycle_two_files": ({"exp/x.gin": "include 'y.gin'\n", "exp/y.gin": "include 'x.gin'\n"}, "exp/x.gin",
                                None, "gin include cycle"),
    "include_missing": ({"exp/a.gin": "include 'nope/none.gin'\n"}, "exp/a.gin", None,
                        "included gin file 'nope/none.gin' not found"),
    "binary_gin": ({"exp/bin.gin": bytes(range(256)) * 4}, "exp/bin.gin", None, "not a gin file: it is binary"),
    "latin1_gin": ({"exp/l1.gin": "train.epochs = 1  # caf\xe9\n".encode("latin-1")}, "exp/l1.gin", None,
                   "not UTF-8 text"),
    "binary_included": ({"exp/a.gin": "include 'b.gin'\n", "exp/b.gin": b"\x00\x01\x02binary"}, "exp/a.gin", None,
                        "b.gin: not a gin file: it is binary"),
    "huge_gin": ({"exp/huge.gin": "# " + "x" * (5 * 1024 * 1024) + "\n"}, "exp/huge.gin", None, "more than the"),
    "import_os": ({"exp/a.gin": "import os\n"}, "exp/a.gin", None, "'import os' is not allowed"),
    "import_prefix_trick": ({"exp/a.gin": "import effnetx_evil\n"}, "exp/a.gin", None,
                            "'import effnetx_evil' is not allowed"),
    "from_import": ({"exp/a.gin": "from os import path\n"}, "exp/a.gin", None, "'import os.path' is not allowed"),
    "dynamic_registration": ({"exp/a.gin": "from __gin__ import dynamic_registration\n"}, "exp/a.gin", None,
                             "(dynamic registration) is not allowed"),
    "param_import": ({}, None, "import os", "--gin-param 'import os': 'import os' is not allowed"),
    "param_include_outside": ({}, None, "include '{secret}'", "is outside the gin search path"),
    "unclosed_bracket": ({"exp/a.gin": "train.augmenters = ['randaugment',\n"}, "exp/a.gin", None,
                         "gin syntax error"),
    "deep_nesting_param": ({}, None, "train.augmenters = " + "[" * 3000 + "]" * 3000, "--gin-param"),
    "nul_in_param": ({}, None, "train.epochs = 1\x00", "--gin-param"),
    "unknown_configurable": ({"exp/a.gin": "trian.epochs = 3\n"}, "exp/a.gin", None, "(did you mean 'train'?)"),
    "unknown_parameter": ({}, None, "train.epochz = 3", "(did you mean 'epochs'?)"),
    "param_include_missing": ({}, None, "include 'nope/none.gin'", "included gin file 'nope/none.gin' not found"),
    "gin_is_a_directory": ({"exp/dir.gin/x": "x"}, "exp/dir.gin", None, "not found"),
    "missing_gin": ({}, "exp/nothing_here", None, "gin file 'exp/nothing_here' not found"),
}


@pytest.mark.parametrize("case", list(GIN_CASES))
def test_gin_hostile(case, exp, secret, capsys):
    files, gin_file, param, fragment = GIN_CASES[case]
    for rel, text in files.items():
        write(exp / rel, text.replace("{secret}", str(secret)) if isinstance(text, str) else text)
    args = ["config"]
    if gin_file:
        args += ["--gin", gin_file]
    if param:
        args += ["--gin-param", param.replace("{secret}", str(secret))]
    line = error_line(run_inprocess(capsys, *args))
    assert fragment in line
    assert SECRET not in line  # nothing of a file outside the search path is echoed


def test_gin_import_runs_no_code(exp, marker_module, capsys):
    write(exp / "a.gin", "import evil_gin_module\n")
    line = error_line(run_inprocess(capsys, "config", "--gin", "a.gin"))
    assert "'import evil_gin_module' is not allowed" in line and "--trust-config" in line
    assert not marker_module.exists()


def test_gin_import_with_trust_flag_runs(exp, marker_module, capsys):
    write(exp / "a.gin", "import evil_gin_module\n")
    result = run_inprocess(capsys, "config", "--trust-config", "--gin", "a.gin")
    assert result.code == 0, result.err
    assert marker_module.exists()


def test_gin_import_with_trust_env_runs(exp, marker_module, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_TRUST_CONFIG", "1")
    write(exp / "a.gin", "import evil_gin_module\n")
    assert run_inprocess(capsys, "config", "--gin", "a.gin").code == 0
    assert marker_module.exists()


def test_gin_trust_env_not_boolean(exp, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_TRUST_CONFIG", "maybe")
    assert "EFFNET_TRUST_CONFIG='maybe' is not a boolean" in error_line(run_inprocess(capsys, "config", "--gin-param", "train.epochs = 1"))


def test_gin_symlink_escape(exp, secret, capsys):
    (exp / "exp").mkdir()
    os.symlink(secret, exp / "exp" / "link.gin")
    write(exp / "exp" / "a.gin", "include 'link.gin'\n")
    line = error_line(run_inprocess(capsys, "config", "--gin", "exp/a.gin"))
    assert "is outside the gin search path" in line and SECRET not in line


def test_gin_plugin_module_import_is_allowed(exp, capsys):
    write(exp / "a.gin", "import effnet.plugins.models\ntrain.epochs = 3\n")
    result = run_inprocess(capsys, "config", "--gin", "a.gin")
    assert result.code == 0, result.err
    assert "train.epochs = 3" in result.out


def test_gin_include_next_to_the_file_and_packaged(exp, capsys):
    write(exp / "exp" / "common.gin", "train.epochs = 4\n")
    write(exp / "exp" / "a.gin", "include 'base/loggers.gin'\ninclude 'common.gin'\n")
    result = run_inprocess(capsys, "config", "--gin", "exp/a.gin")
    assert result.code == 0, result.err
    assert "train.epochs = 4" in result.out


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n\n"])
def test_gin_empty_files_are_fine(exp, capsys, text):
    write(exp / "e.gin", text)
    assert run_inprocess(capsys, "config", "--gin", "e.gin").code == 0


# ==================================================================================================
# 2. Run folders from elsewhere: their operative_config.gin is data

@pytest.fixture
def run_copy(trained_run, tmp_path):
    return hostile.copy_run(trained_run, tmp_path / "run")


def test_run_folder_import_runs_no_code(run_copy, marker_module, capsys):
    config = run_copy / "operative_config.gin"
    config.write_text("import evil_gin_module\n" + config.read_text())
    image = write(run_copy.parent / "x.jpg", hostile.jpeg())
    for command in (["eval"], ["predict", str(image)], ["export"]):
        line = error_line(run_inprocess(capsys, *command[:1], "--model-dir", str(run_copy), *command[1:]))
        assert f"{config}:1: 'import evil_gin_module' is not allowed" in line
    assert not marker_module.exists()
    assert not (run_copy / "export").exists() and not (run_copy / "eval_report.json").exists()


def test_run_folder_include_outside_is_not_read(run_copy, secret, capsys):
    config = run_copy / "operative_config.gin"
    config.write_text(f"include '{secret}'\n" + config.read_text())
    line = error_line(run_inprocess(capsys, "eval", "--model-dir", str(run_copy)))
    assert "is outside the gin search path" in line and SECRET not in line


def test_run_folder_binary_operative_config(run_copy, capsys):
    (run_copy / "operative_config.gin").write_bytes(b"\x89\x00\xff" * 100)
    line = error_line(run_inprocess(capsys, "eval", "--model-dir", str(run_copy)))
    assert f"{run_copy / 'operative_config.gin'}: not a gin file" in line


def test_run_folder_trusted_import_runs(run_copy, marker_module, capsys):
    config = run_copy / "operative_config.gin"
    config.write_text("import evil_gin_module\n" + config.read_text())
    result = run_inprocess(capsys, "eval", "--trust-config", "--model-dir", str(run_copy))
    assert result.code == 0, result.err
    assert marker_module.exists()


# ==================================================================================================
# 3. Values out of range: exit 2 before any work, naming key, value and range

TRAIN_RANGE_CASES = [
    ("train.lr_init = -0.5", "train.lr_init=-0.5 is out of range: allowed a number in (0, 10]"),
    ("train.lr_init = 1e400", "train.lr_init=inf is not finite"),
    ("train.steps_per_epoch = 0", "train.steps_per_epoch=0 is out of range"),
    ("train.steps_per_epoch = -3", "train.steps_per_epoch=-3 is out of range"),
    ("train.image_size = 100000", "train.image_size=100000 is out of range: allowed an integer in [1, 4096]"),
    ("train.eval_image_size = 0", "train.eval_image_size=0 is out of range"),
    ("train.batch_size = 0", "train.batch_size=0 is out of range"),
    ("train.epochs = -1", "train.epochs=-1 is out of range"),
    ("train.epochs = 'ten'", "train.epochs='ten' is not a number"),
    ("train.epochs = 2.5", "train.epochs=2.5 is not an integer"),
    ("train.label_smoothing = 1.5", "train.label_smoothing=1.5 is out of range: allowed a number in [0, 1)"),
    ("train.ema_decay = 1.0", "train.ema_decay=1.0 is out of range"),
    ("train.weight_decay = -1e-5", "train.weight_decay=-1e-05 is out of range"),
    ("train.seed = -1", "train.seed=-1 is out of range"),
    ("train.grad_accum_steps = 0", "train.grad_accum_steps=0 is out of range"),
    ("train.clip_norm = 0", "train.clip_norm=0 is out of range"),
    ("train.keep_checkpoints = 0", "train.keep_checkpoints=0 is out of range"),
]


@pytest.mark.parametrize("param,fragment", TRAIN_RANGE_CASES, ids=[p for p, _ in TRAIN_RANGE_CASES])
def test_train_value_out_of_range(param, fragment, tiny_gin, tmp_path, capsys):
    run = tmp_path / "run"
    line = error_line(run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(run),
                                    "--gin-param", param))
    assert fragment in line
    assert not (run / "checkpoints").exists() and not (run / "operative_config.gin").exists()


LATER_RANGE_CASES = [  # checked when their configurable is called, still before the first step
    ("efficientnet.width = -1.0", "efficientnet.width=-1.0 is out of range: allowed a number in (0, 8] or None"),
    ("efficientnet.depth = 0", "efficientnet.depth=0 is out of range"),
    ("efficientnet.bn_momentum = 1.5", "efficientnet.bn_momentum=1.5 is out of range"),
    ("efficientnet.dropout_rate = 1.0", "efficientnet.dropout_rate=1.0 is out of range"),
    ("input_pipeline.shuffle_buffer = -5", "input_pipeline.shuffle_buffer=-5 is out of range"),
    ("input_pipeline.area_range = (0.5, 0.1)", "input_pipeline.area_range=(0.5, 0.1): low 0.5 is above high 0.1"),
    ("input_pipeline.max_image_pixels = 0", "input_pipeline.max_image_pixels=0 is out of range"),
    ("cosine.warmup_epochs = -1", "cosine.warmup_epochs=-1 is out of range"),
    ("rmsprop.rho = 1.5", "rmsprop.rho=1.5 is out of range"),
]


@pytest.mark.parametrize("param,fragment", LATER_RANGE_CASES, ids=[p for p, _ in LATER_RANGE_CASES])
def test_knob_out_of_range(param, fragment, tiny_gin, tmp_path, capsys):
    run = tmp_path / "run"
    line = error_line(run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(run),
                                    "--gin-param", param))
    assert fragment in line
    assert not (run / "checkpoints").exists()


def test_benchmark_value_out_of_range(capsys):
    line = error_line(run_inprocess(capsys, "benchmark", "infer", "--model", "efficientnet_b0",
                                    "--gin-param", "benchmark.image_size = 100000"))
    assert "benchmark.image_size=100000 is out of range" in line


# ==================================================================================================
# 4. Checkpoints: damaged ones are found, skipped with one warning, never silently used


def test_truncated_latest_checkpoint_falls_back_with_one_warning(run_copy, capsys):
    first, last = hostile.checkpoints(run_copy)[:1][0], hostile.checkpoints(run_copy)[-1]
    data = next(last.glob("ckpt.data-*"))
    hostile.truncate(data)
    result = run_inprocess(capsys, "eval", "--model-dir", str(run_copy), "--json")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1 and str(data) in warnings[0] and "truncated" in warnings[0]
    report = json.loads(result.out)
    assert report["checkpoint_step"] < int(last.name.split("-")[1]) and first.exists()


def test_truncated_named_checkpoint_is_one_line(run_copy, capsys):
    last = hostile.checkpoints(run_copy)[-1]
    data = next(last.glob("ckpt.data-*"))
    hostile.truncate(data)
    for command in ("eval", "export"):
        line = error_line(run_inprocess(capsys, command, "--model-dir", str(run_copy), "--checkpoint", str(last)))
        assert f"checkpoint {last} is damaged: {data} has" in line
    assert not (run_copy / "export").exists()


def test_flipped_byte_in_index_is_found(run_copy, capsys):
    last = hostile.checkpoints(run_copy)[-1]
    index = last / "ckpt.index"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    image = write(run_copy.parent / "x.jpg", hostile.jpeg())
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(run_copy), "--checkpoint", str(last),
                                    str(image)))
    assert f"{index} does not match its SHA-256" in line


@pytest.mark.parametrize("victim", ["meta.json", "ckpt.index"])
def test_missing_file_in_latest_checkpoint_falls_back(run_copy, capsys, victim):
    last = hostile.checkpoints(run_copy)[-1]
    (last / victim).unlink()
    result = run_inprocess(capsys, "eval", "--model-dir", str(run_copy), "--json")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1 and f"{last / victim}" in warnings[0] and "missing" in warnings[0]
    assert json.loads(result.out)["checkpoint_step"] < int(last.name.split("-")[1])


def test_garbage_manifest_falls_back(run_copy, capsys):
    last = hostile.checkpoints(run_copy)[-1]
    (last / "manifest.json").write_bytes(b"\xff\xfe{garbage")
    result = run_inprocess(capsys, "eval", "--model-dir", str(run_copy))
    assert result.code == 0, result.err
    assert f"{last / 'manifest.json'} is damaged" in result.err


def _strip_manifests(run):
    """A run folder as an effnet from before manifests left it (real checkpoints, no manifest.json)."""
    for folder in hostile.checkpoints(run):
        (folder / "manifest.json").unlink()
    return hostile.checkpoints(run)[-1]


def _legacy_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "has no manifest.json" in line]


def test_run_without_manifests_evaluates_with_one_warning(run_copy, capsys):
    last = _strip_manifests(run_copy)
    result = run_inprocess(capsys, "eval", "--model-dir", str(run_copy), "--json")
    assert result.code == 0, result.err
    assert _legacy_warnings(result.err) == [f"warning: checkpoint {last} has no manifest.json (written by an older "
                                            f"effnet); sizes and checksums cannot be verified"]
    assert json.loads(result.out)["checkpoint_step"] == int(last.name.split("-")[1])
    assert "damaged" not in result.err


def test_damaged_checkpoint_without_manifest_falls_back_or_is_named(run_copy, capsys):
    last = _strip_manifests(run_copy)
    data = next(last.glob("ckpt.data-*"))
    hostile.truncate(data)
    result = run_inprocess(capsys, "eval", "--model-dir", str(run_copy), "--json")
    assert result.code == 0, result.err
    skipped = [line for line in result.err.splitlines() if "damaged checkpoint" in line]
    assert len(skipped) == 1 and f"{data} cannot be read: truncated or damaged" in skipped[0], result.err
    assert json.loads(result.out)["checkpoint_step"] < int(last.name.split("-")[1])
    assert len(_legacy_warnings(result.err)) == 1  # the older checkpoint it fell back to
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(run_copy), "--checkpoint", str(last),
                                    str(write(run_copy.parent / "x.jpg", hostile.jpeg()))))
    assert f"checkpoint {last} is damaged: {data} cannot be read: truncated or damaged" in line


@pytest.mark.slow
def test_resume_from_checkpoints_without_manifests(tiny_gin, run_copy, capsys):
    last = _strip_manifests(run_copy)
    result = run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(run_copy),
                           "--gin-param", "train.epochs = 3")
    assert result.code == 0, result.err
    assert len(_legacy_warnings(result.err)) == 1 and str(last) in result.err
    resumed = [line for line in (run_copy / "log.json").read_text().splitlines() if "resumed_from" in line]
    assert f'"resumed_from": "{last}"' in resumed[-1]
    from effnet import checkpoint

    final = checkpoint.latest_valid_checkpoint(run_copy, warn=None)
    assert final.step == 3 * 6 and (final.path / "manifest.json").is_file()


def test_every_checkpoint_damaged_is_one_line(run_copy, capsys):
    for ckpt in hostile.checkpoints(run_copy):
        hostile.truncate(next(ckpt.glob("ckpt.data-*")))
    line = error_line(run_inprocess(capsys, "eval", "--model-dir", str(run_copy)))
    assert "has no complete checkpoint" in line
    assert not (run_copy / "eval_report.json").exists()


def test_retention_never_deletes_the_last_valid_checkpoint(tmp_path):
    import tensorflow as tf

    from effnet import checkpoint

    objs = {"w": tf.Variable([1.0, 2.0])}
    writer = checkpoint.CheckpointManager(tmp_path, objs, keep=5)
    good = writer.save(1, {})
    bad = writer.save(2, {})
    hostile.truncate(next(bad.glob("ckpt.data-*")), keep=1)  # damaged after it was written
    checkpoint.CheckpointManager(tmp_path, objs, keep=1)._prune()
    assert good.exists()  # keep=1 keeps the newest folder (damaged) *and* the newest valid one
    assert checkpoint.latest_valid_checkpoint(tmp_path, warn=None).path == good
    problems = []
    assert [c.step for c in checkpoint.list_checkpoints(tmp_path, warn=problems.append)] == [1]
    assert len(problems) == 1 and "ckpt.data-" in problems[0]


def test_verify_checkpoint_api(tmp_path):
    import tensorflow as tf

    from effnet import checkpoint
    from effnet.errors import UserError

    path = checkpoint.CheckpointManager(tmp_path, {"w": tf.Variable([1.0])}).save(3, {})
    checkpoint.verify_checkpoint(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"ckpt.index", "meta.json", *(p.name for p in path.glob("ckpt.data-*"))}
    (path / "meta.json").write_text('{"step": 3, "epoch": 99}')
    with pytest.raises(UserError, match="meta.json has .* bytes, the manifest says|meta.json does not match"):
        checkpoint.verify_checkpoint(path)


@pytest.mark.slow
def test_resume_skips_damaged_latest_checkpoint(tiny_gin, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--gin", str(tiny_gin), "--model-dir", str(run), "--gin-param", "train.mode = 'train'"]
    assert run_inprocess(capsys, *args, "--gin-param", "train.epochs = 1").code == 0
    first = hostile.checkpoints(run)[-1]
    assert run_inprocess(capsys, *args, "--gin-param", "train.epochs = 2").code == 0
    last = hostile.checkpoints(run)[-1]
    hostile.truncate(next(last.glob("ckpt.data-*")))
    result = run_inprocess(capsys, *args, "--gin-param", "train.epochs = 3")
    assert result.code == 0, result.err
    assert f"skipping damaged checkpoint {last.name}" in result.err
    resumed = [line for line in (run / "log.json").read_text().splitlines() if "resumed_from" in line]
    assert str(first) in resumed[-1]  # the third run started from the first checkpoint, not the damaged one
    from effnet import checkpoint

    final = checkpoint.latest_valid_checkpoint(run, warn=None)
    assert final.step == 3 * int(first.name.split("-")[1]) and checkpoint.checkpoint_problem(final.path) is None


# ==================================================================================================
# 5. Images: decoded-size limits checked from the header


@pytest.mark.parametrize("name,data", [
    ("huge.png", hostile.png_claiming(20000, 20000)),
    ("huge.gif", hostile.gif_claiming(65535, 65535)),
    ("huge.bmp", hostile.bmp_claiming(30000, -30000)),
])
def test_image_claiming_huge_size_is_refused_by_name(name, data, trained_run, tmp_path, capsys):
    image = write(tmp_path / name, data)
    result = run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(image))
    assert "max_image_pixels" in predict_error(result, image)


def test_image_limit_is_configurable(trained_run, tmp_path, capsys):
    image = write(tmp_path / "small.jpg", hostile.jpeg(size=48))
    assert run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(image)).code == 0
    result = run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(image),
                           "--gin-param", "input_pipeline.max_image_pixels = 1000")
    assert "image claims 48x48 pixels, more than input_pipeline.max_image_pixels=1000" in predict_error(result, image)


@pytest.mark.parametrize("name,data,fragment", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"this is not a jpeg at all\n", "not a readable"),
    ("short.png", b"\x89PNG", "not a readable"),
])
def test_unreadable_images(name, data, fragment, trained_run, tmp_path, capsys):
    image = write(tmp_path / name, data)
    result = run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(image))
    assert fragment in predict_error(result, image)


def test_header_size_reads_every_format():
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from effnet.data.preprocess import header_size

    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(buffer, fmt)
        assert header_size(tf.constant(buffer.getvalue())).numpy().tolist() == [30, 50], fmt
    assert header_size(tf.constant(hostile.png_claiming(7, 9))).numpy().tolist() == [9, 7]
    assert header_size(tf.constant(b"")).numpy().tolist() == [0, 0]


# ==================================================================================================
# 6. TFRecords: CRCs verified, damage named by file and record, never silently cut short


@pytest.fixture
def records(tmp_path):
    return hostile.write_records(tmp_path / "records")


def test_count_records_finds_each_damaged_record(records):
    from effnet.data.records import count_records

    shard = records / "train-00000-of-00002"
    hostile.damage_record(shard, 3)
    hostile.damage_record(shard, 7)
    count = count_records(str(shard))
    assert count.bad == (3, 7) and count.records == 12 and count.error is None


def test_count_records_damaged_length(records):
    from effnet.data.records import count_records

    shard = records / "train-00000-of-00002"
    hostile.damage_length(shard, 5)
    count = count_records(str(shard))
    assert count.records == 5 and "the length of record 5" in count.error


def test_data_stats_check_lists_every_damaged_record_and_does_not_cache_them_as_healthy(records, capsys):
    shard = records / "train-00001-of-00002"
    hostile.damage_record(shard, 2)
    hostile.damage_record(shard, 9)
    truncated = records / "validation-00000-of-00001"
    hostile.truncate(truncated, keep=truncated.stat().st_size - 5)
    result = run_inprocess(capsys, "data", "stats", str(records), "--check")
    line = error_line(result)
    assert "3 bad record(s)" in line
    assert f"{shard} record 2: damaged record (data CRC mismatch)" in result.out
    assert f"{shard} record 9: damaged record (data CRC mismatch)" in result.out
    assert f"{truncated}: record 5 at byte" in result.out
    cache = json.loads((records / "effnet-dataset.json").read_text())
    assert cache["files"][shard.name]["bad"] == [2, 9]
    # the second time the cache answers, and says the same
    again = run_inprocess(capsys, "data", "stats", str(records), "--check")
    assert again.code == 2 and f"{shard} record 9: damaged record" in again.out


def _train_on(records, tiny_gin, tmp_path, *params):
    gin = write(tmp_path / "rec.gin", tiny_gin.read_text() + "\ntrain.dataset = 'tfrecord'\ntfrecord.data_dir = %DATA_DIR\n"
                "train.batch_size = 4\ntrain.epochs = 1\ninput_pipeline.shuffle_buffer = 0\n")
    args = ["train", "--gin", str(gin), "--model-dir", str(tmp_path / "run"), "--data-dir", str(records)]
    for p in params:
        args += ["--gin-param", p]
    return args


def test_damaged_record_stops_training_by_default(records, tiny_gin, tmp_path, capsys):
    shard = records / "train-00000-of-00002"
    hostile.damage_record(shard, 4)
    line = error_line(run_inprocess(capsys, *_train_on(records, tiny_gin, tmp_path)))
    assert f"TFRecord file {shard}: 1 damaged record(s) (index 4: data CRC mismatch)" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_validation_record_stops_eval(records, trained_run, tmp_path, capsys):
    run = hostile.copy_run(trained_run, tmp_path / "run2")
    shard = records / "validation-00000-of-00001"
    hostile.damage_record(shard, 1)
    line = error_line(run_inprocess(capsys, "eval", "--model-dir", str(run), "--gin-param",
                                    "train.dataset = 'tfrecord'", "--gin-param", f"tfrecord.data_dir = '{records}'"))
    assert f"{shard}: 1 damaged record(s) (index 1" in line
    assert not (run / "eval_report.json").exists()


def test_damaged_record_is_skipped_and_counted_under_skip(records, tiny_gin, tmp_path, capsys):
    shard = records / "train-00000-of-00002"
    hostile.damage_record(shard, 1)
    result = run_inprocess(capsys, *_train_on(records, tiny_gin, tmp_path, "input_pipeline.on_error = 'skip'",
                                              "train.mode = 'train'"))
    assert result.code == 0, result.err
    assert f"{shard}: 1 damaged record(s) (index 1" in result.err


def test_skipped_record_keeps_its_position(records):
    """A damaged record still occupies its place, so positions after it (and a resumed run's data) do not shift."""
    import tensorflow as tf

    from effnet.data.source import TFRecordSource

    shard = records / "train-00000-of-00002"
    healthy = TFRecordSource(str(records), on_error="skip")
    before = [o.decode() for _, _, o in healthy.read_files("train", tf.data.Dataset.from_tensor_slices(
        [str(shard)])).as_numpy_iterator()]
    hostile.damage_record(shard, 5)
    damaged = TFRecordSource(str(records), on_error="skip")
    after = list(damaged.read_files("train", tf.data.Dataset.from_tensor_slices([str(shard)])).as_numpy_iterator())
    assert [o.decode() for _, _, o in after] == before  # same records, same order, same count
    assert [i for i, (encoded, _, _) in enumerate(after) if not encoded] == [5]


def test_truncated_shard_is_one_line(records, tiny_gin, tmp_path, capsys):
    shard = records / "train-00001-of-00002"
    hostile.truncate(shard, keep=shard.stat().st_size - 3)  # ends inside the last record's data CRC
    line = error_line(run_inprocess(capsys, *_train_on(records, tiny_gin, tmp_path)))
    assert f"TFRecord file {shard}: record 11 at byte" in line and "claims" in line
    assert "read its 11 intact records" in line


# ==================================================================================================
# 7. Plugins and the CLI itself


def test_plugin_module_that_does_not_import(capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_PLUGINS", "no_such_effnet_plugin_module")
    line = error_line(run_inprocess(capsys, "plugins"))
    assert "plugin module 'no_such_effnet_plugin_module' from $EFFNET_PLUGINS failed to import" in line


@pytest.mark.parametrize("args,fragment", [
    (["config", "--no-such-option"], "No such option"),
    (["trian"], "No such command 'trian'"),
    (["config", "--gin"], "requires an argument"),
    (["eval", "--model-dir", "/nonexistent/run"], "does not exist"),
    (["predict", "--model-dir", "/nonexistent/run", "x.jpg"], "does not exist"),
])
def test_cli_mistakes(args, fragment, capsys):
    assert fragment in error_line(run_inprocess(capsys, *args))


def test_train_without_model_dir(tiny_gin, capsys):
    assert "gin macro %MODEL_DIR is used but never set; pass --model-dir" in error_line(
        run_inprocess(capsys, "train", "--gin", str(tiny_gin)))


def test_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    line = error_line(run_inprocess(capsys, "eval", "--model-dir", str(tmp_path / "notarun")))
    assert "operative_config.gin" in line

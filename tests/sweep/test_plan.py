"""Planning a sweep without training: run-folder names, --vary grids, variants files and their errors."""

import re
import tomllib
from pathlib import Path

import pytest

from effnet.errors import UserError
from effnet.sweep import Sweep, grid, parse_variants_file, parse_vary, run_name
from tests.clitools import run_inprocess
from tests.engine import runs
from tests.sweep.folders import make_run

ROOT = Path(__file__).resolve().parents[2]
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]*$")


# --------------------------------------------------------------------------------------------------
# Names


def test_names_say_what_differs_and_ignore_order():
    a = run_name({"train.ema_decay": "None", "train.stage_schedule": "'single'"})
    b = run_name({"train.stage_schedule": "'single'", "train.ema_decay": "None"})
    assert a == b == "ema_decay=None,stage_schedule=single"
    assert run_name({"train.lr_init": "0.004"}, seed=2) == "lr_init=0.004,seed=2"
    assert run_name({}, seed=1) == "seed=1" and run_name({}) == "base"
    assert run_name({"x.y": "1"}, seed=0, name="no_ema") == "no_ema,seed=0"


def test_names_are_stable_across_spellings_of_the_same_value():
    (key, first), (_, second) = parse_vary("train.ema_decay=[0.990, None]"), parse_vary("train.ema_decay = [ 0.99 ,None ]")
    assert first == second == ["0.99", "None"]
    one = grid(["progressive.base=[{'image_size': 48, 'dropout': 0.05}]"])[0]
    two = grid(["progressive.base=[{'dropout': 0.05, 'image_size': 48}]"])[0]
    assert run_name(one.bindings) == run_name(two.bindings)


def test_different_values_never_share_a_folder_and_names_are_filesystem_safe():
    values = ["1", "'1'", "(1, 2)", "[1, 2]", "'a b'", "'a_b'", "@sgd", "%MACRO", "()", "'None'", "None",
              "'../../etc'", "'x/y'", "-0.5", "1e-05", "{'a': 1}"]
    names = [run_name({"s.v": v}) for v in values]
    assert len(set(names)) == len(values), names
    for name in names:
        assert SAFE.match(name) and "/" not in name and len(name) <= 150, name
    long = run_name({f"scope.param_{i}": "'" + "x" * 60 + "'" for i in range(5)})
    assert len(long) <= 150 and SAFE.match(long)


def test_same_parameter_name_in_two_configurables_keeps_the_full_keys():
    name = run_name({"efficientnet.dropout_rate": "0.1", "mixup.dropout_rate": "0.2"})
    assert name == "efficientnet.dropout_rate=0.1,mixup.dropout_rate=0.2"


def test_grid_is_the_cartesian_product_in_the_given_order():
    variants = grid(["train.batch_size=[8, 6]", "train.grad_accum_steps=[1, 4]"])
    assert [v.bindings for v in variants] == [
        {"train.batch_size": "8", "train.grad_accum_steps": "1"}, {"train.batch_size": "8", "train.grad_accum_steps": "4"},
        {"train.batch_size": "6", "train.grad_accum_steps": "1"}, {"train.batch_size": "6", "train.grad_accum_steps": "4"}]


def _dry_names(capsys, tmp_path, *options):
    gin = runs.write_gin(tmp_path)
    result = run_inprocess(capsys, "sweep", "--gin", str(gin), "--model-dir", str(tmp_path / "sweep"), "--dry-run", *options)
    assert result.code == 0, result.err
    return [line.split()[0] for line in result.out.splitlines() if not line.startswith(" ")], result.out


def test_dry_run_names_do_not_depend_on_option_order_and_seeds_repeat_each_variant(capsys, tmp_path):
    a, out = _dry_names(capsys, tmp_path, "--vary", "train.ema_decay=[None, 0.9]", "--vary", "train.lr_init=[0.02]",
                        "--seeds", "0,1")
    b, _ = _dry_names(capsys, tmp_path, "--vary", "train.lr_init=[0.02]", "--vary", "train.ema_decay=[None, 0.9]",
                      "--seeds", "0,1")
    assert sorted(a) == sorted(b) and len(a) == 4
    assert "ema_decay=None,lr_init=0.02,seed=1" in a
    assert "--gin-param 'train.seed = 1'" in out and "--gin-param 'train.ema_decay = None'" in out
    assert not (tmp_path / "sweep").exists(), "a dry run writes nothing"


def test_launcher_prefixes_every_run(capsys, tmp_path):
    _, out = _dry_names(capsys, tmp_path, "--vary", "train.ema_decay=[None, 0.9]", "--launcher", "env EFFNET_LAUNCHED=1")
    commands = [line.strip() for line in out.splitlines() if line.startswith(" ")]
    assert len(commands) == 2
    assert all(c.startswith("env EFFNET_LAUNCHED=1 ") and " -m effnet.cli.main train " in c for c in commands)


# --------------------------------------------------------------------------------------------------
# Errors in the sweep's options: one line, exit 2


@pytest.mark.parametrize("options, expected", [
    (["--vary", "train.ema_decay"], "--vary 'train.ema_decay': expected KEY=[VALUE, ...]"),
    (["--vary", "train.ema_decay=0.9"], "the values must be a bracketed list"),
    (["--vary", "train.ema_decay=[]"], "the list of values is empty"),
    (["--vary", "train.ema_decay=[0.9, 0.90]"], "value 0.9 appears more than once"),
    (["--vary", "train.ema_decay=[0.9, None"], "gin syntax error"),
    (["--vary", "train.ema_decay=[None]", "--vary", "train.ema_decay=[0.9]"], "train.ema_decay is varied twice"),
    (["--vary", "MODEL_DIR=['a', 'b']"], "MODEL_DIR is set by the sweep"),
    (["--vary", "train ema=[1]"], "is not a gin binding name"),
    (["--vary", "train.seed=[1, 2]", "--seeds", "0,1"], "train.seed is also set by --seeds"),
    (["--seeds", "0,x"], "--seeds '0,x': 'x' is not a non-negative integer"),
    (["--seeds", "1,1"], "seed 1 appears twice"),
    (["--vary", "train.ema_decay=[None]", "--gin-param", "train.ema_decay=0.9"], "also set by --gin-param"),
    (["--vary", "train.ema_decay=[None]", "--variants", "x.variants"], "either --vary options or --variants FILE"),
    ([], "nothing to vary"),
    (["--vary", "train.ema_dcay=[None, 0.9]"], "--vary 'train.ema_dcay=[None, 0.9]': Configurable 'train' doesn't have a "
                                              "parameter named 'ema_dcay': 'train.ema_dcay = None' (did you mean 'ema_decay'?)"),
    (["--vary", "train.ema_decay=[None]", "--launcher", "  "], "is empty or has an empty word"),
    (["--variants", "no/such/file"], "variants file 'no/such/file' not found"),
    (["--vary", "train.ema_decay=[None]", "--gin-param", "train.epoch=3"], "error: --gin-param 'train.epoch=3': Configurable"),
    (["--vary", "train.ema_decay=[None]", "--launcher", "no-such-launcher -np 2"], "command 'no-such-launcher' not found"),
])
def test_option_errors_are_one_line(capsys, tmp_path, options, expected):
    gin = runs.write_gin(tmp_path)
    result = run_inprocess(capsys, "sweep", "--gin", str(gin), "--model-dir", str(tmp_path / "s"), "--dry-run", *options)
    assert result.code == 2, result.out + result.err
    assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
    assert expected in result.err, result.err


def test_an_unknown_binding_in_a_variants_file_names_its_line(capsys, tmp_path):
    gin = runs.write_gin(tmp_path)
    path = tmp_path / "v.variants"
    path.write_text("[ok]\ntrain.ema_decay = None\n\n[typo]\ntrain.lr_int = 0.1\n")
    result = run_inprocess(capsys, "sweep", "--gin", str(gin), "--model-dir", str(tmp_path / "s"), "--variants", str(path),
                           "--dry-run")
    assert result.code == 2
    assert result.err.startswith(f"error: variant typo: {path}:5: ") and "did you mean 'lr_init'?" in result.err


# --------------------------------------------------------------------------------------------------
# Variants files


def test_variants_file_with_comments_empty_variants_and_multi_line_values(tmp_path):
    path = tmp_path / "a.variants"
    path.write_text(
        "# an ablation\n\n[baseline]   # nothing changes\n\n[no_ema]\ntrain.ema_decay = None\n"
        "[two_stages]\ntrain.stage_schedule = 'progressive'\nprogressive.base = {\n    'image_size': 48,  # smaller\n"
        "    'dropout': 0.05,\n}\n")
    variants = parse_variants_file(path)
    assert [v.name for v in variants] == ["baseline", "no_ema", "two_stages"]
    assert variants[0].bindings == {}
    assert variants[1].bindings == {"train.ema_decay": "None"}
    assert variants[2].bindings == {"train.stage_schedule": "'progressive'",
                                    "progressive.base": "{'dropout': 0.05, 'image_size': 48}"}
    assert variants[2].origin["progressive.base"] == f"{path}:9"


@pytest.mark.parametrize("text, line, expected", [
    ("train.ema_decay = None\n[a]\n", 1, "comes before the first '[name]' header"),
    ("[a b]\n", 1, "variant name 'a b' must be"),
    ("[../up]\n", 1, "variant name '../up' must be"),
    ("[sweep.json]\n", 1, "variant name 'sweep.json' must be"),
    ("[a]\n[b]\n[a]\n", 3, "variant [a] is defined twice (first at line 1)"),
    ("[a]\nx.y = 1\nx.y = 2\n", 3, "x.y is set twice in [a]"),
    ("[a]\nimport os\n", 2, "'import' lines are not allowed"),
    ("[a]\nfrom os import path\n", 2, "'from' lines are not allowed"),
    ("[a]\ninclude 'base/train.gin'\n", 2, "'include' lines are not allowed"),
    ("[a]\nx.y = [1,\n  2\n", 2, "opens a bracket or string that is never closed"),
    ("[a]\nx.y = 1 2\n", 2, "gin syntax error"),
    ("[a]\nx.y =\n", 2, "x.y has no value"),
    ("[a]\njust words\n", 2, "expected a '[name]' header or a 'scope.name = value' binding"),
    ("[a]\nMODEL_DIR = 'x'\n", 2, "MODEL_DIR is set by the sweep"),
    ("[a]\nx.y = os.system('id')\n", 2, "gin syntax error"),
])
def test_variants_file_errors_name_file_and_line(tmp_path, text, line, expected):
    path = tmp_path / "bad.variants"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        parse_variants_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message and "\n" not in message


def test_variants_file_that_is_empty_or_binary(tmp_path):
    empty = tmp_path / "empty.variants"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="no variants"):
        parse_variants_file(empty)
    binary = tmp_path / "bin.variants"
    binary.write_bytes(b"[a]\n\xff\xfe\x00")
    with pytest.raises(UserError, match="not a UTF-8 text file"):
        parse_variants_file(binary)


def test_shipped_ablation_is_found_by_name_and_packaged(capsys, tmp_path):
    plan = Sweep.plan(tmp_path / "abl", ["quickstart"], variants_file="ablations/quickstart")
    plan.validate()
    assert [v.name for v in plan.variants] == ["progressive_ema", "progressive_no_ema", "single_stage_ema", "single_stage_no_ema"]
    assert plan.variants[3].bindings == {"train.stage_schedule": "'single'", "train.ema_decay": "None"}
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["effnet.gin"]
    shipped = {p.relative_to(ROOT / "gin") for p in (ROOT / "gin").rglob("*.variants")}
    covered = {p.relative_to(ROOT / "gin") for pattern in patterns for p in (ROOT / "gin").glob(pattern)}
    assert shipped and shipped <= covered


# --------------------------------------------------------------------------------------------------
# State: what a second invocation skips, and what it refuses


def _plan(tmp_path, *varies, gin_params=()):
    gin = runs.write_gin(tmp_path)
    return Sweep.plan(tmp_path / "sweep", [str(gin)], list(gin_params), varies=list(varies))


def test_a_finished_run_is_skipped_unless_its_arguments_changed(tmp_path):
    plan = _plan(tmp_path, "train.ema_decay=[None, 0.9]")
    make_run(plan.folder(plan.variants[0]), {"train.ema_decay": "None"}, {"val_top1": 0.5})
    make_run(plan.folder(plan.variants[1]), {}, None)  # interrupted: no report
    records = plan.initial_records()
    assert [r["status"] for r in records] == ["done", "pending"]
    plan.write_summary(records)
    assert [r["status"] for r in plan.initial_records()] == ["done", "pending"]
    changed = _plan(tmp_path, "train.ema_decay=[None, 0.9]", gin_params=["train.epochs=3"])
    records = changed.initial_records()
    assert records[0]["status"] == "pending" and "arguments changed" in records[0]["note"]


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    plan = _plan(tmp_path, "train.ema_decay=[None, 0.9]")
    plan.root.mkdir(parents=True)
    with open(plan.root / ".sweep.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another effnet sweep is running in"):
            plan.run(echo=lambda line: None)
    assert not plan.folder(plan.variants[0]).exists()


def test_a_run_still_trained_by_an_earlier_sweep_is_not_started_twice(tmp_path):
    import json
    import subprocess
    import sys

    plan = _plan(tmp_path, "train.ema_decay=[None, 0.9]")
    folder = plan.folder(plan.variants[0])
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(folder)])
    try:
        plan.root.mkdir(parents=True)
        records = [{"name": plan.variants[0].name, "status": "running", "pid": busy.pid}]
        (plan.root / "sweep.json").write_text(json.dumps({"runs": records}))
        with pytest.raises(UserError, match=f"is still being trained by process {busy.pid}"):
            plan.run(echo=lambda line: None)
    finally:
        busy.kill()
        busy.wait()
    assert [r["status"] for r in plan.initial_records()] == ["pending", "pending"], "a dead process is not running"

"""effnet compare on run folders written by hand: columns, seeds, statuses, formats, curves, hostile files."""

import csv
import io
import json
import subprocess
import sys

import pytest

from effnet import compare
from effnet.errors import UserError
from tests.clitools import run_inprocess
from tests.sweep.folders import make_run


def test_columns_are_exactly_the_bindings_that_differ(tmp_path):
    a = make_run(tmp_path / "a", {"train.ema_decay": "None"}, {"val_top1": 0.5, "val_top5": 0.9, "val_loss": 1.5},
                 [(0.25, None), (0.5, None)])
    b = make_run(tmp_path / "b", {"train.ema_decay": "0.99", "train.stage_schedule": "'progressive'",
                                  "progressive.n_stages": "2"},  # progressive.* only where it is used: not a column
                 {"val_top1": 0.75, "val_ema_top1": 0.8}, [(0.5, 0.5), (0.75, 0.8)])
    c = make_run(tmp_path / "c", {"train.ema_decay": "0.990"}, {"val_top1": 0.6}, [(0.3, 0.3), (0.6, 0.6)])
    result = compare.compare(compare.collect([a, b, c]))
    assert result.columns == ["train.ema_decay", "train.stage_schedule"]
    assert [r.bindings for r in result.rows] == [
        {"train.ema_decay": "None", "train.stage_schedule": "'single'"},
        {"train.ema_decay": "0.99", "train.stage_schedule": "'progressive'"},
        {"train.ema_decay": "0.99", "train.stage_schedule": "'single'"}]
    assert all(r.status == "done" for r in result.runs) and not result.grouped
    row = result.rows[0]
    assert row.stats["val_top1"] == (0.5, None, 1) and row.stats["img_per_s"][0] == 100.0
    table = compare.render(result, "table")
    header = table.splitlines()[0].split()
    assert header[:4] == ["run", "train.ema_decay", "train.stage_schedule", "status"] and "top1" in header
    assert "50.00" in table and "75.00" in table
    drawn = compare.plot(result, tmp_path / "curves.png")  # EMA top-1 where a run keeps an EMA, else raw
    assert drawn == [("ema_decay=None, stage_schedule=single", 2), ("ema_decay=0.99, stage_schedule=progressive [EMA]", 2),
                     ("ema_decay=0.99, stage_schedule=single [EMA]", 2)]


def test_seeds_merge_into_mean_and_spread(tmp_path):
    runs = []
    for seed, top1 in ((0, 0.5), (1, 0.7), (2, 0.6)):
        runs.append(make_run(tmp_path / f"ema=None,seed={seed}", {"train.ema_decay": "None", "train.seed": str(seed)},
                             {"val_top1": top1}, [(top1, None)]))
    for seed, top1 in ((0, 0.8), (1, 0.9)):
        runs.append(make_run(tmp_path / f"ema=0.9,seed={seed}", {"train.seed": str(seed)}, {"val_top1": top1}, [(top1, top1)]))
    runs.append(make_run(tmp_path / "ema=0.9,seed=2", {"train.seed": "2"}, None, [(0.4, 0.4)]))  # still going
    result = compare.compare(compare.collect(runs))
    assert result.grouped and result.columns == ["train.ema_decay", "train.seed"]
    no_ema, ema = result.rows
    assert no_ema.label == "ema=None" and no_ema.bindings["train.seed"] == "0,1,2"
    mean, std, n = no_ema.stats["val_top1"]
    assert n == 3 and mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert ema.stats["val_top1"][2] == 2 and ema.stats["val_top1"][0] == pytest.approx(0.85)  # the unfinished seed is left out
    assert ema.status == "2 done, 1 incomplete"
    table = compare.render(result, "table")
    assert "60.00 ± 10.00" in table and "mean ± sample standard deviation" in table
    rows = list(csv.DictReader(io.StringIO(compare.render(result, "csv"))))
    assert rows[0]["val_top1"] == repr(0.6) or float(rows[0]["val_top1"]) == pytest.approx(0.6)
    assert float(rows[0]["val_top1_std"]) == pytest.approx(0.1) and rows[1]["n"] == "2"
    drawn = compare.plot(result, tmp_path / "curves.png")
    assert len(drawn) == 6, "one curve per run, seeds included"


def test_hostile_operative_config_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "sweep_hostile_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(module_dir))
    header = "import os\nimport sweep_hostile_module\nfrom sweep_hostile_module import payload as p\n"
    a = make_run(tmp_path / "a", {"train.lr_init": "0.01"}, {"val_top1": 0.5}, [(0.5, 0.5)], header=header)
    b = make_run(tmp_path / "b", {}, {"val_top1": 0.6}, [(0.6, 0.6)], header=header)
    result = compare.compare(compare.collect([a, b]))
    assert result.columns == ["train.lr_init"]
    assert not marker.exists() and "sweep_hostile_module" not in sys.modules


def test_failed_running_and_pending_runs_from_a_sweep_summary(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "ema_decay=None", {"train.ema_decay": "None"}, {"val_top1": 0.5}, [(0.5, None)])
    running = make_run(root / "ema_decay=0.5", {"train.ema_decay": "0.5"}, None, [(0.2, 0.2)])  # no report yet
    make_run(root / "ema_decay=0.6", {"train.ema_decay": "0.6"}, None, [(0.3, 0.3)])  # its sweep was killed
    (root / "ema_decay=0").mkdir()  # failed before writing anything
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(running)])
    records = [
        {"name": "ema_decay=None", "bindings": {"train.ema_decay": "None"}, "status": "done"},
        {"name": "ema_decay=0.5", "bindings": {"train.ema_decay": "0.5"}, "status": "running", "pid": trainer.pid},
        {"name": "ema_decay=0.6", "bindings": {"train.ema_decay": "0.6"}, "status": "running", "pid": 1},
        {"name": "ema_decay=0", "bindings": {"train.ema_decay": "0"}, "status": "failed",
         "error": "train.ema_decay=0 must be in (0, 1), or None to turn EMA off"},
        {"name": "ema_decay=0.7", "bindings": {"train.ema_decay": "0.7"}, "status": "pending"},
    ]
    (root / "sweep.json").write_text(json.dumps({"runs": records}))
    try:
        result = compare.compare(compare.collect([root]))
    finally:
        trainer.kill()
        trainer.wait()
    assert [r.status for r in result.runs] == ["done", "running", "incomplete", "failed", "pending"]
    assert result.columns == ["train.ema_decay"]
    assert [r.bindings["train.ema_decay"] for r in result.rows] == ["None", "0.5", "0.6", "0", "0.7"]
    assert result.rows[1].stats["val_top1"][0] == 0.2, "an unfinished run shows its latest evaluation"
    table = compare.render(result, "markdown")
    assert "| ema_decay=0 | 0 | failed |" in table
    assert "- ema_decay=0: train.ema_decay=0 must be in (0, 1)" in table
    data = json.loads(compare.render(result, "json"))
    assert data["columns"] == ["train.ema_decay"]
    assert data["runs"][3]["status"] == "failed" and data["runs"][3]["error"].startswith("train.ema_decay=0")
    drawn = compare.plot(result, tmp_path / "c.png", metric="val_top1")
    assert [n for _, n in drawn] == [1, 1, 1] and "(running)" in drawn[1][0] and "(incomplete)" in drawn[2][0]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resumed_runs_sum_wall_time_over_attempts_and_skip_a_repeated_evaluation(tmp_path):
    run = make_run(tmp_path / "r", {}, {"val_top1": 0.5}, [(0.4, 0.4), (0.5, 0.5)], sessions=2, rates=(80.0, 120.0, 100.0))
    with open(run / "log.json", "a") as f:  # the resumed attempt evaluated epoch 2 again
        f.write("\n" + "DLLL " + json.dumps({"type": "LOG", "step": [2], "data": {"val_top1": 0.5, "global_step": 4},
                                              "elapsedtime": "3.0"}) + "\n")
    info = compare.read_run(run)
    assert [p["global_step"] for p in info.curve] == [2, 4]
    assert info.metrics["img_per_s"] == 100.0
    assert info.metrics["wall_seconds"] == pytest.approx(5.0 + 20.0)


@pytest.mark.parametrize("setup, expected", [
    (lambda p: None, "no such folder"),
    (lambda p: p.write_text("x"), "not a folder"),
    (lambda p: p.mkdir(), "not an effnet run folder"),
    (lambda p: (p.mkdir(), (p / "sweep.json").write_text("[1, 2]")), "not a sweep summary"),
    (lambda p: (p.mkdir(), (p / "sweep.json").write_text('{"runs": [{"name": "../../etc"}]}')), "without a valid 'name'"),
])
def test_compare_errors_are_one_line(capsys, tmp_path, setup, expected):
    path = tmp_path / "thing"
    setup(path)
    result = run_inprocess(capsys, "compare", str(path))
    assert result.code == 2 and result.err.count("\n") == 1 and expected in result.err, result.err


def test_broken_files_in_a_run_show_as_invalid_rows(tmp_path):
    good = make_run(tmp_path / "good", {}, {"val_top1": 0.5}, [(0.5, 0.5)])
    bad_json = make_run(tmp_path / "bad_json", {"train.lr_init": "0.1"}, {"val_top1": 0.5})
    (bad_json / "report.json").write_text("{not json")
    bad_gin = make_run(tmp_path / "bad_gin", {}, {"val_top1": 0.5})
    (bad_gin / "operative_config.gin").write_text("train.lr_init = [0.1\n")
    result = compare.compare(compare.collect([good, bad_json, bad_gin]))
    assert [r.status for r in result.runs] == ["done", "invalid", "invalid"]
    assert "report.json: not valid JSON" in result.runs[1].error
    assert "operative_config.gin" in result.runs[2].error and "gin syntax error" in result.runs[2].error


def test_compare_command_formats_output_file_and_plot(capsys, tmp_path):
    a = make_run(tmp_path / "a", {"train.lr_init": "0.01"}, {"val_top1": 0.5}, [(0.3, 0.3), (0.5, 0.5)])
    b = make_run(tmp_path / "b", {}, {"val_top1": 0.6}, [(0.4, 0.4), (0.6, 0.6)])
    out = tmp_path / "table.md"
    result = run_inprocess(capsys, "compare", str(a), str(b), "--format", "markdown", "-o", str(out),
                           "--plot", str(tmp_path / "p.png"), "--plot-metric", "val_ema_top1")
    assert result.code == 0, result.err
    assert out.read_text().startswith("| run | train.lr_init | status |")
    assert "curves of 2 runs" in result.out and (tmp_path / "p.png").stat().st_size > 1000
    result = run_inprocess(capsys, "compare", str(a), str(b), "--format", "json")
    assert json.loads(result.out)["columns"] == ["train.lr_init"]
    with pytest.raises(UserError, match="plot metric 'top_1' is not one of"):
        compare.plot(compare.compare(compare.collect([a])), tmp_path / "x.png", metric="top_1")


def test_the_log_file_named_in_the_operative_config_is_read_but_only_inside_the_run(tmp_path):
    renamed = make_run(tmp_path / "renamed", {"dllogger.filename": "'metrics.json'"}, {"val_top1": 0.5}, [(0.4, 0.4), (0.5, 0.5)])
    (renamed / "log.json").rename(renamed / "metrics.json")
    assert len(compare.read_run(renamed).curve) == 2
    outside = make_run(tmp_path / "outside", {"dllogger.filename": "'../renamed/metrics.json'"}, {"val_top1": 0.5}, [(0.5, 0.5)])
    assert len(compare.read_run(outside).curve) == 1, "reads its own log.json, not another folder's file"


def test_per_class_figures_become_columns_when_runs_have_them(tmp_path):
    """An ablation of train.class_weights is one table: balanced accuracy and macro F1 next to top-1."""
    plain = make_run(tmp_path / "plain", {"train.class_weights": "None"}, {"val_top1": 0.64, "val_balanced_accuracy": 0.644, "val_macro_f1": 0.533},
                     [(0.64, None)])
    weighted = make_run(tmp_path / "weighted", {"train.class_weights": "'balanced'"},
                        {"val_top1": 0.70, "val_balanced_accuracy": 0.70, "val_macro_f1": 0.703}, [(0.70, None)])
    result = compare.compare(compare.collect([plain, weighted]))
    assert result.columns == ["train.class_weights"]
    table = compare.render(result, "table").splitlines()
    header = table[0].split()
    assert header[-3:] == ["bal_acc", "%", "macro_f1"] and "ema_bal_acc" not in header  # no EMA figures: no columns
    assert table[1].split()[-2:] == ["64.40", "0.5330"] and table[2].split()[-2:] == ["70.00", "0.7030"]
    rows = list(csv.DictReader(io.StringIO(compare.render(result, "csv"))))
    assert float(rows[1]["val_balanced_accuracy"]) == 0.70 and float(rows[0]["val_macro_f1"]) == 0.533
    older = make_run(tmp_path / "older", {}, {"val_top1": 0.5}, [(0.5, None)])  # written before these figures
    assert "bal_acc" not in compare.render(compare.compare(compare.collect([older])), "table")

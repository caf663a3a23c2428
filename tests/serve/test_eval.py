"""`effnet eval` on a real trained run: reports, dllogger lines, checkpoint choice, bad input."""

import json
import shutil

import pytest

from tests.serve.conftest import cli, read_dllogger


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A writable copy of the session's run (eval writes its report into the model dir)."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_eval_matches_training_and_writes_report_and_dllogger(capsys, run_copy):
    result = cli(capsys, "eval", "--model-dir", str(run_copy))
    assert result.code == 0, result.err
    report = json.loads((run_copy / "eval_report.json").read_text())
    trained = json.loads((run_copy / "report.json").read_text())["final"]
    # the same checkpoint evaluated by the training loop and by `effnet eval`: the same numbers
    assert report["checkpoint_step"] == 12 and report["split"] == "validation" and report["processes"] == 1
    for which, prefix in (("raw", "val_"), ("ema", "val_ema_")):
        assert report[which]["count"] == 18
        for metric in ("loss", "top1", "top5"):
            assert report[which][metric] == pytest.approx(trained[prefix + metric], rel=1e-5, abs=1e-6)
        lat = report[which]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"]
        assert report[which]["batches"] == 3  # 18 examples in batches of 8
    lines = result.out.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("efficientnet_v2_b0 on")):]
    assert lines[0].startswith("efficientnet_v2_b0 on demo/validation, ckpt-000000012 (step 12), 32 px, batch 8, fp32")
    assert lines[1].split() == ["weights", "loss", "top-1", "top-5", "images", "img/s", "p50", "ms", "p90", "ms",
                                "p95", "ms", "p99", "ms"]
    assert [line.split()[0] for line in lines[2:4]] == ["raw", "ema"]
    # per weights: the per-class figures agree with top-1, the files exist, a short summary
    for which in ("raw", "ema"):
        pc, cal = report[which]["per_class"], report[which]["calibration"]
        assert sum(c["support"] for c in pc["classes"]) == 18 and len(pc["classes"]) == 6
        assert sum(n for t, p, n in pc["confusion"]) == 18
        assert pc["accuracy"] == pytest.approx(report[which]["top1"])  # no logit ties in a trained model
        assert pc["balanced_accuracy"] == pytest.approx(pc["macro_recall"])  # 3 examples per class
        assert 0 <= cal["ece"] <= 1 and sum(b["count"] for b in cal["bins"]) == 18
        files = report[which]["files"]
        assert set(files) == {"confusion_csv", "confusion_png", "reliability_png"}
        assert files["confusion_png"] == str(run_copy / f"eval_confusion_{which}.png")
        csv_rows = (run_copy / f"eval_confusion_{which}.csv").read_text().splitlines()
        assert len(csv_rows) == 7 and csv_rows[0].split(",")[1:] == (run_copy / "labels.txt").read_text().split()
        assert (run_copy / f"eval_reliability_{which}.png").read_bytes()[:4] == b"\x89PNG"
        summary = next(i for i, line in enumerate(lines) if line.startswith(f"{which}: balanced accuracy"))
        assert lines[summary + 1].startswith("  lowest recall: ") and "top confusions: " in "\n".join(lines[summary:])
    records = read_dllogger(run_copy / "eval_log.json")
    params = [r for r in records if r.get("step") == "PARAMETER"]
    assert params and params[0]["data"]["mode"] == "eval" and params[0]["data"]["checkpoint_step"] == 12
    final = [r for r in records if r.get("type") == "LOG" and r.get("step") == []]
    assert len(final) == 1
    assert final[0]["data"]["eval_ema_top1"] == pytest.approx(report["ema"]["top1"])
    assert final[0]["data"]["eval_latency_p99_ms"] == pytest.approx(report["raw"]["latency_ms"]["p99"])
    assert not (run_copy / "log.json").read_text().count("eval_latency")  # the training log is left alone


def test_checkpoint_choice_weights_and_bf16(capsys, run_copy):
    first = sorted((run_copy / "checkpoints").iterdir())[0]
    result = cli(capsys, "eval", "--model-dir", str(run_copy), "--checkpoint", str(first), "--weights", "raw", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["checkpoint_step"] == 6 and report["ema"] is None
    meta = json.loads((first / "meta.json").read_text())["metrics"]
    assert report["raw"]["top1"] == pytest.approx(meta["val_top1"])

    metas = {c.name: json.loads((c / "meta.json").read_text()) for c in (run_copy / "checkpoints").iterdir()}
    best = max(metas.values(), key=lambda m: (m["metrics"]["val_ema_top1"], m["step"]))
    result = cli(capsys, "eval", "--model-dir", str(run_copy), "--checkpoint", "best", "--weights", "ema",
                 "--precision", "bf16", "--batch-size", "18", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["checkpoint_step"] == best["step"] and report["raw"] is None
    assert report["precision"] == "bf16" and report["batch_size"] == 18 and report["ema"]["batches"] == 1
    # bfloat16 activations: the same model within rounding (a few-percent loss change at most)
    assert report["ema"]["loss"] == pytest.approx(best["metrics"]["val_ema_loss"], rel=0.05)


def test_missing_checkpoint_names_the_model_dir_and_what_was_looked_for(capsys, trained_run, tmp_path):
    empty = tmp_path / "fresh"
    empty.mkdir()
    shutil.copy(trained_run / "operative_config.gin", empty)
    result = cli(capsys, "eval", "--model-dir", str(empty))
    assert result.code == 2
    assert result.err == (
        f"error: model dir '{empty}' has no complete checkpoint (looked for {empty}/checkpoints/ckpt-*/ holding "
        f"ckpt.index and meta.json); train first with `effnet train --model-dir {empty}`, or pass --checkpoint PATH\n"
    )
    result = cli(capsys, "eval", "--model-dir", str(tmp_path / "nowhere"))
    assert result.code == 2
    assert result.err == (f"error: model dir '{tmp_path / 'nowhere'}' does not exist; pass the --model-dir of a "
                          f"training run\n")
    result = cli(capsys, "predict", "--model-dir", str(tmp_path), str(trained_run / "labels.txt"))
    assert result.code == 2
    assert result.err == (
        f"error: model dir '{tmp_path}' has no operative_config.gin (looked for {tmp_path}/operative_config.gin); it "
        f"is not a training run folder: pass the --model-dir of a run, or its experiment with --gin\n"
    )
    result = cli(capsys, "eval", "--model-dir", str(trained_run), "--checkpoint", str(tmp_path / "ckpt-7"))
    assert result.code == 2
    assert result.err.startswith(f"error: --checkpoint '{tmp_path / 'ckpt-7'}' does not exist; pass 'latest', 'best'")


def test_checkpoint_of_another_architecture(capsys, trained_run):
    result = cli(capsys, "eval", "--model-dir", str(trained_run), "--gin-param", "train.model = 'efficientnet_b0'")
    assert result.code == 2
    ckpt = trained_run / "checkpoints" / "ckpt-000000012"
    assert result.err == (
        f"error: checkpoint {ckpt} holds efficientnet_v2_b0 with 6 classes, but the config builds efficientnet_b0; "
        f"use the config that wrote it (its run's operative_config.gin) or another --checkpoint\n"
    )
    # same model name, other knobs: the first variable that does not fit is named
    result = cli(capsys, "predict", "--model-dir", str(trained_run), "--gin-param", "efficientnet.width = 0.5",
                 str(trained_run / "labels.txt"))
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith(f"error: checkpoint {ckpt}/ckpt: stem_conv/kernel has shape (3, 3, 3, 8), the model "
                                 f"expects (3, 3, 3, 16); the checkpoint was written by another architecture than the "
                                 f"configured efficientnet_v2_b0")


def test_select_checkpoint_best_and_latest(tmp_path):
    from effnet.checkpoint import write_manifest
    from effnet.errors import UserError
    from effnet.runfolder import select_checkpoint

    def fake(step, metrics):
        folder = tmp_path / "checkpoints" / f"ckpt-{step:09d}"
        folder.mkdir(parents=True)
        (folder / "ckpt.index").write_bytes(b"")
        (folder / "meta.json").write_text(json.dumps({"step": step, "metrics": metrics}))
        write_manifest(folder)  # a whole checkpoint as far as integrity goes

    fake(10, {})
    with pytest.raises(UserError, match=r"no checkpoint in .* has a validation metric \(val_ema_top1 or val_top1\)"):
        select_checkpoint(tmp_path, "best")
    fake(20, {"val_top1": 0.5, "val_ema_top1": 0.7})
    fake(30, {"val_top1": 0.6, "val_ema_top1": 0.6})
    fake(40, {"val_top1": 0.4, "val_ema_top1": 0.5})
    assert select_checkpoint(tmp_path, "latest").step == 40
    assert select_checkpoint(tmp_path, "best").step == 20
    assert select_checkpoint(tmp_path, "best", prefer_ema=False).step == 30
    assert select_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "ckpt-000000030")).step == 30
    assert select_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "ckpt-000000030" / "ckpt.index")).step == 30
    assert select_checkpoint(tmp_path / "elsewhere", str(tmp_path)).step == 40  # another run folder: its latest


def test_show_errors_draws_the_most_confident_mistakes(capsys, run_copy):
    result = cli(capsys, "eval", "--model-dir", str(run_copy), "--weights", "raw", "--show-errors", "4", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)["raw"]
    errors = report["errors"]
    wrong = sum(n for t, p, n in report["per_class"]["confusion"] if t != p)
    assert len(errors) == min(4, wrong)
    assert [e["confidence"] for e in errors] == sorted((e["confidence"] for e in errors), reverse=True)
    assert all(e["true"] != e["predicted"] and e["true_probability"] <= e["confidence"] for e in errors)
    assert report["files"]["errors_png"] == str(run_copy / "eval_errors_raw.png")
    assert (run_copy / "eval_errors_raw.png").read_bytes()[:4] == b"\x89PNG"
    result = cli(capsys, "eval", "--model-dir", str(run_copy), "--show-errors", "-1")
    assert result.code == 2 and "--show-errors" in result.err

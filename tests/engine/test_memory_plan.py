"""The memory planner (``progressive.batch_sizes = 'auto'``): real probes, the fit, the choice, the errors.

The slow tests measure real training steps of a tiny EfficientNetV2 in child processes; the fast
ones feed the planner a run folder's ``memory_plan.json`` (the file a resumed run reads).
"""

import json
import shutil

import pytest

from effnet import memory
from effnet.errors import UserError
from effnet.registry import Registry
from tests.clitools import run_inprocess
from tests.engine import runs

MIB = 1024**2
TINY = "efficientnet.width = 0.25\nefficientnet.depth = 0.25\n"
SPEC = memory.ProbeSpec(model="efficientnet_v2_b0", image_size=0, batch=0, num_classes=3)


@pytest.fixture
def progressive():
    return Registry(autoload=False).get("stage_schedule", "progressive")


@pytest.fixture
def no_probing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the planner probed although the run folder holds the measurements")

    monkeypatch.setattr(memory, "probe", refuse)


def seed_plan(folder, probes, gin_text=""):
    """A memory_plan.json holding probes (MiB) for SPEC, as a first run would have written it."""
    data = {"key": memory._probe_key(SPEC, gin_text),
            "probes": {str(size): [{"batch": b, "peak_bytes": int(m * MIB)} for b, m in points]
                       for size, points in probes.items()}}
    (folder / memory.PLAN_FILE).write_text(json.dumps(data))


def test_each_stage_gets_the_largest_divisor_that_fits(tmp_path, progressive, no_probing):
    # 32 px: 966 MiB + 1 MiB/image; 64 px: 984 MiB + 4 MiB/image
    seed_plan(tmp_path, {32: [(4, 970), (16, 982)], 64: [(4, 1000), (16, 1048)]})
    stages = progressive(epochs=4, final={"image_size": 64, "batch_size": 96}, n_stages=2, base={"image_size": 32},
                         batch_sizes="auto")
    assert [s.auto_batch for s in stages] == [True, True]
    lines = []
    plans = memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=1100 / 1024, log=lines.append)
    # slopes x1.1 (memory.SLOPE_MARGIN): 32 px: 121 images fit, the whole 96; 64 px: 26 fit -> 24 (96 = 4 x 24),
    # the global batch unchanged
    assert [(p.image_size, p.micro_batch, p.grad_accum_steps, p.batch_size) for p in plans] == [
        (32, 96, 1, 96), (64, 24, 4, 96)]
    assert plans[1].predicted_bytes == pytest.approx((984 + 1.1 * 4 * 24) * MIB, abs=1)
    assert lines[1] == ("effnet: memory plan stage 2: 64 px, micro-batch 24 x 4 accumulation = batch 96; predicted "
                        "1.06 GiB of a 1.07 GiB budget (train.memory_budget_gb)")
    # the recipe's own accumulation is a floor: never a larger micro-batch than it asked for
    plans = memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=1100 / 1024, min_accum=2, log=lines.append)
    assert [(p.micro_batch, p.grad_accum_steps) for p in plans] == [(48, 2), (24, 4)]


def test_resume_takes_the_saved_plan_whatever_the_budget(tmp_path, progressive, no_probing):
    seed_plan(tmp_path, {64: [(4, 1000), (16, 1048)]})
    stages = progressive(epochs=2, final={"image_size": 64, "batch_size": 96}, n_stages=1, batch_sizes="auto")
    first = memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=1100 / 1024, log=lambda _: None)
    lines = []
    again = memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=50.0, resuming=True, log=lines.append)
    assert again == first and lines[0].endswith(f"(from {tmp_path / memory.PLAN_FILE})")
    # another model knob: the saved plan is not this run's
    with pytest.raises(UserError, match=r"memory_plan.json does not hold a memory plan for this run's stages and "
                                        r"settings .*restore that file or start in a fresh --model-dir$"):
        memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=2.0, gin_text="efficientnet.width = 0.5",
                    resuming=True)
    # an edited (untrusted) file: refused, never used
    data = json.loads((tmp_path / memory.PLAN_FILE).read_text())
    data["stages"][0]["micro_batch"] = "96; rm -rf /"
    (tmp_path / memory.PLAN_FILE).write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not hold a memory plan"):
        memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=2.0, resuming=True)
    (tmp_path / memory.PLAN_FILE).write_text("[1, 2")
    with pytest.raises(UserError, match="does not hold a memory plan"):
        memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=2.0, resuming=True)


def test_a_budget_below_one_image_names_the_stage_and_the_knob(tmp_path, progressive, no_probing):
    seed_plan(tmp_path, {32: [(4, 970), (16, 982)], 64: [(4, 1000), (16, 1048)]})
    stages = progressive(epochs=4, final={"image_size": 64, "batch_size": 96}, n_stages=2, base={"image_size": 32},
                         batch_sizes="auto")
    with pytest.raises(UserError) as err:
        memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=986 / 1024, log=lambda _: None)
    assert str(err.value) == ("stage 2 (64 px): even a micro-batch of 1 needs about 0.97 GiB, over the memory budget of "
                              "0.96 GiB (train.memory_budget_gb); raise train.memory_budget_gb, or lower "
                              "train.image_size / progressive.base")


def test_micro_batch_choice():
    assert memory.choose_micro_batch(460, 100) == 92  # 460 = 5 x 92
    assert memory.choose_micro_batch(460, 1000) == 460
    assert memory.choose_micro_batch(461, 100) == 1  # a prime batch: only 1 divides it
    assert memory.choose_micro_batch(64, 1000, min_accum=4) == 16
    assert memory.Fit.through([(16, 1048), (4, 1000)]) == memory.Fit(fixed=984, per_image=4)


def test_bad_batch_sizes_and_budgets(progressive, tmp_path):
    with pytest.raises(UserError, match=r"^progressive.batch_sizes='Auto' is neither 'auto' nor a list"):
        progressive(epochs=2, final={"image_size": 64, "batch_size": 8}, batch_sizes="Auto", n_stages=2)
    with pytest.raises(UserError, match=r"^progressive.batch_sizes entry=0 is out of range"):
        progressive(epochs=2, final={"image_size": 64, "batch_size": 8}, batch_sizes=[8, 0], n_stages=2)
    from effnet.settings import TrainConfig

    for value, problem in ((0, "is out of range"), (-2.0, "is out of range"), ("4G", "is not a number")):
        with pytest.raises(UserError, match=rf"^train.memory_budget_gb={value!r} {problem}: allowed a number in "
                                            r"\(0, 1000000\] or None; the GiB a replica's training may use"):
            TrainConfig(model_dir=str(tmp_path), model="m", dataset="d", memory_budget_gb=value)


def test_auto_needs_the_progressive_schedule(tmp_path, capsys):
    gin_path = runs.write_gin(tmp_path, "progressive.batch_sizes = 'auto'\n")
    result = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "r"))
    assert result.code == 2
    assert result.err == ("error: progressive.batch_sizes='auto' is bound but train.stage_schedule='single'; the memory "
                          "planner works on progressive stages: use train.stage_schedule='progressive' (with "
                          "progressive.n_stages=1 for one stage) or remove the binding\n")


def test_default_budget_is_a_fraction_of_the_available_memory():
    available, source = memory.available_bytes()
    budget, words = memory.budget_bytes(None)
    assert 0 < budget <= available and words.startswith("70% of ")
    assert memory.budget_bytes(1.5) == (int(1.5 * 1024**3), "train.memory_budget_gb")


# -- real measurements -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_chosen_micro_batch_fits_when_measured(tmp_path, progressive):
    """Probe two batches, plan under a budget a few images above the fixed cost, then run a real training
    step at the chosen batch in a fresh process: its measured peak stays under the budget."""
    stages = progressive(epochs=1, final={"image_size": 64, "batch_size": 256}, n_stages=1, batch_sizes="auto")
    memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=64.0, gin_text=TINY, log=lambda _: None)
    saved = json.loads((tmp_path / memory.PLAN_FILE).read_text())
    fit = memory.Fit.through([(p["batch"], p["peak_bytes"]) for p in saved["probes"]["64"]])
    assert fit.per_image > 0.1 * MIB  # 64 px activations: a real slope, not noise
    budget = fit.fixed + 100 * fit.per_image  # about 100 images above what the process needs anyway
    [chosen] = memory.plan(stages, model_dir=tmp_path, spec=SPEC, budget_gb=budget / 1024**3, gin_text=TINY,
                           log=lambda _: None)
    assert 1 <= chosen.micro_batch < 256 and chosen.micro_batch * chosen.grad_accum_steps == 256
    assert chosen.predicted_bytes <= budget < fit.predict(2 * chosen.micro_batch)  # 2x would not fit
    measured = memory.probe(memory.ProbeSpec(**{**SPEC.__dict__, "image_size": 64, "batch": chosen.micro_batch,
                                                "accumulation": chosen.grad_accum_steps}), gin_text=TINY)
    assert measured["peak_bytes"] < budget, (measured, budget, chosen)
    assert budget < 16 * 1024**3  # well below the machine's memory


@pytest.mark.slow
def test_training_with_auto_batches(tmp_path, capsys, monkeypatch):
    """`effnet train` with 'auto': probes once, logs one line per stage, trains with the planned accumulation,
    and a restart of the finished run reads the plan instead of probing."""
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "cache"))
    extra = ("train.stage_schedule = 'progressive'\nprogressive.n_stages = 2\nprogressive.batch_sizes = 'auto'\n"
             "train.memory_budget_gb = 64.0\ntrain.steps_per_epoch = 2\ntrain.mode = 'train'\ntrain.plot = False\n")
    gin_path = runs.write_gin(tmp_path, extra)
    first = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "a"))
    assert first.code == 0, first.err
    lines = [line for line in first.err.splitlines() if line.startswith("effnet: memory plan")]
    assert [line.split(":")[1] for line in lines] == [" memory plan stage 1", " memory plan stage 2"]
    assert "32 px, micro-batch 8 x 1 accumulation = batch 8" in lines[0]
    saved = json.loads((tmp_path / "a" / memory.PLAN_FILE).read_text())
    assert list(saved["probes"]) == ["32"]  # one image size, probed once for both stages

    # A budget between 4 and 5 images (from the saved probes) in a new run folder: micro-batch 4, 2 accumulated.
    fit = memory.Fit.through([(p["batch"], p["peak_bytes"]) for p in saved["probes"]["32"]])
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / memory.PLAN_FILE, tmp_path / "b" / memory.PLAN_FILE)
    budget = (fit.predict(4) + fit.predict(5)) / 2 / 1024**3
    second = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "b", f"train.memory_budget_gb = {budget!r}"))
    assert second.code == 0, second.err
    assert "32 px, micro-batch 4 x 2 accumulation = batch 8" in second.err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["parameters"]["global_batch"] == 8 and report["final"]["global_step"] > 0
    log = (tmp_path / "b" / "log.json").read_text()
    assert '"grad_accum_steps": 2' in log

    # Restarting the finished run with another budget reads its plan: same micro-batches, no probe.
    monkeypatch.setattr(memory, "probe", lambda *a, **k: pytest.fail("probed on restart"))
    third = run_inprocess(capsys, *runs.cli_args(gin_path, tmp_path / "b", "train.memory_budget_gb = 64.0"))
    assert third.code == 0, third.err
    assert "32 px, micro-batch 4 x 2 accumulation = batch 8" in third.err and "(from " in third.err

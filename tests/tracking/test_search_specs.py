"""`effnet sweep --search optuna` search-space specs: parsed as data, every mistake one line with its position,
before any trial starts (nothing here trains)."""

from __future__ import annotations

import pytest

from effnet.errors import UserError
from effnet.search import parse_space, parse_space_file
from tests.clitools import run_inprocess
from tests.extras import requires_module

pytestmark = requires_module("optuna", "optuna")


def test_specs_become_optuna_distributions():
    spaces = parse_space(["train.lr_init=loguniform(1e-4, 1e-2)", "train.label_smoothing=uniform(0, 0.2)",
                          "train.optimizer=choice('rmsprop', 'adamw')", "train.epochs=int(1, 3)"])
    dists = {s.key: s.distribution() for s in spaces}
    assert dists["train.lr_init"].log and dists["train.lr_init"].low == 1e-4 and dists["train.lr_init"].high == 1e-2
    assert not dists["train.label_smoothing"].log and dists["train.label_smoothing"].high == 0.2
    assert dists["train.optimizer"].choices == ("rmsprop", "adamw")
    assert (dists["train.epochs"].low, dists["train.epochs"].high) == (1, 3)


@pytest.mark.parametrize("spec, words", [
    ("train.lr_init=lognormal(1e-4, 1e-2)", ["--vary #2", "unknown distribution 'lognormal'"]),
    ("train.lr_init=uniform(0.5, 0.1)", ["--vary #2", "low 0.5 is greater than high 0.1"]),
    ("train.lr_init=loguniform(0, 1e-2)", ["--vary #2", "log range must be above 0"]),
    ("train.optimizer=choice()", ["--vary #2", "choice() of nothing"]),
    ("train.epochs=int(1.5, 3)", ["--vary #2", "whole numbers"]),
    ("train.lr_init=[0.1, 0.2]", ["--vary #2", "not a search space"]),
])
def test_bad_specs_are_one_line_with_their_position(spec, words):
    with pytest.raises(UserError) as err:
        parse_space(["train.label_smoothing=uniform(0, 0.2)", spec])
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_file_of_specs_names_file_and_line(tmp_path):
    good = tmp_path / "space.variants"
    good.write_text("# the search\n[search]\ntrain.lr_init = loguniform(1e-4, 1e-2)  # log scale\n"
                    "train.optimizer = choice('rmsprop', 'adamw')\n")
    assert [s.key for s in parse_space_file(good)] == ["train.lr_init", "train.optimizer"]
    bad = tmp_path / "bad.variants"
    bad.write_text("[search]\ntrain.lr_init = loguniform(1e-4, 1e-2)\ntrain.label_smoothing = uniform(0.3, 0.1)\n")
    with pytest.raises(UserError, match=rf"{bad}:3: low 0.3 is greater than high 0.1"):
        parse_space_file(bad)


def test_a_binding_gin_rejects_fails_before_any_trial(tmp_path, capsys):
    from tests.engine import runs

    gin = runs.write_gin(tmp_path)
    root = tmp_path / "sweep"
    result = run_inprocess(capsys, "sweep", "--gin", str(gin), "--model-dir", str(root), "--search", "optuna", "--trials", "2",
                           "--vary", "train.lr_init=loguniform(1e-4, 1e-2)", "--vary", "train.no_such_knob=uniform(0, 1)")
    assert result.code == 2, result.out + result.err
    line = [x for x in result.err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "--vary #2" in line[0] and "no_such_knob" in line[0], result.err
    assert not (root / "study.db").exists() and not any(root.glob("trial*"))


def _propose(root, count, start=None):
    """Ask ``count`` trials of a study in ``root`` (telling each a value) as a sweep process would."""
    from types import SimpleNamespace

    from effnet.search import Search

    spaces = parse_space(["train.lr_init=loguniform(1e-4, 1e-2)", "train.optimizer=choice('rmsprop', 'adamw')"])
    search = Search(SimpleNamespace(root=root), spaces, trials=4, seed=7)
    study = search.study()
    out = []
    for _ in range(count):
        trial, params, reported = search._next_trial(study)
        assert reported is None
        study.tell(trial.number, params["train.lr_init"])
        out.append(params)
    return out


def test_the_same_command_proposes_the_same_trials_even_across_a_restart(tmp_path):
    whole = _propose(tmp_path / "a", 4)
    assert len({p["train.lr_init"] for p in whole}) == 4
    assert _propose(tmp_path / "b", 4) == whole
    restarted = _propose(tmp_path / "c", 2) + _propose(tmp_path / "c", 2)  # a new process on the same study
    assert restarted == whole


def test_sweep_json_lists_trials_best_first_and_the_objective_is_drawn(tmp_path, capsys):
    from types import SimpleNamespace

    import optuna

    from effnet.search import Search, plot_objective

    root = tmp_path / "s"
    spaces = parse_space(["train.lr_init=loguniform(1e-4, 1e-2)"])
    search = Search(SimpleNamespace(root=root, gin_files=["x.gin"], gin_params=[], data_dir=None), spaces, trials=3)
    study = search.study()
    for value in (0.2, 0.7, None):
        trial, params, _ = search._next_trial(study)
        trial.set_user_attr("folder", search.folder_name(trial.number, params))
        if value is None:
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial.number, value)
    records = search.write_summary(study)
    assert [(r["trial"], r["status"]) for r in records] == [(1, "done"), (0, "done"), (2, "pruned")]
    assert search.best_line(study).startswith("best: trial 1 val_ema_top1 0.7000: --gin-param train.lr_init=")
    pytest.importorskip("matplotlib")
    assert plot_objective(root, tmp_path / "objective.png") == 2
    assert (tmp_path / "objective.png").stat().st_size > 1000

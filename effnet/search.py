"""``effnet sweep --search optuna``: a hyperparameter search over gin bindings with Optuna.

Search spaces are given like grid values, as a distribution instead of a list::

    --vary 'train.lr_init=loguniform(1e-4, 1e-2)'      # float, sampled on a log scale
    --vary 'train.label_smoothing=uniform(0, 0.2)'     # float
    --vary 'train.epochs=int(2, 6)'                    # integer, both ends included (intlog(...): log scale)
    --vary "train.optimizer=choice('rmsprop', 'adamw')"

or one ``scope.name = spec`` per line in a variants file (``#`` comments; ``[name]`` headers are
ignored). Every spec is checked, and gin checks each binding with a value of its range, before any
trial starts; a mistake is one line naming the option (``--vary #2``) or ``file:line``.

Each trial is a real ``effnet train`` subprocess (through the sweep's launcher, if any) in the folder
``trial<N>,<bindings>`` under the sweep folder. The Optuna study lives in ``<sweep>/study.db``
(SQLite) unless ``--storage`` names a database URL that several sweep processes, on several
machines, share. While a trial trains, its per-epoch evaluations (read from its ``log.json``) are
reported to the pruner; a trial the pruner stops gets SIGTERM, which makes ``effnet train`` save a
checkpoint and stop cleanly; the trial is recorded as pruned. Killing the sweep and running the same
command again continues the study: finished and pruned trials are kept, a trial left running by a
dead sweep process on this machine is resumed (its folder continues from its checkpoint) under the
same trial number, and new trials are only asked for until ``--trials`` trials exist.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from effnet.compare import pid_alive, report_complete
from effnet.errors import UserError
from effnet.files import write_json_atomic
from effnet.gintext import canonical, parse_value

__all__ = ["DISTRIBUTIONS", "Space", "Search", "parse_space", "parse_space_file", "plot_objective"]

DISTRIBUTIONS = ("uniform", "loguniform", "int", "intlog", "choice")
STUDY_FILE = "study.db"
_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


@dataclass
class Space:
    """One searched binding: its gin key, distribution and arguments, and where it was written."""

    key: str
    kind: str
    args: tuple
    where: str

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "uniform":
            return d.FloatDistribution(float(self.args[0]), float(self.args[1]))
        if self.kind == "loguniform":
            return d.FloatDistribution(float(self.args[0]), float(self.args[1]), log=True)
        if self.kind in ("int", "intlog"):
            return d.IntDistribution(int(self.args[0]), int(self.args[1]), log=self.kind == "intlog")
        return d.CategoricalDistribution(list(self.args))

    def examples(self) -> list:
        """Values from the range (its ends, every choice), for checking the binding with gin before any trial."""
        if self.kind == "choice":
            return list(self.args)
        return [self.args[0], self.args[1]]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_spec(key: str, text: str, where: str) -> Space:
    """``loguniform(1e-4, 1e-2)`` -> Space; every mistake is one UserError naming ``where``."""
    match = _SPEC_RE.match(text)
    if not match:
        raise UserError(f"{where}: {text.strip()!r} is not a search space; write e.g. '{key}=loguniform(1e-4, 1e-2)', "
                        f"uniform(LOW, HIGH), int(LOW, HIGH) or choice(A, B, ...)")
    kind, inner = match[1], match[2]
    if kind not in DISTRIBUTIONS:
        from effnet.errors import did_you_mean

        raise UserError(f"{where}: unknown distribution {kind!r}{did_you_mean(kind, DISTRIBUTIONS)}; "
                        f"use one of {', '.join(DISTRIBUTIONS)}")
    args = parse_value(f"[{inner}]", where) if inner.strip() else []
    if kind == "choice":
        if not args:
            raise UserError(f"{where}: choice() of nothing; give at least one value, e.g. choice('rmsprop', 'adamw')")
        texts = [canonical(a) for a in args]
        if len(set(texts)) < len(texts):
            raise UserError(f"{where}: choice() lists a value twice; list each value once")
        if not all(a is None or isinstance(a, (bool, int, float, str)) for a in args):
            raise UserError(f"{where}: choice() values must be numbers, strings, True/False or None")
        return Space(key, kind, tuple(args), where)
    if len(args) != 2 or not all(_is_number(a) for a in args):
        raise UserError(f"{where}: {kind}() takes two numbers, LOW and HIGH, e.g. {kind}(1, 10)")
    low, high = args
    if kind in ("int", "intlog") and not all(isinstance(a, int) for a in args):
        raise UserError(f"{where}: {kind}() takes whole numbers; use uniform() for a float range")
    if low > high:
        raise UserError(f"{where}: low {low} is greater than high {high}; write {kind}({high}, {low})")
    if kind in ("loguniform", "intlog") and low <= 0:
        raise UserError(f"{where}: a log range must be above 0 (got {low}); use uniform() to include 0")
    return Space(key, kind, (low, high), where)


def _add(spaces: list[Space], text: str, where: str) -> None:
    """Append the space of one ``KEY = SPEC`` text (its key checked, searched once)."""
    from effnet.sweep import _check_key

    key, spec = (p.strip() for p in text.split("=", 1))
    _check_key(key, where, False)
    if any(s.key == key for s in spaces):
        raise UserError(f"{where}: {key} is searched twice; keep one spec")
    spaces.append(parse_spec(key, spec, where))


def parse_space(options: Sequence[str]) -> list[Space]:
    """The search space of ``--vary 'KEY=SPEC'`` options (position ``--vary #N`` in errors)."""
    spaces: list[Space] = []
    for i, option in enumerate(options, 1):
        where = f"--vary #{i} {option!r}"
        if "=" not in option:
            raise UserError(f"{where}: expected KEY=SPEC, e.g. --vary 'train.lr_init=loguniform(1e-4, 1e-2)'")
        _add(spaces, option, where)
    if not spaces:
        raise UserError("--search optuna needs a search space: --vary 'KEY=SPEC' (repeatable) or --variants FILE")
    return spaces


def parse_space_file(path) -> list[Space]:
    """``scope.name = SPEC`` lines of a variants file (``[name]`` headers and ``#`` comments are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the search space: {exc}") from None
    spaces: list[Space] = []
    for lineno, raw in enumerate(lines, 1):
        line = re.sub(r"(^|\s)#[^'\"()]*$", "", raw).strip()  # a trailing comment (not a '#' inside a quoted choice)
        if not line or line.startswith("#") or re.fullmatch(r"\[[^\]]*\]", line):
            continue
        where = f"{path}:{lineno}"
        if "=" not in line:
            raise UserError(f"{where}: expected 'scope.name = SPEC', e.g. 'train.lr_init = loguniform(1e-4, 1e-2)'")
        _add(spaces, line, where)
    if not spaces:
        raise UserError(f"{path}: no search space; write 'scope.name = SPEC' lines, e.g. 'train.lr_init = loguniform(1e-4, 1e-2)'")
    return spaces


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise UserError(f"--search optuna needs the optuna package ({exc}); install it with pip install 'effnet[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def read_evals(log_path: Path, metric: str) -> dict[int, float]:
    """``{epoch: value}`` of ``metric`` in a run's dllogger evaluation records (data only)."""
    out: dict[int, float] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("DLLL "):
            continue
        try:
            record = json.loads(line[5:])
        except ValueError:
            continue
        step, data = record.get("step"), record.get("data")
        if isinstance(step, list) and len(step) == 1 and isinstance(data, dict) and _is_number(data.get(metric)):
            out[int(step[0])] = float(data[metric])
    return out


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between sweep processes on this machine (released by the kernel on death)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Search:
    """An Optuna study behind a :class:`effnet.sweep.Sweep` (which plans the runs' commands)."""

    def __init__(self, sweep, spaces: list[Space], trials: int, objective: str = "val_ema_top1",
                 direction: str = "maximize", seed: int = 0, pruner: str = "median", storage: str | None = None,
                 study_name: str | None = None, poll_seconds: float = 1.0):
        if trials < 1:
            raise UserError(f"--trials {trials}: give at least 1")
        if direction not in ("maximize", "minimize"):
            raise UserError(f"--direction {direction!r}: use maximize or minimize")
        if pruner not in ("median", "halving", "none"):
            raise UserError(f"--pruner {pruner!r}: use median, halving or none")
        self.sweep, self.spaces, self.trials = sweep, spaces, int(trials)
        self.objective, self.direction, self.seed, self.pruner_name = objective, direction, int(seed), pruner
        self.storage = storage or f"sqlite:///{Path(sweep.root) / STUDY_FILE}"
        self.study_name = study_name or Path(sweep.root).name
        self.poll = poll_seconds
        self.host = socket.gethostname()

    # -- checks ----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """gin checks the experiment with each searched binding at the ends of its range (nothing is built)."""
        from effnet.sweep import Variant

        for space in self.spaces:
            for value in space.examples():
                variant = Variant(name="check", bindings={space.key: canonical(value)}, origin={space.key: space.where})
                self.sweep.variants = [variant]
                self.sweep.validate()
        self.sweep.variants = []

    # -- the study -------------------------------------------------------------------------------------
    def study(self):
        optuna = _optuna()
        pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
                  "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
                  "none": lambda: optuna.pruners.NopPruner()}[self.pruner_name]()
        Path(self.sweep.root).mkdir(parents=True, exist_ok=True)
        try:
            # Two sweeps starting together on one SQLite file would both create its tables and the study
            # (Optuna's create is not atomic there): one at a time, under the lock that hands out trials.
            with _file_lock(Path(self.sweep.root) / ".search.lock"):
                return optuna.create_study(storage=self.storage, study_name=self.study_name, direction=self.direction,
                                           sampler=optuna.samplers.TPESampler(seed=self.seed), pruner=pruner,
                                           load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 - a bad URL, a database that refuses
            raise UserError(f"--storage {self.storage!r}: cannot open the Optuna study: {' '.join(str(exc).split())[:300]}") from None

    def _next_trial(self, study):
        """Under the lock: a trial this process should run (an orphan of a dead sweep here, or a new one), or None."""
        optuna = _optuna()
        state = optuna.trial.TrialState
        with _file_lock(Path(self.sweep.root) / ".search.lock"):
            trials = study.get_trials(deepcopy=False)
            for t in trials:
                owner = t.user_attrs.get("owner") or {}
                if t.state == state.RUNNING and owner.get("host") == self.host and not pid_alive(owner.get("pid"), "effnet"):
                    trial = optuna.trial.Trial(study, trial_id(t))
                    trial.set_user_attr("owner", {"host": self.host, "pid": os.getpid()})
                    return trial, t.params, set(t.intermediate_values)
            if len(trials) >= self.trials:
                return None
            # a sampler seeded by the trial's number: the same command proposes the same trials, whether the
            # study ran in one go, was killed and re-run, or is shared by several sweep processes
            study.sampler = optuna.samplers.TPESampler(seed=self.seed + len(trials))
            trial = study.ask({s.key: s.distribution() for s in self.spaces})
            trial.set_user_attr("owner", {"host": self.host, "pid": os.getpid()})
            return trial, trial.params, None

    def folder_name(self, number: int, params: dict) -> str:
        from effnet.sweep import run_name

        bindings = {k: canonical(v) for k, v in params.items()}
        return run_name(bindings, name=f"trial{number:03d}," + run_name(bindings))

    # -- running ---------------------------------------------------------------------------------------
    def run(self, echo: Callable[[str], None] = print, env: dict | None = None) -> list[dict]:
        from effnet.checkpoint import ensure_writable

        ensure_writable(Path(self.sweep.root))
        study = self.study()
        child_env = {**os.environ, **(env or {})}
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        child_env.setdefault("EFFNET_SWEEP_GROUP", Path(self.sweep.root).name)
        while True:
            picked = self._next_trial(study)
            if picked is None:
                break
            trial, params, reported = picked
            trial.set_user_attr("folder", self.folder_name(trial.number, params))
            self.write_summary(study)  # the trial shows as running
            self._run_trial(study, trial, params, reported, child_env, echo)
            self.write_summary(study)
        return self.write_summary(study)

    def _run_trial(self, study, trial, params, reported, env, echo) -> None:
        """Train one trial (``reported``: the epochs an earlier sweep process already told the pruner, or None)."""
        from effnet.sweep import Variant

        optuna = _optuna()
        number = trial.number
        variant = Variant(name=self.folder_name(number, params), bindings={k: canonical(v) for k, v in params.items()})
        folder = self.sweep.folder(variant)
        tag = f"[trial {number + 1}/{self.trials}] {variant.name}"
        if report_complete(folder):  # it finished before its sweep died: only the telling is left
            proc_code = 0
        else:
            folder.mkdir(parents=True, exist_ok=True)
            echo(f"{tag}: {'resuming' if reported is not None else 'training'} (output: {folder / 'sweep_train.log'})")
            proc_code, pruned_at = self._train(trial, variant, folder, env, set(reported or ()))
            if pruned_at is not None:
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
                echo(f"{tag}: pruned after epoch {pruned_at}")
                return
        value = None
        if proc_code == 0 and report_complete(folder):
            final = json.loads((folder / "report.json").read_text()).get("final", {})
            value = final.get(self.objective)
            if not _is_number(value):
                known = ", ".join(sorted(k for k, v in final.items() if _is_number(v)))
                study.tell(number, state=optuna.trial.TrialState.FAIL)
                echo(f"{tag}: failed: report.json has no objective {self.objective!r}; it has {known}")
                return
            study.tell(number, float(value))
            echo(f"{tag}: {self.objective} {value:.4f}")
        else:
            from effnet.sweep import _error_line

            error = _error_line(folder / "sweep_train.log", 0, proc_code)
            trial.set_user_attr("error", error)
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            echo(f"{tag}: failed (exit {proc_code}): {error}")

    def _train(self, trial, variant, folder: Path, env, reported: set[int]) -> tuple[int, int | None]:
        """Train one trial; report each new evaluation to the pruner; SIGTERM it when pruned."""
        from effnet.sweep import TRAIN_LOG, _die_with_parent, _now

        cmd = self.sweep.command(variant)
        pruned_at = None
        with open(folder / TRAIN_LOG, "a") as log:
            log.write(f"# effnet sweep --search optuna {_now()}: trial {trial.number}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent(os.getpid()))
            try:
                while True:
                    try:
                        code = proc.wait(timeout=self.poll)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if pruned_at is None:
                        for epoch, value in sorted(read_evals(folder / "log.json", self.objective).items()):
                            if epoch in reported:
                                continue
                            reported.add(epoch)
                            trial.report(value, epoch)
                            if trial.should_prune():
                                pruned_at = epoch
                                proc.send_signal(signal.SIGTERM)  # effnet train checkpoints and stops cleanly
                                break
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                raise
        return code, pruned_at

    # -- what the folder shows -------------------------------------------------------------------------
    def write_summary(self, study) -> list[dict]:
        """sweep.json from the study (the source of truth): the trials, best first, for effnet compare."""
        optuna = _optuna()
        names = {optuna.trial.TrialState.COMPLETE: "done", optuna.trial.TrialState.PRUNED: "pruned",
                 optuna.trial.TrialState.RUNNING: "running", optuna.trial.TrialState.FAIL: "failed",
                 optuna.trial.TrialState.WAITING: "pending"}
        records = []
        for t in study.get_trials(deepcopy=False):
            name = t.user_attrs.get("folder") or self.folder_name(t.number, t.params)
            owner = t.user_attrs.get("owner") or {}
            records.append({"name": name, "folder": str(Path(self.sweep.root) / name), "trial": t.number,
                            "bindings": {k: canonical(v) for k, v in t.params.items()}, "seed": None,
                            "status": names.get(t.state, "pending"), "value": t.value,
                            "error": t.user_attrs.get("error"),
                            "pid": owner.get("pid") if t.state == optuna.trial.TrialState.RUNNING else None})
        sign = -1 if self.direction == "maximize" else 1
        records.sort(key=lambda r: (r["value"] is None, sign * (r["value"] or 0), r["trial"]))
        summary = {"version": 1, "root": str(self.sweep.root), "experiment": list(self.sweep.gin_files),
                   "gin_params": list(self.sweep.gin_params), "data_dir": self.sweep.data_dir,
                   "search": {"sampler": "tpe", "seed": self.seed, "pruner": self.pruner_name, "trials": self.trials,
                              "storage": self.storage, "study": self.study_name,
                              "space": {s.key: f"{s.kind}{s.args!r}" for s in self.spaces}},
                   "objective": self.objective, "direction": self.direction,
                   "counts": {s: sum(r["status"] == s for r in records) for s in ("done", "pruned", "failed", "running", "pending")},
                   "runs": records}
        with _file_lock(Path(self.sweep.root) / ".search.lock"):
            write_json_atomic(Path(self.sweep.root) / "sweep.json", summary)
        return records

    def best_line(self, study=None) -> str | None:
        """The best finished trial's bindings as a ready ``--gin-param`` line, or None."""
        import shlex

        study = study or self.study()
        done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
        if not done:
            return None
        best = max(done, key=lambda t: t.value) if self.direction == "maximize" else min(done, key=lambda t: t.value)
        params = " ".join(f"--gin-param {shlex.quote(f'{k}={canonical(v)}')}" for k, v in best.params.items())
        return f"best: trial {best.number} {self.objective} {best.value:.4f}: {params}"


def plot_objective(root, path) -> int:
    """Draw a search's objective over its trials (and the best so far) from ``root/sweep.json``; returns the
    number of trials with a value. Needs matplotlib (``pip install 'effnet[plot]'``)."""
    from effnet.files import read_json_dict

    summary = read_json_dict(Path(root) / "sweep.json") or {}
    if not summary.get("objective") or not isinstance(summary.get("runs"), list):
        raise UserError(f"{root}: not an `effnet sweep --search optuna` folder (its sweep.json has no objective)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("drawing the objective needs matplotlib: pip install 'effnet[plot]'") from None
    points = sorted((r["trial"], r["value"]) for r in summary["runs"]
                    if isinstance(r, dict) and isinstance(r.get("trial"), int) and _is_number(r.get("value")))
    pruned = sorted(r["trial"] for r in summary["runs"] if isinstance(r, dict) and r.get("status") == "pruned")
    better = max if summary.get("direction", "maximize") == "maximize" else min
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if points:
        xs, ys = zip(*points)
        best = [better(ys[:i + 1]) for i in range(len(ys))]
        ax.plot(xs, ys, "o", label=f"{summary['objective']} of a finished trial")
        ax.step(xs, best, where="post", label="best so far")
    for number in pruned:
        ax.axvline(number, color="0.8", linestyle=":", linewidth=1)
    ax.set_xlabel("trial" + (" (dotted: pruned)" if pruned else ""))
    ax.set_ylabel(summary["objective"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(points)


def trial_id(frozen) -> int:
    """The storage id of a FrozenTrial: Optuna's ``Trial(study, id)`` needs it to continue a trial that a dead
    sweep process left running, and FrozenTrial only keeps it privately (pinned in tests/architecture)."""
    return frozen._trial_id

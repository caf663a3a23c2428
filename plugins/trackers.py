"""Experiment trackers as metric sinks: ``mlflow`` and ``wandb`` (optional extras).

``loggers.names = ('dllogger', 'stdout', 'mlflow')`` sends a run to an MLflow tracking server (or a
local store); ``'wandb'`` to Weights & Biases. Like every logger they only exist on the writing
process (rank 0). Neither package is imported until a run asks for its sink; a missing one is a
one-line error naming the extra (``pip install 'effnet[mlflow]'``).

What a tracker gets:

- parameters: every binding of the run's operative config (``train.lr_init`` -> ``0.02``, the value as
  gin writes it) and the run's batch plan (``global_batch``, ``processes``, ``base_lr``, ...);
- metrics: each training window and evaluation at its global optimizer step (the step TensorBoard
  uses), with ``epoch`` and ``stage`` at the same step; the final record with a ``final_`` prefix;
- at the end: ``report.json``, the curves PNG, ``operative_config.gin`` and ``labels.txt`` as artifacts,
  and with ``mlflow.log_model = True`` the exported SavedModel as an MLflow pyfunc model.

The tracker's run id is kept in the run folder (``mlflow_run.json``, ``wandb_run.json``): a resumed
run continues the same tracker run, and the metric steps the tracker already holds are not sent
again, so a killed and resumed run has every step once.

A tracker never stops or slows training: all tracker I/O happens on a background thread that the
training loop only hands records to. When the tracker is down or refuses (wrong URI, server gone
mid-run) one warning line is printed, records wait in memory (up to ``max_buffer``) and are sent when
it answers again; at the end of the run the sink waits at most ``close_timeout`` seconds, then says in
one line how many values it dropped.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import gin

import effnet
from effnet.errors import UserError
from effnet.files import read_json_dict, write_json_atomic
from effnet.loggers import Logger, to_number

MLFLOW_STATE = "mlflow_run.json"
WANDB_STATE = "wandb_run.json"
#: Run-folder files logged as artifacts at the end of a run (those that exist).
ARTIFACTS = ("report.json", "training_curves.png", "operative_config.gin", "labels.txt")
#: A sweep sets this in every trial's environment: trackers group the trial runs by it.
SWEEP_GROUP_ENV = "EFFNET_SWEEP_GROUP"


def _require(module: str, extra: str) -> None:
    """A one-line error naming the extra when ``module`` is not installed. Only looked up here: the heavy
    import happens on the sink's thread, so it does not hold up the run's start."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"logger {extra!r} needs the {module} package, which is not installed; install it with "
                        f"pip install 'effnet[{extra}]'")


def _number(value):
    value = to_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def operative_bindings(model_dir) -> dict[str, str]:
    """The run's operative-config bindings as ``{'train.lr_init': '0.02'}`` (read as data, never executed)."""
    from effnet.gintext import parse_bindings

    path = Path(model_dir) / "operative_config.gin"
    try:
        text = path.read_text()
    except OSError:
        return {}
    try:
        return {b.key: b.value for b in parse_bindings(text, str(path))}
    except UserError:
        return {}


class Records:
    """Turns the engine's ``log_metrics`` calls into ``(key, value, step)`` triples at the global step."""

    def __init__(self):
        self.stage = None
        self.pending: dict[str, float] = {}  # stage values, sent at the next step
        self.last_step = 0
        self.final = False

    def __call__(self, step, metrics, kind) -> list[tuple[str, float, int]]:
        if kind == "stage":
            for k, v in metrics.items():
                value = _number(v)
                if value is not None:
                    self.pending["stage" if k == "stage" else f"stage_{k}"] = value
            return []
        gstep = _number(metrics.get("global_step"))
        if gstep is None:
            gstep = step[-1] if isinstance(step, tuple) and step and kind == "train" else self.last_step
        gstep = int(gstep)
        self.last_step = max(self.last_step, gstep)
        prefix = "final_" if kind == "final" else ""
        out = []
        for k, v in metrics.items():
            value = _number(v)
            if value is not None and k != "global_step":
                out.append((prefix + k, value, gstep))
        if kind in ("train", "eval") and isinstance(step, tuple) and step:
            out.append(("epoch", float(step[0]), gstep))
            out.extend((k, v, gstep) for k, v in self.pending.items())
            self.pending = {}
        if kind == "final":
            self.final = True
        return out


class BackgroundSink(Logger):
    """A sink whose tracker I/O runs on one background thread; subclasses implement the ``_do_*`` methods.

    The engine's calls only append to a queue. The thread sends what is queued, in order; when a send
    fails it warns once, keeps the records and tries again with a growing pause.
    """

    tool = "tracker"

    def __init__(self, model_dir, close_timeout: float = 30.0, max_buffer: int = 100_000, stream=None):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.close_timeout = float(close_timeout)
        self.max_buffer = int(max_buffer)
        self.stream = stream or sys.stderr
        self.records = Records()
        self.queue: collections.deque = collections.deque()
        self.wake = threading.Condition()
        self.closing = False
        self.stopped = False
        self.dropped = 0
        self.buffered = 0  # metric values queued
        self.warned = False
        self.last_error = ""
        self.failing = False
        self.thread = threading.Thread(target=self._loop, name=f"effnet-{self.tool}", daemon=True)
        self.thread.start()

    # -- the engine's side: never blocks -------------------------------------------------------------
    def _put(self, item) -> None:
        with self.wake:
            if item[0] == "metrics":
                if self.buffered + len(item[1]) > self.max_buffer:
                    self.dropped += len(item[1])
                    return
                self.buffered += len(item[1])
            self.queue.append(item)
            self.wake.notify()

    def log_params(self, params):
        bindings = operative_bindings(self.model_dir) if self.model_dir is not None else {}
        merged = {**{k: str(v) for k, v in params.items()}, **bindings}
        self._put(("params", merged))

    def log_metrics(self, step, metrics, kind="train"):
        triples = self.records(step, metrics, kind)
        if triples:
            now = time.time()
            self._journal_write(triples, now)
            self._put(("metrics", triples, now))

    # The journal: every metric value, one JSON line per record, in the run folder. Nothing else reads
    # it; a resumed run replays what the tracker lacks (values queued when the last process was killed).
    journal_name = ""

    def _journal_write(self, triples, now) -> None:
        if self.model_dir is None or not self.journal_name:
            return
        try:
            if getattr(self, "_journal", None) is None:
                self.model_dir.mkdir(parents=True, exist_ok=True)
                self._journal = open(self.model_dir / self.journal_name, "a", buffering=1)
            self._journal.write(json.dumps({"t": now, "m": triples}) + "\n")
        except OSError:
            self._journal = None

    def journal(self) -> list[tuple[float, list]]:
        """Every record of the journal, in order (a torn last line is skipped)."""
        if self.model_dir is None or not self.journal_name:
            return []
        out = []
        try:
            lines = (self.model_dir / self.journal_name).read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                record = json.loads(line)
                out.append((float(record["t"]), [(str(k), float(v), int(s)) for k, v, s in record["m"]]))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def close(self):
        if self.closing:
            return
        extra = self._before_close()
        self._put(("close", self.records.final, extra))
        with self.wake:
            self.closing = True
            self.wake.notify()
        wait = min(self.close_timeout, 5.0) if self.failing else self.close_timeout
        if extra is not None and not self.failing:
            wait = max(wait, 600.0)  # a model to log (asked for with log_model): give the upload its time
        self.thread.join(wait)
        if self.thread.is_alive() or self.queue:
            with self.wake:
                self.stopped = True
                self.dropped += sum(len(i[1]) for i in self.queue if i[0] == "metrics")
                self.queue.clear()
                self.buffered = 0
                self.wake.notify()
        if getattr(self, "_journal", None) is not None:
            self._journal.close()
            self._journal = None
        if self.dropped:
            print(f"effnet: {self.tool}: {self.dropped} metric values were not sent ({self.last_error or 'tracker unreachable'}); "
                  f"the run folder has them all", file=self.stream, flush=True)

    def _before_close(self):
        return None

    # -- the thread ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        pause = 1.0
        connected = False
        while not self.stopped:
            with self.wake:
                while not self.queue and not self.stopped:
                    self.wake.wait(1.0)
                if self.stopped:
                    return
                item = self.queue[0]
            try:
                if not connected:
                    self._do_connect()
                    connected = True
                self._do(item)
            except Exception as exc:  # noqa: BLE001 - any tracker failure: keep training, retry later
                self.last_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                if connected and self._rejected(exc):  # the tracker answered "no" to this record: skip it
                    print(f"effnet: {self.tool} refused a {item[0]} record ({self.last_error}); it is skipped",
                          file=self.stream, flush=True)
                    with self.wake:
                        if self.queue and self.queue[0] is item:
                            self.queue.popleft()
                            if item[0] == "metrics":
                                self.buffered -= len(item[1])
                                self.dropped += len(item[1])
                    if item[0] == "close":
                        return
                    continue
                if not self.warned:
                    self.warned = True
                    print(f"effnet: {self.tool} does not answer ({self.last_error}); training goes on, metrics are "
                          f"kept in memory and sent when it answers", file=self.stream, flush=True)
                self.failing = True
                with self.wake:
                    if self.closing:  # one more try at the end, then give up
                        self.stopped = True
                        return
                    self.wake.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            self.failing = False
            with self.wake:
                if self.queue and self.queue[0] is item:
                    self.queue.popleft()
                    if item[0] == "metrics":
                        self.buffered -= len(item[1])
            if item[0] == "close":
                return

    def _do(self, item) -> None:
        if item[0] == "params":
            self._do_params(item[1])
        elif item[0] == "metrics":
            self._do_metrics(item[1], item[2])
        elif item[0] == "close":
            self._do_close(item[1], item[2])

    def _rejected(self, exc: Exception) -> bool:
        """True when ``exc`` says the tracker refuses this record (retrying cannot help), not that it is down."""
        return False

    def _do_connect(self) -> None:
        raise NotImplementedError

    def _do_params(self, params: dict) -> None:
        raise NotImplementedError

    def _do_metrics(self, triples, timestamp: float) -> None:
        raise NotImplementedError

    def _do_close(self, finished: bool, extra) -> None:
        raise NotImplementedError

    # -- the run folder ------------------------------------------------------------------------------
    def _state(self, name: str) -> dict:
        if self.model_dir is None:
            return {}
        return read_json_dict(self.model_dir / name) or {}

    def _save_state(self, name: str, state: dict) -> None:
        if self.model_dir is not None:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.model_dir / name, state)


# --------------------------------------------------------------------------------------------------
# MLflow


class EffnetSavedModel:
    """An MLflow pyfunc model around an exported effnet SavedModel.

    ``predict`` takes encoded images (a list of bytes, or a DataFrame with an ``images`` column of
    bytes) and returns a DataFrame of the top classes and their probabilities.
    """

    def load_context(self, context):
        import tensorflow as tf

        self.model = tf.saved_model.load(context.artifacts["saved_model"])

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import tensorflow as tf

        if hasattr(model_input, "columns"):
            images = list(model_input["images"] if "images" in model_input.columns else model_input.iloc[:, 0])
        else:
            images = list(model_input)
        out = self.model.signatures["serving_default"](images=tf.constant(images))
        return pd.DataFrame({k: list(v.numpy()) for k, v in out.items()})


def _requirements() -> list[str]:
    """What the pyfunc model needs to load and predict, pinned to the versions that wrote it."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("tensorflow", "pandas"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def _python_model():
    """The pyfunc wrapper as a subclass of ``mlflow.pyfunc.PythonModel`` (made when mlflow is imported)."""
    import mlflow.pyfunc

    return type("EffnetPyfunc", (EffnetSavedModel, mlflow.pyfunc.PythonModel), {"__module__": __name__})


class MLflowSink(BackgroundSink):
    tool = "MLflow"
    journal_name = "mlflow_journal.jsonl"

    def __init__(self, model_dir, tracking_uri=None, experiment=None, run_name=None, log_model=False,
                 artifact_location=None, **kwargs):
        _require("mlflow", "mlflow")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our thread retries, without blocking anyone
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None  # None: MLflow's default
        group = os.environ.get(SWEEP_GROUP_ENV) or None
        self.experiment = experiment or group or "effnet"
        self.group = group
        self.run_name = run_name or (Path(model_dir).name if model_dir is not None else None)
        self.log_model = bool(log_model)
        self.artifact_location = artifact_location
        self.run_id = None
        self.seen: set[tuple[str, int]] = set()
        self.params_logged: dict[str, str] = {}
        self.tool = f"MLflow at {self.tracking_uri}" if self.tracking_uri else "MLflow"
        super().__init__(model_dir, **kwargs)

    def _do_connect(self):
        import mlflow
        from mlflow.tracking import MlflowClient

        if self.tracking_uri is None:
            self.tracking_uri = mlflow.get_tracking_uri()
            self.tool = f"MLflow at {self.tracking_uri}"
        client = MlflowClient(tracking_uri=self.tracking_uri)
        state = self._state(MLFLOW_STATE)
        run = None
        if state.get("run_id") and state.get("tracking_uri") == self.tracking_uri:
            from mlflow.exceptions import MlflowException

            try:
                run = client.get_run(state["run_id"])
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                state = {}  # the run was deleted from the tracker: start a new one
        if run is not None:
            self.previous_status = run.info.status  # `effnet eval` on a finished run must not mark it killed
            client.update_run(run.info.run_id, status="RUNNING")
            self.params_logged = dict(run.data.params)
            for key in run.data.metrics:
                self.seen.update((key, int(m.step)) for m in client.get_metric_history(run.info.run_id, key))
        else:
            found = client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(
                self.experiment, artifact_location=self.artifact_location)
            tags = {"effnet.model_dir": str(self.model_dir) if self.model_dir is not None else ""}
            if self.group:
                tags["effnet.sweep"] = self.group
            run = client.create_run(experiment_id, run_name=self.run_name, tags=tags)
            self._save_state(MLFLOW_STATE, {"tracking_uri": self.tracking_uri, "experiment_id": experiment_id,
                                            "run_id": run.info.run_id})
        self.client, self.run_id = client, run.info.run_id
        for timestamp, triples in self.journal():  # what an earlier process queued but never sent
            self._do_metrics(triples, timestamp)

    def _rejected(self, exc):
        from mlflow.exceptions import MlflowException

        return isinstance(exc, MlflowException) and exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")

    def _do_params(self, params):
        from mlflow.entities import Param

        new = [Param(k[:250], str(v)[:6000]) for k, v in params.items() if k[:250] not in self.params_logged]
        for i in range(0, len(new), 100):
            chunk = new[i:i + 100]
            self.client.log_batch(self.run_id, params=chunk)
            self.params_logged.update({p.key: p.value for p in chunk})

    def _do_metrics(self, triples, timestamp):
        from mlflow.entities import Metric

        todo = [(k, v, s) for k, v, s in triples if (k, s) not in self.seen]
        ms = int(timestamp * 1000)
        for i in range(0, len(todo), 1000):
            chunk = todo[i:i + 1000]
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, ms, s) for k, v, s in chunk])
            self.seen.update((k, s) for k, _, s in chunk)

    def _before_close(self):
        """With ``log_model`` and a finished run: ``effnet export --format saved_model`` (a child process, after
        the report), whose SavedModel the thread logs as the pyfunc model."""
        if not (self.log_model and self.records.final and self.model_dir is not None):
            return None
        import subprocess
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="effnet-mlflow-")) / "export"
        cmd = [sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(self.model_dir),
               "--format", "saved_model", "--output", str(out), "--num-samples", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"effnet: MLflow: the model was not logged: effnet export failed ({tail})", file=self.stream, flush=True)
            return None
        return out

    def _do_close(self, finished, export_dir):
        for name in ARTIFACTS:
            path = self.model_dir / name if self.model_dir is not None else None
            if path is not None and path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if export_dir is not None:
            import shutil

            self._log_pyfunc(Path(export_dir))
            shutil.rmtree(Path(export_dir).parent, ignore_errors=True)
        done = finished or getattr(self, "previous_status", None) == "FINISHED"
        self.client.set_terminated(self.run_id, status="FINISHED" if done else "KILLED")

    def _log_pyfunc(self, export_dir: Path) -> None:
        import mlflow
        import mlflow.pyfunc

        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pyfunc.log_model(name="model", python_model=_python_model()(),
                                    artifacts={"saved_model": str(export_dir / "saved_model")},
                                    pip_requirements=_requirements())  # inferring them takes minutes


@gin.configurable("mlflow")
def mlflow_sink(model_dir=None, tracking_uri=None, experiment=None, run_name=None, log_model: bool = False,
                artifact_location=None, close_timeout: float = 30.0, max_buffer: int = 100_000):
    """MLflow tracking: ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI`` or MLflow's own default),
    ``experiment`` (default: the sweep's name inside ``effnet sweep``, else 'effnet'), ``run_name``
    (default: the run folder's name), ``log_model`` (the SavedModel as a pyfunc model at the end),
    ``artifact_location`` (where a new experiment keeps artifacts; MLflow's default otherwise)."""
    return MLflowSink(model_dir, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                      log_model=log_model, artifact_location=artifact_location, close_timeout=close_timeout,
                      max_buffer=max_buffer)


# --------------------------------------------------------------------------------------------------
# Weights & Biases


class WandbSink(BackgroundSink):
    """W&B through ``wandb.init`` (``mode='offline'`` by default: files under ``<run>/wandb``, uploaded
    later with ``wandb sync``; ``'online'`` needs ``WANDB_API_KEY``). W&B wants steps that only grow: a
    resumed run skips the steps an earlier process already logged (kept in ``wandb_run.json``)."""

    tool = "W&B"

    def __init__(self, model_dir, project="effnet", entity=None, mode="offline", run_name=None, group=None, **kwargs):
        _require("wandb", "wandb")
        self.project, self.entity, self.mode = project, entity, mode
        self.run_name = run_name or (Path(model_dir).name if model_dir is not None else None)
        self.group = group or os.environ.get(SWEEP_GROUP_ENV) or None
        self.floor = -1
        self.max_step = -1
        super().__init__(model_dir, **kwargs)

    def _do_connect(self):
        import uuid

        import wandb

        state = self._state(WANDB_STATE)
        run_id = state.get("run_id") or uuid.uuid4().hex[:12]
        self.floor = self.max_step = int(state.get("max_step", -1))
        self.run = wandb.init(mode=self.mode, dir=str(self.model_dir) if self.model_dir is not None else None,
                              project=self.project, entity=self.entity, id=run_id, resume="allow", name=self.run_name,
                              group=self.group, settings=wandb.Settings(silent=True, console="off"))
        self._save_state(WANDB_STATE, {"run_id": run_id, "project": self.project, "mode": self.mode,
                                       "max_step": self.max_step})

    def _do_params(self, params):
        self.run.config.update(params, allow_val_change=True)

    def _do_metrics(self, triples, timestamp):
        by_step: dict[int, dict] = {}
        for key, value, step in triples:
            if step > self.floor:
                by_step.setdefault(step, {})[key] = value
        for step in sorted(by_step):
            if step < self.max_step:
                continue  # W&B drops a step below its last one
            self.run.log(by_step[step], step=step)
            self.max_step = step
        if by_step:
            self._save_state(WANDB_STATE, {"run_id": self.run.id, "project": self.project, "mode": self.mode,
                                           "max_step": self.max_step})

    def _do_close(self, finished, extra):
        for name in ARTIFACTS:
            path = self.model_dir / name if self.model_dir is not None else None
            if path is not None and path.is_file():
                self.run.save(str(path), base_path=str(self.model_dir), policy="now")
        self.run.finish(exit_code=0 if finished else 1)


@gin.configurable("wandb")
def wandb_sink(model_dir=None, project: str = "effnet", entity=None, mode: str = "offline", run_name=None, group=None,
               close_timeout: float = 30.0, max_buffer: int = 100_000):
    """Weights & Biases: ``mode`` 'offline' (default; ``wandb sync <run>/wandb/offline-run-*`` uploads it) or
    'online'; ``group`` (default: the sweep's name inside ``effnet sweep``)."""
    if mode not in ("offline", "online"):
        raise UserError(f"wandb.mode = {mode!r}: use 'offline' or 'online'")
    return WandbSink(model_dir, project=project, entity=entity, mode=mode, run_name=run_name, group=group,
                     close_timeout=close_timeout, max_buffer=max_buffer)


@effnet.hookimpl
def effnet_loggers():
    return {"mlflow": mlflow_sink, "wandb": wandb_sink}


__all__ = ["ARTIFACTS", "MLFLOW_STATE", "WANDB_STATE", "BackgroundSink", "EffnetSavedModel", "MLflowSink", "Records", "WandbSink",
           "operative_bindings"]

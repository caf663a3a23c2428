"""Training: the :class:`Trainer` (one run, read top to bottom) and the builders it uses.

A run happens in this order (:meth:`Trainer.fit`):

1. :meth:`Trainer.setup` -- backend, precision and seeds, dataset, model, stages, LR schedule,
   optimizer, EMA, step, checkpoints (resume, or ``from_weights``), broadcast, loggers, the
   operative config;
2. for each stage: :meth:`Trainer.start_stage` (image size, batch, regularisation), then for each
   epoch :meth:`Trainer.train_epoch` followed by :meth:`Trainer.end_epoch` (evaluate, save);
3. :meth:`Trainer.finish` -- the final report and curves.

Every setting is a field of :class:`effnet.settings.TrainConfig` (gin ``train.*``). A checkpoint holds
everything needed to continue exactly: weights (including RNG states of dropout layers),
optimizer slots and loss scale, EMA, skip counters, and in ``meta.json`` the :class:`Position`
(stage, epoch and step within the epoch; the input pipeline is a deterministic function of seed,
epoch and that position). What differs between one process and many is the backend's
(:mod:`effnet.distribute`): the Trainer never asks which one it has.
"""

from __future__ import annotations

import inspect
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet import checkpoint as ckpt_mod
from effnet import config as config_mod
from effnet import data, registry, runfolder, stages
from effnet.data import balance
from effnet import precision as precision_mod
from effnet.distribute import plan_batch, replica_notice
from effnet.errors import Interrupted, UserError
from effnet.faults import point
from effnet.files import write_json_atomic
from effnet.loggers import make_loggers
from effnet.models import build_model, check_image_size, count_params
from effnet.settings import TrainConfig

# --------------------------------------------------------------------------------------------------
# Building blocks


def _numeric_params(obj, factory) -> dict[str, float]:
    """Constructor parameters an augmenter keeps as numeric attributes (what a stage may change).

    The contract (effnet/hookspecs.py, effnet_augmenters): an augmenter keeps each numeric
    constructor argument as an attribute of the same name.
    """
    try:
        names = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        names = {}
    out = {}
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def build_augmenters(names: Sequence[str], overrides=None) -> list:
    """Instantiate augmenters by registered name; ``overrides(name) -> dict`` supplies stage values."""
    augmenters = []
    for name in names:
        factory = registry.get("augmenter", name)
        augmenters.append(factory(**(overrides(name) if overrides else {})))
    return augmenters


def final_stage_values(cfg: TrainConfig, model) -> dict[str, float]:
    """The values the last stage uses: the run's configured image size, batch, regularisation."""
    final: dict[str, float] = {"image_size": cfg.image_size, "batch_size": cfg.batch_size}
    final.update(stages.model_stage_values(model))
    for name, aug in zip(cfg.augmenters, build_augmenters(cfg.augmenters)):
        for key, value in _numeric_params(aug, registry.get("augmenter", name)).items():
            final[f"{name}.{key}"] = value
    return final


def _auto_batch_elsewhere(schedule: str) -> bool:
    """Whether gin asks for ``progressive.batch_sizes = 'auto'`` while another schedule runs."""
    import gin

    if schedule == "progressive":
        return False
    try:
        return gin.query_parameter("progressive.batch_sizes") == "auto"
    except ValueError:
        return False


def build_stages(cfg: TrainConfig, model):
    schedule = cfg.plugin("stage_schedule")
    if _auto_batch_elsewhere(schedule):
        raise UserError(f"progressive.batch_sizes='auto' is bound but train.stage_schedule={schedule!r}; the memory "
                        f"planner works on progressive stages: use train.stage_schedule='progressive' (with "
                        f"progressive.n_stages=1 for one stage) or remove the binding")
    result = registry.get("stage_schedule", schedule)(epochs=cfg.epochs, final=final_stage_values(cfg, model))
    return stages.validate(result, cfg.epochs, schedule)


def build_optimizer(cfg: TrainConfig, model, schedule):
    """The run's optimizer (``train.optimizer`` and its knobs) for ``model``."""
    from effnet.step import make_optimizer

    return make_optimizer(cfg.plugin("optimizer"), model, schedule, precision=cfg.precision, clip_norm=cfg.clip_norm,
                          decay_bias=cfg.decay_bias, decay_norm=cfg.decay_norm)


@dataclass
class Position:
    """Where a run is: the stage, the epoch, and the optimizer steps done in that epoch."""

    stage: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


class NonFiniteLoss(UserError):
    pass


def _val_metrics(result, prefix: str) -> dict[str, float]:
    metrics = {f"{prefix}{k}": v for k, v in result.as_dict().items() if k in ("loss", "top1", "top5")}
    if result.confusion is not None:  # per-class figures, so `effnet compare` can show an ablation's effect on them
        from effnet.perclass import per_class_report

        figures = per_class_report(result.confusion)
        metrics.update({f"{prefix}{k}": figures[k] for k in ("balanced_accuracy", "macro_f1") if figures[k] is not None})
    return metrics


# --------------------------------------------------------------------------------------------------
# The run


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` trains and returns the final report."""

    def __init__(self, cfg: TrainConfig | None = None):
        self.cfg = cfg or TrainConfig()
        self.model_dir = Path(self.cfg.model_dir)
        self.position = Position()
        self.history: list[dict] = []
        self.last_eval: dict = {}

    # -- 1. setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        import keras
        import tensorflow as tf

        from effnet.ema import ExponentialMovingAverage
        from effnet.metrics import Evaluator
        from effnet.step import TrainStep, decayed_variables

        cfg = self.cfg
        self.backend = backend = registry.get("backend", cfg.plugin("backend"))()
        backend.setup()
        backend.check_launch(cfg.plugin("backend"))
        self.run_lock = runfolder.lock_run_folder(self.model_dir, backend.is_writer)  # one training per folder

        keras.backend.clear_session()  # fresh layer names and graphs when runs share a process
        precision_mod.configure(cfg.precision)
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.xla = precision_mod.default_xla(cfg.xla)

        self.source = registry.get("dataset", cfg.dataset)()
        info = self.source.info()
        self.class_names = info.class_names
        self.num_classes = int(info.num_classes)
        self.num_train = int(info.num_examples.get("train", 0))
        self.class_weights = balance.resolve_class_weights(  # checked before the model is built
            cfg.class_weights, self.num_classes, info.class_names, counts=lambda: balance.class_counts(self.source))

        if cfg.from_weights:  # the model must reproduce what the weights were trained with (normalisation, padding)
            from effnet.weights import bind_weight_settings

            bind_weight_settings(registry.get("model", cfg.model), cfg.from_weights)
        self.model = model = build_model(cfg.model, self.num_classes, scope=backend.scope())
        if cfg.sync_batchnorm:  # statistics over every replica's batch
            backend.enable_sync_batchnorm(model)
        self.stages = build_stages(cfg, model)
        self.eval_size = cfg.eval_size
        for stage in self.stages:
            check_image_size(model, int(stage.params["image_size"]), cfg.model, detail=f" (stage {stage.index + 1})",
                             hint="; raise train.image_size (or the stage schedule's base image_size)")
        check_image_size(model, self.eval_size, cfg.model, "train.eval_image_size")
        notice = cfg.eval_size_notice()  # once the sizes are known to be usable
        if notice and backend.is_writer:
            print(notice, file=sys.stderr, flush=True)
        if any(stage.auto_batch for stage in self.stages):
            self.stages = self._plan_micro_batches(self.stages)
        accumulation = max(int(s.params.get("grad_accum_steps", cfg.grad_accum_steps)) for s in self.stages)

        # Steps and the learning rate are defined per optimizer update over all replicas (BatchPlan).
        self.stage_steps = [self._steps_per_epoch(s) for s in self.stages]
        total_steps = sum(n * s.epochs for n, s in zip(self.stage_steps, self.stages))
        plan = plan_batch(cfg.batch_size, cfg.grad_accum_steps, backend)
        self.global_batch = plan.global_batch
        self.base_lr = plan.lr(cfg.lr_init, cfg.reference_batch)
        notice = replica_notice(cfg.replicas, plan, cfg.lr_init, cfg.reference_batch)
        if notice and backend.is_writer:
            print(notice, file=sys.stderr, flush=True)
        self.schedule = registry.get("lr_schedule", cfg.plugin("lr_schedule"))(
            base_lr=self.base_lr, steps_per_epoch=self.stage_steps[0], total_steps=total_steps)

        with backend.scope():
            self.optimizer = build_optimizer(cfg, model, self.schedule)
            self.ema = ExponentialMovingAverage(model, cfg.ema_decay) if cfg.ema_decay else None
        self.global_step = backend.variable(tf.zeros([], tf.int64), name="global_step")  # counted by the step
        self.step = TrainStep(
            model, self.optimizer, global_batch=self.global_batch, backend=backend,
            label_smoothing=cfg.label_smoothing, weight_decay=cfg.weight_decay,
            decay_vars=decayed_variables(model, cfg.decay_bias, cfg.decay_norm),
            accumulation_steps=max(accumulation, cfg.grad_accum_steps), ema=self.ema, jit_compile=self.xla, global_step=self.global_step,
            class_weights=self.class_weights)
        self.evaluator = Evaluator(model, backend, jit_compile=self.xla, num_classes=self.num_classes)

        objects = ckpt_mod.checkpoint_objects(model, self.optimizer, self.ema, global_step=self.global_step,
                                              **self.step.checkpoint_objects())
        self.manager = ckpt_mod.CheckpointManager(
            self.model_dir, objects, keep=cfg.keep_checkpoints,
            best_metric="val_ema_top1" if self.ema is not None else "val_top1", is_writer=backend.is_writer,
            every_process_saves=backend.every_process_saves)
        self.manager.remove_partial()
        self.resumed_from = self._resume_or_start()
        # every process continues from the writer's state, restored or fresh
        backend.broadcast_variables([*model.variables, *self.optimizer.variables,
                                     *(self.ema.averages if self.ema else []), self.global_step])

        # Everything that reads gin is built before the operative config is written, so the file holds
        # the whole run (eval, predict and export rebuild the run from it).
        self.log = make_loggers(model_dir=self.model_dir, is_writer=backend.is_writer)
        data.pipeline_options()
        self.operative = ""
        if backend.is_writer:
            if self.class_names:  # predict/export read class names from here, without the dataset
                runfolder.write_labels(self.model_dir, self.class_names)
            self.operative = config_mod.write_operative_config(self.model_dir).read_text()
        self._log_parameters(total_steps)

    def _plan_micro_batches(self, stage_list):
        """``progressive.batch_sizes='auto'``: each stage's micro-batch from the memory budget (effnet.memory).

        The writer probes (or reads the plan cached in the run folder) and every process takes its
        micro-batches, so all replicas accumulate the same number of micro-batches.
        """
        import dataclasses

        import gin
        import numpy as np

        from effnet import memory

        cfg, backend = self.cfg, self.backend
        micro = np.zeros(len(stage_list), np.int64)
        if backend.is_writer:
            spec = memory.ProbeSpec(
                model=cfg.model, image_size=0, batch=0, num_classes=self.num_classes, precision=cfg.precision,
                optimizer=cfg.plugin("optimizer"), weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing,
                ema_decay=cfg.ema_decay, clip_norm=cfg.clip_norm, xla=bool(self.xla), seed=cfg.seed)
            resuming = ckpt_mod.latest_checkpoint(self.model_dir, warn=None) is not None
            plans = memory.plan(stage_list, model_dir=self.model_dir, spec=spec, budget_gb=cfg.memory_budget_gb,
                                min_accum=cfg.grad_accum_steps, gin_text=gin.config_str(), resuming=resuming,
                                log=lambda line: print(line, file=sys.stderr, flush=True))
            micro[:] = [p.micro_batch for p in plans]
        micro = np.asarray(backend.reduce_sum(micro)).astype(np.int64)
        planned = []
        for stage, m in zip(stage_list, micro):
            batch = int(stage.params.get("batch_size", cfg.batch_size))
            planned.append(dataclasses.replace(stage, params={**stage.params, "batch_size": batch,
                                                              "grad_accum_steps": batch // int(m)}))
        self.planned_micro_batch = int(micro[-1])
        return planned

    def _steps_per_epoch(self, stage) -> int:
        cfg = self.cfg
        if cfg.steps_per_epoch:
            return cfg.steps_per_epoch
        global_batch = plan_batch(int(stage.params.get("batch_size", cfg.batch_size)),
                                  int(stage.params.get("grad_accum_steps", cfg.grad_accum_steps)), self.backend).global_batch
        steps = self.num_train // global_batch
        if steps < 1:
            raise UserError(
                f"dataset {cfg.dataset!r} has {self.num_train} training examples, fewer than one global batch of "
                f"{global_batch}; lower train.batch_size"
            )
        return steps

    def _resume_or_start(self):
        """Restore the latest checkpoint of the model dir, or load ``from_weights`` for a new run."""
        cfg = self.cfg
        latest = ckpt_mod.latest_checkpoint(self.model_dir)
        if latest is None:
            if self.backend.is_writer:  # only damaged ones: starting over, they are kept aside (and said so)
                ckpt_mod.set_aside_damaged(self.model_dir)
            if cfg.from_weights:
                from effnet.weights import load_weights

                loader = getattr(registry.get("model", cfg.model), "load_weights", None)
                load_weights(self.model, cfg.from_weights, replace_head=cfg.replace_head, keras_loader=loader)
                if self.ema is not None:
                    self.ema.reset()
            return None
        found = (latest.meta.get("model"), latest.meta.get("num_classes"))
        if found != (cfg.model, self.num_classes):
            raise UserError(
                f"model dir {str(self.model_dir)!r} holds a checkpoint of {found[0]} with {found[1]} classes "
                f"({latest.path.name}); this run builds {cfg.model} with {self.num_classes} classes; "
                f"use a fresh --model-dir or the config that wrote it"
            )
        self.manager.restore(latest, what=f"{cfg.model} with {self.num_classes} classes")
        self.position = Position(**{k: int(latest.meta[k]) for k in asdict(Position())})
        self.history = list(latest.meta.get("history", []))
        self.last_eval = next((dict(h["eval"]) for h in reversed(self.history) if "eval" in h), {})
        return latest.path

    def _log_parameters(self, total_steps: int) -> None:
        self.params = asdict(self.cfg)
        self.params.update({
            "global_batch": self.global_batch, "base_lr": self.base_lr, "num_classes": self.num_classes,
            "train_examples": self.num_train, "total_steps": total_steps, "xla": self.xla,
            "processes": self.backend.size, "rank": self.backend.rank, "model_params": count_params(self.model), "stages": len(self.stages),
            "resumed_from": str(self.resumed_from) if self.resumed_from else ""})
        self.log.log_params(self.params)
        for metric, unit in (("loss", None), ("top1", "%"), ("top5", "%"), ("lr", None), ("img_per_s", "images/s")):
            self.log.log_metadata(metric, {"unit": unit, "format": ":.4f"})

    # -- 2. the loop -----------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Set up (unless done), train every remaining stage and epoch, and return the final report."""
        previous = self._catch_stop_signals()
        try:
            if not hasattr(self, "step"):
                self.setup()
            self.start_time = time.time()
            try:
                for stage in self.stages[self.position.stage:]:
                    if stage.end_epoch <= self.position.epoch:
                        continue
                    self.start_stage(stage)
                    for epoch in range(max(stage.start_epoch, self.position.epoch), stage.end_epoch):
                        self.train_epoch(stage, epoch)
                        self.end_epoch(stage, epoch)
                        self._stop_if_asked()
                    point("stage.end")  # kill-anywhere tests: a stage boundary
                return self.finish()
            finally:
                self.log.close()
        finally:
            if getattr(self, "run_lock", None) is not None:
                self.run_lock.release()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- stopping on request -----------------------------------------------------------------------
    def _catch_stop_signals(self) -> dict:
        """SIGTERM (what schedulers send before killing), SIGINT and SIGHUP (a closed terminal) ask for a stop at the next step
        boundary (or the next evaluation batch), after a checkpoint; a second SIGINT stops at once.
        Main thread only."""
        self.stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            return {}

        def ask(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            print(f"effnet: {signal.Signals(signum).name} received; saving a checkpoint at the next step boundary "
                  f"or evaluation batch (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

        return {signum: signal.signal(signum, ask) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def _stop_asked(self) -> bool:
        return getattr(self, "stop_signal", None) is not None

    def _stop_if_asked(self, during: str | None = None) -> None:
        """After a step or an epoch: if a stop was asked, checkpoint here (unless just done) and stop.

        ``during`` names an evaluation that was left early: the checkpoint then holds the position at
        the end of the epoch's training, so the resumed run redoes that evaluation.
        """
        signum = getattr(self, "stop_signal", None)
        if signum is None:
            return
        gstep = int(self.global_step.numpy())
        latest = ckpt_mod.latest_checkpoint(self.model_dir, warn=None)
        if self.backend.is_writer and (latest is None or latest.step != gstep):
            if int(self.step.consecutive_nonfinite.numpy()) == 0:
                self.save()
        latest = ckpt_mod.latest_checkpoint(self.model_dir, warn=None)
        where = (f"epoch {self.position.epoch + 1}, step {self.position.step_in_epoch} of the epoch "
                 f"(global step {gstep})")
        if during:
            where = f"{where}, {during}; the resumed run redoes that evaluation"
        saved = (f"checkpoint {latest.path} holds it" if latest is not None and latest.step == gstep
                 else self._last_checkpoint_words())
        raise Interrupted(f"stopped by {signal.Signals(signum).name} at {where}; {saved}; run the same command "
                          f"to resume", 128 + signum)

    def start_stage(self, stage) -> None:
        """Apply a stage's values: model regularisation, augmenter strengths, batch, image size."""
        cfg = self.cfg
        point("stage.start")  # kill-anywhere tests: a stage boundary (every stage, the first too)
        self.position.stage = stage.index
        batch = int(stage.params.get("batch_size", cfg.batch_size))
        self.accumulation = int(stage.params.get("grad_accum_steps", cfg.grad_accum_steps))
        if batch % self.accumulation:
            raise UserError(f"stage {stage.index + 1} batch size {batch} is not divisible by "
                            f"its gradient accumulation steps ({self.accumulation})")
        self.micro_batch = batch // self.accumulation
        self.stage_global_batch = plan_batch(batch, self.accumulation, self.backend).global_batch
        stages.apply_to_model(self.model, stage.params)
        self.augmenters = build_augmenters(cfg.augmenters, stage.augmenter_params)
        mixer = None
        if cfg.deferred_mixing:
            batch_augmenters = [a for a in self.augmenters if getattr(a, "level", "image") == "batch"]
            mixer = lambda b: data.apply_deferred_mixing(b, batch_augmenters)  # noqa: E731
        self.step.configure(self.stage_global_batch, mixer, accumulation_steps=self.accumulation)
        self.image_size = int(stage.params["image_size"])
        self.log.log_metrics((self.position.epoch,), {
            "stage": stage.index + 1, "image_size": self.image_size, "batch_size": batch,
            **{k: v for k, v in stage.params.items() if k not in ("image_size", "batch_size")}}, kind="stage")

    def train_epoch(self, stage, epoch: int) -> None:
        """Run the optimizer steps of ``epoch`` from the current position; log and checkpoint on the way."""
        cfg = self.cfg
        steps = self.stage_steps[stage.index]
        self.position.epoch = epoch
        start = self.position.step_in_epoch
        if start >= steps:  # stopped during the evaluation after this epoch: only that is left to do
            return
        ds = data.train_dataset(  # this process's batches: a micro-batch for each of its replicas
            self.source, image_size=self.image_size, batch_size=self.micro_batch * self.backend.local_replicas,
            steps=steps * self.accumulation, epoch=epoch, start_step=start * self.accumulation, augmenters=self.augmenters,
            shard=self.backend.shard_info(), seed=cfg.seed, deferred_mixing=cfg.deferred_mixing)
        window_start, window_images = time.perf_counter(), 0
        iterator = iter(self.backend.distribute_dataset(ds))
        gstep = int(self.global_step.numpy())  # then counted here: no host sync per step
        for step_in_epoch in range(start, steps):
            try:
                with data.translated():
                    for _ in range(self.accumulation - 1):
                        self.step.accumulate(next(iterator))
                    self.step.apply(next(iterator))
            except StopIteration:
                raise RuntimeError(f"input pipeline ended early at epoch {epoch} step {step_in_epoch} of {steps}") from None
            self.position.step_in_epoch = step_in_epoch + 1
            window_images += self.stage_global_batch
            gstep += 1
            self.log.progress(step_in_epoch + 1, steps, {"step": gstep}, desc=f"epoch {epoch + 1}")
            if gstep % cfg.log_every_steps == 0 or step_in_epoch + 1 == steps:
                self._log_window(epoch, gstep, window_images / max(time.perf_counter() - window_start, 1e-9))
                window_start, window_images = time.perf_counter(), 0
            if cfg.checkpoint_every_steps and gstep % cfg.checkpoint_every_steps == 0 and step_in_epoch + 1 < steps:
                bad = int(self.step.consecutive_nonfinite.numpy())
                self._check_nonfinite(bad, epoch, gstep)
                if bad == 0:  # never checkpoint inside a non-finite streak
                    self.save()
            if step_in_epoch + 1 < steps:  # the last step of an epoch stops after end_epoch instead
                self._stop_if_asked()

    def _check_nonfinite(self, streak: int, epoch: int, gstep: int) -> None:
        """Stop after ``train.max_nonfinite_steps`` skipped updates in a row (read at log windows and checkpoints)."""
        if streak >= self.cfg.max_nonfinite_steps:
            raise NonFiniteLoss(
                f"loss or gradients were non-finite for {streak} consecutive steps (epoch {epoch + 1}, "
                f"step {gstep}); stopped; {self._last_checkpoint_words()}; lower train.lr_init, "
                f"check the data, or raise train.max_nonfinite_steps"
            )

    def _log_window(self, epoch: int, gstep: int, images_per_second: float) -> None:
        metrics = self.step.read_window()  # one host sync per logging window: metrics and skip counters
        self._check_nonfinite(metrics["longest_nonfinite"], epoch, gstep)
        record = {"loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
                  "lr": float(self.schedule(self.optimizer.iterations)), "img_per_s": images_per_second,
                  "global_step": gstep, "updates_skipped": metrics["updates_skipped"]}
        if hasattr(self.optimizer, "dynamic_scale"):
            record["loss_scale"] = float(self.optimizer.dynamic_scale.numpy())
        self.log.log_metrics((epoch + 1, gstep), record)
        self.history.append({"step": gstep, "epoch": epoch + 1, "train": {k: record[k] for k in ("loss", "top1", "lr")}})

    def end_epoch(self, stage, epoch: int) -> None:
        """After an epoch: evaluate when due, checkpoint when due, move the position on."""
        cfg = self.cfg
        self.position.epoch, self.position.step_in_epoch = epoch + 1, 0
        last_epoch = epoch + 1 == cfg.epochs
        if cfg.mode == "train_and_eval" and ((epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch):
            from effnet.metrics import EvaluationStopped

            try:
                self.last_eval = self.evaluate(epoch + 1)
            except EvaluationStopped as stopped:  # SIGTERM/SIGINT: save where the training ended, redo the eval
                self.position.epoch, self.position.step_in_epoch = epoch, self.stage_steps[stage.index]
                self._stop_if_asked(during=f"during its evaluation (after {stopped.batches} batches of a pass)")
                raise
            self.history.append({"step": int(self.global_step.numpy()), "epoch": epoch + 1, "eval": self.last_eval})
        periodic = cfg.checkpoint_every_epochs and (epoch + 1) % cfg.checkpoint_every_epochs == 0
        if last_epoch or (periodic and int(self.step.consecutive_nonfinite.numpy()) == 0):
            self.save()
        if stage.end_epoch == epoch + 1:
            self.position.stage = stage.index + 1

    def evaluate(self, epoch: int) -> dict:
        """Validation loss, top-1 and top-5 of the raw weights and, with EMA, of the averaged ones."""
        def dataset():
            return data.eval_dataset(self.source, image_size=self.eval_size, batch_size=self.eval_batch,
                                     shard=self.backend.shard_info())

        with data.translated():
            result = self.evaluator(dataset(), progress=lambda d, t, m: self.log.progress(d, t, m, desc="eval"),
                                    stop=self._stop_asked)
            metrics = _val_metrics(result, "val_")
            if self.ema is not None:
                with self.ema.swapped():  # a stop inside restores the raw weights on the way out
                    metrics.update(_val_metrics(self.evaluator(dataset(), stop=self._stop_asked), "val_ema_"))
        self.log.log_metrics((epoch,), {**metrics, "global_step": int(self.global_step.numpy())}, kind="eval")
        return metrics

    @property
    def eval_batch(self) -> int:
        planned = getattr(self, "planned_micro_batch", None)  # 'auto': no larger than the last stage's
        return self.cfg.eval_batch_size or min(self.cfg.micro_batch, planned or self.cfg.micro_batch)

    def save(self) -> None:
        """Write a checkpoint of everything (refusing non-finite weights) with the position and history."""
        import tensorflow as tf

        from effnet.ema import averaged_variables

        gstep = int(self.global_step.numpy())
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in averaged_variables(self.model)])
        if not bool(finite.numpy()):  # one host sync for all weights
            raise NonFiniteLoss(
                f"model weights became non-finite at step {gstep}; not saving; {self._last_checkpoint_words()}; "
                f"lower train.lr_init or check the data"
            )
        meta = {**asdict(self.position), "model": self.cfg.model, "num_classes": self.num_classes,
                "metrics": self.last_eval or {}, "history": self.history, "global_step": gstep, "seed": self.cfg.seed}
        extra = {runfolder.OPERATIVE_CONFIG: self.operative} if self.operative else None
        self.manager.save(gstep, meta, extra_files=extra)

    def _last_checkpoint_words(self) -> str:
        latest = ckpt_mod.latest_checkpoint(self.model_dir)
        return f"the last good checkpoint {latest.path} is intact" if latest else "no checkpoint was written yet"

    # -- 3. the end ------------------------------------------------------------------------------------
    def finish(self) -> dict:
        """The final report (report.json) and training curves, written by the writing process."""
        train_points = [h["train"] for h in self.history if "train" in h]
        final = {"global_step": int(self.global_step.numpy()), "seconds": time.time() - self.start_time}
        if train_points:
            final.update({f"train_{k}": v for k, v in train_points[-1].items() if k != "lr"})
        final.update(self.last_eval)
        report = {"model": self.cfg.model, "dataset": self.cfg.dataset, "model_dir": str(self.model_dir),
                  "final": final, "parameters": self.params}
        self.log.log_metrics((), {k: v for k, v in final.items() if isinstance(v, (int, float))}, kind="final")
        if self.backend.is_writer:
            write_json_atomic(self.model_dir / runfolder.REPORT, report)
            if self.cfg.plot:
                from effnet.report import plot_history

                plot_history(self.history, self.model_dir / runfolder.CURVES)
        return report


def run(cfg: TrainConfig | None = None) -> dict:
    """Train (and evaluate) as configured; returns the final report (also written as report.json)."""
    return Trainer(cfg).fit()


__all__ = ["NonFiniteLoss", "Position", "TrainConfig", "Trainer", "build_augmenters", "build_optimizer", "build_stages",
           "final_stage_values", "run"]

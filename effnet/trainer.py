"""Training: the :class:`Trainer`, one run read top to bottom.

A run happens in this order (:meth:`Trainer.fit`, the loop in one screen):

1. :meth:`Trainer.setup` -- backend, precision and seeds, dataset, then the run's parts from
   :func:`effnet.assembly.assemble` (model, stages, LR schedule, optimizer, EMA, step, evaluator,
   evaluation batch and size; the memory planner runs there), checkpoints (resume, or
   ``from_weights``), broadcast, loggers, the operative config, the loop callbacks;
2. for each stage: :meth:`Trainer.start_stage` (image size, batch, regularisation), then for each
   epoch :meth:`Trainer.train_epoch` followed by :meth:`Trainer.end_epoch` (evaluate, save,
   callbacks, a stop if one was asked);
3. :meth:`Trainer.finish` -- the final report and curves.

Every setting is a field of :class:`effnet.settings.TrainConfig` (gin ``train.*``); the Trainer
reads no gin itself. A checkpoint holds everything needed to continue exactly: weights (including
RNG states of dropout layers), optimizer slots and loss scale, EMA, skip counters, and in
``meta.json`` the :class:`Position` (stage, epoch and step within the epoch; the input pipeline is
a deterministic function of seed, epoch and that position). What differs between one process and
many is the backend's (:mod:`effnet.distribute`): the Trainer never asks which one it has. A stop
(SIGTERM/SIGINT through :mod:`effnet.stopping`, or a callback through :mod:`effnet.callbacks`)
checkpoints where the run is and ends it; the same command resumes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet import assembly, data, registry, runfolder, stages
from effnet import checkpoint as ckpt_mod
from effnet import config as config_mod
from effnet.data import balance
from effnet import precision as precision_mod
from effnet.callbacks import CallbackList, RunView
from effnet.distribute import plan_batch
from effnet.errors import Interrupted, UserError
from effnet.faults import point
from effnet.files import write_json_atomic
from effnet.loggers import make_loggers
from effnet.models import count_params
from effnet.settings import TrainConfig
from effnet.stopping import StopRequest, catch_signals

# Moved to effnet.assembly (one place builds what trains); still importable from here.
build_augmenters, build_stages, final_stage_values = (assembly.build_augmenters, assembly.build_stages,
                                                      assembly.final_stage_values)


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


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` trains and returns the final report."""

    def __init__(self, cfg: TrainConfig | None = None):
        self.cfg = cfg or TrainConfig()
        self.model_dir = Path(self.cfg.model_dir)
        # where the run is and what it has seen (restored on resume)
        self.position = Position()
        self.history: list[dict] = []
        self.last_eval: dict = {}
        self.stop = StopRequest()  # asked by a signal (effnet.stopping) or a callback
        # made by setup()
        self.backend = None
        self.run_lock = None  # the run folder's lock (runfolder.lock_run_folder), released when fit ends
        self.source = None
        self.class_names: list[str] | None = None
        self.num_classes = 0
        self.num_train = 0
        self.class_weights = None  # one loss weight per class (train.class_weights), or None
        self.parts: assembly.RunParts | None = None  # model, stages, schedule, optimizer, EMA, step, evaluator ...
        self.manager = None
        self.resumed_from: Path | None = None
        self.log = None
        self.operative = ""
        self.params: dict = {}
        self.callbacks: CallbackList | None = None
        # the current stage's (start_stage)
        self.accumulation = 1
        self.micro_batch = 0
        self.stage_global_batch = 0
        self.image_size = 0
        self.augmenters: list = []
        self.start_time = 0.0
        self.stopped = ""  # why a callback ended the run early ("" when it ran to the end)

    # the parts the loop uses most, by name
    model = property(lambda self: self.parts.model)
    step = property(lambda self: self.parts.step)
    ema = property(lambda self: self.parts.ema)
    global_step = property(lambda self: self.parts.global_step)
    stages = property(lambda self: self.parts.stages)

    # -- 1. setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        import keras
        import tensorflow as tf

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
        self.parts = parts = assembly.assemble(cfg, backend, self.num_classes, self.num_train,
                                               gin_text=config_mod.bindings_text(), class_weights=self.class_weights)

        # loop callbacks run on the writer (effnet.callbacks); one may choose the best checkpoint's metric
        self.callbacks = CallbackList(cfg.callbacks if backend.is_writer else (), RunView(self._facts, self.stop.ask))
        best_metric, higher_is_better = self.callbacks.checkpoint_ranking() or (
            "val_ema_top1" if parts.ema is not None else "val_top1", True)
        objects = ckpt_mod.checkpoint_objects(parts.model, parts.optimizer, parts.ema, global_step=parts.global_step,
                                              **parts.step.checkpoint_objects())
        self.manager = ckpt_mod.CheckpointManager(
            self.model_dir, objects, keep=cfg.keep_checkpoints, best_metric=best_metric,
            higher_is_better=higher_is_better, is_writer=backend.is_writer,
            every_process_saves=backend.every_process_saves)
        self.manager.remove_partial()
        self.resumed_from = self._resume_or_start()
        # every process continues from the writer's state, restored or fresh
        backend.broadcast_variables([*parts.model.variables, *parts.optimizer.variables,
                                     *(parts.ema.averages if parts.ema else []), parts.global_step])

        # Everything that reads gin is built before the operative config is written, so the file holds
        # the whole run (eval, predict and export rebuild the run from it).
        self.log = make_loggers(model_dir=self.model_dir, is_writer=backend.is_writer)
        data.pipeline_options()
        if backend.is_writer:
            if self.class_names:  # predict/export read class names from here, without the dataset
                runfolder.write_labels(self.model_dir, self.class_names)
            self.operative = config_mod.write_operative_config(self.model_dir).read_text()
        self._log_parameters()

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

    def _log_parameters(self) -> None:
        parts = self.parts
        self.params = asdict(self.cfg)
        self.params.update({
            "global_batch": parts.global_batch, "base_lr": parts.base_lr, "num_classes": self.num_classes,
            "train_examples": self.num_train, "total_steps": parts.total_steps, "xla": parts.xla,
            "processes": self.backend.size, "rank": self.backend.rank, "model_params": count_params(parts.model),
            "stages": len(parts.stages), "resumed_from": str(self.resumed_from) if self.resumed_from else ""})
        self.log.log_params(self.params)
        for metric, unit in (("loss", None), ("top1", "%"), ("top5", "%"), ("lr", None), ("img_per_s", "images/s")):
            self.log.log_metadata(metric, {"unit": unit, "format": ":.4f"})

    def _facts(self) -> dict:
        """What a callback's :class:`~effnet.callbacks.RunView` shows."""
        return {"cfg": self.cfg, "model_dir": self.model_dir, "model": self.model, "stage": self.position.stage,
                "epoch": self.position.epoch, "global_step": int(self.global_step.numpy()),
                "history": list(self.history), "last_eval": dict(self.last_eval), "is_writer": self.backend.is_writer}

    # -- 2. the loop -----------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Set up (unless done), train every remaining stage and epoch, and return the final report."""
        with catch_signals(self.stop):
            try:
                if self.parts is None:
                    self.setup()
                self.start_time = time.time()
                try:
                    self._callback("on_train_begin")
                    if self.cfg.callbacks:  # a resumed run's callbacks may stop it where it stopped before
                        self._stop_if_asked(shared=True)
                    for stage in self.stages[self.position.stage:]:
                        if stage.end_epoch <= self.position.epoch:
                            continue
                        self.start_stage(stage)
                        for epoch in range(max(stage.start_epoch, self.position.epoch), stage.end_epoch):
                            self.train_epoch(stage, epoch)
                            self.end_epoch(stage, epoch)
                            self._stop_if_asked(shared=True)
                        point("stage.end")  # kill-anywhere tests: a stage boundary
                    return self.finish()
                except _EndedEarly:
                    return self.finish()
                finally:
                    self.log.close()
            finally:
                if self.run_lock is not None:
                    self.run_lock.release()

    # -- stopping on request -----------------------------------------------------------------------
    def _stop_if_asked(self, during: str | None = None, shared: bool = False) -> None:
        """After a step or an epoch: if a stop was asked, checkpoint here (unless just done) and stop.

        ``shared`` (epoch ends, where every process arrives): a callback's request on the writer is
        shared with every process first. ``during`` names an evaluation that was left early: the
        checkpoint then holds the position at the end of the epoch's training, so the resumed run
        redoes that evaluation.
        """
        if shared and self.cfg.callbacks:
            self._share_stop()
        if not (self.stop.by_signal or (shared and self.stop.asked)):  # a callback's stop waits for the epoch end
            return
        gstep = self._save_unless_saved()
        if not self.stop.by_signal and self.stop.exit_code == 0:  # a callback ended the run: report as usual
            self.stopped = self.stop.reason
            print(f"effnet: {self.stop.reason}; stopped after epoch {self.position.epoch} (global step {gstep})",
                  file=sys.stderr, flush=True)
            raise _EndedEarly
        latest = ckpt_mod.latest_checkpoint(self.model_dir, warn=None)
        where = (f"epoch {self.position.epoch + 1}, step {self.position.step_in_epoch} of the epoch "
                 f"(global step {gstep})")
        if during:
            where = f"{where}, {during}; the resumed run redoes that evaluation"
        saved = (f"checkpoint {latest.path} holds it" if latest is not None and latest.step == gstep
                 else self._last_checkpoint_words())
        raise Interrupted(f"{self.stop.reason} at {where}; {saved}; run the same command to resume",
                          self.stop.exit_code)

    def _share_stop(self) -> None:
        """Every process learns whether the writer's callbacks asked for a stop (all call this at epoch ends)."""
        import numpy as np

        asked = np.asarray([1 if self.stop.asked and not self.stop.by_signal else 0], np.int64)
        code = np.asarray([self.stop.exit_code if asked[0] else 0], np.int64)
        total = np.asarray(self.backend.reduce_sum(np.concatenate([asked, code])))
        if int(total[0]) and not self.stop.asked:
            self.stop.ask("a callback on the writing process asked to stop", int(total[1]))

    def _save_unless_saved(self) -> int:
        """A checkpoint at the current step, unless there is one (or the step is in a non-finite streak)."""
        gstep = int(self.global_step.numpy())
        latest = ckpt_mod.latest_checkpoint(self.model_dir, warn=None)
        if self.backend.is_writer and (latest is None or latest.step != gstep):
            if int(self.step.consecutive_nonfinite.numpy()) == 0:
                self.save()
        return gstep

    def _callback(self, hook: str, *args) -> None:
        """Run ``hook`` on the loop callbacks; one that raises ends the run after a checkpoint."""
        if self.callbacks:
            self.callbacks.call(hook, *args, on_failure=self._save_unless_saved)

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
        self.augmenters = assembly.build_augmenters(cfg.augmenters, stage.augmenter_params)
        mixer = None
        if cfg.deferred_mixing:
            batch_augmenters = [a for a in self.augmenters if getattr(a, "level", "image") == "batch"]
            mixer = lambda b: data.apply_deferred_mixing(b, batch_augmenters)  # noqa: E731
        self.step.configure(self.stage_global_batch, mixer, accumulation_steps=self.accumulation)
        self.image_size = int(stage.params["image_size"])
        self.log.log_metrics((self.position.epoch,), {
            "stage": stage.index + 1, "image_size": self.image_size, "batch_size": batch,
            **{k: v for k, v in stage.params.items() if k not in ("image_size", "batch_size")}}, kind="stage")
        self._callback("on_stage_begin", stage)

    def train_epoch(self, stage, epoch: int) -> None:
        """Run the optimizer steps of ``epoch`` from the current position; log and checkpoint on the way."""
        cfg = self.cfg
        steps = self.parts.stage_steps[stage.index]
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
        optimizer = self.parts.optimizer
        record = {"loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
                  "lr": float(self.parts.schedule(optimizer.iterations)), "img_per_s": images_per_second,
                  "global_step": gstep, "updates_skipped": metrics["updates_skipped"]}
        if precision_mod.uses_loss_scaling(self.cfg.precision):
            record["loss_scale"] = float(optimizer.dynamic_scale.numpy())
        self.log.log_metrics((epoch + 1, gstep), record)
        self.history.append({"step": gstep, "epoch": epoch + 1, "train": {k: record[k] for k in ("loss", "top1", "lr")}})

    def end_epoch(self, stage, epoch: int) -> None:
        """After an epoch: evaluate when due, checkpoint when due, tell the callbacks, move the position on."""
        cfg = self.cfg
        self.position.epoch, self.position.step_in_epoch = epoch + 1, 0
        last_epoch = epoch + 1 == cfg.epochs
        evaluated = {}
        if cfg.mode == "train_and_eval" and ((epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch):
            from effnet.metrics import EvaluationStopped

            try:
                self.last_eval = evaluated = self.evaluate(epoch + 1)
            except EvaluationStopped as stopped:  # SIGTERM/SIGINT: save where the training ended, redo the eval
                self.position.epoch, self.position.step_in_epoch = epoch, self.parts.stage_steps[stage.index]
                self._stop_if_asked(during=f"during its evaluation (after {stopped.batches} batches of a pass)")
                raise
            self.history.append({"step": int(self.global_step.numpy()), "epoch": epoch + 1, "eval": self.last_eval})
        periodic = cfg.checkpoint_every_epochs and (epoch + 1) % cfg.checkpoint_every_epochs == 0
        if last_epoch or (periodic and int(self.step.consecutive_nonfinite.numpy()) == 0):
            self.save()
        if stage.end_epoch == epoch + 1:
            self.position.stage = stage.index + 1
        if evaluated:
            self._callback("on_evaluation_end", epoch + 1, dict(evaluated))
        self._callback("on_epoch_end", epoch + 1, dict(evaluated))

    def evaluate(self, epoch: int) -> dict:
        """Validation loss, top-1 and top-5 of the raw weights and, with EMA, of the averaged ones."""
        parts = self.parts

        def dataset():
            return data.eval_dataset(self.source, image_size=parts.eval_size, batch_size=parts.eval_batch,
                                     shard=self.backend.shard_info())

        stop_asked = lambda: self.stop.by_signal  # noqa: E731 - a callback's stop waits for the epoch end
        with data.translated():
            result = parts.evaluator(dataset(), progress=lambda d, t, m: self.log.progress(d, t, m, desc="eval"),
                                     stop=stop_asked)
            metrics = _val_metrics(result, "val_")
            if parts.ema is not None:
                with parts.ema.swapped():  # a stop inside restores the raw weights on the way out
                    metrics.update(_val_metrics(parts.evaluator(dataset(), stop=stop_asked), "val_ema_"))
        self.log.log_metrics((epoch,), {**metrics, "global_step": int(self.global_step.numpy())}, kind="eval")
        return metrics

    @property
    def eval_batch(self) -> int:
        return self.parts.eval_batch

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
        path = self.manager.save(gstep, meta, extra_files=extra)
        if path is not None:
            self._callback("on_checkpoint_saved", path, gstep)

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
        if self.stopped:
            report["stopped"] = {"reason": self.stopped, "epoch": self.position.epoch}
        self.log.log_metrics((), {k: v for k, v in final.items() if isinstance(v, (int, float))}, kind="final")
        if self.backend.is_writer:
            write_json_atomic(self.model_dir / runfolder.REPORT, report)
            if self.cfg.plot:
                from effnet.report import plot_history

                plot_history(self.history, self.model_dir / runfolder.CURVES)
        self._callback("on_train_end", report)
        return report


class _EndedEarly(Exception):
    """A callback's stop with exit code 0: the loop ends here and the run finishes normally."""


def run(cfg: TrainConfig | None = None) -> dict:
    """Train (and evaluate) as configured; returns the final report (also written as report.json)."""
    return Trainer(cfg).fit()


__all__ = ["NonFiniteLoss", "Position", "TrainConfig", "Trainer", "build_augmenters", "build_stages",
           "final_stage_values", "run"]

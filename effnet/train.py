"""The training run: every knob in :class:`TrainConfig` (gin name ``train``), the loop in :func:`run`.

Order of a run: backend -> precision and seeds -> dataset -> model, optimizer, EMA -> stages ->
checkpoint (resume, or ``from_weights``) -> operative config -> loop over stages, epochs, steps
(log, evaluate, checkpoint) -> final evaluation on raw and EMA weights -> report and curves.
A checkpoint holds everything needed to continue exactly: weights (including RNG states of
dropout layers), optimizer slots and loss scale, EMA, skip counters, and in ``meta.json`` the
stage, epoch and step within the epoch (the data position; the input pipeline is a
deterministic function of seed, epoch and that position).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import gin

from effnet import precision as precision_mod
from effnet import registry
from effnet.errors import UserError
from effnet.files import write_json_atomic, write_text_atomic

MODES = ("train", "train_and_eval")


@gin.configurable("train")
@dataclass
class TrainConfig:
    """Every setting of a training run. Bind them in gin as ``train.<name> = value``."""

    model_dir: str | None = None  # usually %MODEL_DIR, set by --model-dir
    model: str | None = None  # a registered model name, e.g. 'efficientnet_v2_s'
    dataset: str | None = None  # a registered dataset name, e.g. 'tfrecord' or 'demo'
    mode: str = "train_and_eval"  # or 'train'
    epochs: int = 1
    steps_per_epoch: int | None = None  # default: training examples // global batch
    batch_size: int = 32  # per replica (GPU), per optimizer update (micro-batch x grad_accum_steps)
    grad_accum_steps: int = 1
    image_size: int = 224  # training image size (of the last stage when progressive)
    eval_image_size: int | None = None  # default: image_size
    eval_batch_size: int | None = None  # default: the training micro-batch
    eval_every_epochs: int = 1
    optimizer: str = "rmsprop"
    lr_schedule: str = "cosine"
    lr_init: float = 0.005  # per reference_batch images; lr = lr_init * global_batch / reference_batch
    reference_batch: int = 128
    label_smoothing: float = 0.1
    weight_decay: float = 5e-6  # L2 in the loss on conv/dense kernels (0 for optimizers that decay themselves)
    decay_bias: bool = False
    decay_norm: bool = False
    clip_norm: float | None = None  # global-norm gradient clipping
    ema_decay: float | None = 0.9999  # None turns EMA off
    augmenters: Sequence[str] = ()  # registered augmenter names, applied in order
    deferred_mixing: bool = False  # mixup/cutmix inside the step instead of the input pipeline
    stage_schedule: str = "single"  # 'progressive' for EfficientNetV2's progressive learning
    precision: str = "fp32"  # fp32 | tf32 | amp | bf16
    xla: bool | None = None  # None: on for GPUs, off for CPUs
    seed: int = 0
    deterministic: bool = False  # deterministic TF ops (needed for bit-exact resume)
    backend: str = "single"
    replicas: int | None = None  # replicas (GPUs) the experiment was written for; another number gets a notice
    sync_batchnorm: bool = False  # BatchNorm statistics over all replicas' micro-batches
    checkpoint_every_epochs: int | None = 1
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int = 3  # the last K are kept, plus the best by validation top-1
    log_every_steps: int = 100
    max_nonfinite_steps: int = 25  # stop after this many consecutive non-finite updates
    from_weights: str | None = None  # start a new run from these weights (fine-tuning)
    replace_head: bool = False  # with from_weights: allow a classifier of another size
    plot: bool = True  # write training_curves.png at the end

    def __post_init__(self):
        if not self.model_dir:
            raise UserError("no model dir: pass --model-dir DIR (or bind MODEL_DIR / train.model_dir)")
        if not self.model:
            raise UserError("train.model is not set; bind it in your gin file, e.g. train.model = 'efficientnet_v2_s'")
        if not self.dataset:
            raise UserError("train.dataset is not set; bind it in your gin file, e.g. train.dataset = 'tfrecord'")
        if self.mode not in MODES:
            raise UserError(f"train.mode={self.mode!r} is not one of {', '.join(MODES)}")
        precision_mod.check(self.precision)
        for name in ("epochs", "batch_size", "grad_accum_steps", "image_size", "reference_batch",
                     "eval_every_epochs", "log_every_steps", "keep_checkpoints", "max_nonfinite_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"train.{name}={value!r} must be a positive integer")
        if self.replicas is not None and (not isinstance(self.replicas, int) or isinstance(self.replicas, bool)
                                          or self.replicas < 1):
            raise UserError(f"train.replicas={self.replicas!r} must be a positive integer (the GPUs the recipe was "
                            f"written for) or None")
        if self.batch_size % self.grad_accum_steps:
            raise UserError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum_steps={self.grad_accum_steps}; "
                f"pick a batch size that is a multiple of the accumulation steps"
            )
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"train.label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise UserError(f"train.ema_decay={self.ema_decay!r} must be in (0, 1), or None to turn EMA off")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum_steps


# --------------------------------------------------------------------------------------------------
# Building blocks


def _numeric_params(obj, factory) -> dict[str, float]:
    """Constructor parameters an augmenter keeps as numeric attributes (what a stage may change)."""
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
    from effnet import stages

    final: dict[str, float] = {"image_size": cfg.image_size, "batch_size": cfg.batch_size}
    final.update(stages.model_stage_values(model))
    for name, aug in zip(cfg.augmenters, build_augmenters(cfg.augmenters)):
        for key, value in _numeric_params(aug, registry.get("augmenter", name)).items():
            final[f"{name}.{key}"] = value
    return final


def build_stages(cfg: TrainConfig, model):
    from effnet import stages

    factory = registry.get("stage_schedule", cfg.stage_schedule)
    result = factory(epochs=cfg.epochs, final=final_stage_values(cfg, model))
    return stages.validate(result, cfg.epochs, cfg.stage_schedule)


def build_optimizer(cfg: TrainConfig, model, schedule):
    import keras

    from effnet.step import decayed_variables

    optimizer = registry.get("optimizer", cfg.optimizer)(learning_rate=schedule)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise UserError(f"optimizer {cfg.optimizer!r} returned {type(optimizer).__name__}, not a keras.optimizers.Optimizer")
    decayed = {id(v) for v in decayed_variables(model, cfg.decay_bias, cfg.decay_norm)}
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    if cfg.clip_norm:
        optimizer.global_clipnorm = float(cfg.clip_norm)
    if precision_mod.uses_loss_scaling(cfg.precision):
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def count_params(model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_variables + model.non_trainable_variables if "float" in str(v.dtype)))


def _check_image_sizes(cfg: TrainConfig, model, stage_list, eval_size: int) -> None:
    minimum = int(getattr(model, "min_input_size", 32))
    for stage in stage_list:
        size = int(stage.params["image_size"])
        if size < minimum:
            raise UserError(
                f"image size {size} (stage {stage.index + 1}) is smaller than {cfg.model}'s minimum of {minimum} px; "
                f"raise train.image_size (or the stage schedule's base image_size)"
            )
    if eval_size < minimum:
        raise UserError(f"train.eval_image_size={eval_size} is smaller than {cfg.model}'s minimum of {minimum} px")


@contextlib.contextmanager
def _data_errors():
    """Re-raise an error met while iterating data as a one-line UserError when it is the data's fault."""
    try:
        yield
    except Exception as exc:
        try:
            from effnet import data

            translated = data.translate_error(exc)
        except Exception:  # noqa: BLE001 - translation must never hide the original error
            translated = None
        if translated is None:
            raise
        raise translated from None


def _val_metrics(result, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in result.as_dict().items() if k in ("loss", "top1", "top5")}


# --------------------------------------------------------------------------------------------------
# The run


class NonFiniteLoss(UserError):
    pass


def run(cfg: TrainConfig | None = None) -> dict:
    """Train (and evaluate) as configured; returns the final report (also written as report.json)."""
    import keras
    import tensorflow as tf

    from effnet import checkpoint as ckpt_mod
    from effnet import config as config_mod
    from effnet import data, stages
    from effnet.data.options import pipeline_options
    from effnet.distribute import check_launcher, plan_batch, replica_notice
    from effnet.ema import ExponentialMovingAverage, averaged_variables
    from effnet.evaluate import Evaluator
    from effnet.loggers import make_loggers
    from effnet.step import TrainStep

    cfg = cfg or TrainConfig()
    backend = registry.get("backend", cfg.backend)()
    backend.setup()
    check_launcher(backend, cfg.backend)
    model_dir = Path(cfg.model_dir)
    if backend.is_writer:
        ckpt_mod.ensure_writable(model_dir)

    keras.backend.clear_session()  # fresh layer names and graphs when runs share a process
    precision_mod.configure(cfg.precision)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    xla = precision_mod.default_xla(cfg.xla)

    source = registry.get("dataset", cfg.dataset)()
    info = source.info()
    num_classes = int(info.num_classes)
    num_train = int(info.num_examples.get("train", 0))

    with backend.scope():
        model = registry.get("model", cfg.model)(num_classes=num_classes)
        if not isinstance(model, keras.Model):
            raise UserError(f"model {cfg.model!r} returned {type(model).__name__}, not a keras.Model")
    if cfg.sync_batchnorm:  # [distribute] statistics over every replica's batch
        backend.enable_sync_batchnorm(model)
    stage_list = build_stages(cfg, model)
    eval_size = cfg.eval_image_size or cfg.image_size
    _check_image_sizes(cfg, model, stage_list, eval_size)

    # Steps and the learning rate are defined per optimizer update over all replicas (BatchPlan).
    def steps_for(stage) -> int:
        global_batch = plan_batch(int(stage.params.get("batch_size", cfg.batch_size)), cfg.grad_accum_steps,
                                  backend).global_batch
        if cfg.steps_per_epoch:
            return cfg.steps_per_epoch
        steps = num_train // global_batch
        if steps < 1:
            raise UserError(
                f"dataset {cfg.dataset!r} has {num_train} training examples, fewer than one global batch of "
                f"{global_batch}; lower train.batch_size"
            )
        return steps

    stage_steps = [steps_for(s) for s in stage_list]
    total_steps = sum(n * s.epochs for n, s in zip(stage_steps, stage_list))
    plan = plan_batch(cfg.batch_size, cfg.grad_accum_steps, backend)
    global_batch = plan.global_batch
    base_lr = plan.lr(cfg.lr_init, cfg.reference_batch)
    notice = replica_notice(cfg.replicas, plan, cfg.lr_init, cfg.reference_batch)
    if notice and backend.is_writer:
        print(notice, file=sys.stderr, flush=True)
    schedule = registry.get("lr_schedule", cfg.lr_schedule)(
        base_lr=base_lr, steps_per_epoch=stage_steps[0], total_steps=total_steps)

    with backend.scope():
        optimizer = build_optimizer(cfg, model, schedule)
        ema = ExponentialMovingAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    global_step = backend.variable(tf.zeros([], tf.int64), name="global_step")  # counted by the step
    step_obj = TrainStep(
        model, optimizer, global_batch=global_batch, backend=backend, label_smoothing=cfg.label_smoothing,
        weight_decay=cfg.weight_decay, decay_vars=[v for v in model.trainable_variables if _decays(optimizer, v)],
        accumulation_steps=cfg.grad_accum_steps, ema=ema, jit_compile=xla, global_step=global_step)

    # Checkpoint objects: every model variable (Keras does not track RNG states by itself).
    objects = {"model_variables": list(model.variables), "optimizer": optimizer, "global_step": global_step,
               **step_obj.checkpoint_objects()}
    if ema is not None:
        objects["ema"] = ema
    best_metric = "val_ema_top1" if ema is not None else "val_top1"
    manager = ckpt_mod.CheckpointManager(model_dir, objects, keep=cfg.keep_checkpoints, best_metric=best_metric,
                                         is_writer=backend.is_writer, every_process_saves=backend.every_process_saves)
    manager.remove_partial()
    position = {"stage": 0, "epoch": 0, "step_in_epoch": 0}
    history: list[dict] = []
    latest = ckpt_mod.latest_checkpoint(model_dir)
    if latest is not None:
        found = (latest.meta.get("model"), latest.meta.get("num_classes"))
        if found != (cfg.model, num_classes):
            raise UserError(
                f"model dir {str(model_dir)!r} holds a checkpoint of {found[0]} with {found[1]} classes "
                f"({latest.path.name}); this run builds {cfg.model} with {num_classes} classes; "
                f"use a fresh --model-dir or the config that wrote it"
            )
        manager.restore(latest, what=f"{cfg.model} with {num_classes} classes")
        position = {k: int(latest.meta[k]) for k in position}
        history = list(latest.meta.get("history", []))
        resumed_from = latest.path
    else:
        resumed_from = None
        if cfg.from_weights:
            from effnet.weights import load_weights

            loader = getattr(registry.get("model", cfg.model), "load_weights", None)
            load_weights(model, cfg.from_weights, replace_head=cfg.replace_head, keras_loader=loader)
            if ema is not None:
                ema.reset()
    # [distribute] every process starts from the writer's state, restored or fresh
    backend.broadcast_variables([*model.variables, *optimizer.variables, *(ema.averages if ema else []), global_step])

    # Everything that reads gin is built before the operative config is written, so the file holds
    # the whole run (eval, predict and export rebuild the run from it).
    log = make_loggers(model_dir=model_dir, is_writer=backend.is_writer)
    pipeline_options()
    operative = ""
    if backend.is_writer:
        if info.class_names:  # predict/export read class names from here, without the dataset
            write_text_atomic(model_dir / "labels.txt", "".join(f"{name}\n" for name in info.class_names))
        config_mod.write_operative_config(model_dir)
        operative = (model_dir / config_mod.OPERATIVE_CONFIG).read_text()

    params = asdict(cfg)
    params.update({"global_batch": global_batch, "base_lr": base_lr, "num_classes": num_classes,
                   "train_examples": num_train, "total_steps": total_steps, "xla": xla, "processes": backend.size,
                   "model_params": count_params(model), "stages": len(stage_list),
                   "resumed_from": str(resumed_from) if resumed_from else ""})
    log.log_params(params)
    for metric, unit in (("loss", None), ("top1", "%"), ("top5", "%"), ("lr", None), ("img_per_s", "images/s")):
        log.log_metadata(metric, {"unit": unit, "format": ":.4f"})

    augment_names = list(cfg.augmenters)
    evaluator = Evaluator(model, backend, jit_compile=xla)
    eval_batch = cfg.eval_batch_size or cfg.micro_batch
    shard = backend.shard_info()

    def evaluate_now(epoch: int) -> dict:
        ds = data.eval_dataset(source, image_size=eval_size, batch_size=eval_batch, shard=shard)
        with _data_errors():
            metrics = _val_metrics(evaluator(ds, progress=lambda d, t, m: log.progress(d, t, m, desc="eval")), "val_")
            if ema is not None:
                with ema.swapped():
                    result = evaluator(data.eval_dataset(source, image_size=eval_size, batch_size=eval_batch, shard=shard))
                metrics.update(_val_metrics(result, "val_ema_"))
        log.log_metrics((epoch,), {**metrics, "global_step": int(global_step.numpy())}, kind="eval")
        return metrics

    def save(metrics: dict | None = None) -> None:
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in averaged_variables(model)])
        if not bool(finite.numpy()):  # one host sync for all weights
            raise NonFiniteLoss(
                f"model weights became non-finite at step {int(global_step.numpy())}; not saving; "
                f"{_last_ckpt_words(model_dir)}; lower train.lr_init or check the data"
            )
        meta = {**position, "model": cfg.model, "num_classes": num_classes, "metrics": metrics or {},
                "history": history, "global_step": int(global_step.numpy()), "seed": cfg.seed}
        manager.save(int(global_step.numpy()), meta, extra_files={config_mod.OPERATIVE_CONFIG: operative} if operative else None)

    start_time = time.time()
    last_eval: dict = next((dict(h["eval"]) for h in reversed(history) if "eval" in h), {})
    try:
        for stage in stage_list[position["stage"]:]:
            if stage.end_epoch <= position["epoch"]:
                continue
            position["stage"] = stage.index
            micro = int(stage.params.get("batch_size", cfg.batch_size)) // cfg.grad_accum_steps
            if micro * cfg.grad_accum_steps != int(stage.params.get("batch_size", cfg.batch_size)):
                raise UserError(
                    f"stage {stage.index + 1} batch size {stage.params['batch_size']} is not divisible by "
                    f"train.grad_accum_steps={cfg.grad_accum_steps}"
                )
            stage_global = plan_batch(micro * cfg.grad_accum_steps, cfg.grad_accum_steps, backend).global_batch
            stages.apply_to_model(model, stage.params)
            augmenters = build_augmenters(augment_names, stage.augmenter_params)
            batch_augmenters = [a for a in augmenters if getattr(a, "level", "image") == "batch"]
            mixer = (lambda b, _a=batch_augmenters: data.apply_deferred_mixing(b, _a)) if cfg.deferred_mixing else None
            step_obj.configure(stage_global, mixer)
            steps = stage_steps[stage.index]
            size = int(stage.params["image_size"])
            log.log_metrics((position["epoch"],), {"stage": stage.index + 1, "image_size": size,
                                                     "batch_size": micro * cfg.grad_accum_steps,
                                                     **{k: v for k, v in stage.params.items() if k not in ("image_size", "batch_size")}},
                            kind="stage")
            for epoch in range(max(stage.start_epoch, position["epoch"]), stage.end_epoch):
                position["epoch"] = epoch
                start = position["step_in_epoch"]
                ds = data.train_dataset(  # this process's batches: micro-batch x its replicas
                    source, image_size=size, batch_size=micro * backend.local_replicas,
                    steps=steps * cfg.grad_accum_steps, epoch=epoch,
                    start_step=start * cfg.grad_accum_steps, augmenters=augmenters, shard=shard, seed=cfg.seed,
                    deferred_mixing=cfg.deferred_mixing)
                window_start, window_images = time.perf_counter(), 0
                iterator = iter(backend.distribute_dataset(ds))
                gstep = int(global_step.numpy())  # then counted here: no host sync per step
                for step_in_epoch in range(start, steps):
                    try:
                        with _data_errors():
                            for _ in range(cfg.grad_accum_steps - 1):
                                step_obj.accumulate(next(iterator))
                            step_obj.apply(next(iterator))
                    except StopIteration:
                        raise RuntimeError(f"input pipeline ended early at epoch {epoch} step {step_in_epoch} of {steps}") from None
                    position["step_in_epoch"] = step_in_epoch + 1
                    window_images += stage_global
                    gstep += 1
                    log.progress(step_in_epoch + 1, steps, {"step": gstep}, desc=f"epoch {epoch + 1}")
                    checkpoint_now = bool(cfg.checkpoint_every_steps and gstep % cfg.checkpoint_every_steps == 0
                                          and step_in_epoch + 1 < steps)
                    if gstep % cfg.log_every_steps == 0 or step_in_epoch + 1 == steps:
                        # one host sync per logging window: metrics and skip counters together
                        elapsed = time.perf_counter() - window_start
                        metrics = step_obj.read_window()
                        _check_nonfinite(metrics["longest_nonfinite"], cfg, epoch, gstep, model_dir)
                        record = {"loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
                                  "lr": float(schedule(optimizer.iterations)), "img_per_s": window_images / max(elapsed, 1e-9),
                                  "global_step": gstep, "updates_skipped": metrics["updates_skipped"]}
                        if hasattr(optimizer, "dynamic_scale"):
                            record["loss_scale"] = float(optimizer.dynamic_scale.numpy())
                        log.log_metrics((epoch + 1, gstep), record)
                        history.append({"step": gstep, "epoch": epoch + 1, "train": {k: record[k] for k in ("loss", "top1", "lr")}})
                        window_start, window_images = time.perf_counter(), 0
                    if checkpoint_now:
                        bad = int(step_obj.consecutive_nonfinite.numpy())
                        _check_nonfinite(bad, cfg, epoch, gstep, model_dir)
                        if bad == 0:  # never checkpoint inside a non-finite streak
                            save(last_eval)
                # end of epoch
                position["epoch"], position["step_in_epoch"] = epoch + 1, 0
                last_epoch = epoch + 1 == cfg.epochs
                if cfg.mode == "train_and_eval" and ((epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch):
                    last_eval = evaluate_now(epoch + 1)
                    history.append({"step": int(global_step.numpy()), "epoch": epoch + 1, "eval": last_eval})
                periodic = cfg.checkpoint_every_epochs and (epoch + 1) % cfg.checkpoint_every_epochs == 0
                if last_epoch or (periodic and int(step_obj.consecutive_nonfinite.numpy()) == 0):
                    save(last_eval)
                if stage.end_epoch == epoch + 1:
                    position["stage"] = stage.index + 1
        report = _final_report(cfg, model_dir, history, last_eval, start_time, global_step, params)
        log.log_metrics((), {k: v for k, v in report["final"].items() if isinstance(v, (int, float))}, kind="final")
        if backend.is_writer:
            write_json_atomic(model_dir / "report.json", report)
            if cfg.plot:
                from effnet.report import plot_history

                plot_history(history, model_dir / "training_curves.png")
        return report
    finally:
        log.close()


def _check_nonfinite(streak: int, cfg: TrainConfig, epoch: int, gstep: int, model_dir) -> None:
    """Stop when ``streak`` consecutive updates were skipped (read at logging windows and checkpoints)."""
    if streak >= cfg.max_nonfinite_steps:
        raise NonFiniteLoss(
            f"loss or gradients were non-finite for {streak} consecutive steps (epoch {epoch + 1}, "
            f"step {gstep}); stopped; {_last_ckpt_words(model_dir)}; lower train.lr_init, "
            f"check the data, or raise train.max_nonfinite_steps"
        )


def _decays(optimizer, variable) -> bool:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner._use_weight_decay(variable)


def _last_ckpt_words(model_dir) -> str:
    from effnet.checkpoint import latest_checkpoint

    latest = latest_checkpoint(model_dir)
    return f"the last good checkpoint {latest.path} is intact" if latest else "no checkpoint was written yet"


def _final_report(cfg, model_dir, history, last_eval, start_time, global_step, params) -> dict:
    train_points = [h["train"] for h in history if "train" in h]
    final = {"global_step": int(global_step.numpy()), "seconds": time.time() - start_time}
    if train_points:
        final.update({f"train_{k}": v for k, v in train_points[-1].items() if k != "lr"})
    final.update(last_eval)
    return {"model": cfg.model, "dataset": cfg.dataset, "model_dir": str(model_dir), "final": final,
            "parameters": params}


__all__ = ["TrainConfig", "run"]

"""One place builds what trains: a run's parts from its resolved config, its backend and its classes.

Three callers need a training step, and all three build it here, so each runs exactly the step
that trains:

* :class:`effnet.trainer.Trainer` (:func:`assemble`: model, stages, schedule, optimizer, EMA,
  step, evaluator, evaluation batch and size);
* ``effnet benchmark train`` (:func:`effnet.benchmarking.run_benchmark`: :func:`build_step` on
  :func:`synthetic_batch`);
* the memory planner's probe (:mod:`effnet.memory_probe`: the same).

What makes two steps the same is :class:`StepSettings` (the optimizer and its weight-decay
exclusions, clipping, loss scaling, label smoothing, L2, EMA, XLA) plus the number of micro-batches
per update; :func:`describe_step` reads it back from a built step (a test compares the three).

Run defaults are decided here once: the evaluation size (:attr:`TrainConfig.eval_size`), the
evaluation batch (:func:`eval_batch`, which ``effnet eval`` uses too) and, under
``progressive.batch_sizes = 'auto'``, each stage's micro-batch (:func:`plan_micro_batches`).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from effnet import checkpoint as ckpt_mod
from effnet import memory, registry, stages
from effnet import precision as precision_mod
from effnet.distribute import Backend, plan_batch, replica_notice
from effnet.errors import UserError
from effnet.models import build_model, check_image_size
from effnet.settings import TrainConfig

# --------------------------------------------------------------------------------------------------
# The step


@dataclass(frozen=True)
class StepSettings:
    """Everything that decides what one optimizer update computes (besides the model and batch)."""

    optimizer: str
    precision: str = "fp32"
    xla: bool = False
    label_smoothing: float = 0.1
    weight_decay: float = 5e-6
    decay_bias: bool = False
    decay_norm: bool = False
    clip_norm: float | None = None
    ema_decay: float | None = 0.9999

    @classmethod
    def of(cls, cfg: TrainConfig) -> "StepSettings":
        """The step a training run with ``cfg`` takes."""
        return cls(optimizer=cfg.plugin("optimizer"), precision=cfg.precision, xla=bool(precision_mod.default_xla(cfg.xla)),
                   label_smoothing=cfg.label_smoothing, weight_decay=cfg.weight_decay, decay_bias=cfg.decay_bias,
                   decay_norm=cfg.decay_norm, clip_norm=cfg.clip_norm, ema_decay=cfg.ema_decay)


def build_step(model, settings: StepSettings, learning_rate, *, global_batch: int, accumulation: int = 1,
               backend: Backend | None = None, global_step=None, class_weights=None):
    """``(optimizer, ema, step)`` for ``model``: the one way a training step is built.

    The optimizer and EMA are made inside ``backend.scope()``; ``learning_rate`` is a number or a
    schedule counting optimizer updates; ``global_step`` (optional) is the int64 variable the step
    counts, or a function that makes it (called once the optimizer and EMA exist); ``class_weights``
    one loss weight per class (the run's resolved ``train.class_weights``) or None.
    """
    from effnet.ema import ExponentialMovingAverage
    from effnet.step import TrainStep, decayed_variables

    backend = backend or Backend()
    with backend.scope():
        optimizer = _optimizer(settings, model, learning_rate)
        ema = ExponentialMovingAverage(model, settings.ema_decay) if settings.ema_decay else None
    if global_step is not None and callable(global_step):
        global_step = global_step()
    step = TrainStep(model, optimizer, global_batch=global_batch, backend=backend,
                     label_smoothing=settings.label_smoothing, weight_decay=settings.weight_decay,
                     decay_vars=decayed_variables(model, settings.decay_bias, settings.decay_norm),
                     accumulation_steps=accumulation, ema=ema, jit_compile=settings.xla, global_step=global_step,
                     class_weights=class_weights)
    return optimizer, ema, step


def _optimizer(settings: StepSettings, model, learning_rate):
    from effnet.step import make_optimizer

    return make_optimizer(settings.optimizer, model, learning_rate, precision=settings.precision,
                          clip_norm=settings.clip_norm, decay_bias=settings.decay_bias, decay_norm=settings.decay_norm)


def build_optimizer(cfg: TrainConfig, model, schedule):
    """The run's optimizer (``train.optimizer`` and its knobs, clipping, decay exclusions, loss scaling)."""
    return _optimizer(StepSettings.of(cfg), model, schedule)


def describe_step(step) -> dict:
    """What a built step computes, as plain values: two steps with equal descriptions train alike."""
    from effnet.step import is_loss_scaled

    optimizer = step.optimizer
    inner = optimizer.inner_optimizer if is_loss_scaled(optimizer) else optimizer
    config = {k: v for k, v in inner.get_config().items() if k not in ("learning_rate", "name")}
    return {"optimizer": type(inner).__name__, "optimizer_config": config, "loss_scaled": is_loss_scaled(optimizer),
            "clip_norm": inner.global_clipnorm, "label_smoothing": step.label_smoothing,
            "weight_decay": step.weight_decay, "decayed": sorted(v.path for v in step.decay_vars),
            "accumulation": step.accumulation_steps,
            "ema_decay": step.ema.decay if step.ema is not None else None, "jit_compile": bool(step.jit_compile)}


def synthetic_batch(batch: int, image_size: int, num_classes: int, seed: int = 0) -> dict:
    """Random uint8 images and one-hot labels made once on the device (benchmark and memory probe)."""
    import tensorflow as tf

    shape = [batch, image_size, image_size, 3]
    images = tf.cast(tf.random.stateless_uniform(shape, seed=[seed, 1], minval=0, maxval=256, dtype=tf.int32), tf.uint8)
    labels = tf.one_hot(tf.random.stateless_uniform([batch], seed=[seed, 2], minval=0, maxval=num_classes,
                                                    dtype=tf.int32), num_classes)
    return {"image": images, "label": labels}


# --------------------------------------------------------------------------------------------------
# Stages


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
    return [registry.get("augmenter", name)(**(overrides(name) if overrides else {})) for name in names]


def final_stage_values(cfg: TrainConfig, model) -> dict[str, float]:
    """The values the last stage uses: the run's configured image size, batch, regularisation."""
    final: dict[str, float] = {"image_size": cfg.image_size, "batch_size": cfg.batch_size}
    final.update(stages.model_stage_values(model))
    for name, aug in zip(cfg.augmenters, build_augmenters(cfg.augmenters)):
        for key, value in _numeric_params(aug, registry.get("augmenter", name)).items():
            final[f"{name}.{key}"] = value
    return final


def build_stages(cfg: TrainConfig, model) -> list:
    schedule = cfg.plugin("stage_schedule")
    result = registry.get("stage_schedule", schedule)(epochs=cfg.epochs, final=final_stage_values(cfg, model))
    return stages.validate(result, cfg.epochs, schedule)


def plan_micro_batches(cfg: TrainConfig, stage_list, backend: Backend, num_classes: int, gin_text: str,
                       log: Callable[[str], None]):
    """``progressive.batch_sizes='auto'``: ``(stages, last micro-batch)`` with each stage's micro-batch
    from the memory budget (:mod:`effnet.memory`).

    The writer probes (or reads the plan cached in the run folder) and every process takes its
    micro-batches, so all replicas accumulate the same number of micro-batches.
    """
    import numpy as np

    micro = np.zeros(len(stage_list), np.int64)
    if backend.is_writer:
        spec = probe_spec(cfg, num_classes)
        resuming = ckpt_mod.latest_checkpoint(cfg.model_dir, warn=None) is not None
        plans = memory.plan(stage_list, model_dir=Path(cfg.model_dir), spec=spec, budget_gb=cfg.memory_budget_gb,
                            min_accum=cfg.grad_accum_steps, gin_text=gin_text, resuming=resuming, log=log)
        micro[:] = [p.micro_batch for p in plans]
    micro = np.asarray(backend.reduce_sum(micro)).astype(np.int64)
    planned = []
    for stage, m in zip(stage_list, micro):
        batch = int(stage.params.get("batch_size", cfg.batch_size))
        planned.append(dataclasses.replace(stage, params={**stage.params, "batch_size": batch,
                                                          "grad_accum_steps": batch // int(m)}))
    return planned, int(micro[-1])


def probe_spec(cfg: TrainConfig, num_classes: int) -> "memory.ProbeSpec":
    """The memory probe of ``cfg``'s step (image size and batch are filled in per probe)."""
    s = StepSettings.of(cfg)
    return memory.ProbeSpec(model=cfg.model, image_size=0, batch=0, num_classes=num_classes, precision=s.precision,
                            optimizer=s.optimizer, weight_decay=s.weight_decay, label_smoothing=s.label_smoothing,
                            ema_decay=s.ema_decay, clip_norm=s.clip_norm, xla=s.xla, seed=cfg.seed,
                            decay_bias=s.decay_bias, decay_norm=s.decay_norm)


def eval_batch(cfg: TrainConfig, planned_micro_batch: int | None = None) -> int:
    """The evaluation batch: ``train.eval_batch_size``, else the training micro-batch (under a memory
    plan no larger than the last stage's planned micro-batch). ``effnet eval`` asks the same."""
    return int(cfg.eval_batch_size or min(cfg.micro_batch, planned_micro_batch or cfg.micro_batch))


def steps_per_epoch(cfg: TrainConfig, stage, backend: Backend, num_train: int) -> int:
    """Optimizer updates per epoch of ``stage``: ``train.steps_per_epoch`` or examples // global batch."""
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    global_batch = plan_batch(int(stage.params.get("batch_size", cfg.batch_size)),
                              int(stage.params.get("grad_accum_steps", cfg.grad_accum_steps)), backend).global_batch
    steps = num_train // global_batch
    if steps < 1:
        raise UserError(f"dataset {cfg.dataset!r} has {num_train} training examples, fewer than one global batch of "
                        f"{global_batch}; lower train.batch_size")
    return steps


# --------------------------------------------------------------------------------------------------
# A training run's parts


@dataclass
class RunParts:
    """What :func:`assemble` builds for a training run."""

    model: object
    stages: list
    stage_steps: list[int]  # optimizer updates per epoch, per stage
    total_steps: int
    global_batch: int
    base_lr: float
    schedule: object
    optimizer: object
    ema: object
    global_step: object
    step: object
    evaluator: object
    eval_size: int
    eval_batch: int
    xla: bool


def assemble(cfg: TrainConfig, backend: Backend, num_classes: int, num_train: int, *, gin_text: str = "",
             log: Callable[[str], None] | None = None, class_weights=None) -> RunParts:
    """Build a training run's parts, in a fixed order (the RNG draws of a resumed run depend on it).

    Call after the backend is set up and precision and seeds are configured. ``gin_text`` is the
    run's gin config (the memory planner's probes rebuild the model with it); ``log`` prints the
    writer's start-up notices (stderr by default); ``class_weights`` weights the loss per class.
    """
    import tensorflow as tf

    from effnet.metrics import Evaluator

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = StepSettings.of(cfg)
    model = build_model(cfg.model, num_classes, scope=backend.scope())
    if cfg.sync_batchnorm:  # statistics over every replica's batch
        backend.enable_sync_batchnorm(model)
    stage_list = build_stages(cfg, model)
    for stage in stage_list:
        check_image_size(model, int(stage.params["image_size"]), cfg.model, detail=f" (stage {stage.index + 1})",
                         hint="; raise train.image_size (or the stage schedule's base image_size)")
    check_image_size(model, cfg.eval_size, cfg.model, "train.eval_image_size")
    notice = cfg.eval_size_notice()  # after the checks: a run that cannot start says only why
    if notice and backend.is_writer:
        log(notice)
    planned = None
    if any(stage.auto_batch for stage in stage_list):
        stage_list, planned = plan_micro_batches(cfg, stage_list, backend, num_classes, gin_text, log)
    accumulation = max(int(s.params.get("grad_accum_steps", cfg.grad_accum_steps)) for s in stage_list)

    # Steps and the learning rate are defined per optimizer update over all replicas (BatchPlan).
    stage_steps = [steps_per_epoch(cfg, s, backend, num_train) for s in stage_list]
    total_steps = sum(n * s.epochs for n, s in zip(stage_steps, stage_list))
    plan = plan_batch(cfg.batch_size, cfg.grad_accum_steps, backend)
    base_lr = plan.lr(cfg.lr_init, cfg.reference_batch)
    notice = replica_notice(cfg.replicas, plan, cfg.lr_init, cfg.reference_batch)
    if notice and backend.is_writer:
        log(notice)
    schedule = registry.get("lr_schedule", cfg.plugin("lr_schedule"))(
        base_lr=base_lr, steps_per_epoch=stage_steps[0], total_steps=total_steps)

    def global_step():  # counted by the step; made after the optimizer and EMA, as runs always have
        return backend.variable(tf.zeros([], tf.int64), name="global_step")

    optimizer, ema, step = build_step(model, settings, schedule, global_batch=plan.global_batch,
                                      accumulation=max(accumulation, cfg.grad_accum_steps), backend=backend,
                                      global_step=global_step, class_weights=class_weights)
    evaluator = Evaluator(model, backend, jit_compile=settings.xla, num_classes=num_classes)
    return RunParts(model=model, stages=stage_list, stage_steps=stage_steps, total_steps=total_steps,
                    global_batch=plan.global_batch, base_lr=base_lr, schedule=schedule, optimizer=optimizer, ema=ema,
                    global_step=step.global_step, step=step, evaluator=evaluator, eval_size=cfg.eval_size,
                    eval_batch=eval_batch(cfg, planned), xla=settings.xla)


__all__ = ["RunParts", "StepSettings", "assemble", "build_augmenters", "build_optimizer", "build_stages", "build_step", "describe_step",
           "eval_batch", "final_stage_values", "plan_micro_batches", "probe_spec", "steps_per_epoch", "synthetic_batch"]

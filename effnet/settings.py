"""Every engine setting, one gin configurable each: ``train``, ``benchmark``, ``export``, ``loggers``.

A reader finds where any knob is read with one search: ``train.epochs`` is the field ``epochs`` of
:class:`TrainConfig` below, ``benchmark.steps`` of :class:`BenchmarkConfig`, and so on. (Plugins
declare their own configurables: ``efficientnet.*``, ``rmsprop.*``, ``progressive.*``; the input
pipeline's are ``input_pipeline.*`` in :mod:`effnet.data.options`.) This module imports neither
TensorFlow nor any other engine module but the leaves, so :mod:`effnet.config` can make sure every
configurable exists before it parses a gin file.

Built-in plugin names are not spelled here: ``gin/base/train.gin`` binds the recipe's optimizer,
schedule, stage schedule, backend and loggers, and an experiment that leaves one unset gets a
one-line error naming the binding.
"""

from __future__ import annotations

import os

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import gin

from effnet import precision as precision_mod
from effnet.errors import UserError, did_you_mean
from effnet.validate import MAX_IMAGE_SIZE, check_number

MODES = ("train", "train_and_eval")
# The largest evaluation/training size ratio a recipe intends (the seed evaluates its 300 px V2-S
# at 384 px, 1.28x); beyond it (either way) the run says so at start-up.
MAX_EVAL_SIZE_RATIO = 1.35


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
    # progressive.batch_sizes='auto': the memory (GiB) one replica's training may use (process RSS on
    # CPU, device memory on a GPU); None: 70% of what the process may use (MemAvailable, cgroup limit)
    memory_budget_gb: float | None = None
    image_size: int = 224  # training image size (of the last stage when progressive)
    eval_image_size: int | None = None  # default: image_size (TrainConfig.eval_size)
    eval_batch_size: int | None = None  # default: the training micro-batch
    eval_every_epochs: int = 1
    optimizer: str | None = None  # a registered optimizer (gin/base/train.gin: 'rmsprop')
    lr_schedule: str | None = None  # a registered LR schedule (gin/base/train.gin: 'cosine')
    lr_init: float = 0.005  # per reference_batch images; lr = lr_init * global_batch / reference_batch
    reference_batch: int = 128
    label_smoothing: float = 0.1
    # 'balanced' (total / (classes * count), from the training split's labels) or {class name or label: weight}
    # (classes not named keep 1): weights each example's loss by its class; None: unweighted
    class_weights: str | dict | None = None
    weight_decay: float = 5e-6  # L2 in the loss on conv/dense kernels (0 for optimizers that decay themselves)
    decay_bias: bool = False
    decay_norm: bool = False
    clip_norm: float | None = None  # global-norm gradient clipping
    ema_decay: float | None = 0.9999  # None turns EMA off
    augmenters: Sequence[str] = ()  # registered augmenter names, applied in order
    callbacks: Sequence[str] = ()  # registered loop callbacks (effnet.callbacks), e.g. ['early_stopping']
    deferred_mixing: bool = False  # mixup/cutmix inside the step instead of the input pipeline
    stage_schedule: str | None = None  # a registered stage schedule: 'single' or 'progressive' (gin/base/train.gin: 'single')
    precision: str = "fp32"  # fp32 | tf32 | amp | bf16
    xla: bool | None = None  # None: on for GPUs, off for CPUs
    seed: int = 0
    deterministic: bool = False  # deterministic TF ops (needed for bit-exact resume)
    backend: str | None = None  # a registered distribution backend (gin/base/train.gin: 'single')
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
        self._check_ranges()
        from effnet.data.balance import check_class_weights

        check_class_weights(self.class_weights)
        if self.batch_size % self.grad_accum_steps:
            raise UserError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum_steps={self.grad_accum_steps}; "
                f"pick a batch size that is a multiple of the accumulation steps"
            )
        self._check_auto_batch()
        # Booleans must be booleans: a string "0" or "False" is truthy in Python, which is how the
        # reference scripts' flags could not be turned off (docs/differences.md).
        for name in ("decay_bias", "decay_norm", "deferred_mixing", "deterministic", "replace_head", "plot", "xla"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "xla" and value is None):
                raise UserError(f"train.{name}={value!r} must be True or False (gin booleans are written without quotes)")

    def _check_auto_batch(self) -> None:
        """``progressive.batch_sizes='auto'`` only means something under the progressive stage schedule."""
        schedule = self.stage_schedule
        if not schedule or schedule == "progressive":
            return
        if _bound("progressive.batch_sizes") == "auto":
            raise UserError(f"progressive.batch_sizes='auto' is bound but train.stage_schedule={schedule!r}; the memory "
                            f"planner works on progressive stages: use train.stage_schedule='progressive' (with "
                            f"progressive.n_stages=1 for one stage) or remove the binding")

    def _check_ranges(self) -> None:
        """Every numeric field in its range (see effnet.validate for the message shape)."""
        big = 10**9
        size_hint = f"image sizes go up to {MAX_IMAGE_SIZE} px (the largest published EfficientNet uses 800)"
        # name: (low, high, low_open, high_open, integer, optional, hint)
        ranges = {
            "epochs": (1, 100_000, False, False, True, False, ""),
            "steps_per_epoch": (1, big, False, False, True, True, "None means training examples // global batch"),
            "batch_size": (1, 65_536, False, False, True, False, ""),
            "grad_accum_steps": (1, 1024, False, False, True, False, ""),
            "memory_budget_gb": (0, 1_000_000, True, False, False, True,
                                 "the GiB a replica's training may use, for progressive.batch_sizes='auto'; "
                                 "None: 70% of the memory available"),
            "image_size": (1, MAX_IMAGE_SIZE, False, False, True, False, size_hint),
            "eval_image_size": (1, MAX_IMAGE_SIZE, False, False, True, True, size_hint),
            "eval_batch_size": (1, 65_536, False, False, True, True, ""),
            "eval_every_epochs": (1, 100_000, False, False, True, False, ""),
            "lr_init": (0, 10, True, False, False, False, ""),
            "reference_batch": (1, big, False, False, True, False, ""),
            "label_smoothing": (0, 1, False, True, False, False, ""),
            "weight_decay": (0, 1, False, True, False, False, ""),
            "clip_norm": (0, None, True, False, False, True, "None means no clipping"),
            "ema_decay": (0, 1, True, True, False, True, "None turns EMA off"),
            "seed": (0, 2**32 - 1, False, False, True, False, ""),
            "checkpoint_every_epochs": (0, 100_000, False, False, True, True, "0 or None means only at the end"),
            "checkpoint_every_steps": (0, big, False, False, True, True, "0 or None means by epochs only"),
            "keep_checkpoints": (1, 100_000, False, False, True, False, ""),
            "log_every_steps": (1, big, False, False, True, False, ""),
            "max_nonfinite_steps": (1, big, False, False, True, False, ""),
            "replicas": (1, 1_000_000, False, False, True, True, "the number of GPUs the recipe was written for; None: any"),
        }
        for name, (low, high, low_open, high_open, integer, optional, hint) in ranges.items():
            check_number(f"train.{name}", getattr(self, name), low, high, low_open=low_open, high_open=high_open,
                         integer=integer, optional=optional, hint=hint)

    def plugin(self, kind: str) -> str:
        """The registered name bound to ``train.<kind>`` (optimizer, lr_schedule, stage_schedule, backend)."""
        value = getattr(self, kind)
        if not value:
            raise UserError(f"train.{kind} is not set; bind it in your gin file (gin/base/train.gin sets the recipe's), "
                            f"e.g. include 'base/train.gin'; `effnet plugins` lists the names")
        return value

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum_steps

    @property
    def eval_size(self) -> int:
        """The evaluation image size: ``train.eval_image_size`` when bound, else the training size.

        Recipes bind it only where they mean a larger evaluation (the seed's 300 -> 384), so a user
        who changes ``train.image_size`` gets an evaluation at that size without a second knob.
        """
        return int(self.eval_image_size or self.image_size)

    def eval_size_notice(self) -> str | None:
        """One line when evaluation runs at a size the recipes never intend for this training size."""
        ratio = self.eval_size / self.image_size
        if 1 / MAX_EVAL_SIZE_RATIO <= ratio <= MAX_EVAL_SIZE_RATIO:
            return None
        return (f"effnet: evaluating at train.eval_image_size={self.eval_size} px, {ratio:.2g}x the training size "
                f"train.image_size={self.image_size} (recipes evaluate at 1-{MAX_EVAL_SIZE_RATIO:g}x); a model "
                f"trained at one size usually scores far lower at another: unbind train.eval_image_size (or set "
                f"it to None) to evaluate at the training size")


# --------------------------------------------------------------------------------------------------
# benchmark

BENCHMARK_MODES = ("train", "infer")


def _is_reference(value) -> bool:
    """A gin reference (``@name`` or a ``%MACRO``) rather than a value; gin names the macro's type only privately."""
    return isinstance(value, gin.config.ConfigurableReference) or type(value).__name__ == "_MacroReference"


_UNBOUND = object()


def _bound(name: str):
    """The value bound to ``name`` (``train.epochs``) in the loaded gin config, or ``_UNBOUND``
    when it is not bound or bound to a reference."""
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return _UNBOUND
    return _UNBOUND if _is_reference(value) else value


def _train_binding(name: str, default):
    """The value of ``train.<name>`` in the loaded gin config, or ``default`` when it is not bound (or None)."""
    value = _bound(f"train.{name}")
    return default if value is _UNBOUND or value is None else value


def _recipe_value(name: str, given, default):
    """A training-step setting of the benchmark: ``benchmark.<name>`` when bound (or given other than
    its default), else the loaded experiment's ``train.<name>`` (None included), else ``given``."""
    if given != default or _bound(f"benchmark.{name}") is not _UNBOUND:
        return given
    value = _bound(f"train.{name}")
    return given if value is _UNBOUND else value


@gin.configurable("benchmark")
@dataclass
class BenchmarkConfig:
    """Settings of one benchmark. Bind them in gin as ``benchmark.<name> = value``."""

    mode: str = "infer"  # 'train' or 'infer'
    model: str | None = None  # a registered model; default train.model
    num_classes: int = 1000
    precision: str | None = None  # fp32 | tf32 | amp | bf16; default train.precision, else fp32
    batch_size: int | None = None  # default train.batch_size (train) / train.eval_batch_size, else 32
    image_size: int | None = None  # default train.eval_image_size (infer) / train.image_size, else 224
    xla: bool | None = None  # None: train.xla, else on for GPUs and off for CPUs
    steps: int = 20  # timed steps
    warmup: int = 5  # untimed steps first (tracing, compilation)
    optimizer: str | None = None  # train mode: a registered optimizer; default train.optimizer
    learning_rate: float = 1e-4
    # train mode: the training step's settings; unbound, they follow the experiment's train.* bindings
    # (so the benchmark times the step that trains), else these defaults (TrainConfig's)
    label_smoothing: float = 0.1
    weight_decay: float = 5e-6
    ema_decay: float | None = 0.9999  # None: no EMA
    clip_norm: float | None = None
    decay_bias: bool = False
    decay_norm: bool = False
    grad_accum_steps: int = 1  # micro-batches (of batch_size) per timed optimizer update
    frozen_graph: bool = True  # infer mode: weights frozen into the graph, as `effnet predict` serves them
    seed: int = 0
    # infer mode: the runtime that serves the model (tf, tflite, onnxruntime, openvino; default tf, or the
    # artifact's own) and an exported artifact to time instead of the model converted on the fly
    runtime: str | None = None
    artifact: str | None = None

    def resolved(self) -> "BenchmarkConfig":
        """A copy with ``None`` fields filled from the ``train.*`` bindings or defaults, validated."""
        cfg = BenchmarkConfig(**asdict(self))
        if cfg.mode not in BENCHMARK_MODES:
            raise UserError(f"benchmark mode {cfg.mode!r} is not one of {', '.join(BENCHMARK_MODES)}")
        if cfg.runtime is not None or cfg.artifact:
            from effnet.runtimes import runtime_for

            if cfg.mode != "infer":
                raise UserError("--runtime and --artifact time inference: use `effnet benchmark infer`")
            cfg.runtime = runtime_for(cfg.artifact, cfg.runtime) if cfg.artifact else runtime_for(".", cfg.runtime)
        cfg.runtime = cfg.runtime or "tf"
        if cfg.artifact:  # what is timed is the artifact, whatever train.model the defaults bind
            cfg.model = cfg.model or os.path.basename(os.path.normpath(cfg.artifact))
        cfg.model = cfg.model or _train_binding("model", None)
        if not cfg.model:
            raise UserError("no model to benchmark: pass --model NAME (see `effnet plugins`) or an experiment with --gin")
        cfg.precision = cfg.precision or _train_binding("precision", "fp32")
        precision_mod.check(cfg.precision)
        if cfg.batch_size is None:
            train_batch = _train_binding("batch_size", 32) // max(1, int(_train_binding("grad_accum_steps", 1)))
            cfg.batch_size = train_batch if cfg.mode == "train" else _train_binding("eval_batch_size", train_batch)
        if not cfg.image_size and cfg.mode == "infer":  # inference runs at the evaluation size (V2-S: 384)
            cfg.image_size = _train_binding("eval_image_size", None)
        cfg.image_size = cfg.image_size or _train_binding("image_size", 224)
        if cfg.xla is None:
            cfg.xla = _train_binding("xla", None)
        cfg.optimizer = cfg.optimizer or _train_binding("optimizer", None)
        defaults = {f.name: f.default for f in fields(BenchmarkConfig)}
        for name in ("label_smoothing", "weight_decay", "ema_decay", "clip_norm", "decay_bias", "decay_norm",
                     "grad_accum_steps"):
            setattr(cfg, name, _recipe_value(name, getattr(cfg, name), defaults[name]))
        if cfg.mode == "train" and not cfg.optimizer:
            raise UserError("no optimizer to benchmark: pass an experiment with --gin (gin/base/train.gin sets the "
                            "recipe's) or --gin-param \"benchmark.optimizer='NAME'\" (see `effnet plugins`)")
        for name, low, high in (("batch_size", 1, 65_536), ("image_size", 1, MAX_IMAGE_SIZE), ("steps", 1, 10**6),
                                ("num_classes", 1, 10**6), ("warmup", 0, 10**6), ("seed", 0, 2**32 - 1)):
            check_number(f"benchmark.{name}", getattr(cfg, name), low, high, integer=True)
        check_number("benchmark.learning_rate", cfg.learning_rate, 0, 10, low_open=True)
        check_number("benchmark.label_smoothing", cfg.label_smoothing, 0, 1, high_open=True)
        check_number("benchmark.weight_decay", cfg.weight_decay, 0, 1, high_open=True)
        check_number("benchmark.ema_decay", cfg.ema_decay, 0, 1, low_open=True, high_open=True, optional=True)
        check_number("benchmark.clip_norm", cfg.clip_norm, 0, None, low_open=True, optional=True)
        check_number("benchmark.grad_accum_steps", cfg.grad_accum_steps, 1, 1024, integer=True)
        for name in ("decay_bias", "decay_norm"):
            if not isinstance(getattr(cfg, name), bool):
                raise UserError(f"benchmark.{name}={getattr(cfg, name)!r} must be True or False")
        if not isinstance(cfg.frozen_graph, bool):
            raise UserError(f"benchmark.frozen_graph={cfg.frozen_graph!r} must be True or False")
        return cfg


# --------------------------------------------------------------------------------------------------
# export

FORMATS = ("saved_model", "keras", "tflite", "tflite_float16", "tflite_dynamic", "onnx", "openvino", "tflite_int8",
           "openvino_int8")
# `--format all`: the formats TensorFlow alone writes without calibration data; onnx and openvino need
# their extras, the int8 formats calibrate on training images: each is asked for by name.
ALL_FORMATS = FORMATS[:5]
# full-integer formats: activation ranges calibrated on images (export --calibration / --calibration-images)
INT8_FORMATS = ("tflite_int8", "openvino_int8")
FILENAMES = {"saved_model": "saved_model", "keras": "model.keras", "tflite": "model.tflite",
             "tflite_float16": "model_float16.tflite", "tflite_dynamic": "model_dynamic.tflite",
             "onnx": "model.onnx", "openvino": "openvino", "tflite_int8": "model_int8.tflite",
             "openvino_int8": "openvino_int8"}
# Probabilities are in [0, 1]. Float32 artifacts run the same arithmetic up to kernel choice and
# summation order (measured: <= 1e-6 for TFLite and ONNX Runtime, <= 2e-5 for OpenVINO in f32);
# float16 weights and int8 dynamic-range weights move probabilities by up to a few percent on a
# trained model and may flip near ties; full-integer int8 (weights and activations) moves them more,
# so its agreement bound is loose and its accuracy is held by export.max_top1_drop with --validate.
DEFAULT_MAX_PROB_DIFF = {"saved_model": 1e-4, "keras": 1e-4, "tflite": 1e-4, "tflite_float16": 0.02, "tflite_dynamic": 0.1,
                         "onnx": 1e-4, "openvino": 1e-4, "tflite_int8": 0.3, "openvino_int8": 0.3}
DEFAULT_MIN_TOP1_AGREEMENT = {"saved_model": 1.0, "keras": 1.0, "tflite": 1.0, "tflite_float16": 0.9, "tflite_dynamic": 0.75,
                              "onnx": 1.0, "openvino": 1.0, "tflite_int8": 0.5, "openvino_int8": 0.5}
# Validation top-1 the artifact may lose against the in-memory model (checked with --validate), as a
# fraction: 0.01 = one percentage point. Float formats lose nothing; int8 may lose a little.
DEFAULT_MAX_TOP1_DROP = {"saved_model": 0.01, "keras": 0.01, "tflite": 0.01, "tflite_float16": 0.01,
                         "tflite_dynamic": 0.03, "onnx": 0.01, "openvino": 0.01, "tflite_int8": 0.05,
                         "openvino_int8": 0.05}


@gin.configurable("export")
def export_bounds(max_prob_diff: dict | None = None, min_top1_agreement: dict | None = None,
                  max_top1_drop: dict | None = None) -> dict[str, tuple[float, float, float]]:
    """Bounds per format, ``{format: (max_prob_diff, min_top1_agreement, max_top1_drop)}``.

    Bind partial dicts in gin, e.g. ``export.max_prob_diff = {'tflite_dynamic': 0.2}``; formats
    not named keep their defaults. ``max_top1_drop`` bounds the validation top-1 lost against the
    in-memory model (a fraction), checked when the export is asked to ``--validate``.
    """
    diffs = {**DEFAULT_MAX_PROB_DIFF, **(max_prob_diff or {})}
    agreements = {**DEFAULT_MIN_TOP1_AGREEMENT, **(min_top1_agreement or {})}
    drops = {**DEFAULT_MAX_TOP1_DROP, **(max_top1_drop or {})}
    for name in [*diffs, *agreements, *drops]:
        if name not in FORMATS:
            raise UserError(f"export bounds name format {name!r}{did_you_mean(name, FORMATS)}; formats: {', '.join(FORMATS)}")
    return {name: (float(diffs[name]), float(agreements[name]), float(drops[name])) for name in FORMATS}


@gin.configurable("loggers")
@dataclass
class LoggerConfig:
    """Which metric sinks a run writes to, by registered logger name (gin/base/loggers.gin binds them)."""

    names: Sequence[str] = ()


__all__ = ["ALL_FORMATS", "BENCHMARK_MODES", "DEFAULT_MAX_PROB_DIFF", "DEFAULT_MAX_TOP1_DROP", "DEFAULT_MIN_TOP1_AGREEMENT", "FILENAMES", "FORMATS",
           "INT8_FORMATS", "MODES",
           "BenchmarkConfig", "LoggerConfig", "TrainConfig", "export_bounds"]

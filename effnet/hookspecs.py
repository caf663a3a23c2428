"""Every hook point of effnet, in one place.

A plugin is a module (or object) with functions named after these hooks, marked with
``@effnet.hookimpl``. Built-in plugins (``effnet.plugins.*``) are registered exactly like
third-party ones; third-party packages are found through the ``effnet`` entry-point group::

    # pyproject.toml of your package
    [project.entry-points.effnet]
    my_models = "my_package.effnet_plugin"

Each registration hook returns a mapping ``{name: factory}``. Names are global per kind: two
plugins that register the same name for the same kind is an error that names both. Factories
are ordinary callables; decorate them with ``@gin.configurable`` if you want their parameters
to be bindable from gin files (all built-ins do). The engine calls each factory with the
keyword arguments documented on its hook and nothing else, so everything else a factory takes
comes from gin.

Every example below works when copied into a package (``tests/architecture/test_hookspec_examples.py``
loads them as a plugin and binds a knob of each from gin). Hook implementations must start with ``effnet_``; a function called ``effnet_something`` that
matches no hook below is reported as a misspelling when the plugin is loaded.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("effnet")


@hookspec
def effnet_models():
    """Register model architectures.

    Return ``{name: factory}``. The engine calls ``factory(num_classes=N)`` (through
    :func:`effnet.models.build_model`, which checks this contract everywhere a model is built):

    * the result is a ``keras.Model`` mapping images ``[batch, height, width, 3]`` with values in
      ``[0, 255]`` (any float dtype or uint8, any spatial size at or above the model's minimum) to
      **float32** logits ``[batch, N]`` (no softmax; give the classifier ``dtype="float32"`` so
      mixed precision keeps it). Normalisation belongs inside the model;
    * ``model.min_input_size`` (optional, default 32) is the smallest square input it accepts; runs,
      evaluation and benchmarks refuse smaller sizes with a one-line error;
    * the classifier is the model's **last** ``keras.layers.Dense`` layer: ``--replace-head``
      re-initialises exactly that layer when the number of classes differs.

    Layers whose behaviour changes
    between progressive stages (dropout, stochastic depth) expose
    ``apply_stage(params: Mapping[str, float])``; the engine calls it on every layer that has it
    when a stage starts, with keys such as ``dropout`` and ``drop_path``, and reads the values a
    model was built with from ``stage_values() -> dict``. A factory may carry an attribute
    ``load_weights(model, path, replace_head=False)``: ``--from-weights`` then uses it for Keras
    weight files (``.weights.h5`` / ``.keras``, and PyTorch ``.pth`` / ``.safetensors`` it converts)
    instead of ``model.load_weights``; and ``weight_settings(path) -> {gin binding: value}``, what the
    weights need from the model (e.g. ``efficientnet.padding``), which the engine binds before building it.

    Example::

        @gin.configurable
        def tiny_cnn(num_classes, width=16):
            inputs = keras.Input((None, None, 3))
            x = keras.layers.Rescaling(1 / 255)(inputs)
            x = keras.layers.Conv2D(width, 3, activation="relu")(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            outputs = keras.layers.Dense(num_classes, dtype="float32")(x)
            return keras.Model(inputs, outputs, name="tiny_cnn")

        @effnet.hookimpl
        def effnet_models():
            return {"tiny_cnn": tiny_cnn}
    """


@hookspec
def effnet_optimizers():
    """Register optimizers.

    Return ``{name: factory}``. The engine calls ``factory(learning_rate=schedule)`` where
    ``schedule`` is a ``keras.optimizers.schedules.LearningRateSchedule`` counting optimizer
    updates, and expects a ``keras.optimizers.Optimizer``. Loss scaling, gradient
    accumulation, clipping and EMA are the engine's job: do not enable them here. An optimizer
    with decoupled weight decay gets BatchNorm and bias variables excluded by the engine
    through ``exclude_from_weight_decay``.

    Example::

        @gin.configurable
        def adagrad(learning_rate, initial_accumulator_value=0.1):
            return keras.optimizers.Adagrad(learning_rate, initial_accumulator_value)

        @effnet.hookimpl
        def effnet_optimizers():
            return {"adagrad": adagrad}
    """


@hookspec
def effnet_lr_schedules():
    """Register learning-rate schedules.

    Return ``{name: factory}``. The engine calls
    ``factory(base_lr=float, steps_per_epoch=int, total_steps=int)`` where ``base_lr`` is the
    already batch-scaled peak rate and steps count optimizer updates (not micro-batches). It
    expects a ``keras.optimizers.schedules.LearningRateSchedule``.

    Example::

        @gin.configurable
        def halving(base_lr, steps_per_epoch, total_steps, every_epochs=30):
            return keras.optimizers.schedules.ExponentialDecay(
                base_lr, every_epochs * steps_per_epoch, 0.5, staircase=True)

        @effnet.hookimpl
        def effnet_lr_schedules():
            return {"halving": halving}
    """


@hookspec
def effnet_augmenters():
    """Register data augmenters.

    Return ``{name: factory}``. The input pipeline calls ``factory(**params)`` with the
    parameters of the current progressive stage (for example ``magnitude`` or ``alpha``) and
    expects an :class:`effnet.data.Augmenter`: either per-image (``level = "image"``, runs on
    uint8 images before batching) or per-batch (``level = "batch"``, mixes images and one-hot
    labels, optionally deferred to the training step). An augmenter keeps each numeric
    constructor argument as an attribute of the same name (``self.magnitude = magnitude``):
    progressive stages read the configured values from there and pass per-stage values back as
    constructor arguments.

    Register the class gin-configurable under its name, so its knobs bind from gin
    (``invert_colors.probability = 0.3``). Example::

        @gin.configurable("invert_colors")
        class InvertColors(effnet.data.Augmenter):
            level = "image"
            def __init__(self, probability=0.5):
                self.probability = probability
            def __call__(self, image, seed):
                flip = tf.random.stateless_uniform([], seed) < self.probability
                return tf.where(flip, 255 - image, image)

        @effnet.hookimpl
        def effnet_augmenters():
            return {"invert_colors": InvertColors}
    """


@hookspec
def effnet_stage_schedules():
    """Register progressive (stage-wise) training schedules.

    Return ``{name: factory}``. The engine calls ``factory(epochs=int, final=dict)`` where
    ``final`` holds the run's configured values (``image_size``, ``batch_size``, ``dropout``,
    ``drop_path``, ``randaugment.magnitude``, ``mixup.alpha``, ``cutmix.alpha`` ...) and expects
    a list of :class:`effnet.stages.Stage` covering ``[0, epochs)`` without gaps. The data
    pipeline is rebuilt at each stage boundary; the model and optimizer are kept.

    Example::

        @gin.configurable
        def two_halves(epochs, final, small_size=96):
            half = epochs // 2
            return [Stage(0, 0, half, {**final, "image_size": small_size}),
                    Stage(1, half, epochs, dict(final))]

        @effnet.hookimpl
        def effnet_stage_schedules():
            return {"two_halves": two_halves}
    """


@hookspec
def effnet_datasets():
    """Register dataset sources.

    Return ``{name: factory}``. The engine calls ``factory()`` (everything else comes from gin,
    for example ``tfrecord.data_dir``) and expects an :class:`effnet.data.DataSource` that
    lists its files per split and yields ``(encoded_image_bytes, label)`` records with labels
    in ``[0, num_classes)``.

    Example::

        @gin.configurable
        def my_folder(data_dir=gin.REQUIRED):
            return effnet.data.FolderSource(data_dir)

        @effnet.hookimpl
        def effnet_datasets():
            return {"my_folder": my_folder}
    """


@hookspec
def effnet_loggers():
    """Register metric sinks.

    Return ``{name: factory}``. The engine calls ``factory(model_dir=path_or_None)`` on the
    process that writes (rank 0 only) and expects an :class:`effnet.loggers.Logger`.

    Example::

        class PrintLogger(effnet.loggers.Logger):
            def log_metrics(self, step, metrics, kind="train"):
                print(kind, step, metrics)

        @effnet.hookimpl
        def effnet_loggers():
            return {"print": lambda model_dir=None: PrintLogger()}
    """


@hookspec
def effnet_backends():
    """Register distribution backends.

    Return ``{name: factory}``. The engine calls ``factory()`` once per process and expects an
    :class:`effnet.distribute.Backend` (rank, size, gradient reduction, variable broadcast,
    metric reduction, which process writes).

    Example::

        @effnet.hookimpl
        def effnet_backends():
            return {"single": effnet.distribute.SingleProcess}
    """


@hookspec
def effnet_callbacks():
    """Register loop callbacks (see :mod:`effnet.callbacks` for when each hook runs).

    Return ``{name: factory}``. The engine calls ``factory()`` for each name in
    ``train.callbacks`` (its knobs come from gin) on the writing process and expects an
    :class:`effnet.callbacks.Callback`: any of ``on_train_begin(run)``, ``on_stage_begin(run,
    stage)``, ``on_evaluation_end(run, epoch, metrics)``, ``on_checkpoint_saved(run, path, step)``,
    ``on_epoch_end(run, epoch, metrics)``, ``on_train_end(run, report)``. ``run.request_stop(reason)``
    ends the run cleanly at the next epoch end (a checkpoint, then report.json; every process
    stops at the same step; the same command resumes). A callback that raises ends the run with a
    one-line error naming it, after a checkpoint. Built-ins: ``early_stopping``, ``keep_best``.

    Example::

        @gin.configurable("stop_at_top1")
        class StopAtTop1(effnet.callbacks.Callback):
            def __init__(self, target=0.9):
                self.target = target
            def on_evaluation_end(self, run, epoch, metrics):
                if metrics.get("val_top1", 0.0) >= self.target:
                    run.request_stop(f"val_top1 reached {self.target}")

        @effnet.hookimpl
        def effnet_callbacks():
            return {"stop_at_top1": StopAtTop1}
    """


@hookspec
def effnet_gin_paths():
    """Add folders to the gin search path, so a plugin package can ship its own experiments.

    Return a list of directories. ``--gin NAME`` and ``include 'NAME.gin'`` look in them after
    the current directory and effnet's own ``gin/`` folder.

    Example::

        @effnet.hookimpl
        def effnet_gin_paths():
            return [str(importlib.resources.files("my_package") / "gin")]
    """

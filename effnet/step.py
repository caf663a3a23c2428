"""The training step: loss, gradients, accumulation, loss scaling, skipping, EMA, metrics.

Loss per replica and micro-batch::

    loss = sum(cross_entropy(labels, logits, label_smoothing)) / global_batch

``global_batch`` is the effective batch over all replicas and micro-batches, so summing gradients
over micro-batches (accumulation) and replicas gives exactly the gradient of one big batch:
N micro-batches make the same update as one batch N times larger.

The recipe's L2 term, ``weight_decay * sum(||w||^2 / 2 for decayed kernels)``, is not put in the
loss: its gradient, ``weight_decay * w``, is added to each decayed kernel's summed gradient once
per update, after the reduction over replicas and micro-batches and before the optimizer (so an
adaptive optimizer such as RMSprop sees it, as with the term in the loss). The update is the same;
what it saves is a square, a sum and their gradients per kernel in every micro-batch (4-5% of the
V2-S step; docs/performance.md). The reported loss never included it.

Everything that differs between one process and many goes through the backend
(:mod:`effnet.distribute`): the step runs per replica through ``backend.run``; each replica adds
its micro-batch gradients into its own accumulators; on the last micro-batch the gradients and the
count of non-finite losses are summed over all replicas **once** (``backend.all_reduce_sum``), so
every replica sees the same numbers and takes the same skip/apply decision; ``backend.update``
then runs the same branch (apply: optimizer, EMA, counters, ``global_step``; or skip) everywhere. The update
is applied on the N-th micro-batch (not after the first), the optimizer's step counter (which
drives the LR schedule) counts updates, and an update whose gradients or losses are not finite on
any replica is skipped everywhere and counted (with ``amp`` the loss scale is lowered as well).

Host reads are batched: :meth:`TrainStep.read_window` returns the metrics and the counters of a
logging window in one go, so the loop does not wait for the device every step.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from effnet import precision as precision_mod
from effnet import registry
from effnet.distribute import Backend, replica_state_variables
from effnet.errors import UserError
from effnet.metrics import topk_correct
from effnet.models import walk_layers

NO_DECAY_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


def decayed_variables(model, decay_bias: bool = False, decay_norm: bool = False) -> list:
    """Trainable variables that get weight decay: kernels of conv/dense layers by default.

    Excluded unless asked for: normalisation parameters (gamma/beta of BatchNorm and friends) and
    biases (1-D variables owned by other layers).
    """
    norm_ids = set()
    for layer in walk_layers(model):
        if isinstance(layer, NO_DECAY_LAYERS):
            norm_ids.update(id(v) for v in layer.trainable_weights)
    chosen = []
    for v in model.trainable_variables:
        if id(v) in norm_ids:
            if decay_norm:
                chosen.append(v)
        elif len(v.shape) <= 1:
            if decay_bias:
                chosen.append(v)
        else:
            chosen.append(v)
    return chosen


def make_optimizer(name: str, model, learning_rate, *, precision: str = "fp32", clip_norm: float | None = None,
                   decay_bias: bool = False, decay_norm: bool = False):
    """The registered optimizer ``name``, built for ``model``'s trainable variables.

    Weight decay of optimizers that decay themselves (AdamW, nvLAMB) touches the same variables as
    the loss's L2 term (:func:`decayed_variables`); ``clip_norm`` clips by global norm; ``amp``
    wraps it in Keras' dynamic loss scaling.
    """
    optimizer = registry.get("optimizer", name)(learning_rate=learning_rate)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise UserError(f"optimizer {name!r} returned {type(optimizer).__name__}, not a keras.optimizers.Optimizer")
    decayed = {id(v) for v in decayed_variables(model, decay_bias, decay_norm)}
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    if clip_norm:
        optimizer.global_clipnorm = float(clip_norm)
    if precision_mod.uses_loss_scaling(precision):
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def is_loss_scaled(optimizer) -> bool:
    return isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)


class TrainStep:
    """Builds the compiled ``accumulate`` and ``apply`` functions and owns the step's state.

    ``accumulate(batch)`` adds a micro-batch's gradients; ``apply(batch)`` adds the last one and
    updates the weights. With ``accumulation_steps == 1`` only ``apply`` is used. ``batch`` is what
    ``backend.distribute_dataset`` yields. Build the model, optimizer and EMA inside
    ``backend.scope()`` before constructing the step.
    """

    def __init__(self, model, optimizer, *, global_batch: int, backend: Backend | None = None,
                 label_smoothing: float = 0.0, weight_decay: float = 0.0, decay_vars=None,
                 accumulation_steps: int = 1, ema=None, mixer=None, jit_compile: bool = False,
                 global_step=None, class_weights=None):
        self.model = model
        self.optimizer = optimizer
        self.backend = backend or Backend()
        self.global_batch = int(global_batch)  # may change per stage: see configure()
        self.label_smoothing = float(label_smoothing)
        # one loss weight per class (train.class_weights), or None
        self.class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
        self.weight_decay = float(weight_decay)
        self.decay_vars = list(decay_vars if decay_vars is not None else decayed_variables(model))
        self.accumulation_steps = int(accumulation_steps)
        self.ema = ema
        self.mixer = mixer  # callable(batch) -> (images, labels) for deferred mixing, or None
        self.jit_compile = jit_compile
        self.trainable = list(model.trainable_variables)
        decayed = {id(v) for v in self.decay_vars}
        # positions in ``trainable`` of the variables whose gradient gets ``weight_decay * w``
        self._decay_index = [i for i, v in enumerate(self.trainable) if id(v) in decayed]
        self.replica_state = replica_state_variables(model)
        b = self.backend
        # per-replica sums since the last read: loss, top-1 hits, top-5 hits, examples
        self.metric_sums = b.variable(tf.zeros([4], tf.float64), name="metric_sums", kind="local")
        # non-finite micro-batch losses since the last update (a NaN loss can have finite, even zero,
        # gradients, e.g. through tf.where)
        self.nonfinite_losses = b.variable(tf.zeros([], tf.float32), name="nonfinite_losses", kind="local")
        self.accumulators = (
            [b.variable(tf.zeros(v.shape, tf.float32), name="accum", kind="local") for v in self.trainable]
            if self.accumulation_steps > 1 else []
        )
        self.updates_skipped = b.variable(tf.zeros([], tf.int64), name="updates_skipped")
        self.consecutive_nonfinite = b.variable(tf.zeros([], tf.int64), name="consecutive_nonfinite")
        # the longest run of consecutive non-finite updates since the last read_window()
        self.longest_nonfinite = b.variable(tf.zeros([], tf.int64), name="longest_nonfinite")
        self.global_step = global_step  # optional: a shared int64 variable counted here, once per update
        b.prepare_optimizer(optimizer)
        self.compile()

    # -- state that checkpoints must hold --------------------------------------------------------------
    def checkpoint_objects(self) -> dict:
        return {"updates_skipped": self.updates_skipped, "consecutive_nonfinite": self.consecutive_nonfinite,
                "metric_sums": self.metric_sums, "accumulators": self.accumulators}

    def configure(self, global_batch: int, mixer=None, accumulation_steps: int | None = None) -> None:
        """Set what a stage changes (effective global batch, deferred mixer, micro-batches per update) and recompile.

        ``accumulation_steps`` may not exceed the value the step was built with (which made the accumulators).
        """
        self.global_batch = int(global_batch)
        self.mixer = mixer
        if accumulation_steps is not None:
            if accumulation_steps > 1 and not self.accumulators:
                raise ValueError(f"accumulation_steps={accumulation_steps} needs a step built with accumulation")
            self.accumulation_steps = int(accumulation_steps)
        self.compile()

    def compile(self):
        """(Re)create the tf.functions, e.g. after a stage changed Python-side layer attributes."""
        def accumulate(batch):
            self.backend.run(self._accumulate, batch)

        def apply(batch):
            return self.backend.local_value(self.backend.run(self._apply, batch))

        self._accumulate_fn = tf.function(accumulate, jit_compile=self.jit_compile, reduce_retracing=True)
        self._apply_fn = tf.function(apply, jit_compile=self.jit_compile, reduce_retracing=True)

    def accumulate(self, batch) -> None:
        """Add one micro-batch's gradients (not the last of an update)."""
        with self.backend.guard():
            self._accumulate_fn(batch)

    def apply(self, batch):
        """Add the last micro-batch and update (or skip); returns whether the update was applied."""
        with self.backend.guard():
            return self._apply_fn(batch)

    # -- per replica ----------------------------------------------------------------------------------
    def _inputs(self, batch):
        if self.mixer is not None and "mix" in batch:
            return self.mixer(batch)
        return batch["image"], batch["label"]

    def _gradients(self, batch):
        """This replica's gradients of one micro-batch (not reduced); adds its metric sums."""
        images, labels = self._inputs(batch)
        labels = tf.cast(labels, tf.float32)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            per_example = keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=self.label_smoothing)
            data_loss = tf.reduce_sum(per_example)  # reported unweighted, comparable across runs
            if self.class_weights is not None:  # soft (mixed) labels mix their classes' weights
                loss = tf.reduce_sum(per_example * tf.linalg.matvec(labels, self.class_weights)) / self.global_batch
            else:
                loss = data_loss / self.global_batch
            if is_loss_scaled(self.optimizer):
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self.trainable)
        grads = [tf.zeros_like(v) if g is None else tf.cast(g, tf.float32) for g, v in zip(grads, self.trainable)]
        self.nonfinite_losses.assign_add(tf.cast(tf.logical_not(tf.math.is_finite(data_loss)), tf.float32))
        target = tf.argmax(labels, axis=-1)
        self.metric_sums.assign_add(tf.cast(tf.stack([
            data_loss,
            topk_correct(logits, target, 1),
            topk_correct(logits, target, 5),
            tf.cast(tf.shape(logits)[0], tf.float32),
        ]), tf.float64))
        return grads

    def _accumulate(self, batch):
        grads = self._gradients(batch)
        for acc, g in zip(self.accumulators, grads):
            acc.assign_add(g)

    def _apply(self, batch):
        grads = self._gradients(batch)
        if self.accumulators and self.accumulation_steps > 1:
            grads = [acc + g for acc, g in zip(self.accumulators, grads)]
            for acc in self.accumulators:
                acc.assign(tf.zeros_like(acc))
        bad_losses = tf.identity(self.nonfinite_losses)
        self.nonfinite_losses.assign(0.0)
        # Gradients are summed over replicas once per update (after accumulation), the non-finite count
        # with them, so every replica decides skip/apply from the same numbers.
        grads = self._add_weight_decay(self.backend.all_reduce_sum(grads, gradients=True))
        # Per-replica statistics (BatchNorm moving averages, updated from each replica's own data) are
        # averaged in the same round, so every replica holds the same model after the update.
        state = [tf.identity(tf.cast(v.value, tf.float32)) for v in self.replica_state] if self.backend.num_replicas > 1 else []
        reduced = self.backend.all_reduce_sum([bad_losses, *state])
        bad_losses, state = reduced[0], [s / self.backend.num_replicas for s in reduced[1:]]
        finite = tf.logical_and(tf.equal(bad_losses, 0.0),
                                tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
        self.backend.update(finite, self._update, self._skip, grads, state)
        return finite

    def _add_weight_decay(self, grads):
        """The L2 term's gradient, ``weight_decay * w``, added to each decayed kernel's summed gradient.

        With loss scaling the gradients are still scaled here (the optimizer unscales them), so the
        decay is scaled with them.
        """
        if not (self.weight_decay and self._decay_index):
            return grads
        coef = tf.constant(self.weight_decay, tf.float32)
        if is_loss_scaled(self.optimizer):
            coef = self.optimizer.scale_loss(coef)
        grads = list(grads)
        for i in self._decay_index:
            grads[i] = grads[i] + coef * tf.cast(self.trainable[i], tf.float32)
        return grads

    # -- the update: every replica runs the same branch with the same values --------------------------
    def _update(self, grads, state):
        self._assign_state(state)
        updates_before = tf.identity(self.optimizer.iterations)
        self.optimizer.apply(grads, self.trainable)
        if self.ema is not None:
            self.ema.update(updates_before)
        self._count(finite=True)

    def _skip(self, grads, state):
        self._assign_state(state)
        if is_loss_scaled(self.optimizer):
            # Let the loss-scale optimizer see a non-finite update (a NaN loss can come with finite
            # gradients): it skips the step and lowers the scale.
            self.optimizer.apply([g + float("nan") for g in grads], self.trainable)
        self._count(finite=False)

    def _assign_state(self, state):
        for var, value in zip(self.replica_state, state):
            var.assign(tf.cast(value, var.dtype))

    def _count(self, finite: bool):
        if finite:
            self.consecutive_nonfinite.assign(tf.constant(0, tf.int64))
        else:
            self.updates_skipped.assign_add(tf.constant(1, tf.int64))
            self.consecutive_nonfinite.assign_add(tf.constant(1, tf.int64))
            self.longest_nonfinite.assign(tf.maximum(self.longest_nonfinite, self.consecutive_nonfinite))
        if self.global_step is not None:
            self.global_step.assign_add(tf.constant(1, tf.int64))

    # -- host side ------------------------------------------------------------------------------------
    def read_metrics(self, reset: bool = True) -> dict[str, float]:
        """Loss / top-1 / top-5 averaged over the examples since the last read, across replicas."""
        sums = [float(x) for x in self.backend.read_sum(self.metric_sums)]
        if reset:
            self.metric_sums.assign(tf.zeros([4], tf.float64))
        n = max(sums[3], 1.0)
        return {"loss": sums[0] / n, "top1": sums[1] / n, "top5": sums[2] / n, "examples": sums[3]}

    def read_window(self) -> dict:
        """Everything the loop needs at the end of a logging window, in one host sync.

        Metrics since the last read (summed over replicas), ``updates_skipped``,
        ``consecutive_nonfinite`` now, and ``longest_nonfinite``: the longest streak of skipped
        updates inside the window (so a streak that ended between two reads is still seen).
        """
        with self.backend.guard():
            out = self.read_metrics()
        counters = tf.stack([self.updates_skipped, self.consecutive_nonfinite, self.longest_nonfinite]).numpy()
        out.update(zip(("updates_skipped", "consecutive_nonfinite", "longest_nonfinite"), (int(c) for c in counters)))
        self.longest_nonfinite.assign(self.consecutive_nonfinite)
        return out


__all__ = ["TrainStep", "decayed_variables", "is_loss_scaled", "make_optimizer"]

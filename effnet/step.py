"""The training step: loss, gradients, accumulation, loss scaling, skipping, EMA, metrics.

Loss per replica and micro-batch::

    loss = sum(cross_entropy(labels, logits, label_smoothing)) / global_batch
         + weight_decay * sum(||w||^2 / 2 for decayed kernels) / (replicas * accumulation_steps)

``global_batch`` is the effective batch over all replicas and micro-batches, so summing gradients
over micro-batches (accumulation) and replicas (``backend.reduce_gradients``) gives exactly the
gradient of one big batch: N micro-batches make the same update as one batch N times larger.
The update is applied on the N-th micro-batch (not after the first), the optimizer's step counter
(which drives the LR schedule) counts updates, and an update whose gradients are not finite is
skipped and counted (with ``amp`` the loss scale is lowered as well).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from effnet import precision as precision_mod
from effnet import registry
from effnet.distribute import Backend
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
    updates the weights. With ``accumulation_steps == 1`` only ``apply`` is used.
    """

    def __init__(self, model, optimizer, *, global_batch: int, backend: Backend | None = None,
                 label_smoothing: float = 0.0, weight_decay: float = 0.0, decay_vars=None,
                 accumulation_steps: int = 1, ema=None, mixer=None, jit_compile: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.backend = backend or Backend()
        self.global_batch = int(global_batch)  # may change per stage: see configure()
        self.label_smoothing = float(label_smoothing)
        self.weight_decay = float(weight_decay)
        self.decay_vars = list(decay_vars if decay_vars is not None else decayed_variables(model))
        self.accumulation_steps = int(accumulation_steps)
        self.ema = ema
        self.mixer = mixer  # callable(batch) -> (images, labels) for deferred mixing, or None
        self.jit_compile = jit_compile
        self.trainable = list(model.trainable_variables)
        with self.backend.scope():
            zeros = lambda name, dtype=tf.float64: tf.Variable(tf.zeros([], dtype), trainable=False, name=name)  # noqa: E731
            # metric sums since the last read: loss, top-1 hits, top-5 hits, examples
            self.metric_sums = tf.Variable(tf.zeros([4], tf.float64), trainable=False, name="metric_sums")
            self.updates_skipped = zeros("updates_skipped", tf.int64)
            self.consecutive_nonfinite = zeros("consecutive_nonfinite", tf.int64)
            # whether every micro-batch loss since the last update was finite (a NaN loss can have finite,
            # even zero, gradients, e.g. through tf.where)
            self.losses_finite = tf.Variable(True, trainable=False, name="losses_finite")
            self.accumulators = (
                [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name="accum") for v in self.trainable]
                if self.accumulation_steps > 1 else []
            )
        self.compile()

    # -- state that checkpoints must hold --------------------------------------------------------------
    def checkpoint_objects(self) -> dict:
        return {"updates_skipped": self.updates_skipped, "consecutive_nonfinite": self.consecutive_nonfinite,
                "metric_sums": self.metric_sums, "accumulators": self.accumulators}

    def configure(self, global_batch: int, mixer=None) -> None:
        """Set what a stage changes (effective global batch, deferred mixer) and recompile."""
        self.global_batch = int(global_batch)
        self.mixer = mixer
        self.compile()

    def compile(self):
        """(Re)create the tf.functions, e.g. after a stage changed Python-side layer attributes."""
        self.accumulate = tf.function(self._accumulate, jit_compile=self.jit_compile, reduce_retracing=True)
        self.apply = tf.function(self._apply, jit_compile=self.jit_compile, reduce_retracing=True)

    # -- pieces ---------------------------------------------------------------------------------------
    def _inputs(self, batch):
        if self.mixer is not None and "mix" in batch:
            return self.mixer(batch)
        return batch["image"], batch["label"]

    def _gradients(self, batch):
        images, labels = self._inputs(batch)
        labels = tf.cast(labels, tf.float32)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            per_example = keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=self.label_smoothing)
            data_loss = tf.reduce_sum(per_example)
            loss = data_loss / self.global_batch
            if self.weight_decay and self.decay_vars:
                l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.decay_vars])
                loss += self.weight_decay * l2 / (self.backend.num_replicas * self.accumulation_steps)
            if is_loss_scaled(self.optimizer):
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self.trainable)
        grads = [tf.zeros_like(v) if g is None else tf.cast(g, tf.float32) for g, v in zip(grads, self.trainable)]
        grads = self.backend.reduce_gradients(grads)
        self.losses_finite.assign(tf.logical_and(self.losses_finite, tf.math.is_finite(data_loss)))
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
        return tf.constant(True)

    def _apply(self, batch):
        grads = self._gradients(batch)
        if self.accumulators:
            grads = [acc + g for acc, g in zip(self.accumulators, grads)]
            for acc in self.accumulators:
                acc.assign(tf.zeros_like(acc))
        finite = tf.logical_and(self.losses_finite, tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
        self.losses_finite.assign(True)
        updates_before = tf.identity(self.optimizer.iterations)
        if is_loss_scaled(self.optimizer):
            # The optimizer unscales, and skips and lowers the scale when the gradients are not finite;
            # a non-finite loss with finite gradients is made to look the same to it.
            poison = tf.where(finite, 0.0, float("nan"))
            self.optimizer.apply([g + poison for g in grads], self.trainable)
        else:
            def do_apply():
                self.optimizer.apply(grads, self.trainable)
                return tf.constant(True)

            tf.cond(finite, do_apply, lambda: tf.constant(False))
        if self.ema is not None:
            tf.cond(finite, lambda: self._ema_update(updates_before), lambda: tf.constant(False))
        self.updates_skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        self.consecutive_nonfinite.assign(tf.where(finite, tf.constant(0, tf.int64), self.consecutive_nonfinite + 1))
        return finite

    def _ema_update(self, t):
        self.ema.update(t)
        return tf.constant(True)

    # -- host side ------------------------------------------------------------------------------------
    def read_metrics(self, reset: bool = True) -> dict[str, float]:
        """Loss / top-1 / top-5 averaged over the examples since the last read, across replicas."""
        sums = self.backend.reduce_sum(tf.convert_to_tensor(self.metric_sums))
        sums = [float(x) for x in sums.numpy()]
        if reset:
            self.metric_sums.assign(tf.zeros([4], tf.float64))
        n = max(sums[3], 1.0)
        return {"loss": sums[0] / n, "top1": sums[1] / n, "top5": sums[2] / n, "examples": sums[3]}


__all__ = ["TrainStep", "decayed_variables", "is_loss_scaled", "make_optimizer"]

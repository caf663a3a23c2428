"""Exponential moving average of every model weight, BatchNorm statistics included.

Hand-written rather than Keras's optimizer-level ``use_ema`` because the recipe averages the
non-trainable BatchNorm statistics too and uses the warm-up form of the decay::

    decay_t = min(decay, (1 + t) / (10 + t))      t = optimizer updates applied so far
    average <- decay_t * average + (1 - decay_t) * weight
            =  average - (1 - decay_t) * (average - weight)

The second form is how it is computed: one subtraction and TensorFlow's in-place
``ResourceApplyGradientDescent`` per variable instead of two multiplies, an add and an assign
(under a ``tf.distribute`` strategy, whose variables are not plain resources, the same form
through ``assign_sub``).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


def averaged_variables(model) -> list:
    """The variables an EMA tracks: every floating-point weight (not RNG states or counters)."""
    return [v for v in model.weights if "float" in str(v.dtype)]


class ExponentialMovingAverage(tf.Module):
    def __init__(self, model, decay: float = 0.9999, warmup: bool = True):
        super().__init__(name="ema")
        self.decay = float(decay)
        self.warmup = warmup
        self._model_vars = averaged_variables(model)
        self.averages = [
            tf.Variable(tf.identity(v.value), trainable=False, name=v.path.replace("/", "_") + "_ema")
            for v in self._model_vars
        ]

    def decay_at(self, step):
        """The decay used for the update after ``step`` optimizer updates (a float32 tensor)."""
        decay = tf.constant(self.decay, tf.float32)
        if not self.warmup:
            return decay
        t = tf.cast(step, tf.float32)
        return tf.minimum(decay, (1.0 + t) / (10.0 + t))

    def update(self, step):
        rate = 1.0 - self.decay_at(step)
        fused = not tf.distribute.has_strategy()
        for avg, var in zip(self.averages, self._model_vars):
            delta = avg - tf.cast(var.value, avg.dtype)
            if fused:
                tf.raw_ops.ResourceApplyGradientDescent(var=avg.handle, alpha=tf.cast(rate, avg.dtype), delta=delta)
            else:
                avg.assign_sub(tf.cast(rate, avg.dtype) * delta)

    def reset(self):
        """Start the averages from the current weights (after loading weights for a new run)."""
        for avg, var in zip(self.averages, self._model_vars):
            avg.assign(tf.cast(var.value, avg.dtype))

    def copy_to(self, model_vars=None):
        for avg, var in zip(self.averages, model_vars or self._model_vars):
            var.assign(tf.cast(avg, var.dtype))

    @contextlib.contextmanager
    def swapped(self):
        """Run the block with the model holding the averaged weights; restore the raw ones after."""
        saved = [tf.identity(v.value) for v in self._model_vars]
        self.copy_to()
        try:
            yield
        finally:
            for var, value in zip(self._model_vars, saved):
                var.assign(value)

"""The Keras side of :mod:`effnet.plugins.schedules` (imported lazily: it needs TensorFlow)."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0, then one of: cosine, exponential, step, constant."""

    def __init__(self, kind, base_lr, warmup_steps, total_steps, steps_per_epoch, alpha=0.0, rate=0.97,
                 every_epochs=2.4, milestones=(), gamma=0.1):
        if kind not in ("cosine", "exponential", "step", "constant"):
            raise ValueError(f"unknown schedule kind {kind!r}")
        self.kind = kind
        self.base_lr = base_lr
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.alpha = alpha
        self.rate = rate
        self.every_epochs = every_epochs
        self.milestones = tuple(milestones)
        self.gamma = gamma

    def _after_warmup(self, t):
        base = self.base_lr
        since = t - self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip(since / span, 0.0, 1.0)
            return base * (self.alpha + (1 - self.alpha) * 0.5 * (1 + ops.cos(math.pi * progress)))
        if self.kind == "exponential":
            period = self.every_epochs * self.steps_per_epoch
            return base * ops.power(self.rate, ops.floor(since / period))
        if self.kind == "step":
            epoch = t / self.steps_per_epoch
            passed = sum(ops.cast(epoch >= m, "float32") for m in self.milestones) if self.milestones else 0.0
            return base * ops.power(self.gamma, passed)
        return base * ops.ones_like(t)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        lr = self._after_warmup(t)
        if self.warmup_steps > 0:
            lr = ops.where(t < self.warmup_steps, self.base_lr * t / self.warmup_steps, lr)
        return lr

    def get_config(self):
        return {"kind": self.kind, "base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch, "alpha": self.alpha,
                "rate": self.rate, "every_epochs": self.every_epochs, "milestones": list(self.milestones),
                "gamma": self.gamma}

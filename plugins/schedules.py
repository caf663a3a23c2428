"""Built-in learning-rate schedules: ``cosine``, ``exponential``, ``step``, ``constant``.

The engine calls ``factory(base_lr, steps_per_epoch, total_steps)`` with the batch-scaled peak
rate (``lr_init * global_batch / reference_batch``); steps count optimizer updates. Every schedule
warms up linearly from 0 over ``warmup_epochs``: ``lr(t) = base_lr * t / warmup_steps``. After that:

- cosine:      ``base_lr * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * p)))`` with ``p`` the
  fraction of post-warm-up steps done (``alpha`` the final fraction, 0 by default);
- exponential: ``base_lr * rate ** floor((t - warmup) / (every_epochs * steps_per_epoch))``
  (0.97 every 2.4 epochs, as in the EfficientNet V1 recipe);
- step:        ``base_lr * gamma ** (number of milestones passed)``, milestones in epochs;
- constant:    ``base_lr``.
"""

from __future__ import annotations

import gin

import effnet
from effnet.validate import check_number


def _build(kind, base_lr, steps_per_epoch, total_steps, warmup_epochs, **params):
    check_number(f"{kind}.warmup_epochs", warmup_epochs, 0, 100_000)
    from effnet.plugins.schedules_impl import WarmupSchedule

    return WarmupSchedule(kind=kind, base_lr=float(base_lr), warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
                          total_steps=int(total_steps), steps_per_epoch=int(steps_per_epoch), **params)


@gin.configurable
def cosine(base_lr, steps_per_epoch, total_steps, warmup_epochs: float = 5.0, alpha: float = 0.0):
    check_number("cosine.alpha", alpha, 0, 1)
    return _build("cosine", base_lr, steps_per_epoch, total_steps, warmup_epochs, alpha=alpha)


@gin.configurable
def exponential(base_lr, steps_per_epoch, total_steps, warmup_epochs: float = 5.0, rate: float = 0.97,
                every_epochs: float = 2.4):
    check_number("exponential.rate", rate, 0, 1, low_open=True)
    check_number("exponential.every_epochs", every_epochs, 0, 100_000, low_open=True)
    return _build("exponential", base_lr, steps_per_epoch, total_steps, warmup_epochs, rate=rate, every_epochs=every_epochs)


@gin.configurable
def step(base_lr, steps_per_epoch, total_steps, warmup_epochs: float = 0.0, milestones=(30, 60, 80), gamma: float = 0.1):
    check_number("step.gamma", gamma, 0, 1, low_open=True)
    for m in milestones:
        check_number("step.milestones", m, 0, 100_000, low_open=True)
    return _build("step", base_lr, steps_per_epoch, total_steps, warmup_epochs, milestones=tuple(milestones), gamma=gamma)


@gin.configurable
def constant(base_lr, steps_per_epoch, total_steps, warmup_epochs: float = 0.0):
    return _build("constant", base_lr, steps_per_epoch, total_steps, warmup_epochs)


@effnet.hookimpl
def effnet_lr_schedules():
    return {"cosine": cosine, "exponential": exponential, "step": step, "constant": constant}

"""Built-in stage schedules: ``progressive`` (EfficientNetV2's progressive learning) and ``single``.

``progressive`` splits the epochs into ``n_stages`` nearly equal stages (stage ``i`` starts at
epoch ``floor(i * epochs / n_stages)``) and sets every scheduled value by one rule::

    value_i = base + (final - base) * i / (n_stages - 1)

so stage 1 trains at the base values and the last stage at the run's configured values (the seed
implementation used ``(i + 1) / n`` for the image size but a linspace for regularisation, so its
base image size was never used; here both follow the rule above). Image sizes are rounded to a
multiple of ``size_multiple``. ``batch_sizes`` optionally overrides the per-process batch per stage
(for example a smaller last stage, to avoid running out of memory at the largest images), or is
``'auto'``: every stage keeps the run's batch per optimizer update and the trainer picks the largest
micro-batch that fits ``train.memory_budget_gb`` at the stage's image size, accumulating gradients
over the rest (:mod:`effnet.memory`; the global batch and learning rate stay the recipe's).
"""

from __future__ import annotations

import gin

import effnet
from effnet.errors import UserError, did_you_mean
from effnet.stages import Stage
from effnet.validate import check_number


@gin.configurable
def progressive(epochs, final, n_stages: int = 4, base=None, batch_sizes=None, size_multiple: int = 1):
    base = dict(base or {})
    for key in base:
        if key not in final:
            raise UserError(
                f"progressive.base has key {key!r}, which this run does not configure{did_you_mean(key, final)}; "
                f"known keys: {', '.join(sorted(final))}"
            )
    if not 1 <= n_stages <= epochs:
        raise UserError(f"progressive.n_stages={n_stages} must be between 1 and the number of epochs ({epochs})")
    auto = isinstance(batch_sizes, str)
    if auto and batch_sizes != "auto":
        raise UserError(f"progressive.batch_sizes={batch_sizes!r} is neither 'auto' nor a list with one batch per stage")
    if batch_sizes is not None and not auto:
        if len(batch_sizes) != n_stages:
            raise UserError(f"progressive.batch_sizes has {len(batch_sizes)} entries; it needs one per stage ({n_stages})")
        for b in batch_sizes:
            check_number("progressive.batch_sizes entry", b, 1, 65_536, integer=True,
                         hint="use positive whole batches, one per stage, or 'auto'")
    stages = []
    for i in range(n_stages):
        frac = i / (n_stages - 1) if n_stages > 1 else 1.0
        params = {}
        for key, end in final.items():
            start = base.get(key, end)
            value = start + (end - start) * frac
            if key == "image_size":
                value = int(round(value / size_multiple) * size_multiple)
            elif isinstance(end, int) and isinstance(start, int) and key != "batch_size":
                value = int(round(value))
            params[key] = value
        if batch_sizes is not None and not auto:
            params["batch_size"] = int(batch_sizes[i])
        stages.append(Stage(i, (i * epochs) // n_stages, ((i + 1) * epochs) // n_stages, params, auto_batch=auto))
    return stages


@gin.configurable
def single(epochs, final):
    """One stage with the configured values (what runs without a stage schedule)."""
    return [Stage(0, 0, epochs, dict(final))]


@effnet.hookimpl
def effnet_stage_schedules():
    return {"progressive": progressive, "single": single}

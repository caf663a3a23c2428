"""Progressive (stage-wise) training: what a stage is, and how the engine applies one.

A stage covers epochs ``[start_epoch, end_epoch)`` and carries the values that change between
stages: ``image_size``, ``batch_size``, ``dropout``, ``drop_path`` and augmenter parameters named
``<augmenter>.<parameter>`` (``randaugment.magnitude``, ``mixup.alpha`` ...), and optionally
``grad_accum_steps`` (micro-batches per update in that stage; default ``train.grad_accum_steps``).
Stage schedules are plugins (``effnet_stage_schedules``); the built-in ``progressive`` interpolates
linearly with stage 1 at the base values and the last stage at the run's configured (final) values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from effnet.errors import UserError


@dataclass(frozen=True)
class Stage:
    index: int
    start_epoch: int
    end_epoch: int
    params: Mapping[str, float] = field(default_factory=dict)
    # True: the engine picks this stage's micro-batch (and so its gradient accumulation) from the
    # memory budget (effnet.memory); ``params['batch_size']`` stays the batch per optimizer update.
    auto_batch: bool = False

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch

    def augmenter_params(self, name: str) -> dict[str, float]:
        """``{'magnitude': 5}`` for ``name='randaugment'`` from ``{'randaugment.magnitude': 5}``."""
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}


def validate(stages: Sequence[Stage], epochs: int, source: str) -> list[Stage]:
    """Check a schedule covers ``[0, epochs)`` in order without gaps."""
    stages = list(stages)
    if not stages:
        raise UserError(f"stage schedule {source!r} returned no stages for {epochs} epochs")
    expected = 0
    for i, stage in enumerate(stages):
        if stage.index != i or stage.start_epoch != expected or stage.end_epoch <= stage.start_epoch:
            raise UserError(
                f"stage schedule {source!r} returned stage {i} covering epochs "
                f"[{stage.start_epoch}, {stage.end_epoch}); stages must be consecutive, non-empty and start at {expected}"
            )
        expected = stage.end_epoch
    if expected != epochs:
        raise UserError(f"stage schedule {source!r} covers {expected} epochs, the run has {epochs}")
    return stages


def stage_layers(model):
    """Every layer of ``model`` that reacts to stage changes (has ``apply_stage``)."""
    from effnet.models import walk_layers

    return [layer for layer in walk_layers(model) if hasattr(layer, "apply_stage")]


def model_stage_values(model) -> dict[str, float]:
    """The regularisation values the model was built with (``dropout``, ``drop_path``)."""
    values: dict[str, float] = {}
    for layer in stage_layers(model):
        if hasattr(layer, "stage_values"):
            for key, value in layer.stage_values().items():
                values.setdefault(key, value)
    return values


def apply_to_model(model, params: Mapping[str, float]) -> int:
    """Push a stage's values into the model's stage-aware layers; returns how many layers took them."""
    layers = stage_layers(model)
    for layer in layers:
        layer.apply_stage(params)
    return len(layers)


__all__ = ["Stage", "apply_to_model", "model_stage_values", "stage_layers", "validate"]

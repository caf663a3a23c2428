"""Input-pipeline settings: the gin configurable ``input_pipeline`` (no TensorFlow import here,
so gin knows the configurable as soon as the built-in plugins load)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gin

from effnet.errors import UserError, did_you_mean

ON_ERROR = ("fail", "skip")


@gin.configurable("input_pipeline", module="effnet.data")
@dataclass(frozen=True)
class PipelineOptions:
    """Input-pipeline settings (gin: ``input_pipeline.NAME = value``).

    shuffle_buffer: records in the training shuffle buffer (per process); 0 or 1 turns it off.
    min_object_covered, aspect_ratio_range, area_range, max_attempts: the random training crop.
    random_flip: horizontal flips in training. resize_method: ``tf.image.resize`` method.
    eval_crop_fraction: centre crop of the short side in evaluation; None = size/(size+32).
    num_parallel_calls, prefetch: -1 = AUTOTUNE.
    cache: keep this process's encoded records in memory after the first pass (small datasets;
        the file order then stays fixed and only the shuffle buffer mixes).
    min_files_per_shard: shard by file when every process gets at least this many files,
        else by element (every process reads everything and keeps its share).
    on_error: 'fail' stops at the first unreadable image or truncated file with its name;
        'skip' reports each one on stderr (with a running count) and goes on.
    deterministic: keep element order fixed in parallel stages (same seed -> same batches).
    """

    shuffle_buffer: int = 10000
    min_object_covered: float = 0.1
    aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3)
    area_range: Sequence[float] = (0.05, 1.0)
    max_attempts: int = 100
    random_flip: bool = True
    resize_method: str = "bilinear"
    eval_crop_fraction: float | None = None
    num_parallel_calls: int = -1
    prefetch: int = -1
    cache: bool = False
    min_files_per_shard: int = 4
    on_error: str = "fail"
    deterministic: bool = True

    def __post_init__(self):
        for name in ("random_flip", "cache", "deterministic"):
            value = getattr(self, name)
            if not isinstance(value, bool):  # a string "0" would otherwise count as true
                raise UserError(f"input_pipeline.{name}={value!r} must be True or False (gin booleans are written without quotes)")
        if self.on_error not in ON_ERROR:
            raise UserError(f"input_pipeline.on_error={self.on_error!r} is not one of {', '.join(ON_ERROR)}"
                            f"{did_you_mean(self.on_error, ON_ERROR)}")
        if len(tuple(self.aspect_ratio_range)) != 2 or len(tuple(self.area_range)) != 2:
            raise UserError("input_pipeline.aspect_ratio_range and area_range must be pairs (low, high)")
        if not 0 < self.area_range[0] <= self.area_range[1] <= 1:
            raise UserError(f"input_pipeline.area_range={tuple(self.area_range)} must satisfy 0 < low <= high <= 1")
        if self.eval_crop_fraction is not None and not 0 < self.eval_crop_fraction <= 1:
            raise UserError(f"input_pipeline.eval_crop_fraction={self.eval_crop_fraction} must be in (0, 1] or None")
        for name, kind in self.__annotations__.items():
            value = getattr(self, name)
            if kind == "int":
                value = int(value)
            elif kind == "float":
                value = float(value)
            elif kind == "bool":
                value = bool(value)
            elif kind == "str":
                value = str(value)
            elif kind.startswith("Sequence"):
                value = tuple(value)
            object.__setattr__(self, name, value)


def pipeline_options(**overrides) -> PipelineOptions:
    """The input-pipeline settings gin holds now, with ``overrides`` for this call."""
    return PipelineOptions(**overrides)


__all__ = ["ON_ERROR", "PipelineOptions", "pipeline_options"]

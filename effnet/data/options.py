"""Input-pipeline settings: the gin configurable ``input_pipeline`` (no TensorFlow import here,
so gin knows the configurable as soon as the built-in plugins load)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gin

from effnet.errors import UserError, did_you_mean
from effnet.validate import check_number, check_pair

ON_ERROR = ("fail", "skip")


@gin.configurable("input_pipeline", module="effnet.data")
@dataclass(frozen=True)
class PipelineOptions:
    """Input-pipeline settings (gin: ``input_pipeline.NAME = value``).

    shuffle_buffer: records in the training shuffle buffer (per process); 0 or 1 turns it off.
    min_object_covered, aspect_ratio_range, area_range, max_attempts: the random training crop.
    random_flip: horizontal flips in training. resize_method: ``tf.image.resize`` method.
    eval_crop_fraction: centre crop of the short side in evaluation; None = size/(size+32).
    eval_whole_frame: evaluate (and predict, and serve) the whole image, resized to a square, instead
        of a centre crop (objects near the edges, non-square photos; the crop fraction is then unused).
    num_parallel_calls, prefetch: -1 = AUTOTUNE.
    cache: keep this process's encoded records in memory after the first pass (small datasets;
        the file order then stays fixed and only the shuffle buffer mixes).
    min_files_per_shard: shard by file when every process gets at least this many files,
        else by element (every process reads everything and keeps its share).
    on_error: 'fail' stops at the first unreadable image or truncated file with its name;
        'skip' reports each one on stderr (with a running count) and goes on.
    deterministic: keep element order fixed in parallel stages (same seed -> same batches).
    max_image_pixels: an image whose header claims more pixels (height x width) is refused before
        it is decoded (default 8192 x 8192, 192 MiB as RGB); predict, eval and training alike.
    balance: sample the training classes evenly: each record of a class enters the stream about
        ``largest class count / class count`` times (a stateless draw keyed by seed, epoch, shard
        and position: reproducible and resumable); an epoch keeps its number of steps.
    """

    shuffle_buffer: int = 10000
    min_object_covered: float = 0.1
    aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3)
    area_range: Sequence[float] = (0.05, 1.0)
    max_attempts: int = 100
    random_flip: bool = True
    resize_method: str = "bilinear"
    eval_crop_fraction: float | None = None
    eval_whole_frame: bool = False
    num_parallel_calls: int = -1
    prefetch: int = -1
    cache: bool = False
    min_files_per_shard: int = 4
    on_error: str = "fail"
    deterministic: bool = True
    max_image_pixels: int = 8192 * 8192
    balance: bool = False

    def __post_init__(self):
        for name in ("random_flip", "cache", "deterministic", "eval_whole_frame", "balance"):
            value = getattr(self, name)
            if not isinstance(value, bool):  # a string "0" would otherwise count as true
                raise UserError(f"input_pipeline.{name}={value!r} must be True or False (gin booleans are written without quotes)")
        if self.on_error not in ON_ERROR:
            raise UserError(f"input_pipeline.on_error={self.on_error!r} is not one of {', '.join(ON_ERROR)}"
                            f"{did_you_mean(self.on_error, ON_ERROR)}")
        k = "input_pipeline."
        check_number(k + "shuffle_buffer", self.shuffle_buffer, 0, 10**8, integer=True)
        check_number(k + "min_object_covered", self.min_object_covered, 0, 1)
        check_pair(k + "aspect_ratio_range", self.aspect_ratio_range, 0, 100, low_open=True)
        check_pair(k + "area_range", self.area_range, 0, 1, low_open=True)
        check_number(k + "max_attempts", self.max_attempts, 1, 10_000, integer=True)
        check_number(k + "eval_crop_fraction", self.eval_crop_fraction, 0, 1, low_open=True, optional=True)
        for name, low in (("num_parallel_calls", 1), ("prefetch", 0)):
            if getattr(self, name) != -1:
                check_number(k + name, getattr(self, name), low, 1024, integer=True, hint="-1 means AUTOTUNE")
        check_number(k + "min_files_per_shard", self.min_files_per_shard, 1, 10**6, integer=True)
        check_number(k + "max_image_pixels", self.max_image_pixels, 1, 2**40, integer=True)
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

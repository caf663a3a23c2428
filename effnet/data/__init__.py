"""effnet's input pipelines: dataset sources, decoding, augmenter interface, train/eval datasets.

Image convention: RGB, NHWC, values in [0, 255] (uint8, float32 after mixing); models normalise
inside (see :data:`MEAN_RGB`, :data:`STDDEV_RGB`).

Public API::

    DatasetInfo, DataSource, TFRecordSource, FolderSource, TFDSSource, find_source
    Augmenter, BatchAugmenter, apply_deferred_mixing
    train_dataset, eval_dataset, decode_for_eval, decode_for_train
    pipeline_options / PipelineOptions (gin: input_pipeline.*)
    translate_error, write_shards, make_example, write_metadata, count_records, cache_root

Names load on first use, so ``import effnet.data`` (and the gin configurable
``input_pipeline`` in :mod:`effnet.data.options`) does not import TensorFlow by itself; using
any pipeline name does.
"""

from __future__ import annotations

import importlib

from effnet.data.options import PipelineOptions, pipeline_options

_LAZY = {
    "Augmenter": "augment", "BatchAugmenter": "augment", "apply_deferred_mixing": "augment",
    "translate_error": "errors", "translated": "errors",
    "eval_dataset": "pipeline", "train_dataset": "pipeline",
    "CROP_PADDING": "preprocess", "MEAN_RGB": "preprocess", "STDDEV_RGB": "preprocess",
    "decode_for_eval": "preprocess", "decode_for_train": "preprocess",
    "cache_root": "records", "count_records": "records", "make_example": "records", "shard_name": "records",
    "write_metadata": "records", "write_shards": "records",
    "DatasetInfo": "source", "DataSource": "source", "FolderSource": "source", "TFDSSource": "source",
    "TFRecordSource": "source", "find_source": "source",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'effnet.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"effnet.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = sorted(["PipelineOptions", "pipeline_options", *_LAZY])

"""effnet's input pipelines: dataset sources, decoding, augmenter interface, train/eval datasets.

Image convention: RGB, NHWC, values in [0, 255] (uint8, float32 after mixing); models normalise
inside (see :data:`MEAN_RGB`, :data:`STDDEV_RGB`). Importing this package imports TensorFlow.

Public API::

    DatasetInfo, DataSource, TFRecordSource, FolderSource, TFDSSource
    Augmenter, BatchAugmenter, apply_deferred_mixing
    train_dataset, eval_dataset, decode_for_eval, pipeline_options (gin: input_pipeline)
    translate_error, write_shards, make_example, write_metadata, count_records
"""

from effnet.data.augment import Augmenter, BatchAugmenter, apply_deferred_mixing
from effnet.data.errors import translate_error
from effnet.data.pipeline import PipelineOptions, eval_dataset, pipeline_options, train_dataset
from effnet.data.preprocess import CROP_PADDING, MEAN_RGB, STDDEV_RGB, decode_for_eval, decode_for_train
from effnet.data.records import cache_root, count_records, make_example, shard_name, write_metadata, write_shards
from effnet.data.source import DatasetInfo, DataSource, FolderSource, TFDSSource, TFRecordSource, find_source

__all__ = [
    "CROP_PADDING",
    "MEAN_RGB",
    "STDDEV_RGB",
    "Augmenter",
    "BatchAugmenter",
    "DataSource",
    "DatasetInfo",
    "FolderSource",
    "PipelineOptions",
    "TFDSSource",
    "TFRecordSource",
    "apply_deferred_mixing",
    "cache_root",
    "count_records",
    "decode_for_eval",
    "decode_for_train",
    "eval_dataset",
    "find_source",
    "make_example",
    "pipeline_options",
    "shard_name",
    "train_dataset",
    "translate_error",
    "write_metadata",
    "write_shards",
]

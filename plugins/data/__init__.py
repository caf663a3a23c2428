"""Built-in dataset plugins: ``demo``, ``tfrecord``, ``folder`` and ``tfds``.

Each factory is a gin configurable called with no arguments by the engine; paths and options
come from gin, e.g. ``tfrecord.data_dir = %DATA_DIR`` (the CLI's --data-dir sets DATA_DIR).
TensorFlow is imported only when a factory runs.
"""

from __future__ import annotations

import gin

import effnet
import effnet.data.options  # noqa: F401 - registers the gin configurable input_pipeline (no TF import)
from effnet.images import IMAGE_EXTENSIONS


@gin.configurable("demo", module="effnet.plugins.data")
def demo(cache_dir=None, image_size=64, num_classes=10, train_per_class=300, validation_per_class=50,
         train_shards=8, validation_shards=2, seed=0, jpeg_quality=90):
    """The built-in offline dataset: procedurally drawn shapes, written once as ImageNet-layout
    TFRecords (JPEG) into ``cache_dir`` (default ``$EFFNET_CACHE`` or ``~/.cache/effnet``, in a
    folder ``demo-<version>-<hash of these settings>``). Classes: disc, square, triangle, star,
    plus, ring, half_disc, two_dots, bar, frame (up to 10)."""
    from effnet.plugins.data.shapes import demo_source

    return demo_source(cache_dir=cache_dir, image_size=image_size, num_classes=num_classes,
                       train_per_class=train_per_class, validation_per_class=validation_per_class,
                       train_shards=train_shards, validation_shards=validation_shards, seed=seed,
                       jpeg_quality=jpeg_quality)


@gin.configurable("tfrecord", module="effnet.plugins.data")
def tfrecord(data_dir=gin.REQUIRED, num_classes=None, class_names=None, label_offset=1,
             train_pattern="train-*", validation_pattern="validation-*"):
    """TFRecords in the ImageNet layout (image/encoded, image/class/label 1-based by default).
    ``num_classes=None`` reads it from effnet-dataset.json or from one pass over the labels."""
    from effnet.data import TFRecordSource

    return TFRecordSource(data_dir, num_classes=num_classes, class_names=class_names, label_offset=label_offset,
                          patterns={"train": train_pattern, "validation": validation_pattern})


@gin.configurable("folder", module="effnet.plugins.data")
def folder(data_dir=gin.REQUIRED, extensions=IMAGE_EXTENSIONS, validation_fraction=0.2,
           split_seed=0):
    """Images in DATA_DIR/<split>/<class>/*.jpg|png (split: train, validation or val), or in
    DATA_DIR/<class>/ without split folders: then ``validation_fraction`` of each class is held out
    for validation, chosen reproducibly by a hash of (``split_seed``, class, file name)."""
    from effnet.data import FolderSource

    return FolderSource(data_dir, extensions=extensions, validation_fraction=validation_fraction, split_seed=split_seed)


@gin.configurable("tfds", module="effnet.plugins.data")
def tfds(name=None, data_dir=None, builder_dir=None, manual_dir=None, download=False, image_key="image",
         label_key="label", train_split="train", validation_split="validation"):
    """A TensorFlow Datasets dataset: ``name`` in ``data_dir`` (imagenet2012 prepared from the tars in
    ``manual_dir``), or a prepared folder ``builder_dir``. Nothing is downloaded unless download=True."""
    from effnet.data import TFDSSource

    return TFDSSource(name=name, data_dir=data_dir, builder_dir=builder_dir, manual_dir=manual_dir, download=download,
                      image_key=image_key, label_key=label_key,
                      split_names={"train": train_split, "validation": validation_split})


@effnet.hookimpl
def effnet_datasets():
    return {"demo": demo, "tfrecord": tfrecord, "folder": folder, "tfds": tfds}

"""Dataset sources: where encoded images and their labels come from.

A :class:`DataSource` lists record files per split and yields ``(encoded_image, label)`` pairs
with 0-based int32 labels. Decoding happens once, in the pipeline (:mod:`effnet.data.pipeline`),
whatever the source: TFRecords, an image folder or TFDS (through ``tfds.decode.SkipDecoding``).

Built-in sources also implement :meth:`DataSource.read_files`, which reads a *stream* of file
names and tags each record with its origin (``file record N``); the pipeline uses it for
file-level sharding, per-epoch file shuffling and error messages that name the file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from effnet.data import records as rec
from effnet.data.options import pipeline_options
from effnet.errors import UserError, did_you_mean
from effnet.images import IMAGE_EXTENSIONS

SPLITS = ("train", "validation")


@dataclass
class DatasetInfo:
    """What the engine needs to know about a dataset before reading it."""

    num_classes: int
    class_names: list[str] | None = None
    num_examples: dict[str, int] = field(default_factory=dict)  # exact, per split


class DataSource:
    """Base class of dataset plugins.

    Subclasses implement :meth:`info`, :meth:`files` and :meth:`records`; implementing
    :meth:`read_files` as well gives file-level sharding and per-epoch file shuffling.
    """

    #: appended to label-out-of-range messages: how to fix the label mapping for this source
    label_hint = "check the dataset's labels and its number of classes"

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def files(self, split: str) -> list[str] | None:
        """Record files of ``split`` (for file-level sharding), or None if the source has none."""
        return None

    def records(self, split: str, files: Sequence[str] | None = None) -> tf.data.Dataset:
        """``(encoded_image: tf.string, label: tf.int32)`` for ``split`` (or just ``files``)."""
        ds = self.read_files(split, tf.data.Dataset.from_tensor_slices(list(files or self.files(split) or [])))
        if ds is None:
            raise NotImplementedError(f"{type(self).__name__} must implement records()")
        return ds.map(lambda image, label, origin: (image, label))

    def read_files(self, split: str, files: tf.data.Dataset) -> tf.data.Dataset | None:
        """Optional: ``(encoded, label, origin)`` from a (possibly endless) dataset of file names.

        The order must be a deterministic function of the file order. Return None when the
        source cannot read arbitrary file lists.
        """
        return None


def _files_matching(data_dir: str, pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, pattern)))


def _origin(file: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([file, " record ", tf.strings.as_string(index)])


class TFRecordSource(DataSource):
    """TFRecords in the ImageNet layout (``train-*``, ``validation-*``; see :mod:`effnet.data.records`).

    ``num_classes`` and ``class_names`` come from the arguments, else from the
    ``effnet-dataset.json`` side file written by ``effnet data convert``, else from one pass over
    the labels (cached). Files that end inside a record are reported and, with
    ``on_error="skip"``, read up to their last complete record; with ``"fail"`` they stop the run.
    """

    def __init__(self, data_dir: str, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 label_offset: int = 1, patterns: dict[str, str] | None = None, on_error: str | None = None,
                 cycle_length: int = 16, gin_name: str = "tfrecord.data_dir"):
        self.gin_name = gin_name
        self.data_dir = rec.check_dir(data_dir, "tfrecord dataset", gin_name)
        self.patterns = {"train": "train-*", "validation": "validation-*", **(patterns or {})}
        self.label_offset = int(label_offset)
        self.cycle_length = int(cycle_length)
        self._on_error = on_error
        self.meta = rec.Metadata(self.data_dir)
        self._num_classes = num_classes
        self._class_names = list(class_names) if class_names else None
        self._files: dict[str, list[str]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self.damaged: dict[str, rec.FileCount] = {}  # files with damaged records (read under on_error='skip')
        self._info: DatasetInfo | None = None
        self.label_hint = (
            f"labels are read as image/class/label - {self.label_offset} (label_offset); set "
            f"{gin_name.split('.')[0]}.num_classes and {gin_name.split('.')[0]}.label_offset to match the data"
        )

    @property
    def on_error(self) -> str:
        if self._on_error is not None:
            return self._on_error
        return pipeline_options().on_error

    @on_error.setter
    def on_error(self, value: str | None) -> None:
        """``'skip'``: count damaged records instead of stopping at the first (``effnet data stats``)."""
        self._on_error = value

    def _pattern(self, split: str) -> str:
        return self.patterns.get(split, f"{split}-*")

    def files(self, split: str) -> list[str]:
        if split not in self._files:
            pattern = self._pattern(split)
            found = [f for f in _files_matching(self.data_dir, pattern) if not os.path.basename(f).startswith(".")]
            if not found:
                present = sorted({os.path.basename(p).split("-")[0] for p in tf.io.gfile.listdir(self.data_dir)
                                  if not p.startswith(".") and p != rec.META_NAME} - {""})
                raise UserError(
                    f"no TFRecord files matching {pattern!r} for split {split!r} in {self.data_dir}"
                    f"{did_you_mean(split, present)}; found prefixes: {', '.join(present[:10]) or '(none)'}; "
                    f"convert an image folder with `effnet data convert SRC {self.data_dir}`"
                )
            counts = {}
            for path in found:
                count = self.meta.file_count(path)
                if count.damaged:
                    msg = rec.describe_damage(path, count)
                    good = count.records - len(count.bad)
                    if self.on_error == "fail":
                        self.meta.save()
                        raise UserError(
                            f"{msg}; re-copy or re-create it, or set input_pipeline.on_error='skip' to read its "
                            f"{good} intact records and go on"
                        )
                    rec.warn(f"{msg}; reading its {good} intact records only (input_pipeline.on_error='skip')")
                    self.damaged[path] = count
                counts[path] = count.records
            self.meta.save()
            counts = {p: n for p, n in counts.items() if n > 0}  # empty files are fine, just useless
            if not counts:
                raise UserError(f"the files matching {pattern!r} in {self.data_dir} hold no complete records")
            self._check_layout(next(iter(counts)))
            self._files[split] = [p for p in found if p in counts]
            self._counts[split] = counts
        return list(self._files[split])

    def _check_layout(self, path: str) -> None:
        for raw in tf.data.TFRecordDataset(path).take(1):
            try:
                example = tf.train.Example.FromString(raw.numpy())
            except Exception:  # noqa: BLE001 - any parse failure means "not a tf.train.Example"
                raise UserError(
                    f"{path}: the first record is not a tf.train.Example; the tfrecord dataset expects the ImageNet "
                    f"layout (image/encoded, image/class/label); for a prepared TFDS folder use the 'tfds' dataset"
                ) from None
            keys = set(example.features.feature)
            missing = [k for k in ("image/encoded", "image/class/label") if k not in keys]
            if missing:
                raise UserError(
                    f"{path}: records have no {' or '.join(missing)} (keys: {', '.join(sorted(keys)[:8])}); the tfrecord "
                    f"dataset expects the ImageNet layout; for a prepared TFDS folder use the 'tfds' dataset"
                )

    def num_records(self, split: str) -> int:
        self.files(split)
        return sum(self._counts[split].values())

    def info(self) -> DatasetInfo:
        if self._info is None:
            counts = {split: self.num_records(split) for split in SPLITS if self._has_split(split)}
            if "train" not in counts and "validation" not in counts:
                self.files("train")  # raises the "no files" error
            num_classes = self._num_classes or self.meta.get("num_classes")
            names = self._class_names or self.meta.get("class_names")
            if not num_classes:
                num_classes, names = self._scan_labels(names)
            if names is not None and len(names) != int(num_classes):
                names = None
            self._info = DatasetInfo(int(num_classes), list(names) if names else None, counts)
        return self._info

    def _has_split(self, split: str) -> bool:
        return bool(_files_matching(self.data_dir, self._pattern(split)))

    def _scan_labels(self, names):
        """One pass over every label (reads all records once; the result is cached)."""
        files = [f for split in SPLITS if self._has_split(split) for f in self.files(split)]
        total = sum(sum(self._counts[s].values()) for s in self._counts)
        rec.warn(
            f"reading the labels of {total} records in {self.data_dir} once to find the number of classes "
            f"(set tfrecord.num_classes to skip this); the result is cached"
        )
        feats = {"image/class/label": tf.io.FixedLenFeature([], tf.int64, -1),
                 "image/class/text": tf.io.FixedLenFeature([], tf.string, "")}
        ds = self.read_raw(tf.data.Dataset.from_tensor_slices(files)).map(
            lambda raw, origin: tf.io.parse_single_example(raw, feats), num_parallel_calls=tf.data.AUTOTUNE)
        texts: dict[int, str] = {}
        high = -1
        for batch in ds.batch(4096).as_numpy_iterator():
            labels = batch["image/class/label"] - self.label_offset
            high = max(high, int(labels.max()))
            for label, text in zip(labels, batch["image/class/text"]):
                if text and int(label) not in texts:
                    texts[int(label)] = text.decode("utf-8", "replace")
        if high < 0:
            raise UserError(f"{self.data_dir}: no record has a label >= label_offset={self.label_offset}; set tfrecord.label_offset")
        num_classes = high + 1
        names = [texts.get(i, str(i)) for i in range(num_classes)] if texts else names
        self.meta.set("num_classes", num_classes)
        self.meta.set("class_names", names)
        self.meta.set("label_offset", self.label_offset)
        self.meta.save()
        return num_classes, names

    @tf.autograph.experimental.do_not_convert  # plain Python (a generator inside): nothing to convert
    def read_raw(self, files: tf.data.Dataset) -> tf.data.Dataset:
        """``(serialized_example, origin)`` for every complete record of every file in ``files``."""
        counts = {f: n for split_counts in self._counts.values() for f, n in split_counts.items()}
        # TFRecordDataset stops a file at its first damaged record; read up to there with it and the
        # rest in Python (intact records, and an empty placeholder for each damaged one so that it
        # keeps its position and the pipeline reports and skips it like an undecodable image).
        prefix = {f: (min(self.damaged[f].bad) if f in self.damaged and self.damaged[f].bad else n)
                  for f, n in counts.items()}
        key = tuple(sorted(prefix.items()))
        if getattr(self, "_table_key", None) != key:
            with tf.init_scope():  # the table must outlive any dataset function tracing this
                self._table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(list(prefix) or [""]),
                                                        tf.constant(list(prefix.values()) or [0], tf.int64)),
                    default_value=tf.constant(-1, tf.int64),
                )
            self._table_key = key
        table = self._table

        damaged = {f.encode(): (prefix[f], counts[f]) for f in self.damaged if f in counts}
        placeholder = tf.train.Example().SerializeToString()  # no image: decoding it fails, by design

        def rest(path):
            if path not in damaged:
                return
            first, total = damaged[path]
            for index, data in rec.iter_records(path.decode(), start=first):
                if index >= total:
                    return
                yield index, (placeholder if data is None else data)

        def one_file(path):
            ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20).take(table.lookup(path))
            ds = ds.enumerate().map(lambda i, raw: (raw, _origin(path, i)))
            if not damaged:
                return ds
            tail = tf.data.Dataset.from_generator(
                rest, args=(path,), output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))
            return ds.concatenate(tail.map(lambda i, raw: (raw, _origin(path, i))))

        return files.interleave(one_file, cycle_length=self.cycle_length, block_length=1,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def read_files(self, split: str, files: tf.data.Dataset) -> tf.data.Dataset:
        self.files(split)
        feats = {"image/encoded": tf.io.FixedLenFeature([], tf.string, ""),
                 "image/class/label": tf.io.FixedLenFeature([], tf.int64, -(1 << 40))}
        offset = self.label_offset

        def parse(raw, origin):
            ex = tf.io.parse_single_example(raw, feats)
            label = ex["image/class/label"] - offset
            # Out-of-int32 labels become -1 here and are reported by the pipeline's range check.
            label = tf.where((label < -(1 << 31)) | (label >= (1 << 31)), tf.constant(-1, tf.int64), label)
            return ex["image/encoded"], tf.cast(label, tf.int32), origin

        return self.read_raw(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


class FolderSource(DataSource):
    """Images in ``root/<split>/<class>/*.jpg|jpeg|png|bmp|gif`` (``validation`` may be called ``val``),
    or in ``root/<class>/`` without split folders: then ``validation_fraction`` of every class goes to
    validation, chosen by a hash of (``split_seed``, class, file name), so a file keeps its split when
    images are added or removed and every run splits the same way.

    Classes are the sub-folders of ``root/train`` in sorted order (or of the first split found);
    every image file is one record, so file-level sharding always applies.
    """

    label_hint = "the folder source maps class folders to labels itself; this is a bug, please report it"

    def __init__(self, data_dir: str, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 split_dirs: dict[str, Sequence[str]] | None = None, gin_name: str = "folder.data_dir",
                 validation_fraction: float = 0.2, split_seed: int = 0):
        self.data_dir = rec.check_dir(data_dir, "image folder dataset", gin_name)
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.split_dirs = {"train": ("train",), "validation": ("validation", "val"), **(split_dirs or {})}
        if not 0 <= validation_fraction < 1:
            raise UserError(f"folder.validation_fraction={validation_fraction} must be in [0, 1)")
        self.validation_fraction = float(validation_fraction)
        self.split_seed = int(split_seed)
        self.flat = False  # class folders directly under root, split by hash
        root = Path(self.data_dir)
        self._split_path: dict[str, Path] = {}
        for split, names in self.split_dirs.items():
            for name in names:
                if (root / name).is_dir():
                    self._split_path[split] = root / name
                    break
        if not self._split_path:
            subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            with_images = [d for d in subdirs if self._images_in(root / d)]
            if not with_images:
                raise UserError(
                    f"image folder {self.data_dir} has no train/ or validation/ sub-folder (found: "
                    f"{', '.join(subdirs[:10]) or 'no folders'}) and no class folders with images; the layout is "
                    f"ROOT/<split>/<class>/<image> or ROOT/<class>/<image>"
                )
            self.flat = True
            self._split_path = {"train": root, "validation": root} if self.validation_fraction > 0 else {"train": root}
        first = self._split_path.get("train") or next(iter(self._split_path.values()))
        self.class_names = sorted(p.name for p in first.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.class_names:
            raise UserError(f"{first} has no class sub-folders; the layout is ROOT/<split>/<class>/<image>")
        self._files: dict[str, list[str]] = {}

    def _images_in(self, folder: Path) -> list[str]:
        return sorted(str(p) for p in folder.iterdir()
                      if p.suffix.lower() in self.extensions and p.is_file() and not p.name.startswith("."))

    def split_of(self, class_name: str, file_name: str) -> str:
        """The split of a file in the ROOT/<class>/ layout (stable: depends on nothing else)."""
        digest = hashlib.sha256(f"{self.split_seed}/{class_name}/{file_name}".encode()).digest()
        return "validation" if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < self.validation_fraction else "train"

    def splits(self) -> list[str]:
        """The splits this folder has (``train``, and ``validation`` when present or split off)."""
        return list(self._split_path)

    def _split_dir(self, split: str) -> Path:
        if split not in self._split_path:
            names = "/ or ".join(self.split_dirs.get(split, (split,)))
            raise UserError(f"image folder {self.data_dir} has no {names}/ folder for split {split!r}")
        return self._split_path[split]

    def files(self, split: str) -> list[str]:
        if split not in self._files:
            base = self._split_dir(split)
            unknown = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in self.class_names)
            if unknown:
                raise UserError(
                    f"{base} has class folder(s) {', '.join(unknown[:5])} that the training split does not have; "
                    f"every split must use the training split's classes"
                )
            found = []
            for name in self.class_names:
                folder = base / name
                if folder.is_dir():
                    images = self._images_in(folder)
                    if self.flat:
                        images = [f for f in images if self.split_of(name, Path(f).name) == split]
                    found += images
            if not found:
                raise UserError(
                    f"no images ({', '.join(self.extensions)}) in {base}/<class>/ for split {split!r}; "
                    f"the layout is ROOT/<split>/<class>/<image>"
                )
            self._files[split] = found
        return list(self._files[split])

    def info(self) -> DatasetInfo:
        counts = {split: len(self.files(split)) for split in SPLITS if split in self._split_path}
        return DatasetInfo(len(self.class_names), list(self.class_names), counts)

    def read_files(self, split: str, files: tf.data.Dataset) -> tf.data.Dataset:
        if getattr(self, "_table", None) is None:
            with tf.init_scope():  # the table must outlive any dataset function tracing this
                self._table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(self.class_names),
                                                        tf.range(len(self.class_names), dtype=tf.int32)),
                    default_value=-1,
                )
        table = self._table

        def read(path):
            parts = tf.strings.split(path, os.sep)
            label = table.lookup(parts[-2])
            return tf.io.read_file(path), label, path

        return files.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TFDSSource(DataSource):
    """A TensorFlow Datasets dataset, read without decoding (``tfds.decode.SkipDecoding``).

    ``builder_dir``: a prepared dataset folder (``tfds.builder_from_directory``). Otherwise
    ``name`` in ``data_dir``; ``imagenet2012`` and other manual datasets are prepared once from
    the archives in ``manual_dir``. Nothing is downloaded unless ``download=True``.
    """

    label_hint = "the TFDS label feature is outside the dataset's declared classes; check tfds.label_key"

    def __init__(self, name: str | None = None, data_dir: str | None = None, builder_dir: str | None = None,
                 manual_dir: str | None = None, download: bool = False, image_key: str = "image",
                 label_key: str = "label", split_names: dict[str, str] | None = None, cycle_length: int = 16):
        import tensorflow_datasets as tfds

        self.image_key, self.label_key = image_key, label_key
        self.split_names = {"train": "train", "validation": "validation", **(split_names or {})}
        self.cycle_length = cycle_length
        if builder_dir:
            builder_dir = rec.check_dir(builder_dir, "tfds dataset", "tfds.builder_dir")
            try:
                self.builder = tfds.builder_from_directory(builder_dir)
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"{builder_dir} is not a prepared TFDS dataset folder ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); it must hold dataset_info.json") from None
        else:
            if not name:
                raise UserError("tfds dataset: set tfds.name (e.g. 'imagenet2012') or tfds.builder_dir")
            try:
                self.builder = tfds.builder(name, data_dir=data_dir)
            except Exception as exc:  # noqa: BLE001
                known = tfds.list_builders()
                raise UserError(f"unknown TFDS dataset {name!r}{did_you_mean(name, known)}: {str(exc).splitlines()[0]}") from None
            if not self._prepared():
                if manual_dir:
                    manual = rec.check_dir(manual_dir, f"tfds {name} manual_dir", "tfds.manual_dir")
                    self._prepare(tfds, manual)
                elif download:
                    self.builder.download_and_prepare()
                else:
                    extra = (" and ILSVRC2012_img_{train,val}.tar in tfds.manual_dir" if name.startswith("imagenet2012") else "")
                    raise UserError(
                        f"TFDS dataset {name!r} is not prepared in {self.builder.data_dir}; prepare it once (set "
                        f"tfds.data_dir{extra}, or tfds.download=True where downloads are allowed)"
                    )
        features = self.builder.info.features
        for key in (image_key, label_key):
            if key not in features:
                raise UserError(f"TFDS dataset {self.builder.name!r} has no feature {key!r}{did_you_mean(key, list(features))}; "
                                f"set tfds.image_key / tfds.label_key")

    def _prepared(self) -> bool:
        try:
            return bool(self.builder.info.splits) and self.builder.info.splits.total_num_examples > 0 and os.path.isdir(self.builder.data_dir)
        except Exception:  # noqa: BLE001
            return False

    def _prepare(self, tfds, manual: str) -> None:
        if self.builder.name == "imagenet2012":
            missing = [t for t in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar") if not os.path.isfile(os.path.join(manual, t))]
            if missing:
                raise UserError(f"tfds imagenet2012 needs {' and '.join(missing)} in manual_dir {manual}; download them from "
                                f"image-net.org and put them there")
        self.builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))

    def _split(self, split: str) -> str:
        name = self.split_names.get(split, split)
        splits = self.builder.info.splits
        if name not in splits:
            raise UserError(f"TFDS dataset {self.builder.name!r} has no split {name!r}{did_you_mean(name, list(splits))}; "
                            f"its splits: {', '.join(splits)}; map it with tfds.split_names")
        return name

    def info(self) -> DatasetInfo:
        label = self.builder.info.features[self.label_key]
        counts = {s: int(self.builder.info.splits[self.split_names[s]].num_examples)
                  for s in SPLITS if self.split_names[s] in self.builder.info.splits}
        names = list(label.names) if getattr(label, "names", None) else None
        return DatasetInfo(int(label.num_classes), names, counts)

    def files(self, split: str) -> list[str] | None:
        import tensorflow_datasets as tfds

        if self.builder.info.file_format != tfds.core.file_adapters.FileFormat.TFRECORD:
            return None
        info = self.builder.info.splits[self._split(split)]
        lengths = list(info.shard_lengths)
        paths = [str(p) for p in info.filepaths]
        return [p for p, n in zip(paths, lengths) if n > 0] if len(lengths) == len(paths) else paths

    def _decode(self, example):
        return example[self.image_key], tf.cast(example[self.label_key], tf.int32)

    def records(self, split: str, files: Sequence[str] | None = None) -> tf.data.Dataset:
        if files is not None or self.files(split) is not None:
            return super().records(split, files)
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(split=self._split(split), shuffle_files=False,
                                     decoders={self.image_key: tfds.decode.SkipDecoding()})
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def read_files(self, split: str, files: tf.data.Dataset) -> tf.data.Dataset | None:
        if self.files(split) is None:
            return None
        import tensorflow_datasets as tfds

        features = self.builder.info.features
        decoders = {self.image_key: tfds.decode.SkipDecoding()}

        def one_file(path):
            ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20)
            return ds.enumerate().map(lambda i, raw: (raw, _origin(path, i)))

        def parse(raw, origin):
            image, label = self._decode(features.deserialize_example(raw, decoders=decoders))
            return image, label, origin

        return files.interleave(one_file, cycle_length=self.cycle_length, block_length=1,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE)


def find_source(path: str) -> DataSource:
    """A source for a folder given on the command line: TFRecords if it has any, else an image folder."""
    rec.check_dir(path, "dataset", "--data-dir")
    names = os.listdir(path)
    if any(fnmatch.fnmatch(n, "train-*") or fnmatch.fnmatch(n, "validation-*") for n in names):
        return TFRecordSource(path)
    if "dataset_info.json" in names:
        return TFDSSource(builder_dir=path)
    return FolderSource(path)


__all__ = ["DataSource", "DatasetInfo", "FolderSource", "TFDSSource", "TFRecordSource", "find_source"]

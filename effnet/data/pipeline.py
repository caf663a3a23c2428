"""The training and evaluation input pipelines.

Training, per epoch (one function of ``(seed, epoch, shard)``)::

    files, shuffled per pass with (seed, epoch, pass); this shard's share  (file-level sharding)
      -> records (encoded bytes, label, origin)   endless: passes repeat as needed
      -> [element-level sharding when there are too few files]
      -> [input_pipeline.balance: each record repeated by its class's factor]  seed (seed, epoch, shard, position)
      -> shuffle buffer (seeded) -> position j -> skip(start_step * batch) (before decoding)
      -> decode + random crop + flip + resize (uint8) -> image augmenters    seed (seed, epoch, shard, j)
      -> bad records: reported by origin, then skipped or fatal (input_pipeline.on_error)
      -> batch (drop remainder) -> one-hot labels -> batch augmenters        seed (seed, epoch, shard, batch)
      -> take(steps - start_step) -> prefetch

All randomness is stateless and keyed by positions, and parallel stages keep their order, so a
stream does not depend on parallelism or timing, and ``start_step=k`` continues exactly where a
run that stopped after k batches would have gone on (if no records were skipped before k).

Every knob that is not an argument is a gin binding of ``input_pipeline`` (see
:func:`pipeline_options`); the functions read them each time they are called, so the stages of a
progressive schedule can change them without new code.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence

import tensorflow as tf

from effnet.data import preprocess
from effnet.data.augment import Augmenter, apply_mixing, sample_mixing, split_levels
from effnet.data.errors import MARK
from effnet.data.source import DataSource
from effnet.distribute import ShardInfo
from effnet.data.options import PipelineOptions, pipeline_options
from effnet.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
RECENT = 4  # how many record origins travel with each element, to name skipped records


# --------------------------------------------------------------------------------------------------
# Seeds


def _int32(value: int) -> int:
    return int(value) & 0x7FFFFFFF


def _key(seed: int, *path: int) -> tf.Tensor:
    """A stateless-RNG key (int32 [2]) for ``seed`` folded with ``path``."""
    key = tf.constant([_int32(seed), _int32(int(seed) >> 31)], tf.int32)
    for value in path:
        key = tf.random.experimental.stateless_fold_in(key, tf.constant(_int32(value), tf.int32))
    return key


def _fold(key: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int32))


def _py_seed(*values: int) -> int:
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------------------------------------
# Records


def _reads_files(source: DataSource) -> bool:
    return type(source).read_files is not DataSource.read_files


def _with_origin(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda image, label: (image, tf.cast(label, tf.int32), tf.constant("")))


def _check_shards(source: DataSource, split: str, shard: ShardInfo) -> None:
    if not (0 <= shard.index < shard.num_shards):
        raise UserError(f"shard index {shard.index} is outside [0, {shard.num_shards})")


def _train_records(source, split, shard, seed, epoch, opts) -> tf.data.Dataset:
    """Endless ``(encoded, label, origin)`` for this shard and epoch, before the shuffle buffer."""
    n, i = shard.num_shards, shard.index
    files = source.files(split) if _reads_files(source) else None
    if files:
        file_level = len(files) >= n * max(1, opts.min_files_per_shard)
        if opts.cache:
            mine = files[i::n] if file_level else files
            ds = source.read_files(split, tf.data.Dataset.from_tensor_slices(mine)).cache().repeat()
        else:
            names = tf.constant(files)
            count = len(files)

            def one_pass(p):
                # One pass = every file once, in an order drawn from (seed, epoch, pass), the same on
                # every worker; each worker reads its share. Passes do not overlap, so the first pass
                # of all workers together is exactly the data set.
                key = _fold(_key(seed, 2, epoch), p)
                order = tf.gather(names, tf.argsort(tf.random.stateless_uniform([count], key)))
                if file_level:
                    order = order[i::n]
                return source.read_files(split, tf.data.Dataset.from_tensor_slices(order))

            source.read_files(split, tf.data.Dataset.from_tensor_slices(files[:1]))  # builds lookup tables eagerly
            ds = tf.data.Dataset.counter().flat_map(one_pass)
        return ds if file_level else ds.shard(n, i)
    ds = _with_origin(source.records(split, files))
    if opts.cache:
        ds = ds.cache()
    return ds.repeat().shard(n, i)


def _balanced(ds, source, key) -> tf.data.Dataset:
    """``input_pipeline.balance``: each record repeated ``floor(r) + (u < frac(r))`` times, ``r`` its
    class's repeat factor and ``u`` a uniform draw keyed by its position in this shard's stream, so
    the stream is a function of (seed, epoch, shard) and ``skip`` resumes it. Records whose label is
    out of range pass once (the bad-record check downstream reports them)."""
    from effnet.data.balance import class_counts, repeat_factors

    factors = tf.constant(repeat_factors(class_counts(source, "train")), tf.float32)
    count = int(factors.shape[0])

    def times(position, label):
        label = tf.cast(label, tf.int32)
        inside = tf.logical_and(label >= 0, label < count)
        r = tf.where(inside, tf.gather(factors, tf.clip_by_value(label, 0, count - 1)), 1.0)
        whole = tf.floor(r)
        extra = tf.random.stateless_uniform([], _fold(key, position)) < r - whole
        return tf.cast(whole, tf.int64) + tf.cast(extra, tf.int64)

    return ds.enumerate().flat_map(
        lambda position, record: tf.data.Dataset.from_tensors(record).repeat(times(position, record[1])))


def _eval_records(source, split, shard, opts) -> tf.data.Dataset:
    n, i = shard.num_shards, shard.index
    files = source.files(split) if _reads_files(source) else None
    if files:
        if len(files) >= n:
            return source.read_files(split, tf.data.Dataset.from_tensor_slices(sorted(files)[i::n]))
        return source.read_files(split, tf.data.Dataset.from_tensor_slices(sorted(files))).shard(n, i)
    return _with_origin(source.records(split, files)).shard(n, i)


def _attach_recent(ds: tf.data.Dataset, first_position: int = 0) -> tf.data.Dataset:
    """(encoded, label, origin, is_end) -> (position, encoded, label, recent origins, is_end)."""

    def step(state, elem):
        position, recent = state
        encoded, label, origin, is_end = elem
        recent = tf.concat([recent[1:], tf.reshape(origin, [1])], 0)
        return (position + 1, recent), (position, encoded, label, recent, is_end)

    start = (tf.constant(first_position, tf.int64), tf.fill([RECENT], "(unknown record)"))
    return ds.scan(start, step)


def _report_bad_records(ds, num_classes: int, on_error: str, label_hint: str, first_position: int = 0):
    """After ``ignore_errors``: find the positions that vanished, report them, check labels."""

    def step(state, elem):
        last, skipped = state
        position, image, label, recent, is_end = elem
        gap = position - last - 1
        k = tf.minimum(gap, RECENT - 1)
        names = tf.strings.reduce_join(recent[RECENT - 1 - tf.cast(k, tf.int32): RECENT - 1], separator="; ")
        more = tf.cond(gap > k, lambda: tf.strings.join([" and ", tf.strings.as_string(gap - k), " before them"]),
                       lambda: tf.constant(""))
        skipped = skipped + tf.maximum(gap, 0)
        if on_error == "fail":
            message = tf.strings.join([
                MARK, "could not read or decode ", tf.strings.as_string(gap), " record(s): ", names, more,
                "; remove or fix them (`effnet data stats --check DATA_DIR` lists all bad records), or set "
                "input_pipeline.on_error='skip' to skip them",
            ])
            checks = [tf.debugging.Assert(gap <= 0, [message])]
        else:
            def report():
                line = tf.strings.join([
                    "effnet: warning: skipped ", tf.strings.as_string(gap), " record(s) that could not be read or "
                    "decoded: ", names, more, " (", tf.strings.as_string(skipped), " skipped so far; "
                    "input_pipeline.on_error='skip')",
                ])
                with tf.control_dependencies([tf.print(line, output_stream=sys.stderr)]):
                    return tf.constant(True)

            checks = [tf.cond(gap > 0, report, lambda: tf.constant(False))]
        in_range = is_end | ((label >= 0) & (label < num_classes))
        label_message = tf.strings.join([
            MARK, "label ", tf.strings.as_string(label), " of ", recent[RECENT - 1], " is outside [0, ",
            str(num_classes), "); ", label_hint,
        ])
        checks.append(tf.debugging.Assert(in_range, [label_message]))
        with tf.control_dependencies(checks):
            out = (tf.identity(image), tf.identity(label), is_end)
        return (position, skipped), out

    start = (tf.constant(first_position - 1, tf.int64), tf.constant(0, tf.int64))
    return ds.scan(start, step)


def _decode_stage(ds, decode_fn, image_size: int, opts: PipelineOptions) -> tf.data.Dataset:
    def fn(position, encoded, label, recent, is_end):
        image = tf.cond(is_end, lambda: tf.zeros([image_size, image_size, 3], tf.uint8),
                        lambda: decode_fn(position, encoded))
        image.set_shape([image_size, image_size, 3])
        return position, image, label, recent, is_end

    ds = ds.map(fn, num_parallel_calls=opts.num_parallel_calls, deterministic=opts.deterministic)
    return ds.ignore_errors()


def _options(opts: PipelineOptions) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = opts.deterministic
    return options


# --------------------------------------------------------------------------------------------------
# Public


def train_dataset(
    source: DataSource,
    *,
    image_size: int,
    batch_size: int,
    steps: int,
    epoch: int,
    start_step: int = 0,
    augmenters: Sequence[Augmenter] = (),
    shard: ShardInfo = ShardInfo(),
    seed: int = 0,
    deferred_mixing: bool = False,
    options: PipelineOptions | None = None,
) -> tf.data.Dataset:
    """Batches ``start_step .. steps-1`` of epoch ``epoch`` for this process (see the module docstring).

    Yields ``{"image": [B,S,S,3], "label": float32 one-hot [B,C]}``; images are uint8 unless a
    batch augmenter mixed them in the pipeline (then float32 in [0, 255]). With
    ``deferred_mixing=True`` and batch augmenters, batches stay uint8 and carry ``"mix"``, to be
    applied in the step by :func:`effnet.data.apply_deferred_mixing`.
    """
    opts = options or pipeline_options()
    if batch_size <= 0 or image_size <= 0:
        raise UserError(f"batch_size={batch_size} and image_size={image_size} must be positive")
    if not 0 <= start_step <= steps:
        raise UserError(f"start_step={start_step} must be in [0, steps={steps}]")
    _check_shards(source, "train", shard)
    info = source.info()
    if info.num_examples.get("train", 1) < shard.num_shards:
        raise UserError(f"the training split has {info.num_examples.get('train')} examples, fewer than the "
                        f"{shard.num_shards} processes reading it; use a larger dataset or fewer processes")
    image_augs, batch_augs = split_levels(augmenters)
    num_classes = int(info.num_classes)

    ds = _train_records(source, "train", shard, seed, epoch, opts)
    if opts.balance:
        ds = _balanced(ds, source, _key(seed, 3, epoch, shard.index))
    if opts.shuffle_buffer > 1:
        ds = ds.shuffle(opts.shuffle_buffer, seed=_py_seed(seed, epoch, shard.index, shard.num_shards),
                        reshuffle_each_iteration=False)
    first = start_step * batch_size
    ds = ds.skip(first)  # before anything is decoded
    ds = ds.map(lambda e, l, o: (e, l, o, tf.constant(False)))
    ds = _attach_recent(ds, first)

    element_key = _key(seed, 0, epoch, shard.index)
    crop = dict(min_object_covered=opts.min_object_covered, aspect_ratio_range=opts.aspect_ratio_range,
                area_range=opts.area_range, max_attempts=opts.max_attempts, random_flip=opts.random_flip,
                method=opts.resize_method)

    def decode(position, encoded):
        key = _fold(element_key, position)
        crop_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        image = preprocess.decode_for_train(encoded, image_size, crop_seed, **crop)
        for k, aug in enumerate(image_augs):
            image = aug(image, _fold(aug_seed, k))
            if image.dtype != tf.uint8:
                image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0, 255), tf.uint8)
            image = tf.ensure_shape(image, [image_size, image_size, 3])
        return image

    ds = _decode_stage(ds, decode, image_size, opts)
    ds = _report_bad_records(ds, num_classes, opts.on_error, source.label_hint, first)
    ds = ds.map(lambda image, label, is_end: (image, label))
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=True)

    batch_key = _key(seed, 1, epoch, shard.index)

    def finish(index, images, labels):
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if not batch_augs:
            return {"image": images, "label": labels}
        mix = sample_mixing(batch_augs, batch_size, image_size, image_size, _fold(batch_key, index))
        if deferred_mixing:
            return {"image": images, "label": labels, "mix": mix}
        images, labels = apply_mixing(images, labels, batch_augs, mix)
        return {"image": images, "label": labels}

    ds = ds.enumerate(start=start_step).map(lambda i, batch: finish(i, *batch), num_parallel_calls=AUTOTUNE,
                                            deterministic=True)
    ds = ds.take(steps - start_step).prefetch(opts.prefetch)
    return ds.with_options(_options(opts))


def eval_dataset(
    source: DataSource,
    *,
    image_size: int,
    batch_size: int,
    split: str = "validation",
    shard: ShardInfo = ShardInfo(),
    options: PipelineOptions | None = None,
) -> tf.data.Dataset:
    """Every example of ``split`` exactly once across the shards, centre-cropped, in batches.

    Yields ``{"image": uint8 [B,S,S,3], "label": int32 [B]}``; the last batch may be partial.
    """
    opts = options or pipeline_options()
    if batch_size <= 0 or image_size <= 0:
        raise UserError(f"batch_size={batch_size} and image_size={image_size} must be positive")
    _check_shards(source, split, shard)
    num_classes = int(source.info().num_classes)
    ds = _eval_records(source, split, shard, opts)
    ds = ds.map(lambda e, l, o: (e, l, o, tf.constant(False)))
    ds = ds.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(0), tf.constant("(end of split)"),
                                                      tf.constant(True))))
    ds = _attach_recent(ds)

    def decode(position, encoded):
        return preprocess.decode_for_eval(encoded, image_size, opts.eval_crop_fraction, opts.resize_method,
                                          opts.eval_whole_frame)

    ds = _decode_stage(ds, decode, image_size, opts)
    ds = _report_bad_records(ds, num_classes, opts.on_error, source.label_hint)
    ds = ds.filter(lambda image, label, is_end: tf.logical_not(is_end))
    ds = ds.map(lambda image, label, is_end: (image, label))
    ds = ds.batch(batch_size, drop_remainder=False).map(lambda images, labels: {"image": images, "label": labels})
    return ds.prefetch(opts.prefetch).with_options(_options(opts))


__all__ = ["PipelineOptions", "eval_dataset", "pipeline_options", "train_dataset"]

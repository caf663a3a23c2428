"""Imbalanced data: class counts, loss weights per class, and per-record repeat factors.

- :func:`class_counts`: examples per class of a split. An image folder counts its files by class
  folder; other sources read the split's labels once (no image is decoded). Cached on the source.
- :func:`resolve_class_weights`: ``train.class_weights`` (``'balanced'`` or ``{class: weight}``)
  as one weight per class, checked before any work: an unknown class, a negative, infinite or NaN
  weight, or weights for a dataset without labels are one-line errors.
- :func:`repeat_factors`: for ``input_pipeline.balance = True``, how often each record of a class
  is repeated in the training stream so that every class is drawn about as often as the largest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from effnet.errors import UserError

#: ``effnet data stats`` suggests a remedy at or beyond this ratio of largest to smallest class.
IMBALANCE_RATIO = 3.0


def class_counts(source, split: str = "train") -> list[int]:
    """Examples per class (label order) of ``split``, counted once per source object."""
    cache = source.__dict__.setdefault("_effnet_class_counts", {})
    if split in cache:
        return list(cache[split])
    info = source.info()
    num_classes = int(info.num_classes)
    from effnet.data.source import FolderSource

    if isinstance(source, FolderSource):
        from pathlib import Path

        index = {name: i for i, name in enumerate(source.class_names)}
        per_class = Counter(index[Path(f).parent.name] for f in source.files(split))
    else:
        import tensorflow as tf

        from effnet.data.source import DataSource

        files = source.files(split)
        if files and type(source).read_files is not DataSource.read_files:
            ds = source.read_files(split, tf.data.Dataset.from_tensor_slices(files))
            ds = ds.map(lambda e, label, o: label)
        else:
            ds = source.records(split).map(lambda e, label: label)
        per_class = Counter()
        for labels in ds.batch(4096).as_numpy_iterator():
            per_class.update(int(v) for v in labels)
    counts = [int(per_class.get(i, 0)) for i in range(num_classes)]
    cache[split] = counts
    return list(counts)


def imbalance(counts: Sequence[int]) -> dict:
    """Largest and smallest non-empty class and their ratio (None without two non-empty classes)."""
    present = [(n, i) for i, n in enumerate(counts) if n > 0]
    if len(present) < 2:
        return {"largest": None, "smallest": None, "ratio": None}
    (low, low_i), (high, high_i) = min(present), max(present, key=lambda p: (p[0], -p[1]))
    return {"largest": high_i, "smallest": low_i, "ratio": high / low}


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """``total / (classes * count)`` per class (scikit-learn's 'balanced'): the mean weight over the
    examples is 1, so the loss keeps its scale. A class without examples gets 0 (it never occurs)."""
    present = [n for n in counts if n > 0]
    total = sum(present)
    return [total / (len(present) * n) if n > 0 else 0.0 for n in counts]


def _check_weight(key, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"train.class_weights[{key!r}] = {value!r} is not a number; give a weight >= 0 per class")
    if not math.isfinite(value) or value < 0:
        raise UserError(f"train.class_weights[{key!r}] = {value!r} must be a finite number >= 0")
    return float(value)


def check_class_weights(spec) -> None:
    """The shape of ``train.class_weights`` alone (no dataset needed): None, 'balanced' or a mapping."""
    if spec is None or spec == "balanced":
        return
    if isinstance(spec, str):
        raise UserError(f"train.class_weights = {spec!r} is not 'balanced', None or a {{class: weight}} dict")
    if not isinstance(spec, Mapping) or not spec:
        raise UserError(f"train.class_weights = {spec!r} is not 'balanced', None or a non-empty {{class: weight}} dict")
    for key, value in spec.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise UserError(f"train.class_weights key {key!r} is neither a class name nor a label number")
        _check_weight(key, value)


def resolve_class_weights(spec, num_classes: int, class_names: Sequence[str] | None, counts=None) -> list[float] | None:
    """One weight per class from ``train.class_weights``; classes not named in a dict keep 1.

    ``counts`` (a callable returning :func:`class_counts`) is only asked for ``'balanced'``.
    """
    check_class_weights(spec)
    if spec is None:
        return None
    if not num_classes or num_classes < 1:
        raise UserError("train.class_weights is set but the dataset has no labels (no classes); remove it")
    if spec == "balanced":
        found = list(counts()) if callable(counts) else list(counts or [])
        if len(found) != num_classes or sum(found) == 0:
            raise UserError("train.class_weights = 'balanced' needs the training split's labels, and it has none; "
                            "give explicit weights or remove it")
        return balanced_weights(found)
    names = list(class_names or [])
    weights = [1.0] * num_classes
    for key, value in spec.items():
        if isinstance(key, int):
            if not 0 <= key < num_classes:
                raise UserError(f"train.class_weights names label {key}, but labels go from 0 to {num_classes - 1}")
            index = key
        elif key in names:
            index = names.index(key)
        else:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none: use label numbers"
            raise UserError(f"train.class_weights names class {key!r}, which the dataset does not have{hint}; its "
                            f"classes: {known}")
        weights[index] = _check_weight(key, value)
    if not any(w > 0 for w in weights):
        raise UserError("train.class_weights gives every class weight 0; nothing would be learned")
    return weights


def repeat_factors(counts: Sequence[int]) -> list[float]:
    """How many times (on average) each record of a class enters the balanced training stream:
    ``largest count / class count``, so every non-empty class is drawn as often as the largest."""
    largest = max(counts) if counts else 0
    return [largest / n if n > 0 else 0.0 for n in counts]


def remedy_hint(counts: Sequence[int], class_names: Sequence[str] | None = None) -> str | None:
    """One line suggesting a remedy when the largest class has ``IMBALANCE_RATIO`` x the smallest."""
    found = imbalance(counts)
    if found["ratio"] is None or found["ratio"] < IMBALANCE_RATIO:
        return None
    names = list(class_names) if class_names else [str(i) for i in range(len(counts))]
    return (f"imbalanced: {names[found['largest']]} has {counts[found['largest']]} examples, {names[found['smallest']]} "
            f"{counts[found['smallest']]} ({found['ratio']:.1f}x); train with --gin-param \"train.class_weights = "
            f"'balanced'\" (weights the loss) or --gin-param 'input_pipeline.balance = True' (samples classes evenly), "
            f"and judge it by balanced accuracy and per-class recall (effnet eval)")


__all__ = ["IMBALANCE_RATIO", "balanced_weights", "check_class_weights", "class_counts", "imbalance", "remedy_hint",
           "repeat_factors", "resolve_class_weights"]

"""The augmenter interface, and how batch-level augmenters are combined and deferred.

Two kinds (the ``level`` attribute):

* ``"image"``: ``augmenter(image, seed) -> image`` on one uint8 ``[H, W, 3]`` image after the
  crop and before batching; ``seed`` is an int32 ``[2]`` tensor for ``tf.random.stateless_*``.
* ``"batch"``: mixes a batch. ``sample(batch_size, height, width, seed)`` draws the random
  parameters (a dict of tensors), ``apply(images, labels, params)`` uses them on float32 images
  in [0, 255] and one-hot float32 labels. Splitting the two lets the pipeline draw parameters
  on the CPU and the training step apply them on the accelerator ("deferred mixing").

Augmenters keep every constructor argument as a public attribute of the same name, so a
progressive schedule can read the configured (final) values and build one per stage.
When several batch-level augmenters are given, each batch uses one of them, chosen uniformly.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


class Augmenter:
    """Base class of augmenter plugins (see the module docstring)."""

    level = "image"

    def __call__(self, *args):
        raise NotImplementedError

    def sample(self, batch_size, height, width, seed) -> dict:
        raise NotImplementedError(f"{type(self).__name__} is not a batch-level augmenter")

    def apply(self, images, labels, params):
        raise NotImplementedError(f"{type(self).__name__} is not a batch-level augmenter")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class BatchAugmenter(Augmenter):
    """Base for batch-level augmenters: implement :meth:`sample` and :meth:`apply`."""

    level = "batch"

    def __call__(self, images, labels, seed):
        shape = tf.shape(images)
        return self.apply(images, labels, self.sample(shape[0], shape[1], shape[2], seed))


def split_levels(augmenters: Sequence[Augmenter]) -> tuple[list[Augmenter], list[Augmenter]]:
    from effnet.errors import UserError

    image, batch = [], []
    for aug in augmenters or ():
        level = getattr(aug, "level", None)
        if level == "image":
            image.append(aug)
        elif level == "batch":
            batch.append(aug)
        else:
            raise UserError(f"augmenter {aug!r} has level {level!r}; it must be 'image' or 'batch'")
    return image, batch


def sample_mixing(batch_augmenters: Sequence[Augmenter], batch_size, height, width, seed) -> dict:
    """Draw the parameters of every batch augmenter and which one this batch uses."""
    seeds = tf.random.experimental.stateless_split(seed, len(batch_augmenters) + 1)
    choice = tf.random.stateless_uniform([], seeds[0], 0, len(batch_augmenters), dtype=tf.int32)
    params = tuple(aug.sample(batch_size, height, width, seeds[k + 1]) for k, aug in enumerate(batch_augmenters))
    return {"choice": choice, "params": params}


def apply_mixing(images, labels, batch_augmenters: Sequence[Augmenter], mix: dict):
    """Apply the augmenter ``mix["choice"]`` with its parameters; images become float32."""
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    if not batch_augmenters:
        return images, labels
    if len(batch_augmenters) == 1:
        return batch_augmenters[0].apply(images, labels, mix["params"][0])
    branches = [
        (lambda aug=aug, p=p: aug.apply(images, labels, p))
        for aug, p in zip(batch_augmenters, mix["params"])
    ]
    out_images, out_labels = tf.switch_case(mix["choice"], branches)
    out_images.set_shape(images.shape)
    out_labels.set_shape(labels.shape)
    return out_images, out_labels


def apply_deferred_mixing(batch: dict, augmenters: Sequence[Augmenter]):
    """In the training step: mix ``batch`` (from ``train_dataset(..., deferred_mixing=True)``).

    ``augmenters`` is the same list given to :func:`train_dataset` (image-level ones are ignored).
    Returns ``(images float32 [B,S,S,3] in [0,255], labels float32 [B,C])``. Without a ``"mix"``
    key (no batch augmenters) it only casts.
    """
    _, batch_augs = split_levels(augmenters)
    if "mix" not in batch or not batch_augs:
        return tf.cast(batch["image"], tf.float32), tf.cast(batch["label"], tf.float32)
    return apply_mixing(batch["image"], batch["label"], batch_augs, batch["mix"])


__all__ = ["Augmenter", "BatchAugmenter", "apply_deferred_mixing", "apply_mixing", "sample_mixing", "split_levels"]

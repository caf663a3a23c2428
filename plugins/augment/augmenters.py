"""RandAugment, AutoAugment, mixup and cutmix as :class:`effnet.data.Augmenter` objects.

Why these are hand-written rather than ``keras.layers.RandAugment`` / ``MixUp`` / ``CutMix``:
the Keras layers draw randomness from a stateful ``SeedGenerator`` (or a fixed int seed), so they
cannot be keyed per example or per batch by (seed, epoch, position) as the deterministic and
resumable pipeline requires, nor split into "sample on the CPU" and "apply on the accelerator"
for deferred mixing with an external seed. Their semantics also differ from the recipe:
Keras's RandAugment uses its own op set with a [0, 1] factor and random per-op magnitudes;
Keras's CutMix keeps the whole box inside the image (the recipe samples a centre and clips);
Keras's MixUp samples one random permutation (we pair each image with the reversed batch, as
the reference implementations do, which needs no gather of a random order).
"""

from __future__ import annotations

import tensorflow as tf

from effnet.data import Augmenter, BatchAugmenter
from effnet.errors import UserError, did_you_mean
from effnet.plugins.augment import ops


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), n))


def _check_ops(names, what):
    for name in names:
        if name not in ops.OPS:
            raise UserError(f"{what}: unknown op {name!r}{did_you_mean(name, ops.OPS)}; ops: {', '.join(ops.OPS)}")


class RandAugment(Augmenter):
    """RandAugment as in the EfficientNetV2 recipe: ``num_layers`` times, one op drawn uniformly
    from ``ops`` and applied at the fixed ``magnitude`` (reference scale 0-10; values above 10
    extrapolate, as the recipe's 15 does). ``magnitude == 0`` or ``num_layers == 0`` is the identity.
    Pixel constants (``translate_const``, ``cutout_const``) are absolute, as in the recipe."""

    level = "image"

    def __init__(self, num_layers=2, magnitude=10.0, translate_const=100, cutout_const=40, fill_value=128,
                 ops=ops.RANDAUGMENT_OPS):
        if num_layers < 0 or magnitude < 0:
            raise UserError(f"randaugment: num_layers={num_layers} and magnitude={magnitude} must be >= 0")
        self.num_layers = int(num_layers)
        self.magnitude = float(magnitude)
        self.translate_const = translate_const
        self.cutout_const = cutout_const
        self.fill_value = fill_value
        self.ops = tuple(ops)
        _check_ops(self.ops, "randaugment")

    def __call__(self, image, seed):
        if self.num_layers == 0 or self.magnitude == 0 or not self.ops:
            return image
        hp = {"translate_const": self.translate_const, "cutout_const": self.cutout_const, "fill": self.fill_value}
        for layer, layer_seed in enumerate(_split(seed, self.num_layers)):
            choose_seed, op_seed = _split(layer_seed, 2)
            choice = tf.random.stateless_uniform([], choose_seed, 0, len(self.ops), dtype=tf.int32)
            branches = [
                (lambda name=name, im=image: ops.OPS[name](im, self.magnitude, op_seed, hp)) for name in self.ops
            ]
            image = tf.switch_case(choice, branches)
            image.set_shape([None, None, 3])
        return image


class AutoAugment(Augmenter):
    """AutoAugment with a fixed policy (``"v0"``: the ImageNet policy of the EfficientNet
    reference): one sub-policy drawn uniformly, each of its ops applied with its probability."""

    level = "image"

    def __init__(self, policy="v0", translate_const=250, cutout_const=100, fill_value=128):
        if policy not in ops.POLICIES:
            raise UserError(f"autoaugment.policy={policy!r} is unknown{did_you_mean(policy, ops.POLICIES)}; "
                            f"policies: {', '.join(ops.POLICIES)}")
        self.policy = policy
        self.translate_const = translate_const
        self.cutout_const = cutout_const
        self.fill_value = fill_value

    def __call__(self, image, seed):
        hp = {"translate_const": self.translate_const, "cutout_const": self.cutout_const, "fill": self.fill_value}
        policy = ops.POLICIES[self.policy]
        choose_seed, ops_seed = _split(seed, 2)
        choice = tf.random.stateless_uniform([], choose_seed, 0, len(policy), dtype=tf.int32)

        def make(sub_policy):
            def run():
                im = image
                for k, (name, prob, level) in enumerate(sub_policy):
                    apply_seed, op_seed = _split(tf.random.experimental.stateless_fold_in(ops_seed, k), 2)
                    apply = tf.random.stateless_uniform([], apply_seed) < prob
                    im = tf.cond(apply, lambda im=im, name=name, level=level, op_seed=op_seed:
                                 ops.OPS[name](im, float(level), op_seed, hp), lambda im=im: im)
                return im
            return run

        image = tf.switch_case(choice, [make(sp) for sp in policy])
        image.set_shape([None, None, 3])
        return image


def _beta(shape, alpha, seed):
    """Beta(alpha, alpha) samples; alpha <= 0 gives 1 (no mixing)."""
    if alpha <= 0:
        return tf.ones(shape, tf.float32)
    s1, s2 = _split(seed, 2)
    a = tf.random.stateless_gamma(shape, s1, alpha=alpha, dtype=tf.float32)
    b = tf.random.stateless_gamma(shape, s2, alpha=alpha, dtype=tf.float32)
    return a / tf.maximum(a + b, 1e-12)


class MixUp(BatchAugmenter):
    """mixup: each image (and label) is blended with the image in the mirrored batch position,
    with a per-example weight lam ~ Beta(alpha, alpha). ``alpha == 0`` is the identity."""

    def __init__(self, alpha=0.2):
        if alpha < 0:
            raise UserError(f"mixup.alpha={alpha} must be >= 0")
        self.alpha = float(alpha)

    def sample(self, batch_size, height, width, seed):
        return {"lam": _beta(tf.reshape(batch_size, [1]), self.alpha, seed)}

    def apply(self, images, labels, params):
        images = tf.cast(images, tf.float32)
        labels = tf.cast(labels, tf.float32)
        lam = params["lam"]
        mixed = images * lam[:, None, None, None] + tf.reverse(images, [0]) * (1.0 - lam[:, None, None, None])
        return mixed, labels * lam[:, None] + tf.reverse(labels, [0]) * (1.0 - lam[:, None])


class CutMix(BatchAugmenter):
    """cutmix: a box from the mirrored batch position is pasted into each image. Box area
    ~ (1 - lam) with lam ~ Beta(alpha, alpha), centre uniform, clipped at the borders; each label
    is mixed by the exact pasted area of its own box. ``alpha == 0`` is the identity."""

    def __init__(self, alpha=1.0):
        if alpha < 0:
            raise UserError(f"cutmix.alpha={alpha} must be >= 0")
        self.alpha = float(alpha)

    def sample(self, batch_size, height, width, seed):
        shape = tf.reshape(batch_size, [1])
        lam_seed, y_seed, x_seed = _split(seed, 3)
        lam = _beta(shape, self.alpha, lam_seed)
        h = tf.cast(height, tf.float32)
        w = tf.cast(width, tf.float32)
        ratio = tf.sqrt(1.0 - lam)
        cy = tf.random.stateless_uniform(shape, y_seed) * h
        cx = tf.random.stateless_uniform(shape, x_seed) * w
        y0 = tf.clip_by_value(tf.round(cy - ratio * h / 2), 0.0, h)
        y1 = tf.clip_by_value(tf.round(cy + ratio * h / 2), 0.0, h)
        x0 = tf.clip_by_value(tf.round(cx - ratio * w / 2), 0.0, w)
        x1 = tf.clip_by_value(tf.round(cx + ratio * w / 2), 0.0, w)
        return {"box": tf.cast(tf.stack([y0, x0, y1, x1], 1), tf.int32)}

    def apply(self, images, labels, params):
        images = tf.cast(images, tf.float32)
        labels = tf.cast(labels, tf.float32)
        box = params["box"]
        shape = tf.shape(images)
        ys = tf.range(shape[1])[None, :, None]
        xs = tf.range(shape[2])[None, None, :]
        y0, x0, y1, x1 = (box[:, k][:, None, None] for k in range(4))
        inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        mixed = tf.where(inside[..., None], tf.reverse(images, [0]), images)
        area = tf.cast((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), tf.float32) / tf.cast(shape[1] * shape[2], tf.float32)
        return mixed, labels * (1.0 - area[:, None]) + tf.reverse(labels, [0]) * area[:, None]

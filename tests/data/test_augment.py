"""Augmenters: shapes, dtypes, ranges, identities, label mixing and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from effnet.errors import UserError
from effnet.plugins.augment import autoaugment, cutmix, mixup, ops, randaugment


def _image(seed=0, h=20, w=24):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


SEED = tf.constant([3, 4], tf.int32)


def test_every_op_keeps_shape_and_dtype():
    image = _image()
    hp = {"translate_const": 100, "cutout_const": 40, "fill": 128}
    for name, fn in ops.OPS.items():
        for level in (0.0, 5.0, 15.0):
            out = fn(image, level, SEED, hp)
            assert out.dtype == tf.uint8 and out.shape == image.shape, (name, level)


def test_level_zero_is_identity_for_geometric_and_additive_ops():
    image = _image()
    hp = {"translate_const": 100, "cutout_const": 40, "fill": 128}
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "SolarizeAdd", "Cutout"):
        assert np.array_equal(ops.OPS[name](image, 0.0, SEED, hp).numpy(), image.numpy()), name
    # Enhance ops at factor 1.0 (level 5) are the identity; solarize above 255 too.
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert np.abs(ops.OPS[name](image, 5.0, SEED, hp).numpy().astype(int) - image.numpy()).max() <= 1, name
    assert np.array_equal(ops.solarize(image, 256).numpy(), image.numpy())


def test_ops_do_what_they_say():
    image = _image()
    x = image.numpy().astype(int)
    assert np.array_equal(ops.invert(image).numpy(), 255 - x)
    assert np.array_equal(ops.posterize(image, 2).numpy(), x & 0b11000000)
    assert np.array_equal(ops.solarize(image, 128).numpy(), np.where(x < 128, x, 255 - x))
    stretched = ops.autocontrast(tf.constant(np.array([[[10, 20, 30], [110, 120, 130]]], np.uint8))).numpy()
    assert stretched.min() == 0 and stretched.max() == 255
    moved = ops.translate_x(image, 5.0).numpy()
    assert (moved[:, -5:] == 128).all() or (moved[:, :5] == 128).all()
    square = _image(1, 16, 16)
    assert np.array_equal(ops.rotate(square, 90.0).numpy(), np.rot90(square.numpy(), 1))  # counter-clockwise
    equalized = ops.equalize(image).numpy()
    assert equalized.shape == image.shape and equalized.max() > 240  # spread over the full range


def test_randaugment_shapes_determinism_and_identity():
    image = _image()
    ra = randaugment(num_layers=2, magnitude=15)
    assert (ra.num_layers, ra.magnitude, ra.level) == (2, 15.0, "image")
    outs = [ra(image, tf.constant([s, 7])).numpy() for s in range(12)]
    assert all(o.dtype == np.uint8 and o.shape == (20, 24, 3) for o in outs)
    assert np.array_equal(ra(image, tf.constant([5, 7])).numpy(), outs[5])
    assert len({o.tobytes() for o in outs}) > 6  # different seeds pick different ops
    assert np.array_equal(randaugment(magnitude=0)(image, SEED).numpy(), image.numpy())
    assert np.array_equal(randaugment(num_layers=0)(image, SEED).numpy(), image.numpy())
    with pytest.raises(UserError, match=r"randaugment: unknown op 'Rotat' \(did you mean 'Rotate'\?\); ops: "):
        randaugment(ops=("Rotat",))
    graph = tf.function(lambda im, s: ra(im, s))
    assert np.array_equal(graph(image, tf.constant([5, 7])).numpy(), outs[5])


def test_autoaugment_policy_v0():
    image = _image()
    aa = autoaugment()
    outs = [aa(image, tf.constant([s, 1])).numpy() for s in range(10)]
    assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
    assert np.array_equal(aa(image, tf.constant([2, 1])).numpy(), outs[2])
    assert len({o.tobytes() for o in outs}) > 3
    assert len(ops.POLICY_V0) == 25 and all(len(p) == 2 for p in ops.POLICY_V0)
    with pytest.raises(UserError) as info:
        autoaugment(policy="v9")
    assert str(info.value).splitlines()[0] == "autoaugment.policy='v9' is unknown; policies: v0"


def _batch(b=6, c=4, h=8, w=10):
    # Each image is one constant value so pasted/mixed areas can be measured exactly.
    images = tf.constant(np.stack([np.full((h, w, 3), 20 * (k + 1), np.float32) for k in range(b)]))
    labels = tf.one_hot(tf.range(b) % c, c)
    return images, labels


def test_mixup_mixes_labels_like_images():
    images, labels = _batch()
    out_images, out_labels = mixup(alpha=0.4)(images, labels, SEED)
    np.testing.assert_allclose(out_labels.numpy().sum(1), 1.0, atol=1e-6)
    lam = (out_images.numpy()[:, 0, 0, 0] - images.numpy()[::-1, 0, 0, 0]) / (images.numpy()[:, 0, 0, 0] - images.numpy()[::-1, 0, 0, 0])
    expected = lam[:, None] * labels.numpy() + (1 - lam[:, None]) * labels.numpy()[::-1]
    np.testing.assert_allclose(out_labels.numpy(), expected, atol=1e-4)
    same_images, same_labels = mixup(alpha=0.0)(images, labels, SEED)
    assert np.array_equal(same_images.numpy(), images.numpy()) and np.array_equal(same_labels.numpy(), labels.numpy())


def test_cutmix_label_weight_is_each_examples_pasted_area():
    images, labels = _batch()
    aug = cutmix(alpha=1.0)
    params = aug.sample(6, 8, 10, SEED)
    out_images, out_labels = aug.apply(images, labels, params)
    out = out_images.numpy()
    src = images.numpy()
    areas = [(out[k, :, :, 0] == src[5 - k, 0, 0, 0]).mean() for k in range(6)]
    for k in range(6):
        if k == 5 - k:
            continue
        expected = (1 - areas[k]) * labels.numpy()[k] + areas[k] * labels.numpy()[5 - k]
        np.testing.assert_allclose(out_labels.numpy()[k], expected, atol=1e-6)
    assert len(set(np.round(areas, 4))) > 1  # per example, not one area for the batch
    np.testing.assert_allclose(out_labels.numpy().sum(1), 1.0, atol=1e-6)
    assert np.array_equal(aug.sample(6, 8, 10, SEED)["box"].numpy(), params["box"].numpy())
    none_images, none_labels = cutmix(alpha=0.0)(images, labels, SEED)
    assert np.array_equal(none_images.numpy(), images.numpy()) and np.array_equal(none_labels.numpy(), labels.numpy())


def test_augmenters_are_registered_and_gin_configurable():
    import gin

    from effnet.registry import get_registry

    registry = get_registry()
    for name in ("randaugment", "autoaugment", "mixup", "cutmix"):
        assert name in registry.names("augmenter")
    for name in ("demo", "tfrecord", "folder", "tfds"):
        assert name in registry.names("dataset")
    gin.parse_config("randaugment.magnitude = 9\nmixup.alpha = 0.3")
    ra = registry.get("augmenter", "randaugment")(num_layers=3)
    assert (ra.num_layers, ra.magnitude) == (3, 9.0)
    assert registry.get("augmenter", "mixup")().alpha == 0.3
    assert registry.get("augmenter", "cutmix")(alpha=0.0).level == "batch"


def test_plugin_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, effnet.plugins.data, effnet.plugins.augment; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_factories_survive_their_implementation_modules_loading():
    # A submodule named like a factory would replace the factory on the package once imported.
    import effnet.plugins.augment as aug_pkg
    import effnet.plugins.augment.augmenters  # noqa: F401
    import effnet.plugins.data as data_pkg
    import effnet.plugins.data.shapes  # noqa: F401

    assert {k: callable(v) and not hasattr(v, "__path__") and not hasattr(v, "__file__")
            for k, v in {**aug_pkg.effnet_augmenters(), **data_pkg.effnet_datasets()}.items()} == dict.fromkeys(
        ["randaugment", "autoaugment", "mixup", "cutmix", "demo", "tfrecord", "folder", "tfds"], True)

"""`--from-weights imagenet`: keras.applications' ImageNet weights through Keras' own cache.

Nothing is downloaded: each test points KERAS_HOME at a folder it fills itself with a weights
file written from a keras.applications model (weights=None) under the exact name Keras would
download, in the legacy HDF5 layout of Keras' downloads; connecting to the network fails the test.
"""

from __future__ import annotations

import socket

import h5py
import numpy as np
import pytest

from effnet.errors import UserError
from tests import charfolder
from tests.clitools import run_inprocess

KERAS_NAME = "efficientnetv2-b0.h5"


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails (as on a machine without network)."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def keras_weights(tmp_path_factory):
    """KERAS_HOME/models/efficientnetv2-b0.h5 as keras.applications stores it (random weights)."""
    import keras

    keras.utils.set_random_seed(7)
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    reference = keras.applications.EfficientNetV2B0(weights=None, include_top=True, classes=1000,
                                                    input_shape=(32, 32, 3), classifier_activation=None)
    full = home / "full.h5"
    reference.save(full)  # legacy full-model HDF5; Keras' downloads hold its model_weights group at the root
    with h5py.File(full, "r") as src, h5py.File(home / "models" / KERAS_NAME, "w") as dst:
        for key, value in src["model_weights"].attrs.items():
            dst.attrs[key] = value
        for name in src["model_weights"]:
            src.copy(src["model_weights"][name], dst, name)
    full.unlink()
    stem = np.array(reference.get_layer("stem_conv").kernel.value)
    keras.backend.clear_session()
    return home, stem


def test_the_file_keras_would_download():
    from effnet.plugins.models.keras_import import keras_weights_origin
    from effnet.plugins.models.specs import get_variant

    name, url, md5 = keras_weights_origin(get_variant("efficientnet_v2_b0"))
    assert name == KERAS_NAME and url.endswith("/efficientnet_v2/" + KERAS_NAME) and url.startswith("https://")
    assert md5 and len(md5) in (32, 64)  # Keras' published hash, checked on download
    name, url, _ = keras_weights_origin(get_variant("efficientnet_b3"))
    assert name == "efficientnetb3.h5" and url.endswith("/" + name)
    with pytest.raises(UserError, match=r"^keras.applications has no ImageNet weights for efficientnet_v2_xl; those exist for "):
        keras_weights_origin(get_variant("efficientnet_v2_xl"))


def test_weights_come_from_keras_cache(keras_weights, monkeypatch, offline):
    from effnet.plugins.models.keras_import import imagenet_weights_file
    from effnet.plugins.models.specs import get_variant

    home, _ = keras_weights
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert imagenet_weights_file(get_variant("efficientnet_v2_b0")) == str(home / "models" / KERAS_NAME)


def test_offline_without_a_cached_file_is_one_line(tmp_path, monkeypatch, offline):
    from effnet.plugins.models.keras_import import imagenet_weights_file
    from effnet.plugins.models.specs import get_variant

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        imagenet_weights_file(get_variant("efficientnet_b0"))
    message = str(info.value)
    assert message.startswith("cannot fetch keras.applications' ImageNet weights efficientnetb0.h5 from https://")
    assert "put the file into $KERAS_HOME/models/" in message and "\n" not in message


@pytest.mark.slow
def test_finetune_an_image_folder_from_imagenet_weights(keras_weights, tmp_path, monkeypatch, capsys, offline):
    """gin/finetune.gin as the README runs it (plus test-size bindings): frozen backbone, new head."""
    home, stem = keras_weights
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    charfolder.build(tmp_path / "photos", {"train": 6, "validation": 2})
    result = run_inprocess(capsys, "train", "--gin", "finetune", "--data-dir", "photos/", "--model-dir", "runs/finetune",
                           "--gin-param", "train.image_size = 32", "--gin-param", "train.eval_image_size = 32",
                           "--gin-param", "train.epochs = 1", "--gin-param", "train.batch_size = 8")
    assert result.code == 0, result.err

    from tests.engine.runs import checkpoint_tensors
    from effnet.checkpoint import latest_checkpoint

    tensors = checkpoint_tensors(latest_checkpoint(tmp_path / "runs" / "finetune").path)
    kernels = {tuple(v.shape): v for k, v in tensors.items() if k.startswith("model_variables/")}
    assert any(np.array_equal(v, stem) for v in tensors.values()), "the frozen stem must hold the ImageNet weights"
    assert (1280, 4) in kernels  # a new 4-class classifier on the 1280-channel head


def test_imagenet_for_a_model_without_a_weight_loader():
    import keras

    from effnet.weights import load_weights

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(UserError, match=r"^--from-weights imagenet: this model's plugin has no weight loader; pass a weights file"):
        load_weights(model, "imagenet", keras_loader=None)

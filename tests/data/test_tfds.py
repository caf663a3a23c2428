"""The TFDS source on a tiny dataset prepared offline, and imagenet2012's manual_dir errors."""

from __future__ import annotations

import numpy as np
import pytest

import effnet.data as D
from effnet.errors import UserError


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
    import tensorflow_datasets as tfds

    class EffnetTinyDs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9), "validation": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((12, 10, 3), 40 * (i % 3 + 1), np.uint8), "label": i % 3}

    root = tmp_path_factory.mktemp("tfds")
    builder = EffnetTinyDs(data_dir=str(root))
    builder.download_and_prepare()
    return builder, str(root)


def test_tfds_by_name_and_by_folder(tiny_builder):
    builder, root = tiny_builder
    for source in (D.TFDSSource(builder_dir=str(builder.data_dir)), D.TFDSSource(name="effnet_tiny_ds", data_dir=root)):
        info = source.info()
        assert (info.num_classes, info.class_names, info.num_examples) == (3, ["a", "b", "c"], {"train": 9, "validation": 3})
        assert len(source.files("train")) == 1
        batches = list(D.eval_dataset(source, image_size=8, batch_size=4))
        labels = np.concatenate([b["label"].numpy() for b in batches])
        pixels = np.concatenate([b["image"].numpy()[:, 0, 0, 0] for b in batches])
        assert sorted(labels.tolist()) == [0, 1, 2]
        assert all(p == 40 * (l + 1) for p, l in zip(pixels, labels))  # PNG-encoded by TFDS: lossless
    train = next(iter(D.train_dataset(source, image_size=8, batch_size=4, steps=1, epoch=0)))
    assert train["image"].shape == (4, 8, 8, 3) and train["label"].shape == (4, 3)


def test_tfds_errors(tiny_builder, tmp_path):
    _, root = tiny_builder
    with pytest.raises(UserError, match=r"^unknown TFDS dataset 'effnet_tiny_dz' \(did you mean 'effnet_tiny_ds'\?\)"):
        D.TFDSSource(name="effnet_tiny_dz", data_dir=root)
    with pytest.raises(UserError, match=r"has no feature 'lable' \(did you mean 'label'\?\); set tfds.image_key / tfds.label_key$"):
        D.TFDSSource(name="effnet_tiny_ds", data_dir=root, label_key="lable")
    with pytest.raises(UserError, match=r"^TFDS dataset 'imagenet2012' is not prepared in .*; prepare it once \(set tfds.data_dir "
                                        r"and ILSVRC2012_img_\{train,val\}.tar in tfds.manual_dir"):
        D.TFDSSource(name="imagenet2012", data_dir=str(tmp_path / "tfds"))
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(UserError, match=r"^tfds imagenet2012 needs ILSVRC2012_img_train.tar in manual_dir .*manual; "):
        D.TFDSSource(name="imagenet2012", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))

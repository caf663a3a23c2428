"""Your own images, first class: the README's command on an image folder unlike the demo data.

Rendered letters b, d, p, q in five fonts, several sizes, shades and aspect ratios, where a
horizontal flip turns one class into another; `photos/<split>/<class>/` as a user would have it.
The run is the README's `effnet train --gin image_folder --data-dir photos/ --model-dir runs/photos`
(15 epochs, 64 px, a half-size EfficientNetV2-B0, the whole frame in evaluation) with the README's
training crop for text, `input_pipeline.area_range = (0.6, 1.0)`. Measured here with seeds 0, 1, 2:
90.6%, 83.8%, 92.5% validation top-1; the README documents >= 80%. With the recipe's default crop
for centred objects, (0.35, 1.0), the same runs ended anywhere between 41% and 86%: a crop that cuts
a stroke off turns b into o, and which crops a seed draws decides the run.
"""

import json

import pytest

from tests import charfolder
from tests.clitools import run_inprocess

DOCUMENTED_TOP1 = 0.80


@pytest.mark.slow
def test_readme_command_trains_an_image_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    charfolder.build(tmp_path / "photos", {"train": 150, "validation": 40}, seed=0)
    result = run_inprocess(capsys, "train", "--gin", "image_folder", "--data-dir", "photos/", "--model-dir", "runs/photos",
                           "--gin-param", "input_pipeline.area_range = (0.6, 1.0)")
    assert result.code == 0, result.err
    final = json.loads((tmp_path / "runs" / "photos" / "report.json").read_text())["final"]
    best = max(final["val_top1"], final["val_ema_top1"])
    assert best >= DOCUMENTED_TOP1, final
    assert (tmp_path / "runs" / "photos" / "labels.txt").read_text().split() == list(charfolder.CLASSES)

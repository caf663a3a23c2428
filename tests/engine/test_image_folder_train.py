"""Your own images, first class: the README's command on an image folder unlike the demo data.

Rendered letters b, d, p, q in five fonts, several sizes, shades and aspect ratios, where a
horizontal flip turns one class into another; `photos/<split>/<class>/` as a user would have it.
The run is exactly the README's `effnet train --gin image_folder --data-dir photos/ --model-dir
runs/photos` (15 epochs, 64 px, a half-size EfficientNetV2-B0, the whole frame in evaluation).
Measured here: 86.3% validation top-1 in 57 s on an idle 2-core machine (92.5% when evaluation keeps
only the whole short side); the README documents >= 80%.
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
    result = run_inprocess(capsys, "train", "--gin", "image_folder", "--data-dir", "photos/", "--model-dir", "runs/photos")
    assert result.code == 0, result.err
    final = json.loads((tmp_path / "runs" / "photos" / "report.json").read_text())["final"]
    best = max(final["val_top1"], final["val_ema_top1"])
    assert best >= DOCUMENTED_TOP1, final
    assert (tmp_path / "runs" / "photos" / "labels.txt").read_text().split() == list(charfolder.CLASSES)

"""Your own images: a single folder of class folders split reproducibly, and `effnet data stats`
suggesting an image size from the images' sizes and aspect ratios."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import effnet.data as D
from effnet.cli.main import main
from effnet.data.convert import suggest_image_size
from effnet.errors import UserError
from tests import charfolder


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    return charfolder.build(tmp_path_factory.mktemp("flat") / "photos", {"all": 40}, seed=1, layout="flat")


def test_class_folders_without_splits_are_split_reproducibly(flat, tmp_path):
    source = D.FolderSource(str(flat))
    assert source.flat and source.class_names == list(charfolder.CLASSES)
    train, validation = source.files("train"), source.files("validation")
    assert not set(train) & set(validation) and len(train) + len(validation) == 160
    assert 0.1 <= len(validation) / 160 <= 0.3  # validation_fraction 0.2, by hash
    for char in charfolder.CLASSES:  # every class appears in both splits
        assert any(f"/{char}/" in f for f in validation) and any(f"/{char}/" in f for f in train)
    assert D.FolderSource(str(flat)).files("validation") == validation  # the same split every time

    # adding and removing images moves no other file between the splits
    copy = Path(shutil.copytree(flat, tmp_path / "photos"))
    (copy / "b" / "all_0000.png").unlink()
    shutil.copy(flat / "d" / "all_0001.jpg", copy / "d" / "new_0001.jpg")
    moved = D.FolderSource(str(copy))
    names = lambda files: {Path(f).parent.name + "/" + Path(f).name for f in files}  # noqa: E731
    assert names(moved.files("validation")) - {"d/new_0001.jpg"} == names(validation) - {"b/all_0000.png"}

    # another seed, another split; fraction 0 keeps everything for training
    assert D.FolderSource(str(flat), split_seed=1).files("validation") != validation
    everything = D.FolderSource(str(flat), validation_fraction=0.0)
    assert len(everything.files("train")) == 160 and everything.info().num_examples == {"train": 160}
    with pytest.raises(UserError, match=r"folder.validation_fraction=1.0 must be in \[0, 1\)"):
        D.FolderSource(str(flat), validation_fraction=1.0)


def test_data_stats_reports_aspect_and_suggests_a_size(flat, capsys):
    code, out, _ = run_cli(["data", "stats", str(flat)], capsys)
    assert code == 0
    assert "classes: 4 (b, d, p, q)" in out and "aspect (width/height) " in out
    assert "suggested image size: 64 px (median short side " in out
    code, out, _ = run_cli(["data", "stats", str(flat), "--json"], capsys)
    stats = json.loads(out)
    assert set(stats["splits"]) == {"train", "validation"}
    low, median, high = stats["splits"]["train"]["aspect"]
    assert 0.4 < low <= median <= high < 2.5
    assert stats["suggested_image_size"] == 64 and 64 <= stats["median_short_side"] < 96


def test_suggested_size_rule():
    assert suggest_image_size([]) == {"median_short_side": None, "suggested_image_size": None, "wide_or_tall_share": None}
    photos = [(375, 500)] * 9 + [(3000, 4000)]  # typical 4:3 photos: median short side 375
    assert suggest_image_size(photos) == {"median_short_side": 375, "suggested_image_size": 352, "wide_or_tall_share": 0.0}
    assert suggest_image_size([(4000, 6000)] * 3)["suggested_image_size"] == 384  # capped at V2-S's eval size
    assert suggest_image_size([(20, 28)])["suggested_image_size"] == 32  # never below 32
    assert suggest_image_size([(100, 300), (100, 100)])["wide_or_tall_share"] == 0.5

"""The README's first command, exactly: the quickstart reaches >= 90% validation top-1 on the demo data."""

import json

import pytest

from tests.engine import runs

pytestmark = pytest.mark.slow


def test_quickstart_reaches_90_percent(tmp_path):
    result = runs.run(["train", "--gin", "quickstart", "--model-dir", str(tmp_path / "quickstart")],
                      env={"EFFNET_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = json.loads((tmp_path / "quickstart" / "report.json").read_text())["final"]
    print(f"quickstart: {final['seconds']:.0f} s, val top-1 {final['val_top1']:.4f}, EMA {final['val_ema_top1']:.4f}")
    assert final["val_top1"] >= 0.9 and final["val_ema_top1"] >= 0.9
    assert "val_ema_top1" in result.stdout  # the printed summary
    assert (tmp_path / "quickstart" / "training_curves.png").stat().st_size > 10_000

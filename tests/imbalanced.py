"""A deliberately imbalanced image folder: noisy colour patches of three overlapping hues, where
'amber' (between the other two) has 10x fewer training images; the validation split is balanced."""

from __future__ import annotations

from pathlib import Path

MEANS = {"amber": (180, 120, 60), "crimson": (210, 70, 70), "olive": (140, 160, 60)}
TRAIN = {"crimson": 100, "olive": 100, "amber": 10}
VALIDATION = {"crimson": 30, "olive": 30, "amber": 30}


def build(root: Path, train=TRAIN, validation=VALIDATION, seed: int = 0, size: int = 32) -> Path:
    """``root/<split>/<class>/NNNN.png``: a per-image hue drawn around the class's mean, plus pixel noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, counts in (("train", train), ("validation", validation)):
        for name, n in counts.items():
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.asarray(MEANS[name], float) + rng.normal(0, 22.0, 3)
                image = base + rng.normal(0, 30.0, (size, size, 3))
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return Path(root)

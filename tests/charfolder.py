"""An image folder unlike the demo data: rendered letters b, d, p, q (each one a mirror image of
another, so a horizontal flip changes the class) in several fonts, sizes, colours and aspect ratios."""

from __future__ import annotations

import random
from pathlib import Path

CLASSES = ("b", "d", "p", "q")


def fonts() -> list[str]:
    """TrueType fonts shipped with matplotlib (a test dependency): the same on every machine."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSans-Oblique.ttf", "STIXGeneral.ttf")
    found = [str(folder / n) for n in names if (folder / n).is_file()]
    assert len(found) >= 3, f"matplotlib's fonts not found in {folder}"
    return found


def render(char: str, font_path: str, rng: random.Random):
    from PIL import Image, ImageDraw, ImageFont

    width, height = rng.randint(48, 112), rng.randint(48, 112)
    paper = rng.randint(170, 255)  # dark ink on light paper of varying shade and tint, like scanned text
    bg = tuple(min(255, paper + rng.randint(-15, 15)) for _ in range(3))
    ink = rng.randint(0, 90)
    fg = tuple(max(0, ink + rng.randint(-20, 20)) for _ in range(3))
    image = Image.new("RGB", (width, height), bg)
    font = ImageFont.truetype(font_path, size=int(min(width, height) * rng.uniform(0.55, 0.9)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = (width - (right - left)) / 2 - left + rng.uniform(-0.1, 0.1) * width
    y = (height - (bottom - top)) / 2 - top + rng.uniform(-0.1, 0.1) * height
    draw.text((x, y), char, font=font, fill=fg)
    return image.rotate(rng.uniform(-8, 8), fillcolor=bg)


def build(root: Path, per_class: dict[str, int], seed: int = 0, layout: str = "splits") -> Path:
    """Write ``root/<split>/<class>/NNN.jpg|png`` (layout 'splits') or ``root/<class>/`` ('flat')."""
    rng = random.Random(seed)
    faces = fonts()
    for split, count in per_class.items():
        for char in CLASSES:
            folder = root / split / char if layout == "splits" else root / char
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = render(char, faces[i % len(faces)], rng)
                name = f"{split}_{i:04d}"
                if i % 3 == 0:
                    image.save(folder / f"{name}.png")
                else:
                    image.save(folder / f"{name}.jpg", quality=90)
    return root

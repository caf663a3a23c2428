"""Image files: which extensions count as images, and finding them from files, folders and globs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from effnet.errors import UserError
from effnet.paths import what_is

#: Extensions treated as images in folders and globs (JPEG, PNG, BMP, GIF: what tf.io.decode_image reads).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


#: The first bytes of each format tf.io.decode_image reads.
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))


def image_format(data: bytes) -> str | None:
    """'JPEG', 'PNG', 'GIF' or 'BMP' from the file's first bytes; None for anything else."""
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def check_image_bytes(data: bytes) -> str | None:
    """None when ``data`` starts like an image effnet decodes, else what is wrong, in words."""
    if not data:
        return "is empty"
    if image_format(data) is None:
        return "is not an image (no JPEG, PNG, BMP or GIF header)"
    return None


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def images_in(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted), skipping hidden files and folders."""
    exts = tuple(e.lower() for e in extensions)
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def find_images(inputs: Iterable[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Files named by ``inputs``: files as given, folders searched recursively, globs expanded.

    Inside folders and globs only files with an image extension count; a file named explicitly is
    taken whatever its name (a non-image then fails to decode and is reported). A path that does
    not exist (and matches nothing as a glob) or a folder without images is a UserError.
    """
    import glob

    exts = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    inputs = list(inputs)
    if not inputs:
        raise UserError("no images given: pass image files, folders or globs, e.g. `effnet predict --model-dir RUN photos/`")
    for text in inputs:
        path = Path(text)
        if path.is_file():
            add(path)
        elif path.is_dir():
            images = images_in(path, exts)
            if not images:
                raise UserError(f"folder {text!r} has no images ({', '.join(exts)}), searched recursively; pass another folder or the files")
            for image in images:
                add(image)
        elif _has_glob(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in exts]
            for folder in (m for m in matches if m.is_dir()):
                files += images_in(folder, exts)
            if not files:
                raise UserError(f"glob {text!r} matches no images ({', '.join(exts)}); check the pattern (quote it to let effnet expand it)")
            for image in files:
                add(image)
        elif os.path.lexists(path):  # a FIFO, a device, a symlink loop: say what it is, never read it
            raise UserError(f"image path {text!r} is {what_is(path)}, not an image file or a folder; pass image files, "
                            f"folders or globs")
        else:
            raise UserError(f"image path {text!r} does not exist; pass existing files, folders or globs")
    return found


__all__ = ["IMAGE_EXTENSIONS", "check_image_bytes", "find_images", "image_format", "images_in"]

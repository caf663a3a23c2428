"""Hostile inputs, made for real: damaged TFRecords, checkpoints and images, gin files that try to escape."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np


def jpeg(seed: int = 0, size: int = 32) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_records(folder: Path, train: int = 24, validation: int = 6, classes: int = 3, shards: int = 2) -> Path:
    """Real ImageNet-layout TFRecords of random JPEGs (labels 1-based)."""
    from effnet.data import records as rec

    examples = lambda n, base: [rec.make_example(jpeg(base + i), i % classes + 1, f"c{i % classes}", height=32,
                                                 width=32, filename=f"{base + i}.jpg") for i in range(n)]
    rec.write_shards(folder, "train", examples(train, 0), shards)
    rec.write_shards(folder, "validation", examples(validation, 1000), 1)
    rec.write_metadata(folder, [f"c{i}" for i in range(classes)], classes)
    return folder


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record's data."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append((pos + 12, length))
        pos += 16 + length
    return out


def damage_record(path: Path, index: int, nbytes: int = 64) -> None:
    """Overwrite ``nbytes`` in the middle of record ``index``'s data (its length stays intact)."""
    offset, length = record_offsets(path)[index]
    data = bytearray(path.read_bytes())
    start = offset + length // 2
    data[start:start + nbytes] = bytes(255 - b for b in data[start:start + nbytes])
    path.write_bytes(bytes(data))


def damage_length(path: Path, index: int) -> None:
    """Flip a bit in record ``index``'s length field (its header CRC no longer matches)."""
    offset, _ = record_offsets(path)[index]
    data = bytearray(path.read_bytes())
    data[offset - 12] ^= 0x01
    path.write_bytes(bytes(data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def bmp_claiming(width: int, height: int) -> bytes:
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest))


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("ckpt-*"))


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])

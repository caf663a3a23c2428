"""TFRecord files in the ImageNet layout: writing them, counting them, and their side file.

Layout (the one the ImageNet conversion scripts produce and the seed reads)::

    DATA_DIR/train-00000-of-01024 ... validation-00000-of-00128
    features: image/encoded (bytes), image/format, image/class/label (int64, 1-based),
              image/class/text (bytes), image/height, image/width, image/filename

Counting records walks the record headers and checks both CRCs of every record (a TFRecord is
``length:u64, crc(length):u32, data, crc(data):u32``, masked CRC-32C): it finds files that end in
the middle of a record (truncated copies), a damaged length (the rest of the file is unreadable)
and records whose data was overwritten (each reported by index; the records after it are still
read). That reads every byte once (CRC-32C runs at several GB/s; the disk is the limit); the result
is cached in
``effnet-dataset.json`` next to the data when the folder is writable, else in
``$EFFNET_CACHE/datasets/``; an entry is reused while the file's size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from effnet.errors import UserError
from effnet.paths import open_input
from effnet.files import write_text_atomic

META_NAME = "effnet-dataset.json"
META_FORMAT = 1


def cache_root() -> Path:
    """effnet's cache folder: ``$EFFNET_CACHE`` or ``~/.cache/effnet``."""
    root = os.environ.get("EFFNET_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "effnet"


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def _open(path: str, mode: str = "rb"):
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, mode)
    return open_input(path, "TFRecord file", mode)  # a FIFO or a device is named, never read


def _stat(path: str) -> tuple[int, float]:
    if _is_remote(path):
        import tensorflow as tf

        st = tf.io.gfile.stat(path)
        return int(st.length), float(st.mtime_nsec) / 1e9
    st = os.stat(path)
    return st.st_size, st.st_mtime


@dataclass(frozen=True)
class FileCount:
    """What a header walk found in one TFRecord file."""

    records: int  # complete records (damaged ones included: they keep their place)
    valid_bytes: int  # bytes up to the end of the last complete record
    size: int
    error: str | None = None  # why the file ends early, if it does
    bad: tuple = ()  # indices of records whose data does not match its CRC

    def as_json(self, mtime: float) -> dict:
        return {"records": self.records, "valid_bytes": self.valid_bytes, "size": self.size, "mtime": mtime,
                "error": self.error, "bad": list(self.bad), "crc": True}

    @property
    def damaged(self) -> bool:
        return bool(self.error or self.bad)


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_records(path: str, start: int = 0):
    """``(index, data or None)`` for every complete record from index ``start`` on; None = data CRC mismatch.

    Stops at a damaged header or a truncated record (what :func:`count_records` reports).
    """
    size, _ = _stat(path)
    n = pos = 0
    with _open(path) as f:
        while pos + 12 <= size:
            header = f.read(12)
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]) or pos + 16 + length > size:
                return
            if n < start:
                f.seek(pos + 12 + length + 4)
            else:
                data = f.read(length)
                (crc,) = struct.unpack("<I", f.read(4))
                yield n, (data if crc == _masked_crc(data) else None)
            pos += 16 + length
            n += 1


def count_records(path: str) -> FileCount:
    """Count the complete records of one TFRecord file and check the CRCs of every record."""
    size, _ = _stat(path)
    n = pos = 0
    bad = []
    with _open(path) as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                return FileCount(n, pos, size, f"file ends inside the header of record {n} at byte {pos} of {size}", tuple(bad))
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                return FileCount(n, pos, size, f"the length of record {n} at byte {pos} is damaged (CRC mismatch); "
                                               f"nothing after it can be read", tuple(bad))
            end = pos + 12 + length + 4
            if end > size:
                return FileCount(n, pos, size, f"record {n} at byte {pos} claims {length} bytes but the file has {size} bytes", tuple(bad))
            remaining = length
            crc_input = []
            while remaining:  # read in blocks so a huge record does not need one huge buffer twice
                block = f.read(min(remaining, 1 << 24))
                if not block:
                    break
                crc_input.append(block)
                remaining -= len(block)
            (crc,) = struct.unpack("<I", f.read(4))
            if crc != _masked_crc(b"".join(crc_input)):
                bad.append(n)
            pos = end
            n += 1
    return FileCount(n, pos, size, None, tuple(bad))


def describe_damage(path: str, count: FileCount, limit: int = 10) -> str:
    """One phrase naming what is wrong with a file: the damaged record indices and/or the early end."""
    parts = []
    if count.bad:
        shown = ", ".join(map(str, count.bad[:limit])) + (f" and {len(count.bad) - limit} more" if len(count.bad) > limit else "")
        parts.append(f"{len(count.bad)} damaged record(s) (index {shown}: data CRC mismatch)")
    if count.error:
        parts.append(count.error)
    return f"TFRecord file {path}: " + "; ".join(parts)


class Metadata:
    """The ``effnet-dataset.json`` side file: class names and per-file record counts."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = str(data_dir)
        self.local = Path(self.data_dir) / META_NAME if not _is_remote(self.data_dir) else None
        key = hashlib.sha1(os.path.abspath(self.data_dir).encode()).hexdigest()[:16]
        self.side = cache_root() / "datasets" / f"{key}.json"
        self.data: dict = {"format": META_FORMAT, "files": {}}
        self._dirty = False
        for path in (self.local, self.side):
            if path is not None and path.is_file():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if data.get("format") == META_FORMAT:
                    self.data = data
                    self.data.setdefault("files", {})
                    break

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value) -> None:
        if self.data.get(key) != value:
            self.data[key] = value
            self._dirty = True

    def file_count(self, path: str) -> FileCount:
        """The cached count for ``path`` if its size and mtime match, else a fresh header walk."""
        name = os.path.basename(path)
        size, mtime = _stat(path)
        entry = self.data["files"].get(name)
        # Entries without "crc" were counted by headers only: count (and check) again.
        if entry and entry.get("crc") and entry.get("size") == size and abs(entry.get("mtime", -1) - mtime) < 1e-3:
            return FileCount(entry["records"], entry["valid_bytes"], size, entry.get("error"), tuple(entry.get("bad") or ()))
        count = count_records(path)
        self.data["files"][name] = count.as_json(mtime)
        self._dirty = True
        return count

    def save(self, force: bool = False) -> None:
        """Write the side file next to the data if possible, else into the cache (atomically);
        unless ``force``, only when something changed."""
        if not (self._dirty or force):
            return
        text = json.dumps(self.data, indent=1, sort_keys=True)
        for path in (self.local, self.side):
            if path is None:
                continue
            try:
                write_text_atomic(path, text)
                self._dirty = False
                return
            except OSError:
                continue


# --------------------------------------------------------------------------------------------------
# Writing


def make_example(encoded: bytes, label: int, text: str, fmt: str = "JPEG", height: int = 0, width: int = 0,
                 filename: str = "") -> bytes:
    """Serialise one image as a tf.train.Example in the ImageNet layout (``label`` is 1-based)."""
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    feature = {
        "image/encoded": b(encoded),
        "image/format": b(fmt.encode()),
        "image/class/label": i(int(label)),
        "image/class/text": b(text.encode()),
        "image/height": i(int(height)),
        "image/width": i(int(width)),
        "image/filename": b(filename.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def write_shards(out_dir: str | os.PathLike, split: str, examples: Sequence[bytes] | Iterable[bytes], num_shards: int,
                 total: int | None = None, progress=None) -> dict[str, int]:
    """Write serialised examples round-robin into ``num_shards`` files ``split-XXXXX-of-NNNNN``.

    Each file is written as ``.name.tmp`` and renamed when complete, so a crash leaves no file
    that looks finished. ``progress`` is called with the number of examples written so far.
    Returns ``{file name: records}``.
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    tmps = [out_dir / f".{n}.tmp" for n in names]
    writers = [tf.io.TFRecordWriter(str(t)) for t in tmps]
    counts = [0] * num_shards
    try:
        for k, example in enumerate(examples):
            writers[k % num_shards].write(example)
            counts[k % num_shards] += 1
            if progress is not None:
                progress(k + 1)
    except BaseException:
        for w, tmp in zip(writers, tmps):
            w.close()
            tmp.unlink(missing_ok=True)
        raise
    for w in writers:
        w.close()
    for tmp, name in zip(tmps, names):
        os.replace(tmp, out_dir / name)
    return dict(zip(names, counts))


def write_metadata(out_dir: str | os.PathLike, class_names: Sequence[str] | None, num_classes: int,
                   label_offset: int = 1, extra: dict | None = None) -> None:
    """Record class names and fresh per-file counts for every TFRecord in ``out_dir``."""
    meta = Metadata(out_dir)
    meta.set("num_classes", int(num_classes))
    meta.set("class_names", list(class_names) if class_names else None)
    meta.set("label_offset", int(label_offset))
    meta.set("written", time.strftime("%Y-%m-%dT%H:%M:%S"))
    for key, value in (extra or {}).items():
        meta.set(key, value)
    for name in sorted(os.listdir(out_dir)):
        if name.startswith(".") or name == META_NAME:
            continue
        meta.file_count(os.path.join(out_dir, name))
    meta.save(force=True)


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's and the pipeline's way to say 'skipped X')."""
    print(f"effnet: warning: {message}", file=sys.stderr, flush=True)


def check_dir(data_dir, what: str, gin_name: str) -> str:
    """A UserError unless ``data_dir`` is an existing, non-empty folder."""
    if data_dir is None or str(data_dir) == "":
        raise UserError(f"{what}: no data folder given; pass --data-dir or set {gin_name}")
    data_dir = str(data_dir)
    if _is_remote(data_dir):
        return data_dir
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise UserError(f"{what}: data folder {str(path)!r} does not exist; pass an existing --data-dir or set {gin_name}")
    if not path.is_dir():
        raise UserError(f"{what}: {str(path)!r} is a file, not a folder; pass the folder that holds the data")
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise UserError(f"{what}: data folder {str(path)!r} is empty; put the dataset there or point --data-dir elsewhere")
    return str(path)


__all__ = [
    "META_NAME",
    "FileCount",
    "Metadata",
    "cache_root",
    "check_dir",
    "count_records",
    "describe_damage",
    "iter_records",
    "make_example",
    "shard_name",
    "warn",
    "write_metadata",
    "write_shards",
]

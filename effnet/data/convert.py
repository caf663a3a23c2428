"""``effnet data``: convert an image folder into ImageNet-layout TFRecords, and dataset statistics.

Conversion keeps the bytes of RGB and grayscale JPEGs as they are (TensorFlow decodes grayscale
JPEGs to RGB). Everything else becomes an RGB JPEG (quality ``quality``), like the reference
ImageNet conversion: CMYK JPEGs are converted to RGB, PNG/BMP/GIF/TIFF/WebP are re-encoded (an
alpha channel is dropped without compositing, the same as the pipeline's decoder does; a GIF
keeps its first frame; 16-bit images are scaled to 8 bits). Images Pillow cannot read are
reported by name and then skipped or fatal (``on_error``).
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from effnet.data import records as rec
from effnet.data.balance import imbalance, remedy_hint
from effnet.data.source import SPLITS, DataSource, FolderSource, TFRecordSource
from effnet.errors import UserError
from effnet.paths import check_output, read_bytes, what_is


class BadImage(Exception):
    pass


def to_jpeg_bytes(path: str, quality: int = 95) -> tuple[bytes, int, int, bool]:
    """``(jpeg bytes, height, width, converted?)`` for one image file."""
    from PIL import Image

    try:  # a FIFO or a device named like an image is refused by name, never read
        data = read_bytes(path, "image")
    except UserError:
        raise BadImage(f"{what_is(path)}, not a regular file") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt, mode, (width, height) = img.format, img.mode, img.size
            if fmt == "JPEG" and mode in ("RGB", "L"):
                return data, height, width, False
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
            img = img.convert("RGB")
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=quality)
            return buffer.getvalue(), height, width, True
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad files
        if type(exc).__name__ == "UnidentifiedImageError":
            raise BadImage("not a recognised image format") from None
        raise BadImage(f"{type(exc).__name__}: {exc}") from None


def default_shards(count: int, per_shard: int = 1024) -> int:
    return max(1, math.ceil(count / per_shard))


def convert_folder(src: str, dst: str, *, train_shards: int | None = None, validation_shards: int | None = None,
                   on_error: str = "fail", quality: int = 95, seed: int = 0, progress=None) -> dict:
    """Write ``src`` (ROOT/<split>/<class>/<image>) as TFRecords into ``dst``; returns statistics.

    ``progress(split, total)`` must return a callable taking the number written so far.
    """
    dst_path = check_output(dst, "DST folder", folder=True, inputs=[src])  # never inside SRC, a device, a run
    source = FolderSource(src, gin_name="SRC")
    if dst_path.exists() and any(n.startswith(("train-", "validation-")) for n in os.listdir(dst_path)):
        raise UserError(f"{dst} already holds TFRecord files; convert into an empty folder or delete them first")
    existed = dst_path.exists()
    written: list[Path] = []
    try:
        stats = _convert_splits(source, src, dst_path, written, train_shards, validation_shards, on_error, quality,
                                seed, progress)
    except BaseException:  # a refusal leaves neither records nor an empty DST behind
        for path in written:
            path.unlink(missing_ok=True)
        if not existed:
            try:
                dst_path.rmdir()
            except OSError:
                pass
        raise
    return stats


def _convert_splits(source, src, dst_path: Path, written: list, train_shards, validation_shards, on_error, quality,
                    seed, progress) -> dict:
    dst_path.mkdir(parents=True, exist_ok=True)
    names = source.class_names
    label_of = {name: i for i, name in enumerate(names)}
    stats = {"classes": len(names), "splits": {}, "skipped": [], "converted": 0}
    for split in SPLITS:
        if split not in source.splits():
            continue
        files = source.files(split)
        order = np.random.default_rng(seed).permutation(len(files))
        shards = (train_shards if split == "train" else validation_shards) or default_shards(len(files))
        shards = min(shards, len(files))
        tick = progress(split, len(files)) if progress else None
        per_class: Counter = Counter()

        def examples():
            for done, k in enumerate(order, 1):
                path = files[k]
                cls = os.path.basename(os.path.dirname(path))
                try:
                    encoded, height, width, converted = to_jpeg_bytes(path, quality)
                except BadImage as exc:
                    if on_error == "fail":
                        raise UserError(f"{path}: not a readable image ({exc}); remove it, or pass --on-error skip") from None
                    rec.warn(f"skipping {path}: not a readable image ({exc})")
                    stats["skipped"].append(path)
                    continue
                finally:
                    if tick:
                        tick(done)
                stats["converted"] += int(converted)
                per_class[cls] += 1
                yield rec.make_example(encoded, label_of[cls] + 1, cls, "JPEG", height, width, os.path.relpath(path, src))
            if files and not sum(per_class.values()):  # all skipped: an empty split that looks valid
                raise UserError(f"none of the {len(files)} image(s) of {split} in {src} could be read (each is named "
                                f"above); nothing was written: fix or replace the images")

        counts = rec.write_shards(dst_path, split, examples(), shards)
        written.extend(dst_path / name for name in counts)
        stats["splits"][split] = {"examples": sum(counts.values()), "files": len(counts),
                                  "per_class": [per_class.get(n, 0) for n in names]}
    rec.write_metadata(dst_path, names, len(names), label_offset=1)
    return stats


def dataset_stats(source: DataSource, check: bool = False, sample: int = 256, progress=None) -> dict:
    """Counts per split and class, image sizes of a sample, and (``check``) every unreadable record."""
    import tensorflow as tf

    info = source.info()
    out = {"num_classes": info.num_classes, "class_names": info.class_names, "splits": {}}
    all_sizes: list[tuple[int, int]] = []
    for split, total in info.num_examples.items():
        files = source.files(split)
        if files and type(source).read_files is not DataSource.read_files:
            ds = source.read_files(split, tf.data.Dataset.from_tensor_slices(files))
        else:
            ds = source.records(split).map(lambda e, l: (e, l, tf.constant("")))
        per_class: Counter = Counter()
        sizes, bad, out_of_range = [], [], []
        # Damaged TFRecords (found when the files were counted): records whose CRC fails are read as
        # empty placeholders; a damaged length or a truncation ends the file early.
        damaged = getattr(source, "damaged", {})
        damaged_names = {f"{f} record {i}" for f, c in damaged.items() for i in c.bad}
        for f in files or []:
            if f in damaged and damaged[f].error:
                bad.append(f"{f}: {damaged[f].error}")
        tick = progress(split, total) if progress else None
        seen = 0
        if not check:  # labels only: do not ship image bytes to Python
            ds_labels = ds.map(lambda e, l, o: l).batch(4096)
            for labels in ds_labels.as_numpy_iterator():
                per_class.update(labels.tolist())
                seen += len(labels)
                if tick:
                    tick(seen)
        for encoded, label, origin in ds.take(total if check else sample).as_numpy_iterator():
            label = int(label)
            if check:
                per_class[label] += 1
                seen += 1
                if tick:
                    tick(seen)
            if check and not encoded and origin.decode() in damaged_names:
                bad.append(f"{origin.decode()}: damaged record (data CRC mismatch)")
                continue
            try:
                shape = tf.io.decode_image(encoded, channels=3, expand_animations=False).shape
                sizes.append((int(shape[0]), int(shape[1])))
            except tf.errors.OpError as exc:
                bad.append(f"{origin.decode()}: {str(exc).splitlines()[0][:120]}")
            if not 0 <= label < info.num_classes:
                out_of_range.append(f"{origin.decode()}: label {label}")
        for label in per_class:
            if not 0 <= label < info.num_classes and not check:
                out_of_range.append(f"label {label} ({per_class[label]} records)")
        counts = [per_class.get(i, 0) for i in range(info.num_classes)]
        all_sizes += sizes
        hs = [s[0] for s in sizes] or [0]
        ws = [s[1] for s in sizes] or [0]
        aspects = [w / h for h, w in sizes if h > 0] or [0.0]
        out["splits"][split] = {
            "examples": total, "files": len(files) if files else None,
            "per_class_min": min(counts) if counts else 0, "per_class_max": max(counts) if counts else 0,
            "empty_classes": [info.class_names[i] if info.class_names else i for i, c in enumerate(counts) if c == 0][:20],
            "height": [min(hs), int(np.median(hs)), max(hs)], "width": [min(ws), int(np.median(ws)), max(ws)],
            "aspect": [round(min(aspects), 3), round(float(np.median(aspects)), 3), round(max(aspects), 3)],
            "sampled": len(sizes), "bad_records": bad, "labels_out_of_range": out_of_range,
            "per_class": counts, "imbalance_ratio": imbalance(counts)["ratio"],
        }
    out.update(suggest_image_size(all_sizes))
    train = out["splits"].get("train")
    out["class_balance_hint"] = remedy_hint(train["per_class"], info.class_names) if train else None
    return out


#: Image sizes :func:`suggest_image_size` chooses from; the largest is V2-S's evaluation size.
SIZE_STEP, MAX_SUGGESTED_SIZE = 32, 384


def suggest_image_size(sizes: list[tuple[int, int]]) -> dict:
    """An image size for ``train.image_size`` from decoded ``(height, width)`` samples.

    The median short side, rounded down to a multiple of 32 and capped at 384: larger inputs
    would only upscale most images, and the cost of a step grows with the square of the size.
    Also reports the share of images whose aspect ratio is beyond 4:3, which the square centre
    crop of evaluation cuts at the long side.
    """
    if not sizes:
        return {"median_short_side": None, "suggested_image_size": None, "wide_or_tall_share": None}
    short = float(np.median([min(h, w) for h, w in sizes]))
    size = int(min(MAX_SUGGESTED_SIZE, max(SIZE_STEP, short // SIZE_STEP * SIZE_STEP)))
    skewed = sum(1 for h, w in sizes if max(h, w) > 4 / 3 * min(h, w) + 1e-9) / len(sizes)
    return {"median_short_side": int(short), "suggested_image_size": size, "wide_or_tall_share": round(skewed, 3)}


def class_balance_line(counts, class_names, ratio, shown: int = 3) -> str:
    """Class balance in one line: the largest and smallest classes and the ratio between them."""
    names = list(class_names) if class_names else [str(i) for i in range(len(counts))]
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    largest = ", ".join(f"{names[i]} {counts[i]}" for i in order[:shown])
    smallest = ", ".join(f"{names[i]} {counts[i]}" for i in order[::-1][:shown])
    ratio_text = f"{ratio:.1f}x" if ratio is not None else "n/a"
    return f"class balance: largest {largest}; smallest {smallest}; largest/smallest {ratio_text}"


def stats_lines(stats: dict) -> list[str]:
    lines = [f"classes: {stats['num_classes']}"
             + (f" ({', '.join(map(str, stats['class_names'][:10]))}{', ...' if len(stats['class_names']) > 10 else ''})"
                if stats["class_names"] else "")]
    for split, s in stats["splits"].items():
        files = f" in {s['files']} files" if s["files"] else ""
        lines.append(f"{split}: {s['examples']} examples{files}; per class {s['per_class_min']}-{s['per_class_max']}; "
                     f"image height min/median/max {s['height'][0]}/{s['height'][1]}/{s['height'][2]}, width "
                     f"{s['width'][0]}/{s['width'][1]}/{s['width'][2]}, aspect (width/height) "
                     f"{s['aspect'][0]:.2f}/{s['aspect'][1]:.2f}/{s['aspect'][2]:.2f} (of {s['sampled']} decoded)")
        if s["empty_classes"]:
            lines.append(f"  classes without examples: {', '.join(map(str, s['empty_classes']))}")
        if s.get("per_class"):
            lines.append("  " + class_balance_line(s["per_class"], stats["class_names"], s.get("imbalance_ratio")))
        for item in s["bad_records"]:
            lines.append(f"  unreadable: {item}")
        for item in s["labels_out_of_range"]:
            lines.append(f"  label outside [0, {stats['num_classes']}): {item}")
    if stats.get("class_balance_hint"):
        lines.append(stats["class_balance_hint"])
    size = stats.get("suggested_image_size")
    if size:
        lines.append(f"suggested image size: {size} px (median short side {stats['median_short_side']} px): "
                     f"--gin-param 'train.image_size = {size}' --gin-param 'train.eval_image_size = {size}'; "
                     f"smaller trains faster (a step costs about (size/64)^2 times a 64 px step)")
        if stats["wide_or_tall_share"] and stats["wide_or_tall_share"] > 0.1:
            lines.append(f"  {100 * stats['wide_or_tall_share']:.0f}% of the images are wider or taller than 4:3; "
                         f"the square crops cut their long side (input_pipeline.aspect_ratio_range, eval_crop_fraction)")
    return lines


__all__ = ["class_balance_line", "convert_folder", "dataset_stats", "default_shards", "stats_lines", "suggest_image_size", "to_jpeg_bytes", "TFRecordSource"]

"""Random PyTorch-layout weights that the fixture generator and the tests both make, bit for bit.

A parity fixture (``fixtures/torch/*.json``, written by ``scripts/make_torch_fixtures.py`` from the
real timm / efficientnet_pytorch code) stores the source model's tensor names, shapes and dtypes,
a seed, the test images' seed and the logits the PyTorch model computed on them, not the weights:
:func:`state_dict` rebuilds the same weights from the seed (numpy's PCG64 ``random()``, whose stream
numpy keeps stable), so the fixtures stay a few kB while the tests import full-size models.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
MEAN_STD = {  # timm / efficientnet_pytorch preprocessing of [0, 1] images
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _uniform(name: str, seed: int, size: int) -> np.ndarray:
    """U[0, 1) values for tensor ``name``: a PCG64 stream keyed by the seed and the name's CRC-32."""
    return np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())])).random(size)


def tensor(name: str, shape, dtype: str, seed: int, names, bn_stats=None) -> np.ndarray:
    """A random value for one state-dict entry.

    Random networks either blow up or lose the input within a few dozen blocks, and then every
    image gets the same logits. So BatchNorm statistics are calibrated, per layer: ``bn_stats``
    maps a BN module to (mean, variance) of its input on the test images, measured by the generator
    in PyTorch (one number each per layer: the fixture stays small); each channel's statistics are
    those times a random factor.
    """
    shape = tuple(shape)
    size = math.prod(shape)
    if dtype.startswith("int"):
        return np.zeros(shape, np.int64)  # num_batches_tracked
    u = _uniform(name, seed, size).reshape(shape)
    module, leaf = name.rsplit(".", 1)
    is_bn = module + ".running_var" in names
    mean, var = (bn_stats or {}).get(module, (0.0, 1.0))
    if leaf == "running_var":
        values = var * (0.5 + u)
    elif leaf == "running_mean":
        values = mean + 0.2 * math.sqrt(var) * (2 * u - 1)
    elif is_bn and leaf == "weight":
        values = 0.5 + u
    elif leaf == "bias":
        values = 0.2 * (2 * u - 1)
    else:  # conv / linear weights: uniform with variance 2 / fan_in
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        values = (2 * u - 1) * math.sqrt(6.0 / fan_in)
    return values.astype(np.float32)


def state_dict(fixture: dict) -> dict[str, np.ndarray]:
    names = [t[0] for t in fixture["tensors"]]
    stats = {k: tuple(v) for k, v in fixture.get("bn_stats", {}).items()}
    return {name: tensor(name, shape, dtype, fixture["seed"], set(names), stats) for name, shape, dtype in fixture["tensors"]}


def images(fixture: dict) -> np.ndarray:
    """The test images: ``[batch, size, size, 3]`` RGB in [0, 255] (float32)."""
    rng = np.random.Generator(np.random.PCG64(fixture["image_seed"]))
    size, batch = fixture["image_size"], fixture["batch"]
    # 4 x 4 blocks of random colours plus noise: images that differ in what a global average pool keeps
    # (pure noise images all pool to about the same features, so every image would get the same logits)
    blocks = np.kron(rng.random((batch, 4, 4, 3)), np.ones((1, size // 4, size // 4, 1)))
    return (np.clip(0.8 * blocks + 0.2 * rng.random((batch, size, size, 3)), 0, 1) * 255).astype(np.float32)


def torch_input(fixture: dict, batch: np.ndarray) -> np.ndarray:
    """What the PyTorch model is fed: ``(x / 255 - mean) / std``, NCHW, float32."""
    mean, std = (np.asarray(v, np.float64) for v in MEAN_STD[fixture["normalization"]])
    return np.ascontiguousarray(((batch / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    """A .safetensors file (the format is a JSON header and raw little-endian bytes)."""
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return path


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json") if not p.stem.startswith("_"))

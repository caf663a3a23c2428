"""Write the PyTorch parity fixtures (tests/models/fixtures/torch/) from the real timm and efficientnet_pytorch code.

Each fixture is one source model with random weights: its state dict's names, shapes and dtypes,
the seed that fills them (tests/models/torch_fixtures.py, shared with the tests), the test images'
seed and size, the preprocessing, and the float32 logits the PyTorch model computes in eval mode.
The tests rebuild the same weights, write them as .safetensors / .pth, import them with
``effnet import-weights`` and compare logits. Also written: ``_timm.json`` with the versions used,
timm's parameter counts of the Lite models and timm's input normalisation of every pretrained
EfficientNet tag (checked against effnet's table).

Needs torch, timm (which needs a torchvision built for the same torch) and efficientnet_pytorch:

    python -m venv /tmp/gen && /tmp/gen/bin/pip install 'torch==2.14.1' 'torchvision==0.29.1' timm efficientnet_pytorch numpy
    /tmp/gen/bin/python scripts/make_torch_fixtures.py

Re-running it with the same versions rewrites the same files.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))
import torch_fixtures as tf_  # noqa: E402

# (fixture name, source, constructor kwargs, normalization, image size)
CASES = [
    ("timm_tf_efficientnet_b0", "timm:tf_efficientnet_b0", {}, "imagenet", 64),
    ("timm_efficientnet_b0", "timm:efficientnet_b0", {}, "imagenet", 64),
    ("timm_tf_efficientnetv2_s", "timm:tf_efficientnetv2_s", {}, "inception", 64),
    ("timm_tf_efficientnetv2_b0", "timm:tf_efficientnetv2_b0", {}, "imagenet", 64),
    ("timm_tf_efficientnet_lite0", "timm:tf_efficientnet_lite0", {}, "inception", 64),
    ("timm_efficientnet_lite0", "timm:efficientnet_lite0", {}, "imagenet", 64),
    ("effnet_pytorch_b0", "efficientnet_pytorch:efficientnet-b0", {}, "imagenet", 64),
]
NUM_CLASSES = 10
SEED, IMAGE_SEED, BATCH = 2026, 7, 4


def build(source: str, kwargs: dict, image_size: int):
    family, name = source.split(":")
    if family == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)
    from efficientnet_pytorch import EfficientNet

    return EfficientNet.from_name(name, num_classes=NUM_CLASSES, image_size=image_size, **kwargs)


def calibrate(model, x, fixture) -> dict:
    """Each BatchNorm's (mean, variance) of its input on the test images, set layer by layer in one pass."""
    names = {t[0] for t in fixture["tensors"]}
    stats, hooks = {}, []

    def hook(name):
        def pre(module, inputs):
            a = inputs[0].double()
            mean = float(np.float32(a.mean(dim=(0, 2, 3)).mean()))
            var = float(np.float32(a.var(dim=(0, 2, 3), unbiased=False).mean()))
            stats[name] = (mean, var)
            for leaf in ("running_mean", "running_var"):
                key = f"{name}.{leaf}"
                value = tf_.tensor(key, getattr(module, leaf).shape, "float32", fixture["seed"], names, stats)
                getattr(module, leaf).copy_(torch.from_numpy(value))
        return pre

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(hook(name)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return stats


def versions() -> dict:
    import efficientnet_pytorch
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__, "efficientnet_pytorch": efficientnet_pytorch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def main() -> None:
    import timm

    out = tf_.FIXTURES
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name, source, kwargs, normalization, size in CASES:
        model = build(source, kwargs, size).eval()
        state = model.state_dict()
        fixture = {
            "source": source, "kwargs": kwargs, "num_classes": NUM_CLASSES, "normalization": normalization,
            "seed": SEED, "image_seed": IMAGE_SEED, "image_size": size, "batch": BATCH, "versions": versions(),
            "tensors": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()],
        }
        values = tf_.state_dict(fixture)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()}, strict=True)
        x = torch.from_numpy(tf_.torch_input(fixture, tf_.images(fixture)))
        fixture["bn_stats"] = calibrate(model, x, fixture)
        check = tf_.state_dict(fixture)
        assert all(np.array_equal(check[k], v.numpy()) for k, v in model.state_dict().items()), "calibration is not reproducible"
        with torch.no_grad():
            fixture["logits"] = model(x).double().numpy().tolist()
        (out / f"{name}.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        logits = np.asarray(fixture["logits"])
        print(f"{name}: {len(state)} tensors, top-1 {np.argmax(logits, 1).tolist()}, max |logit| {np.abs(logits).max():.3g}, "
              f"std between images {logits.std(0).mean():.3g}")

    lite = {}
    for i in range(5):
        m = timm.create_model(f"tf_efficientnet_lite{i}", pretrained=False)
        lite[f"efficientnet_lite{i}"] = {
            "timm": f"tf_efficientnet_lite{i}",
            "parameters": sum(p.numel() for p in m.parameters()),
            "buffers": sum(b.numel() for k, b in m.named_buffers() if not k.endswith("num_batches_tracked")),
        }
    norms = {}
    for tagged in timm.list_pretrained("*efficientnet*"):
        cfg = timm.models.get_pretrained_cfg(tagged)
        norms[tagged] = {"mean": list(cfg.mean), "std": list(cfg.std)}
    defaults = {n: timm.models.get_pretrained_cfg(n).tag for n in sorted({t.split(".")[0] for t in norms})}
    meta = {"versions": versions(), "lite_counts": lite, "pretrained_normalization": norms, "default_tags": defaults}
    (out / "_timm.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

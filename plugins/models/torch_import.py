"""Weights from the PyTorch world: timm and ``efficientnet_pytorch`` state dicts -> our models.

Files (:func:`read_state_dict`) are untrusted data:

* ``.safetensors`` is parsed here (8-byte header length, a JSON header, raw little-endian
  tensors): every offset and size is checked against the file before anything is read, and
  bfloat16 is widened to float32 (numpy has no bfloat16). Nothing in it can run.
* ``.pth`` / ``.pt`` / ``.bin`` are pickles. They are opened only with
  ``torch.load(..., weights_only=True)``, PyTorch's restricted unpickler, which builds tensors and
  plain containers and refuses every other global (``os.system``, ``builtins.eval`` ...) before
  calling it. A refused file is one line naming what it asked for. PyTorch is needed for these
  (``pip install 'effnet[torch]'``); the core never imports it.

Layouts (:func:`parse_layout`): timm's (``conv_stem``, ``blocks.<stage>.<block>.conv_dw`` ...; V1
incl. the ``tf_`` ports, V2, Lite) and ``efficientnet_pytorch``'s (``_conv_stem``,
``_blocks.<n>._depthwise_conv`` ...; V1, and Lite files in that layout: no ``_se_`` tensors).
The variant is detected from the block structure (stages, repeats, channels, kernels, block
types, SE), or named with ``--from timm:NAME`` / ``--from efficientnet_pytorch:efficientnet-b0``.
Every tensor is accounted for: one that no layer takes, or a layer without its tensor, is an error
naming it. Layouts are converted (OIHW -> HWIO, depthwise ``[C, 1, k, k]`` -> ``[k, k, C, 1]``,
Linear ``[out, in]`` -> ``[in, out]``, BatchNorm ``weight/bias/running_mean/running_var`` ->
gamma/beta/moving statistics; ``num_batches_tracked`` is read and not needed).

What the weights do not say, the source model does, and the imported model reproduces it:

* padding: the ``tf_`` ports and ``efficientnet_pytorch`` pad like TensorFlow ("same"); timm's own
  models pad ``k // 2`` on every side (``efficientnet.padding = 'symmetric'``);
* BatchNorm epsilon: 1e-3 for the TF-born weights, PyTorch's 1e-5 for timm's own;
* input normalisation: ImageNet mean/std, or [-1, 1] ("inception") for timm's Lite, AdvProp and
  V2 ImageNet-21k weights (:func:`timm_normalization`).

timm's ``tf_efficientnet_b0`` and ``efficientnet_b0`` hold tensors of the same names and shapes but
pad differently, so for those the import refuses to guess and asks for ``--from``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.errors import UserError
from effnet.plugins.models.specs import VARIANTS, VariantSpec, get_variant

__all__ = [
    "TORCH_SUFFIXES",
    "SourceModel",
    "is_torch_file",
    "parse_layout",
    "read_state_dict",
    "resolve_source",
    "timm_normalization",
    "to_keras_weights",
]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
TIMM, EFFNET_PYTORCH = "timm", "efficientnet_pytorch"
LAYOUTS = (TIMM, EFFNET_PYTORCH)
MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not a weights file


def is_torch_file(path) -> bool:
    return str(path).lower().endswith(TORCH_SUFFIXES)


# --------------------------------------------------------------------------------------------------
# Reading files


_SAFETENSORS_DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1), "U8": ("u1", 1), "BOOL": ("?", 1),
}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from effnet.paths import open_input

    with open_input(path, "weights file") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise UserError(f"{path}: not a complete safetensors file (header of {length} bytes, file of {size}); truncated or another format")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path}: not a safetensors file (its header is not JSON)") from None
        if not isinstance(header, dict):
            raise UserError(f"{path}: not a safetensors file (its header is not a JSON object)")
        header.pop("__metadata__", None)
        data_size = size - 8 - length
        out = {}
        for name, entry in header.items():
            try:
                dtype, itemsize = _SAFETENSORS_DTYPES[entry["dtype"]]
                shape = tuple(int(d) for d in entry["shape"])
                start, end = (int(v) for v in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{path}: tensor {name!r} has a malformed header entry {str(entry)[:120]}") from None
            if min(shape, default=0) < 0 or not 0 <= start <= end <= data_size or end - start != math.prod(shape) * itemsize:
                raise UserError(
                    f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) lies outside the file or has the wrong size "
                    f"(bytes {start}..{end} of {data_size}); the file is truncated or damaged"
                )
            f.seek(8 + length + start)
            array = np.frombuffer(f.read(end - start), dtype=dtype).reshape(shape)
            if entry["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            out[name] = array
    return out


def _refusal(path: Path, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w. ]+?)(?: was| whose|$)", text)
    opcode = re.search(r"Unsupported operand (\d+)", text)
    what = match.group(1) if match else f"pickle opcode {opcode.group(1)}" if opcode else "objects other than tensors"
    return (
        f"{path}: refused: the pickle asks for {what}, which a weights file never needs; nothing in it was run "
        f"(read with torch.load(weights_only=True)); use a .safetensors file or a plain state dict"
    )


def _read_pickle(path: Path) -> object:
    try:
        import torch
    except ImportError:
        raise UserError(f"{path}: reading a .pth/.pt file needs PyTorch: pip install 'effnet[torch]' (or pass the weights as .safetensors)") from None
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError,
            TypeError, AttributeError) as exc:
        text = " ".join(str(exc).split())
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise UserError(_refusal(path, exc)) from None
        raise UserError(f"{path}: not a PyTorch checkpoint, or a truncated one ({type(exc).__name__}: {text[:160]})") from None


_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "net", "module")


def _unwrap(obj, path: Path, notes: list[str]) -> dict:
    """A training checkpoint's weights (timm's EMA ones first), or the state dict itself."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of tensor names to tensors)")
    if obj and not any(hasattr(v, "shape") for v in obj.values()):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                notes.append(f"took the checkpoint's {key!r}")
                return obj[key]
        raise UserError(f"{path}: a mapping without tensors (keys {', '.join(map(str, list(obj)[:6]))}); not a state dict")
    return obj


def read_state_dict(path) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{name: float32/int array}`` from a .safetensors or .pth/.pt/.bin file, and notes on what was read."""
    from effnet.paths import check_input

    path = check_input(path, "weights file")  # a FIFO, device or link loop is named, never opened
    notes: list[str] = []
    if path.suffix.lower() == ".safetensors":
        raw = _read_safetensors(path)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        raw = _unwrap(_read_pickle(path), path, notes)
    else:
        raise UserError(f"{path}: unknown PyTorch weights format {path.suffix!r}; pass a .pth, .pt, .bin or .safetensors file")
    out = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not hasattr(value, "shape"):
            raise UserError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; not a state dict")
        if not isinstance(value, np.ndarray):  # a torch.Tensor
            import torch

            value = value.detach().cpu()
            value = value.to(torch.float32) if value.is_floating_point() else value
            value = value.numpy()
        name = name[len("module."):] if name.startswith("module.") else name
        out[name] = value.astype(np.float32) if value.dtype.kind == "f" else value
    if not out:
        raise UserError(f"{path}: holds no tensors")
    return out, notes


# --------------------------------------------------------------------------------------------------
# Layouts: a state dict -> stem, stages of blocks, head (by role), independent of the source's names


@dataclass
class Parsed:
    layout: str
    stem: dict[str, str]  # role -> source prefix ("conv", "bn")
    stages: list[list[tuple[str, dict[str, str]]]]  # per stage: (block type, {role: source prefix})
    head: dict[str, str]
    classifier: str | None


# Roles: expand_conv, expand_bn, dwconv, bn, se_reduce, se_expand, project_conv, project_bn.
_TIMM_BLOCKS = {  # timm block class (by its tensors) -> (our block type, {timm module: our role})
    "ds": ("mb", {"conv_dw": "dwconv", "bn1": "bn", "se.conv_reduce": "se_reduce", "se.conv_expand": "se_expand", "conv_pw": "project_conv", "bn2": "project_bn"}),
    "ir": ("mb", {"conv_pw": "expand_conv", "bn1": "expand_bn", "conv_dw": "dwconv", "bn2": "bn", "se.conv_reduce": "se_reduce",
                  "se.conv_expand": "se_expand", "conv_pwl": "project_conv", "bn3": "project_bn"}),
    "er": ("fused", {"conv_exp": "expand_conv", "bn1": "expand_bn", "se.conv_reduce": "se_reduce", "se.conv_expand": "se_expand",
                     "conv_pwl": "project_conv", "bn2": "project_bn"}),
    "cn": ("fused", {"conv": "project_conv", "bn1": "project_bn"}),
}
_EP_BLOCK = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
             "_se_reduce": "se_reduce", "_se_expand": "se_expand", "_project_conv": "project_conv", "_bn2": "project_bn"}


def _modules(names, prefix: str) -> set[str]:
    """Module paths under ``prefix`` (the names without their last ``.weight``/``.bias``... part)."""
    return {n[len(prefix):].rsplit(".", 1)[0] for n in names if n.startswith(prefix)}


def parse_layout(state: dict[str, np.ndarray], origin: str) -> Parsed:
    names = list(state)
    if "conv_stem.weight" in state and any(n.startswith("blocks.") for n in names):
        stage_ids = sorted({int(n.split(".")[1]) for n in names if n.startswith("blocks.")})
        stages = []
        for s in stage_ids:
            block_ids = sorted({int(n.split(".")[2]) for n in names if n.startswith(f"blocks.{s}.")})
            blocks = []
            for b in block_ids:
                prefix = f"blocks.{s}.{b}."
                mods = _modules(names, prefix)
                kind = ("ir" if "conv_pwl" in mods and "conv_dw" in mods else "er" if "conv_exp" in mods
                        else "ds" if "conv_dw" in mods else "cn" if "conv" in mods else None)
                if kind is None:
                    raise UserError(f"{origin}: timm block {prefix[:-1]!r} has modules {sorted(mods)}, none of timm's EfficientNet blocks (ds, ir, er, cn)")
                block_type, roles = _TIMM_BLOCKS[kind]
                blocks.append((block_type, {role: prefix + mod for mod, role in roles.items() if mod in mods}))
            stages.append(blocks)
        return Parsed(TIMM, {"conv": "conv_stem", "bn": "bn1"}, stages, {"conv": "conv_head", "bn": "bn2"},
                      "classifier" if "classifier.weight" in state else None)
    if "_conv_stem.weight" in state and any(n.startswith("_blocks.") for n in names):
        flat = sorted({int(n.split(".")[1]) for n in names if n.startswith("_blocks.")})
        stages, last_out = [], None
        for b in flat:
            prefix = f"_blocks.{b}."
            project = state.get(prefix + "_project_conv.weight")
            if project is None:
                raise UserError(f"{origin}: efficientnet_pytorch block {prefix[:-1]!r} has no _project_conv.weight")
            roles = {role: prefix + mod for mod, role in _EP_BLOCK.items() if mod in _modules(names, prefix)}
            out = int(project.shape[0])
            if out != last_out:  # a stage's blocks share their output channels; neighbouring stages do not
                stages.append([])
            stages[-1].append(("mb", roles))
            last_out = out
        return Parsed(EFFNET_PYTORCH, {"conv": "_conv_stem", "bn": "_bn0"}, stages, {"conv": "_conv_head", "bn": "_bn1"},
                      "_fc" if "_fc.weight" in state else None)
    sample = ", ".join(names[:4])
    raise UserError(
        f"{origin}: not an EfficientNet state dict of timm or efficientnet_pytorch (no conv_stem/blocks or "
        f"_conv_stem/_blocks tensors; first names: {sample}); another architecture?"
    )


# --------------------------------------------------------------------------------------------------
# Which variant, padding, BN epsilon and normalisation


@dataclass(frozen=True)
class SourceModel:
    """What the source model was: our variant, and what its weights need from the model."""

    name: str  # "timm:tf_efficientnet_b0", "efficientnet_pytorch:efficientnet-b0"
    variant: str
    padding: str  # "same" or "symmetric"
    bn_epsilon: float
    normalization: str

    def bindings(self) -> dict[str, object]:
        """The gin bindings a model needs to reproduce the source."""
        return {"efficientnet.normalization": self.normalization, "efficientnet.padding": self.padding,
                "efficientnet.bn_epsilon": self.bn_epsilon}


def _timm_table() -> dict[str, tuple[str, bool]]:
    """timm model name -> (our variant, TF port?)."""
    table = {}
    for name in VARIANTS:
        if name.startswith("efficientnet_v2_"):
            size = name[len("efficientnet_v2_"):]
            table[f"tf_efficientnetv2_{size}"] = (name, True)
            if not size.startswith("b"):
                table[f"efficientnetv2_{size}"] = (name, False)
        else:  # efficientnet_b0 .. l2, efficientnet_lite0..4
            table["tf_" + name] = (name, True)
            table[name] = (name, False)
    return table


TIMM_MODELS = _timm_table()
EFFNET_PYTORCH_MODELS = {f"efficientnet-{n.split('_', 1)[1]}": n for n in VARIANTS if re.fullmatch(r"efficientnet_(b\d|l2)", n)}


# timm's default pretrained tag where it decides the normalisation (``timm.create_model(NAME, pretrained=True)``)
TIMM_DEFAULT_TAGS = {"efficientnet_b1": "ra4_e3600_r240_in1k", "tf_efficientnet_b8": "ap_in1k", "tf_efficientnetv2_b3": "in21k_ft_in1k"}


def timm_normalization(name: str, tag: str | None) -> str:
    """The input normalisation timm's pretrained config gives ``name.tag`` (``tag`` None: timm's default tag).

    [-1, 1] ("inception") for the TF Lite ports, AdvProp (``ap``), timm's ``ra4`` recipes, V2-S/M/L/XL
    and V2 weights trained on ImageNet-21k; ImageNet mean/std otherwise. Checked against timm's own
    table (tests/models/fixtures/torch/_timm.json, written by scripts/make_torch_fixtures.py).
    """
    tag = tag or TIMM_DEFAULT_TAGS.get(name, "")
    if name.startswith("tf_efficientnet_lite") or tag.startswith(("ap", "ra4")) or "in21k" in tag:
        return "inception"
    if name.startswith("tf_efficientnetv2_") and not name[len("tf_efficientnetv2_"):].startswith("b"):
        return "inception"
    return "imagenet"


def _signature(spec: VariantSpec) -> tuple:
    stages = tuple(
        (spec.round_repeats(stage.repeats, stage=i), stage.block, spec.round_filters(stage.out_channels), stage.kernel, stage.se_ratio > 0)
        for i, stage in enumerate(spec.stages)
    )
    return spec.stem_channels(), stages, spec.head_channels()


def _source_signature(state, parsed: Parsed) -> tuple:
    stages = []
    for blocks in parsed.stages:
        block_type, roles = blocks[0]
        conv = roles.get("dwconv") or roles.get("expand_conv") or roles.get("project_conv")
        kernel = int(state[conv + ".weight"].shape[-1])
        out = int(state[roles["project_conv"] + ".weight"].shape[0]) if "project_conv" in roles else None
        stages.append((len(blocks), block_type, out, kernel, "se_reduce" in roles))
    head = state.get(parsed.head["conv"] + ".weight")
    return int(state[parsed.stem["conv"] + ".weight"].shape[0]), tuple(stages), None if head is None else int(head.shape[0])


def detect_variant(state, parsed: Parsed, origin: str) -> str:
    found = _source_signature(state, parsed)
    for name, spec in VARIANTS.items():
        if _signature(spec) == found:
            return name
    stages = "; ".join(f"{n}x{t} {o}ch k{k}{' se' if se else ''}" for n, t, o, k, se in found[1])
    raise UserError(
        f"{origin}: the {parsed.layout} weights (stem {found[0]}, stages {stages}, head {found[2]}) match none of our "
        f"variants ({', '.join(VARIANTS)}); name the source with --from timm:NAME if it is one of them"
    )


def resolve_source(state, parsed: Parsed, origin: str, source_name: str | None = None, normalization: str | None = None) -> SourceModel:
    """Variant, padding, BN epsilon and normalisation of the source (``source_name``: ``timm:NAME[.TAG]`` or
    ``efficientnet_pytorch:efficientnet-bN``; detected from the weights when omitted)."""
    if source_name:
        family, _, model = source_name.partition(":")
        if family not in LAYOUTS or not model:
            raise UserError(f"--from {source_name!r} must be timm:NAME (e.g. timm:tf_efficientnetv2_s) or efficientnet_pytorch:efficientnet-b0")
        if family != parsed.layout:
            raise UserError(f"--from {source_name!r}: {origin} holds tensors in {parsed.layout}'s layout, not {family}'s")
        if family == TIMM:
            name, _, tag = model.partition(".")
            if name not in TIMM_MODELS:
                from effnet.errors import did_you_mean

                raise UserError(f"--from timm:{name}: not a timm EfficientNet we can build{did_you_mean(name, TIMM_MODELS)}; "
                                f"supported: {', '.join(sorted(TIMM_MODELS))}")
            variant, tf_port = TIMM_MODELS[name]
            norm = timm_normalization(name, tag or None)
        else:
            if model not in EFFNET_PYTORCH_MODELS:
                raise UserError(f"--from {source_name!r}: efficientnet_pytorch models are {', '.join(EFFNET_PYTORCH_MODELS)}")
            variant, tf_port, norm = EFFNET_PYTORCH_MODELS[model], True, "imagenet"
        detected = None
    else:
        variant = detected = detect_variant(state, parsed, origin)
        if parsed.layout == EFFNET_PYTORCH:
            tf_port, norm = True, "imagenet"
            name = f"efficientnet-{variant.split('_', 1)[1]}"
            if variant.startswith("efficientnet_lite"):
                name, norm = variant, "inception"  # the Lite checkpoints published in this layout are TF ports
        else:
            candidates = sorted(n for n, (v, _) in TIMM_MODELS.items() if v == variant)
            if len(candidates) > 1:
                raise UserError(
                    f"{origin}: timm weights of {variant}, but they do not say which model wrote them: "
                    f"{' or '.join(candidates)} (same tensors; the tf_ port pads like TensorFlow with BN epsilon 1e-3, "
                    f"timm's own pads k//2 on every side with 1e-5, and the wrong one gives other outputs); "
                    f"pass --from timm:{candidates[-1]} or --from timm:{candidates[0]}"
                )
            name = candidates[0]
            tf_port = TIMM_MODELS[name][1]
            norm = timm_normalization(name, None)
        source_name = f"{parsed.layout}:{name}"
    if normalization is not None:
        norm = normalization
    model = SourceModel(source_name, variant, "same" if tf_port else "symmetric", 1e-3 if tf_port else 1e-5, norm)
    if detected is None:
        check_structure(state, parsed, model, origin)
    return model


def check_structure(state, parsed: Parsed, model: SourceModel, origin: str) -> None:
    """A named source must have the structure of its variant (the per-layer check names the first difference)."""
    spec = get_variant(model.variant)
    if len(parsed.stages) != len(spec.stages):
        raise UserError(
            f"{origin}: {len(parsed.stages)} stages of blocks, but {model.name} ({model.variant}) has {len(spec.stages)}; "
            f"the weights are of another architecture"
        )


# --------------------------------------------------------------------------------------------------
# Conversion


def _letter(j: int) -> str:
    from effnet.plugins.models.builder import _block_letter

    return _block_letter(j)


def to_keras_weights(state: dict[str, np.ndarray], parsed: Parsed, origin: str):
    """``({our layer name: [arrays in Keras order]}, {our layer name: source module})``; every tensor of
    ``state`` is used or it is an error naming it."""
    used: set[str] = set()
    out: dict[str, list[np.ndarray]] = {}
    sources: dict[str, str] = {}  # our layer -> the source module it came from (for error messages)

    def take(name):
        used.add(name)
        return state[name]

    def conv(layer, prefix, depthwise=False):
        sources[layer] = prefix
        if prefix + ".weight" not in state:
            raise UserError(f"{origin}: tensor {prefix}.weight is missing (for our layer {layer})")
        w = take(prefix + ".weight")
        if w.ndim != 4:
            raise UserError(f"{origin}: tensor {prefix}.weight has shape {list(w.shape)}, not a convolution kernel [out, in, k, k]")
        arrays = [np.transpose(w, (2, 3, 0, 1) if depthwise else (2, 3, 1, 0))]
        if prefix + ".bias" in state:
            arrays.append(take(prefix + ".bias"))
        out[layer] = arrays

    def bn(layer, prefix):
        sources[layer] = prefix
        keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        missing = [k for k in keys if k not in state]
        if missing:
            raise UserError(f"{origin}: tensor {missing[0]} is missing (BatchNorm of our layer {layer})")
        out[layer] = [take(k) for k in keys]
        if prefix + ".num_batches_tracked" in state:
            take(prefix + ".num_batches_tracked")  # a training counter; inference and fine-tuning do not need it

    conv("stem_conv", parsed.stem["conv"])
    bn("stem_bn", parsed.stem["bn"])
    for i, blocks in enumerate(parsed.stages, 1):
        for j, (_, roles) in enumerate(blocks):
            name = f"block{i}{_letter(j)}"
            for role, prefix in roles.items():
                if role.endswith("bn"):
                    bn(f"{name}_{role}", prefix)
                else:
                    conv(f"{name}_{role}", prefix, depthwise=role == "dwconv")
    if parsed.head["conv"] + ".weight" in state:
        conv("top_conv", parsed.head["conv"])
        bn("top_bn", parsed.head["bn"])
    if parsed.classifier:
        w = take(parsed.classifier + ".weight")
        out["predictions"] = [w.T, take(parsed.classifier + ".bias")] if parsed.classifier + ".bias" in state else [w.T]
        sources["predictions"] = parsed.classifier
    unused = [n for n in state if n not in used]
    if unused:
        raise UserError(
            f"{origin}: tensor {unused[0]!r} ({len(unused)} in all) has no place in our model; "
            f"the weights are of another architecture or carry extra modules"
        )
    return out, sources


def torch_source(path, source_name: str | None = None, normalization: str | None = None):
    """Read, parse, identify and convert a PyTorch weights file:
    ``(weights by our layer name, source module by our layer name, SourceModel, notes)``."""
    origin = str(path)
    state, notes = read_state_dict(path)
    parsed = parse_layout(state, origin)
    model = resolve_source(state, parsed, origin, source_name, normalization)
    weights, sources = to_keras_weights(state, parsed, origin)
    return weights, sources, model, notes

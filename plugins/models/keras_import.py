"""Weights in and out: keras.applications EfficientNet weights -> our models, and fine-tuning loads.

Our models use keras.applications' layer names and weight layouts (:mod:`.builder`), so a
transfer is a copy by layer name; the only rename is V2's ``<block>_dwconv2`` -> ``<block>_dwconv``.
Every shape is checked before anything is assigned: a wrong variant, a wrong number of classes or
a damaged file fails with one line naming the layer and the expected and found shapes, and leaves
the model (and any output file) untouched.

Sources (:func:`read_source`):

* an in-memory Keras model (``keras.applications.EfficientNetV2S(...)`` or one of ours);
* ``.keras`` files (loaded with Keras, so the exact preprocessing layers are known);
* Keras 3 ``.weights.h5`` files and legacy Keras 2 ``.h5`` weight files (the format of the
  ImageNet files keras.applications downloads into ``~/.keras/models``).

Input normalisation is not a weight in keras.applications, so it is derived from the source and
the importer configures our model to match it:

* in-memory / .keras: composed exactly from the Rescaling/Normalization layers before ``stem_conv``;
* V1 weight files: ``x/255`` then the file's Normalization mean/variance. keras.applications'
  ImageNet V1 files store the standard deviation where the variance belongs and Keras compensates
  with an extra rescaling only when it loads them itself (``weights="imagenet"``); when a file's
  variance equals those standard deviations the importer applies the same compensation, which
  gives exactly ImageNet mean/std;
* V2 weight files: what keras.applications builds for the variant ('imagenet' for B0-B3,
  'centered' = (x - 128) / 128 for S/M/L);
* files written by :func:`save_weights` carry their normalisation as metadata.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import keras
import numpy as np

from effnet.errors import UserError
from effnet.paths import check_input, check_output
from effnet.plugins.models import layers as _layers  # noqa: F401 - registers our layers for load_model
from effnet.plugins.models.builder import build, layer_stage, weighted_layers
from effnet.plugins.models.specs import NORMALIZATIONS, VARIANTS, VariantSpec, default_knobs, get_variant, normalization_name

__all__ = [
    "ImportReport",
    "Source",
    "imagenet_weights_file",
    "import_keras_weights",
    "keras_weights_origin",
    "keras_reference_model",
    "load_keras_file",
    "load_pretrained",
    "max_logit_difference",
    "read_source",
    "save_weights",
    "transfer",
]

METADATA_ATTR = "effnet_metadata"
# What keras.applications divides by a second time for its V1 ImageNet files (see module docstring).
KERAS_V1_IMAGENET_STDDEV = (0.229, 0.224, 0.225)
OUTPUT_SUFFIXES = (".weights.h5", ".keras")


def keras_model_name(spec: VariantSpec) -> str | None:
    """The name keras.applications gives its model of this variant ('efficientnetb0', 'efficientnetv2-s')."""
    app = spec.keras_application
    if app is None:
        return None
    if app.startswith("EfficientNetV2"):
        return "efficientnetv2-" + app[len("EfficientNetV2"):].lower()
    return app.lower()


KERAS_NAMES = {keras_model_name(spec): name for name, spec in VARIANTS.items() if spec.keras_application}


def _detect_variant(model_name: str | None) -> str | None:
    if not model_name:
        return None
    if model_name in VARIANTS:
        return model_name
    return KERAS_NAMES.get(model_name)


def _our_name(name: str) -> str:
    return name[: -len("dwconv2")] + "dwconv" if name.endswith("_dwconv2") else name


# --------------------------------------------------------------------------------------------------
# Reading sources


@dataclass
class Source:
    """Weights by (our) layer name, plus what is known about the source's input normalisation."""

    origin: str
    weights: dict[str, list[np.ndarray]]
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    variant: str | None = None  # detected from a model name or metadata
    keras_layout: bool = False  # written by keras.applications (not by us)
    model: keras.Model | None = None  # the model itself, for in-memory and .keras sources
    v1_compensated: bool = False  # normalisation includes Keras' ImageNet V1 variance compensation
    notes: list[str] = field(default_factory=list)
    # gin bindings besides the normalisation that the weights need ("efficientnet.padding", "efficientnet.bn_epsilon")
    settings: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)  # our layer -> the source's name for it, where they differ

    def where(self, layer: str) -> str:
        return f" (source {self.names[layer]!r})" if layer in self.names else ""

    @property
    def num_classes(self) -> int | None:
        head = self.weights.get("predictions")
        return int(head[0].shape[-1]) if head else None


def _is_input_normalization(name: str, arrays: list[np.ndarray]) -> bool:
    """Keras' Normalization layer of a V1 model: mean (3,), variance (3,), count ()."""
    shapes = [a.shape for a in arrays]
    return name.startswith("normalization") and shapes == [(3,), (3,), ()]


def _affine_to_mean_std(scale: np.ndarray, offset: np.ndarray):
    """y = scale * x + offset  ->  (mean, std) with y = (x - mean) / std."""
    std = 1.0 / scale
    return tuple(float(v) for v in -offset * std), tuple(float(v) for v in std)


def _per_channel(value) -> np.ndarray:
    return np.broadcast_to(np.asarray(keras.ops.convert_to_numpy(value), np.float64).reshape(-1), (3,)).copy()


def _model_normalization(model: keras.Model):
    """Compose the preprocessing layers in front of ``stem_conv`` into (mean, std)."""
    scale, offset, seen = np.ones(3), np.zeros(3), False
    for layer in model.layers:
        if layer.name == "stem_conv":
            break
        if isinstance(layer, keras.layers.Rescaling):
            s, o = _per_channel(layer.scale), _per_channel(layer.offset)
            scale, offset = scale * s, offset * s + o
        elif isinstance(layer, keras.layers.Normalization):
            mean = _per_channel(layer.mean)
            divisor = np.maximum(np.sqrt(_per_channel(layer.variance)), keras.config.epsilon())
            scale, offset = scale / divisor, (offset - mean) / divisor
        elif isinstance(layer, _layers.Normalize):
            mean, std = np.asarray(layer.mean, np.float64), np.asarray(layer.std, np.float64)
            scale, offset = scale / std, (offset - mean) / std
        else:
            continue
        seen = True
    return _affine_to_mean_std(scale, offset) if seen else None


def _from_model(model: keras.Model, origin: str) -> Source:
    weights, keras_layout = {}, False
    for layer in weighted_layers(model):
        if isinstance(layer, keras.layers.Normalization):
            continue
        keras_layout |= layer.name.endswith("_dwconv2")
        weights[_our_name(layer.name)] = layer.get_weights()
    keras_layout |= any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)
    return Source(origin, weights, _model_normalization(model), _detect_variant(model.name), keras_layout, model)


def load_keras_file(path, compile: bool = False) -> keras.Model:
    """``keras.saving.load_model`` with effnet's layers registered; UserError if the file is damaged."""
    path = Path(path)
    try:
        model = keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {path}: not a complete .keras model file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); re-export it") from exc
    if model.name in VARIANTS:
        model.min_input_size = 32
    return model


def _read_keras3_h5(group: h5py.Group) -> dict[str, list[np.ndarray]]:
    """Every non-empty ``vars`` group, at any depth (our blocks nest their sublayers), by layer name."""
    out = {}

    def visit(path, obj):
        if isinstance(obj, h5py.Group) and path.rsplit("/", 1)[-1] == "vars" and len(obj):
            name = obj.attrs.get("name", path)
            name = name.decode() if isinstance(name, bytes) else str(name)
            out[name] = [np.asarray(obj[str(i)]) for i in range(len(obj))]

    group.visititems(visit)
    return out


def _read_legacy_h5(group: h5py.Group) -> dict[str, list[np.ndarray]]:
    out = {}
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else str(name)
        layer = group[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer.attrs.get("weight_names", [])]
        if names:
            out[name] = [np.asarray(layer[n]) for n in names]
    return out


def _read_h5(path: Path) -> tuple[dict[str, list[np.ndarray]], dict]:
    try:
        with h5py.File(path, "r") as f:
            metadata = json.loads(f.attrs[METADATA_ATTR]) if METADATA_ATTR in f.attrs else {}
            if "layers" in f:
                return _read_keras3_h5(f["layers"]), metadata
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in group.attrs:
                return _read_legacy_h5(group), metadata
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read {path}: truncated or not a Keras weights file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    raise UserError(f"cannot read {path}: an HDF5 file without Keras weights (no 'layers' group or 'layer_names'); pass a .weights.h5, legacy .h5 or .keras file")


def _file_normalization(source: Source, keras_stats: list[np.ndarray] | None, metadata: dict, spec: VariantSpec):
    if metadata.get("normalization"):
        norm = metadata["normalization"]
        return tuple(norm["mean"]), tuple(norm["std"])
    if keras_stats:  # keras.applications V1: Rescaling(1/255) -> Normalization(mean, variance) [-> compensation]
        mean, variance = (a.astype(np.float64) for a in keras_stats[:2])
        std = np.maximum(np.sqrt(variance), keras.config.epsilon())
        if np.allclose(variance, KERAS_V1_IMAGENET_STDDEV, atol=1e-6):
            std = std * np.sqrt(KERAS_V1_IMAGENET_STDDEV)
            source.v1_compensated = True
            source.notes.append("applied keras.applications' ImageNet V1 variance compensation")
        return tuple(float(v) for v in 255 * mean), tuple(float(v) for v in 255 * std)
    if source.keras_layout and spec.family == "v2":  # keras.applications V2: fixed preprocessing per variant
        return NORMALIZATIONS["imagenet" if spec.name.rsplit("_", 1)[-1].startswith("b") else "centered"]
    return None


def _torch_source(path: Path, source_name=None, normalization=None) -> Source:
    from effnet.plugins.models.torch_import import torch_source

    weights, sources, model, notes = torch_source(path, source_name, normalization)
    src = Source(str(path), weights, NORMALIZATIONS[model.normalization], model.variant, notes=list(notes))
    src.names = sources
    src.settings = {"efficientnet.padding": model.padding, "efficientnet.bn_epsilon": model.bn_epsilon}
    src.notes.insert(0, f"source {model.name}")
    return src


def read_source(source, spec: VariantSpec | None = None, source_name=None, normalization=None) -> Source:
    """Read weights from a Keras model, a .keras / .weights.h5 / legacy .h5 file, or a PyTorch
    .pth / .pt / .bin / .safetensors state dict (timm or efficientnet_pytorch, :mod:`.torch_import`)."""
    if isinstance(source, keras.Model):
        return _from_model(source, f"model {source.name!r}")
    path = check_input(source, "weights file")  # a FIFO, device or link loop is named, never opened
    from effnet.plugins.models.torch_import import is_torch_file

    if is_torch_file(path):
        return _torch_source(path, source_name, normalization)
    if source_name:
        raise UserError(f"--from {source_name!r} is for PyTorch files (.pth, .pt, .bin, .safetensors), not {path.name}")
    if path.suffix == ".keras":
        return _from_model(load_keras_file(path), str(path))
    if path.suffix != ".h5":
        raise UserError(f"{path}: unknown weights format {path.suffix!r}; pass a .keras, .weights.h5, legacy .h5, .pth or .safetensors file")
    raw, metadata = _read_h5(path)
    keras_stats = next((arrays for name, arrays in raw.items() if _is_input_normalization(name, arrays)), None)
    weights = {_our_name(name): arrays for name, arrays in raw.items() if not _is_input_normalization(name, arrays)}
    keras_layout = keras_stats is not None or any(name.endswith("_dwconv2") for name in raw)
    src = Source(str(path), weights, None, metadata.get("variant"), keras_layout)
    src.settings = dict(metadata.get("settings") or {})
    if spec is None and src.variant in VARIANTS:
        spec = VARIANTS[src.variant]
    if spec is not None:
        src.normalization = _file_normalization(src, keras_stats, metadata, spec)
    return src


# --------------------------------------------------------------------------------------------------
# Transfer


@dataclass
class ImportReport:
    source: str
    model: str
    layers: int
    params: int
    head: str  # "loaded", "replaced (...)", "absent"
    normalization: object  # preset name or {"mean": ..., "std": ...}; None if unknown
    notes: list[str] = field(default_factory=list)
    max_abs_logit_diff: float | None = None
    settings: dict = field(default_factory=dict)  # the gin bindings the weights need

    def __str__(self) -> str:
        text = (
            f"loaded {self.layers} layers ({self.params:,} weights) from {self.source} into {self.model}; "
            f"classifier {self.head}; input normalization {self.normalization!r}"
        )
        if self.max_abs_logit_diff is not None:
            text += f"; max |logit difference| vs the source {self.max_abs_logit_diff:.3g}"
        return text + "".join(f"; {note}" for note in self.notes)


def transfer(model: keras.Model, source: Source, replace_head: bool = False) -> ImportReport:
    """Copy ``source`` into ``model`` by layer name; all-or-nothing, UserError on any mismatch."""
    plan, head = [], "absent"
    targets = weighted_layers(model)
    model_names = {layer.name for layer in targets}
    hint = "check the variant (--variant) the source was made for"
    for layer in targets:
        found = source.weights.get(layer.name)
        is_head = layer.name == "predictions"
        if found is None:
            if is_head and replace_head:
                head = "replaced (the source has no classifier)"
                continue
            fix = "pass --replace-head (replace_head=True) to start a new classifier" if is_head else hint
            raise UserError(f"{source.origin}: layer {layer.name!r} of {model.name} is missing from the source; {fix}")
        if len(found) != len(layer.weights):
            raise UserError(
                f"{source.origin}: layer {layer.name!r}{source.where(layer.name)} has {len(found)} weight arrays, {model.name} expects "
                f"{len(layer.weights)} ({', '.join(w.name for w in layer.weights)}); {hint}"
            )
        for weight, array in zip(layer.weights, found):
            if tuple(weight.shape) != tuple(array.shape):
                if is_head and replace_head:
                    head = f"replaced (source {tuple(array.shape)}, model {tuple(weight.shape)})"
                    break
                fix = "pass --replace-head (replace_head=True) to train a new classifier" if is_head else hint
                raise UserError(
                    f"{source.origin}: layer {layer.name!r}{source.where(layer.name)} {weight.name}: expected shape {tuple(weight.shape)} "
                    f"for {model.name}, found {tuple(array.shape)}; {fix}"
                )
        else:
            plan.append((layer, found))
            head = "loaded" if is_head else head
    used = {layer.name for layer, _ in plan} | ({"predictions"} if head.startswith("replaced") else set())
    extra = [
        name for name in sorted(source.weights)
        if name not in used and not (layer_stage(name) in (None, math.inf) and name not in model_names)
    ]
    if extra:
        raise UserError(
            f"{source.origin}: layer {extra[0]!r}{source.where(extra[0])} ({len(extra)} source layer(s) in all) has no counterpart in "
            f"{model.name}; the source is a larger variant or another architecture; {hint}"
        )
    for layer, arrays in plan:
        layer.set_weights(arrays)
    normalization = normalization_name(*source.normalization) if source.normalization else None
    params = sum(int(np.prod(a.shape)) for _, arrays in plan for a in arrays)
    return ImportReport(source.origin, model.name, len(plan), params, head, normalization, list(source.notes))


def _model_norm(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, _layers.Normalize):
            return tuple(layer.mean), tuple(layer.std)
    return None


def load_pretrained(model: keras.Model, path, replace_head: bool = False) -> ImportReport:
    """Load a .weights.h5 / .keras / legacy .h5 file (ours or keras.applications') into ``model``.

    ``path='imagenet'`` takes keras.applications' ImageNet weights for the model's variant from
    Keras' cache, downloading them once (:func:`imagenet_weights_file`).

    The classifier is skipped when ``replace_head`` and its shape differs; any other mismatch,
    or an input normalisation different from the one the weights were trained with, raises a
    one-line UserError naming the layer/shapes or the gin binding to set.
    """
    spec = VARIANTS.get(model.name)
    if str(path) == IMAGENET:
        if spec is None:
            raise UserError(f"--from-weights imagenet: {model.name!r} is not an EfficientNet variant with keras.applications weights")
        path = imagenet_weights_file(spec)
    source = read_source(path, spec)
    mine = _model_norm(model)
    if source.normalization and mine and not np.allclose(source.normalization, mine, rtol=1e-5, atol=1e-4):
        wanted = normalization_name(*source.normalization)
        raise UserError(
            f"{source.origin}: the weights expect input normalization {wanted!r} but the model uses "
            f"{normalization_name(*mine)!r}; set efficientnet.normalization = {wanted!r}"
        )
    mine = model_settings(model)
    for key, wanted in source.settings.items():
        if key in mine and not _same(mine[key], wanted):
            raise UserError(
                f"{source.origin}: the weights need {key} = {wanted!r} (the model they come from) but the model uses "
                f"{mine[key]!r}; set it with --gin-param \"{key} = {wanted!r}\""
            )
    return transfer(model, source, replace_head=replace_head)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return a == b


def model_settings(model: keras.Model) -> dict:
    """The padding and BatchNorm epsilon ``model`` was built with (as gin bindings)."""
    out = {"efficientnet.padding": "symmetric" if any(layer.name == "stem_pad" for layer in model.layers) else "same"}
    try:
        out["efficientnet.bn_epsilon"] = float(model.get_layer("stem_bn").epsilon)
    except ValueError:
        pass
    return out


def weight_settings(path) -> dict:
    """The gin bindings a weights file needs from the model (normalisation, padding, BN epsilon), as far as it says.

    For ``--from-weights``: the engine binds them before it builds the model, so training, eval,
    predict and export all feed the weights what they expect (and the run's operative config says so).
    """
    path = Path(path)
    if str(path) == IMAGENET or not path.is_file():
        return {}
    from effnet.plugins.models.torch_import import is_torch_file

    if is_torch_file(path):
        source = _torch_source(path)
    elif path.name.endswith(".weights.h5"):
        try:
            with h5py.File(path, "r") as f:
                metadata = json.loads(f.attrs[METADATA_ATTR]) if METADATA_ATTR in f.attrs else {}
        except (OSError, ValueError):
            return {}
        source = Source(str(path), {}, None, notes=[])
        norm = metadata.get("normalization")
        source.normalization = (tuple(norm["mean"]), tuple(norm["std"])) if norm else None
        source.settings = dict(metadata.get("settings") or {})
    else:
        return {}
    out = dict(source.settings)
    if source.normalization:
        out["efficientnet.normalization"] = normalization_name(*source.normalization)
    return out


# --------------------------------------------------------------------------------------------------
# keras.applications' ImageNet weights (--from-weights imagenet)

IMAGENET = "imagenet"


def keras_weights_origin(spec: VariantSpec) -> tuple[str, str, str | None]:
    """``(file name, URL, md5)`` of keras.applications' ImageNet weights (with classifier) for ``spec``.

    The names follow keras.applications (``efficientnetb0.h5``, ``efficientnetv2-s.h5``). Keras keeps
    the URL prefix and the hashes in module constants of ``keras.src.applications``; they are read
    here and nowhere else (tests/architecture/test_private_apis.py fails if Keras moves them).
    """
    name = keras_model_name(spec)
    if name is None:
        raise UserError(
            f"keras.applications has no ImageNet weights for {spec.name}; those exist for "
            f"{', '.join(sorted(KERAS_NAMES.values()))}; pass a weights file or run folder to --from-weights"
        )
    from importlib import import_module

    module = import_module("keras.src.applications." + ("efficientnet_v2" if spec.family == "v2" else "efficientnet"))
    table = getattr(module, "WEIGHTS_HASHES", {})
    suffix = name.rsplit("-", 1)[-1] if spec.family == "v2" else name[-2:]  # keys: 'b0' .. 'b3', '-s', '-m', '-l'
    hashes = table.get(suffix) or table.get("-" + suffix)
    file_name = name + ".h5"
    return file_name, module.BASE_WEIGHTS_PATH + file_name, hashes[0] if hashes else None


def _md5(path: str) -> str:
    from effnet.files import file_digest

    return file_digest(path, "md5")


def imagenet_weights_file(spec: VariantSpec) -> str:
    """The local path of keras.applications' ImageNet weights for ``spec``, through Keras' own cache.

    ``keras.utils.get_file`` looks in ``$KERAS_HOME/models`` (default ``~/.keras/models``, the folder
    ``keras.applications.*(weights="imagenet")`` fills) and downloads only what is not there. A
    file downloaded by this call is checked against Keras' published md5 and removed if it differs;
    a file already in the cache is used as it is (the importer checks every layer's shape).
    """
    file_name, origin, md5 = keras_weights_origin(spec)
    started = time.time()
    try:
        # KERAS_HOME is read now, not when Keras was imported (Keras itself reads it once, at import)
        path = keras.utils.get_file(file_name, origin, cache_subdir="models", cache_dir=os.environ.get("KERAS_HOME"))
    except Exception as exc:  # noqa: BLE001 - Keras raises plain Exception for network failures
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot fetch keras.applications' ImageNet weights {file_name} from {origin} ({detail}); "
            f"put the file into $KERAS_HOME/models/ (default ~/.keras/models/) or pass a local file to --from-weights"
        ) from None
    if md5 and os.path.getmtime(path) >= started and _md5(path) != md5:
        os.remove(path)
        raise UserError(f"the downloaded {file_name} from {origin} does not have Keras' md5 {md5} (removed); try again")
    return path


# --------------------------------------------------------------------------------------------------
# Import command


def _check_output(output, source=None) -> Path | None:
    if output is None:
        return None
    output = Path(output)
    if not output.name.endswith(OUTPUT_SUFFIXES):
        raise UserError(f"output {str(output)!r} must end with .weights.h5 or .keras")
    if not output.parent.is_dir():
        raise UserError(f"output folder {str(output.parent)!r} does not exist")
    # absent or a regular file, not the source, not a run folder's own file, writable, a name that fits
    return check_output(output, "output", inputs=[source] if isinstance(source, (str, os.PathLike)) else [])


def save_weights(model: keras.Model, path, metadata: Mapping | None = None) -> Path:
    """Write ``model`` to ``path`` (.weights.h5 with our metadata, or .keras) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}" + (".keras" if path.name.endswith(".keras") else ".weights.h5"))
    try:
        if path.name.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
            norm = _model_norm(model)
            info = {"variant": model.name, "normalization": {"mean": list(norm[0]), "std": list(norm[1])} if norm else None}
            info.update(metadata or {})
            with h5py.File(tmp, "a") as f:
                f.attrs[METADATA_ATTR] = json.dumps(info)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def keras_reference_model(spec: VariantSpec, source: Source, path) -> keras.Model | None:
    """A keras.applications model holding the source's weights, loaded by Keras itself (for checks)."""
    if source.model is not None:
        return source.model
    if not spec.keras_application or not source.keras_layout or source.v1_compensated:
        return None  # Keras would build it without the V1 ImageNet compensation: no like-for-like check
    classes = source.num_classes
    model = getattr(keras.applications, spec.keras_application)(
        weights=None, include_top=classes is not None, classes=classes or 1000, classifier_activation=None,
        input_shape=(64, 64, 3),
    )
    model.load_weights(path)
    return model


def max_logit_difference(reference: keras.Model, model: keras.Model, size: int = 64, batch: int = 2, seed: int = 0) -> float:
    """Max |reference(x) - model(x)| over random [0, 255] images (both in inference mode)."""
    images = np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    ref = np.asarray(reference(images, training=False), np.float64)
    ours = np.asarray(model(images, training=False), np.float64)
    return float(np.max(np.abs(ref - ours)))


def import_keras_weights(
    source,
    variant: str | None = None,
    num_classes: int | None = None,
    replace_head: bool = False,
    output=None,
    check: bool = False,
    source_name: str | None = None,
    normalization: str | None = None,
) -> tuple[keras.Model, ImportReport]:
    """Build our model for ``variant`` matching ``source`` (a keras.applications model or file) and copy its weights.

    ``variant`` may be omitted for in-memory models, .keras files and files we wrote (detected
    from the model name or metadata). ``num_classes`` defaults to the source's; a different
    value needs ``replace_head``. ``output`` (.weights.h5 or .keras) is written only if
    everything matched. ``check`` compares logits with the Keras model on random images.
    """
    output = _check_output(output, source)
    spec = get_variant(variant) if variant else None
    src = read_source(source, spec, source_name=source_name, normalization=normalization)
    if spec is None:
        if src.variant is None:
            raise UserError(f"{src.origin}: cannot tell which variant the weights are for; pass --variant (one of {', '.join(VARIANTS)})")
        spec = get_variant(src.variant)
    classes = num_classes if num_classes is not None else src.num_classes
    norm = normalization_name(*src.normalization) if src.normalization else "imagenet"
    extra = {key.split(".", 1)[1]: value for key, value in src.settings.items()}
    model = build(spec, classes or 1000, default_knobs(normalization=norm, include_top=classes is not None, **extra))
    report = transfer(model, src, replace_head=replace_head)
    report.normalization = norm
    report.settings = {"efficientnet.normalization": norm, **src.settings}
    if check:
        reference = keras_reference_model(spec, src, source)
        if reference is None:
            report.notes.append("no like-for-like Keras model to check against")
        elif report.head == "loaded" or classes is None:
            report.max_abs_logit_diff = max_logit_difference(reference, model, size=reference.input_shape[1] or 64)
    if output is not None:
        save_weights(model, output, {"source": str(src.origin), "settings": src.settings})
    return model, report

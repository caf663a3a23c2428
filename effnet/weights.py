"""Loading weights into a freshly built model: ``--from-weights`` for fine-tuning.

Accepted: ``imagenet`` (the model plugin's published ImageNet weights, e.g. keras.applications'
through Keras' download cache), a run folder or one of its ``checkpoints/ckpt-*`` folders (an effnet TF checkpoint; the
EMA weights are used when the checkpoint has them, unless ``use_ema=False``), or a Keras
``.weights.h5`` / ``.keras`` file, or a PyTorch ``.pth`` / ``.safetensors`` state dict (timm or
efficientnet_pytorch; converted by the model plugin's loader). With ``replace_head=True`` the classifier (the last Dense layer)
may have another number of classes; it then keeps its fresh initialisation. Any other mismatch is
a UserError naming the variable and both shapes.
"""

from __future__ import annotations

from pathlib import Path

from effnet.errors import UserError
from effnet.paths import check_input
from effnet.models import head_variables

#: ``--from-weights imagenet``: handed to the model plugin's loader (``factory.load_weights``).
IMAGENET = "imagenet"
#: PyTorch state dicts: handed to the model plugin's loader too (it converts them).
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def bind_weight_settings(factory, path) -> dict:
    """Bind the gin settings the weights at ``path`` need (the model plugin's ``factory.weight_settings``).

    Run before the model is built, so the model reproduces the weights' source (input
    normalisation, padding, BatchNorm epsilon) and the run's operative config records it for
    eval, predict and export. A binding the user set to another value is an error naming both.
    """
    import gin

    settings = getattr(factory, "weight_settings", None)
    if settings is None or not path:
        return {}
    wanted = settings(path)
    for key, value in wanted.items():
        try:
            current = gin.query_parameter(key)
        except ValueError:
            current = None
        if current is not None and current != value and not (isinstance(value, float) and abs(float(current) - value) <= 1e-9 * abs(value)):
            raise UserError(f"--from-weights {path}: the weights need {key} = {value!r}, the config binds {current!r}; remove that binding")
        with gin.unlock_config():
            gin.bind_parameter(key, value)
    return wanted


def _find_prefix(path: Path) -> str | None:
    from effnet import checkpoint

    if path.is_dir():
        if (path / (checkpoint.TF_PREFIX + ".index")).is_file():
            checkpoint.verify_checkpoint(path)
            return str(path / checkpoint.TF_PREFIX)
        latest = checkpoint.latest_checkpoint(path)
        if latest is not None:
            return latest.tf_prefix
        return None
    if path.name.endswith(".index"):
        return str(path)[: -len(".index")]
    return None


def load_weights(model, path, replace_head: bool = False, use_ema: bool = True, keras_loader=None) -> dict:
    """Load weights into ``model``; returns ``{'loaded': n, 'skipped': [paths], 'source': str}``.

    ``keras_loader(model, path, replace_head=...)`` (a model plugin's ``load_weights``) handles
    .weights.h5/.keras files when given; otherwise Keras's ``model.load_weights`` does.
    """
    if str(path) == IMAGENET:
        if keras_loader is None:
            raise UserError("--from-weights imagenet: this model's plugin has no weight loader; pass a weights file or run folder")
        report = keras_loader(model, IMAGENET, replace_head=replace_head)
        return {"loaded": None, "skipped": [], "source": IMAGENET, "ema": False, "report": str(report)}
    path = Path(path)
    hint = "; pass a run folder, a checkpoint folder, a .weights.h5/.keras file, or imagenet"
    check_input(path, "--from-weights", folder=None, hint=hint)  # a FIFO, device or loop: named, never opened
    prefix = _find_prefix(path)
    if prefix is not None:
        return _load_tf_checkpoint(model, prefix, replace_head, use_ema)
    if path.suffix in (".h5", ".keras") or path.name.endswith(".weights.h5") or path.suffix.lower() in TORCH_SUFFIXES:
        if keras_loader is not None:
            report = keras_loader(model, str(path), replace_head=replace_head)
            return {"loaded": None, "skipped": [], "source": str(path), "ema": False, "report": str(report)}
        return _load_keras_file(model, path, replace_head)
    raise UserError(f"--from-weights {str(path)!r} is neither an effnet run/checkpoint folder nor a .weights.h5/.keras/.pth/.safetensors file")


def _load_tf_checkpoint(model, prefix: str, replace_head: bool, use_ema: bool) -> dict:
    import tensorflow as tf

    from effnet.ema import averaged_variables

    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    from effnet.checkpoint import EMA, MODEL_VARIABLES, variable_key

    ema_index = {id(v): i for i, v in enumerate(averaged_variables(model))}
    have_ema = use_ema and variable_key(EMA, 0) in shapes
    head = {id(v) for v in head_variables(model)}
    loaded, skipped = 0, []
    for i, var in enumerate(model.variables):
        name = variable_key(MODEL_VARIABLES, i)
        if have_ema and id(var) in ema_index:
            name = variable_key(EMA, ema_index[id(var)])
        if name not in shapes:
            raise UserError(f"checkpoint {prefix} has no value for {var.path} (variable #{i}); it was written by another architecture")
        found, expected = tuple(shapes[name]), tuple(var.shape)
        if found != expected:
            if replace_head and id(var) in head:
                skipped.append(var.path)
                continue
            hint = "; pass --replace-head to train a new classifier" if id(var) in head else ""
            raise UserError(f"checkpoint {prefix}: {var.path} has shape {found}, the model expects {expected}{hint}")
        var.assign(reader.get_tensor(name))
        loaded += 1
    return {"loaded": loaded, "skipped": skipped, "source": prefix, "ema": have_ema}


def _load_keras_file(model, path: Path, replace_head: bool) -> dict:
    try:
        model.load_weights(str(path), skip_mismatch=replace_head)
    except (ValueError, OSError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"cannot load weights from {path}: {detail}") from None
    return {"loaded": len(model.weights), "skipped": [], "source": str(path), "ema": False}

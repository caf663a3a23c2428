"""Numeric precision and XLA, each one gin binding (``train.precision``, ``train.xla``).

- ``fp32``: float32 everywhere, TF32 tensor-core math off.
- ``tf32``: float32 variables and activations, TF32 matmul/conv on GPUs that have it (no effect on
  CPUs).
- ``amp``:  Keras ``mixed_float16`` policy, dynamic loss scaling (non-finite steps skipped).
- ``bf16``: Keras ``mixed_bfloat16`` policy, no loss scaling needed (CPUs with AVX512_BF16 and
  recent GPUs run it natively).

XLA (``jit_compile``) defaults to on when a GPU is visible and off otherwise: on this project's
reference CPU it made keras.applications' EfficientNetV2-S train about 5x slower
(3.1 vs 15.5 img/s at 128 px, batch 16).
"""

from __future__ import annotations

from effnet.errors import UserError

PRECISIONS = ("fp32", "tf32", "amp", "bf16")
POLICIES = {"fp32": "float32", "tf32": "float32", "amp": "mixed_float16", "bf16": "mixed_bfloat16"}


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"train.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def configure(precision: str) -> None:
    """Set the global Keras policy and TF32 mode; call before any model is built."""
    import keras
    import tensorflow as tf

    check(precision)
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")


def uses_loss_scaling(precision: str) -> bool:
    return precision == "amp"


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_xla(xla: bool | None) -> bool:
    """``None`` means: on for GPUs, off for CPUs."""
    return has_gpu() if xla is None else bool(xla)

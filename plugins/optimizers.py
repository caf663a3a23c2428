"""Built-in optimizers: ``rmsprop``, ``nvlamb``, ``sgd``, ``adamw``.

Each factory takes the learning-rate schedule from the engine and everything else from gin
(``rmsprop.rho = 0.9`` ...). Loss scaling, accumulation, clipping (``train.clip_norm``) and EMA
are the engine's; BatchNorm and bias variables are excluded from decoupled weight decay by the
engine through ``exclude_from_weight_decay``.
"""

from __future__ import annotations

import gin

import effnet
from effnet.errors import UserError
from effnet.validate import check_number


def _check(name: str, **knobs) -> None:
    """Decay rates in [0, 1), epsilons and clip norms > 0, weight decay in [0, 1)."""
    for key, value in knobs.items():
        if key in ("epsilon", "max_grad_norm"):
            check_number(f"{name}.{key}", value, 0, 10, low_open=True)
        else:  # rho, momentum, beta_1, beta_2, weight_decay
            check_number(f"{name}.{key}", value, 0, 1, high_open=True, optional=key == "weight_decay")


@gin.configurable
def rmsprop(learning_rate, rho: float = 0.9, momentum: float = 0.9, epsilon: float = 1e-3, centered: bool = False,
            fused: bool = True):
    """RMSprop as in the EfficientNet recipes.

    Keras 3's RMSprop already matches TensorFlow's kernel: epsilon sits inside the square root
    (``lr * g / sqrt(ms + eps)``) and momentum accumulates the scaled step; :class:`FusedRMSprop`
    is that optimizer with each variable's update done by the kernel in one pass (``fused = False``:
    Keras' own, e.g. for the benchmark's before-optimisation row). (TF1's RMSPropOptimizer started
    ``ms`` at 1.0; Keras, like NVIDIA's TF2 recipe, starts at 0.)
    """
    _check("rmsprop", rho=rho, momentum=momentum, epsilon=epsilon)
    if not isinstance(fused, bool):
        raise UserError(f"rmsprop.fused={fused!r} must be True or False")
    import keras

    optimizer_class = _fused_rmsprop_class() if fused else keras.optimizers.RMSprop
    return optimizer_class(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)


_FUSED_RMSPROP = None


def _fused_rmsprop_class():
    """:class:`FusedRMSprop`, defined on first use so that importing the plugins does not import Keras."""
    global _FUSED_RMSPROP
    if _FUSED_RMSPROP is None:
        import keras
        import tensorflow as tf

        @keras.saving.register_keras_serializable(package="effnet")
        class FusedRMSprop(keras.optimizers.RMSprop):
            """``keras.optimizers.RMSprop`` (same slots, config and checkpoint layout) whose update of each
            variable is TensorFlow's ``ResourceApplyRMSProp``: one pass over the variable and its two slots
            instead of Keras' dozen element-wise ops, each a pass over memory (+5-6% V2-S training img per
            CPU-second measured here; docs/performance.md). Centered RMSprop, momentum 0 and variables placed by a
            ``tf.distribute`` strategy take Keras' own update."""

            def update_step(self, gradient, variable, learning_rate):
                if self.centered or not self.momentum > 0 or tf.distribute.has_strategy():
                    return super().update_step(gradient, variable, learning_rate)
                index = self._get_variable_index(variable)
                dtype = variable.dtype
                tf.raw_ops.ResourceApplyRMSProp(
                    var=variable.handle, ms=self._velocities[index].handle, mom=self._momentums[index].handle,
                    lr=tf.cast(learning_rate, dtype), rho=tf.cast(self.rho, dtype), momentum=tf.cast(self.momentum, dtype),
                    epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))

        _FUSED_RMSPROP = FusedRMSprop
    return _FUSED_RMSPROP


@gin.configurable
def sgd(learning_rate, momentum: float = 0.9, nesterov: bool = True, weight_decay: float | None = None):
    """SGD with (Nesterov) momentum; ``weight_decay`` is decoupled when set."""
    _check("sgd", momentum=momentum, weight_decay=weight_decay)
    import keras

    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@gin.configurable
def adamw(learning_rate, weight_decay: float = 0.05, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8):
    """AdamW (decoupled weight decay, skipping BatchNorm and biases)."""
    _check("adamw", weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    import keras

    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


@gin.configurable
def nvlamb(learning_rate, weight_decay: float = 1e-5, beta_1: float = 0.9, beta_2: float = 0.999,
           epsilon: float = 1e-6, max_grad_norm: float = 1.0):
    """NVIDIA's LAMB variant used for the 80-GPU large-batch recipe (see :mod:`effnet.plugins.nvlamb`)."""
    _check("nvlamb", weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, max_grad_norm=max_grad_norm)
    from effnet.plugins.nvlamb import NvLamb

    return NvLamb(learning_rate=learning_rate, decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
                  epsilon=epsilon, max_grad_norm=max_grad_norm)


@effnet.hookimpl
def effnet_optimizers():
    return {"rmsprop": rmsprop, "sgd": sgd, "adamw": adamw, "nvlamb": nvlamb}

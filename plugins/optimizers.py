"""Built-in optimizers: ``rmsprop``, ``nvlamb``, ``sgd``, ``adamw``.

Each factory takes the learning-rate schedule from the engine and everything else from gin
(``rmsprop.rho = 0.9`` ...). Loss scaling, accumulation, clipping (``train.clip_norm``) and EMA
are the engine's; BatchNorm and bias variables are excluded from decoupled weight decay by the
engine through ``exclude_from_weight_decay``.
"""

from __future__ import annotations

import gin

import effnet


@gin.configurable
def rmsprop(learning_rate, rho: float = 0.9, momentum: float = 0.9, epsilon: float = 1e-3, centered: bool = False):
    """RMSprop as in the EfficientNet recipes.

    Keras 3's RMSprop already matches TensorFlow's kernel: epsilon sits inside the square root
    (``lr * g / sqrt(ms + eps)``) and momentum accumulates the scaled step, so it is used as is.
    (TF1's RMSPropOptimizer started ``ms`` at 1.0; Keras, like NVIDIA's TF2 recipe, starts at 0.)
    """
    import keras

    return keras.optimizers.RMSprop(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)


@gin.configurable
def sgd(learning_rate, momentum: float = 0.9, nesterov: bool = True, weight_decay: float | None = None):
    """SGD with (Nesterov) momentum; ``weight_decay`` is decoupled when set."""
    import keras

    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@gin.configurable
def adamw(learning_rate, weight_decay: float = 0.05, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8):
    """AdamW (decoupled weight decay, skipping BatchNorm and biases)."""
    import keras

    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


@gin.configurable
def nvlamb(learning_rate, weight_decay: float = 1e-5, beta_1: float = 0.9, beta_2: float = 0.999,
           epsilon: float = 1e-6, max_grad_norm: float = 1.0):
    """NVIDIA's LAMB variant used for the 80-GPU large-batch recipe (see :mod:`effnet.plugins.nvlamb`)."""
    from effnet.plugins.nvlamb import NvLamb

    return NvLamb(learning_rate=learning_rate, decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
                  epsilon=epsilon, max_grad_norm=max_grad_norm)


@effnet.hookimpl
def effnet_optimizers():
    return {"rmsprop": rmsprop, "sgd": sgd, "adamw": adamw, "nvlamb": nvlamb}

"""nvLAMB: LAMB as NVIDIA uses it for large-batch training.

Hand-written because Keras 3's ``Lamb`` differs in three ways that change results at batch
36,800: it does not pre-normalise gradients by their global norm, its weight decay is applied
outside the trust-ratio update, and it cannot skip decay for BatchNorm/bias inside the update.

Per step ``t`` (counting applied updates from 1)::

    g      <- g * max_grad_norm / max(||g||_global, max_grad_norm)   (norm := 1 if not finite)
    m      <- b1 m + (1 - b1) g
    v      <- b2 v + (1 - b2) g^2
    u      <- (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * w   (wd = 0 if excluded)
    r      <- ||w|| / ||u||   if both norms > 0, else 1
    w      <- w - lr * r * u
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet")
class NvLamb(keras.optimizers.Optimizer):
    def __init__(self, learning_rate=1e-3, decay=0.0, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 max_grad_norm=1.0, name="nvlamb", **kwargs):
        # Decay happens inside the trust-ratio update, so the base class's decoupled decay stays off.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.decay = decay
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.max_grad_norm = max_grad_norm

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def _clip_gradients(self, grads):
        """Pre-normalisation by the global norm (replaces Keras's optional clipping)."""
        grads = super()._clip_gradients(grads)
        if not self.max_grad_norm:
            return grads
        present = [g for g in grads if g is not None]
        norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in present))
        norm = ops.where(ops.isfinite(norm), norm, ops.ones_like(norm))
        ratio = self.max_grad_norm / ops.maximum(norm, self.max_grad_norm)
        return [None if g is None else g * ops.cast(ratio, g.dtype) for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, ops.add(ops.multiply(self.beta_1, m), ops.multiply(1 - self.beta_1, gradient)))
        self.assign(v, ops.add(ops.multiply(self.beta_2, v), ops.multiply(1 - self.beta_2, ops.square(gradient))))
        m_hat = ops.divide(m, 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = ops.divide(v, 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if self.decay and self._use_weight_decay(variable):
            update = ops.add(update, ops.multiply(ops.cast(self.decay, variable.dtype), variable))
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        u_norm = ops.sqrt(ops.sum(ops.square(update)))
        ratio = ops.where(ops.logical_and(w_norm > 0, u_norm > 0), ops.divide(w_norm, ops.maximum(u_norm, 1e-30)), 1.0)
        self.assign_sub(variable, ops.multiply(ops.multiply(lr, ratio), update))

    def get_config(self):
        config = super().get_config()
        config.update({"decay": self.decay, "beta_1": self.beta_1, "beta_2": self.beta_2,
                       "epsilon": self.epsilon, "max_grad_norm": self.max_grad_norm})
        return config

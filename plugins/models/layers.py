"""Small Keras layers of the EfficientNet models besides the blocks (:mod:`.blocks`).

* :class:`Normalize` - per-channel ``(x - mean) / std`` on [0, 255] inputs, in float32 whatever
  the dtype policy (mean/std are part of ``get_config``, so save/load keeps them).
* :class:`HeadDropout` - dropout before the classifier whose rate a progressive stage can change.

HeadDropout (like the blocks' stochastic depth) implements the engine's stage protocol:
``apply_stage(params)`` reads the key it knows (``dropout``) and ignores the rest;
``stage_values()`` returns the value the layer was built with. Rates are Python attributes read
when the call is traced, so the engine re-traces its ``tf.function`` after changing them. Keras'
``Dropout`` is not reused: it creates its random seed only when built with a rate above zero, so
a stage could not switch a zero rate on.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import ops

__all__ = ["HeadDropout", "Normalize", "check_rate"]


def check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate}")
    return rate


@keras.saving.register_keras_serializable(package="effnet")
class Normalize(keras.layers.Layer):
    """``(x - mean) / std`` per channel; inputs in [0, 255] (float or uint8), output in the compute dtype."""

    def __init__(self, mean, std, **kwargs):
        kwargs.pop("autocast", None)
        # autocast=False: a float16 policy must not round the raw [0, 255] input before this layer.
        super().__init__(autocast=False, **kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} and std {self.std} must have the same length and std > 0")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        scale = ops.convert_to_tensor([1.0 / s for s in self.std], "float32")
        offset = ops.convert_to_tensor([-m / s for m, s in zip(self.mean, self.std)], "float32")
        return ops.cast(x * scale + offset, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="effnet")
class HeadDropout(keras.layers.Layer):
    """Dropout before the classifier; ``apply_stage({"dropout": r})`` changes its rate."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate("dropout", rate)
        self.built_rate = self.rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate <= 0.0:
            return inputs
        return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)

    def apply_stage(self, params: Mapping[str, float]) -> None:
        if "dropout" in params:
            self.rate = check_rate("dropout", params["dropout"])

    def stage_values(self) -> dict[str, float]:
        return {"dropout": self.built_rate}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.built_rate, "seed": self.seed}

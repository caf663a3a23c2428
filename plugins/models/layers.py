"""Small Keras layers of the EfficientNet models besides the blocks (:mod:`.blocks`).

* :class:`Normalize` - per-channel ``(x - mean) / std`` on [0, 255] inputs, in float32 whatever
  the dtype policy (mean/std are part of ``get_config``, so save/load keeps them).
* :class:`HeadDropout` - dropout before the classifier whose rate a progressive stage can change.
* :class:`FusedBatchNorm` - Keras' BatchNormalization computed by TensorFlow's fused batch-norm
  kernel (same weights, config and moving-statistics update; see its docstring).
* :func:`swish` - ``x * sigmoid(x)`` whose gradient is one XLA-compiled element-wise kernel;
  :func:`activation` resolves the ``efficientnet.activation`` knob to it for 'swish'/'silu'.
* :class:`DepthwiseConv2D` - Keras' depthwise convolution whose bfloat16 gradient runs in float32
  on CPUs for the kernel shapes where oneDNN's bfloat16 backward kernels are slow (see its docstring).

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
import tensorflow as tf
from keras import ops

__all__ = ["DepthwiseConv2D", "FusedBatchNorm", "HeadDropout", "Normalize", "activation", "check_rate", "swish"]


@tf.function(jit_compile=True, reduce_retracing=True)
def _swish_grad(dy, x):
    """``dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``: one XLA kernel, computed in float32."""
    x32 = tf.cast(x, tf.float32)
    s = tf.sigmoid(x32)
    return tf.cast(tf.cast(dy, tf.float32) * (s * (1.0 + x32 * (1.0 - s))), dy.dtype)


@tf.custom_gradient
def _swish(x):
    return x * tf.sigmoid(x), lambda dy: _swish_grad(dy, x)


@keras.saving.register_keras_serializable(package="effnet", name="swish")
def swish(x):
    """SiLU/swish, ``x * sigmoid(x)``: the same values as ``tf.nn.silu``, a faster gradient on CPUs.

    The forward pass is the plain ``x * sigmoid(x)``, which grappler's remapper turns into one
    oneDNN swish kernel (``_MklSwish``) on CPUs because nothing else reads the sigmoid. The
    backward pass recomputes the sigmoid from ``x`` inside one XLA-compiled element-wise kernel
    (:func:`_swish_grad`, in float32 whatever the input dtype) instead of TensorFlow's five
    separate element-wise ops, which in bfloat16 also went through Eigen's slow scalar sigmoid.
    Only ``x`` is kept for the backward pass, as with ``tf.nn.silu``. Measured on
    EfficientNetV2-S bf16 training +10% img/s, EfficientNet-B0 fp32 +30% (docs/performance.md).
    Graphs that only run forward (inference, frozen serving functions, exports' signatures) run
    only Sigmoid and Mul; a SavedModel also stores the unused gradient function (TF saves custom
    gradients by default).
    """
    return _swish(tf.convert_to_tensor(x))


def _no_gpu() -> bool:
    """True when no GPU is visible: the float32 detours below are for oneDNN's CPU kernels only."""
    return not tf.config.list_logical_devices("GPU")


def _depthwise_float32_grad(x, kernel, strides, padding):
    """``tf.nn.depthwise_conv2d(x, kernel)`` in x's dtype whose two gradients are computed in float32."""

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            x32, dy32 = tf.cast(x, tf.float32), tf.cast(dy, tf.float32)
            dx = tf.nn.depthwise_conv2d_backprop_input(tf.shape(x), tf.cast(kernel, tf.float32), dy32, strides, padding)
            dk = tf.nn.depthwise_conv2d_backprop_filter(x32, tf.shape(kernel), dy32, strides, padding)
            return tf.cast(dx, x.dtype), tf.cast(dk, kernel.dtype)

        return tf.nn.depthwise_conv2d(x, kernel, strides, padding), grad

    return conv(x, kernel)


def activation(name):
    """The function for an ``efficientnet.activation`` value: :func:`swish` for 'swish'/'silu', else Keras'."""
    return swish if name in ("swish", "silu") else keras.activations.get(name)


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


@keras.saving.register_keras_serializable(package="effnet")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose NHWC forward and backward pass run as one kernel each.

    Keras 3 normalises with separate moment, subtract, multiply and add ops (and their gradients),
    in float32 even under a bfloat16 policy; TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPUs,
    cuDNN on GPUs) does the forward pass, and ``FusedBatchNormGradV3`` the backward pass, in one
    kernel each, reading bfloat16/float16 activations directly with float32 statistics. In
    inference the op is what grappler's remapper folds into the preceding convolution.

    Same weights in the same order (gamma, beta, moving_mean, moving_variance), same config and
    the same update of the moving statistics as Keras: ``moving = moving * momentum + batch *
    (1 - momentum)`` with the biased batch variance (the kernel returns the unbiased one; it is
    rescaled by (n - 1) / n). Anything the fused kernel cannot do (a mask, renorm, synchronized
    BN, a non-channels-last axis, other ranks, epsilon below the kernel's minimum) falls back to
    Keras' own computation. Under a bfloat16 policy on a CPU, a channel count that is not a multiple
    of 16 is normalised in float32 (see ``BFLOAT16_CHANNEL_MULTIPLE``); the output is bfloat16 either way.
    """

    # FusedBatchNormV3 rejects smaller epsilons (TensorFlow's Python wrapper clamps to this).
    MIN_EPSILON = 1.001e-5
    #: On CPUs oneDNN's bfloat16 batch-norm kernels (forward and gradient) ran 3-4x slower than
    #: float32 ones, casts included, when the channel count is not a multiple of this (24 and 40
    #: channels; 16, 32, 48 ... 128 were fast; docs/performance.md): those layers compute in float32.
    BFLOAT16_CHANNEL_MULTIPLE = 16
    #: False sends every call through Keras' own path, e.g. when a distribution backend computes the
    #: batch moments across processes in Keras' own moments method (Horovod's synchronised BatchNorm).
    use_fused_kernel = True

    def _fusable(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (self.use_fused_kernel and mask is None and rank == 4 and axis in (-1, 3) and self.scale and self.center and not self.renorm
                and not self.synchronized and self.epsilon >= self.MIN_EPSILON
                and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16))

    def call(self, inputs, training=None, mask=None):
        inputs = tf.convert_to_tensor(inputs)
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if inputs.dtype == tf.bfloat16 and (inputs.shape[-1] or 0) % self.BFLOAT16_CHANNEL_MULTIPLE and _no_gpu():
            inputs = tf.cast(inputs, tf.float32)  # oneDNN's bfloat16 kernels are slow here; the output is cast back below
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, unbiased_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            shape = tf.shape(inputs)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = unbiased_var * ((n - 1.0) / tf.maximum(n, 1.0))
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_variance = tf.cast(self.moving_variance, tf.float32)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="effnet")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` whose bfloat16 backward pass runs in float32 on a CPU unless the kernel is 3x3 at stride 1.

    oneDNN's bfloat16 depthwise gradients (input and filter) are fast only for 3x3 kernels at
    stride 1; for 5x5 kernels and for stride 2 they ran 2-20x slower than the same gradients in
    float32 here (2 cores with AVX-512 bf16, TensorFlow 2.21; docs/performance.md). So for those
    shapes the forward pass stays in bfloat16 and the backward pass casts the incoming gradient and
    the saved input to float32, runs TensorFlow's float32 gradient kernels and casts the results
    back: the same gradients up to rounding (the float32 ones are the more exact). Same weights,
    config and forward values as Keras' layer; with a GPU visible, in float32 or float16, and with
    dilation or a depth multiplier, it is Keras' layer unchanged.
    """

    #: (kernel size, strides) whose bfloat16 gradient kernels are the fast ones on CPUs.
    FAST_BFLOAT16 = (((3, 3), (1, 1)),)

    def _float32_grad(self, inputs) -> bool:
        return (inputs.dtype == tf.bfloat16 and self.data_format == "channels_last" and self.depth_multiplier == 1
                and tuple(self.dilation_rate) == (1, 1)
                and (tuple(self.kernel_size), tuple(self.strides)) not in self.FAST_BFLOAT16
                and _no_gpu())

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if not self._float32_grad(inputs):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)  # the compute-dtype value (Keras autocasts the variable)
        outputs = _depthwise_float32_grad(inputs, kernel, (1, *self.strides, 1), self.padding.upper())
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)

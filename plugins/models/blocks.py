"""MBConv and Fused-MBConv blocks as Keras layers.

Each block is one layer (named like ``block4b``) owning Keras sublayers named as keras.applications
names its flat layers (``block4b_expand_conv``, ``block4b_bn``, ``block4b_se_reduce`` ...). One
layer per block keeps the functional graph about 110 nodes deep even for V2-XL; as a flat graph of
~1500 layers it overflows the recursion of Keras' graph mapping.

Stochastic depth lives in the block: while training, the residual branch of a block with an
identity skip is dropped per sample with probability ``drop_path_rate * block_fraction``.
``apply_stage({"drop_path": r})`` sets the network-level rate ``r`` (the engine's progressive
stages); ``stage_values()`` returns the rate the block was built with.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf
from keras import layers, ops

from effnet.plugins.models.layers import DepthwiseConv2D, FusedBatchNorm, activation as resolve_activation, check_rate

__all__ = ["Block", "FusedMBConv", "MBConv", "CONV_INIT", "symmetric_padding"]

# The reference code's "fan_out" initialiser for convolutions: N(0, 2 / fan_out), not truncated.
CONV_INIT = {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def symmetric_padding(kernel: int, stride: int) -> int:
    """Pixels PyTorch pads on every side of a ``kernel`` x ``kernel`` convolution (``k // 2``) where TF's
    "same" pads differently: only strided ones (at stride 1 "same" is the same ``k // 2`` on each side)."""
    return kernel // 2 if stride > 1 else 0


def _float32(variable):
    """A float32 Keras variable's stored value, not the compute-dtype copy Keras autocasts it to in ``call``.

    The BN fold multiplies the kernel in float32. Taken from the bf16 copy, the kernel came back
    through a bf16 -> float32 cast that grappler does not fold for large kernels, so frozen graphs
    kept those filters as run-time values, which oneDNN reorders on every call (docs/performance.md
    item 14). (BatchNorm's own variables are never autocast.)
    """
    with keras.src.backend.AutocastScope(None):
        return tf.cast(tf.convert_to_tensor(variable.value), tf.float32)


def _spatial_mean(x):
    """Mean over height and width, keeping dims: the squeeze of squeeze-excitation.

    In bfloat16 this is TF's reduction on the bfloat16 tensor, which accumulates in float32 (the
    same result as Keras' ``ops.mean``, which first writes a float32 copy of the whole activation:
    1.5-3x slower, docs/performance.md item 13). float16 keeps Keras' path, whose float32 copy
    guards against overflow.
    """
    if x.dtype == tf.bfloat16:
        return tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    return ops.mean(x, axis=(1, 2), keepdims=True)


def _drop_path(x, rate, seed_generator):
    """Stochastic depth: each sample's branch zeroed with probability ``rate``, the rest scaled by 1 / (1 - rate).

    The same samples and values as ``keras.random.dropout(x, rate, noise_shape=(None, 1, 1, 1))``
    (same random draw, bit-identical outputs and gradients), as one broadcast multiply by a
    per-sample factor instead of a full-size multiply and select forward and backward (10-40% less
    time per block, docs/performance.md item 15).
    """
    keep = keras.random.uniform((tf.shape(x)[0], 1, 1, 1), dtype=x.dtype, seed=seed_generator) >= rate
    return x * (tf.cast(keep, x.dtype) * tf.constant(1 / (1 - rate), dtype=x.dtype))


class Block(keras.layers.Layer):
    """What MBConv and Fused-MBConv share: configuration, BN/conv factories, SE, residual, stages."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        expand: int = 1,
        se_ratio: float = 0.0,
        activation: str = "swish",
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-3,
        fused_bn: bool = True,
        fold_bn: bool = True,
        padding: str = "same",
        drop_path_rate: float = 0.0,
        block_fraction: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel, self.stride, self.expand = int(kernel), int(stride), int(expand)
        self.se_ratio = float(se_ratio)
        self.activation = activation
        self.bn_momentum, self.bn_epsilon = float(bn_momentum), float(bn_epsilon)
        self.fused_bn = bool(fused_bn)
        self.fold_bn = bool(fold_bn)
        self.padding = str(padding)
        # 'symmetric': the strided convolution pads k // 2 on every side (PyTorch), see _pad.
        self.pad = symmetric_padding(self.kernel, self.stride) if self.padding == "symmetric" else 0
        self.built_drop_path_rate = self.drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
        self.block_fraction = float(block_fraction)
        self.seed = seed
        self.has_skip = self.stride == 1 and self.in_channels == self.out_channels
        self.seed_generator = keras.random.SeedGenerator(seed) if self.has_skip else None
        self._act = resolve_activation(activation)
        self.hidden = self.in_channels * self.expand
        self.se_reduce = self.se_expand = None
        self.squeezed = max(1, int(self.in_channels * self.se_ratio)) if self.se_ratio else 0
        if self.se_ratio:
            self.se_reduce = self._conv(self.squeezed, 1, 1, "se_reduce", use_bias=True, activation=self._act)
            self.se_expand = self._conv(self.hidden, 1, 1, "se_expand", use_bias=True, activation="sigmoid")

    # -- sublayer factories (names as keras.applications' flat layers) -------------------------------
    def _conv(self, filters, kernel, stride, suffix, use_bias=False, activation=None):
        return layers.Conv2D(
            filters, kernel, stride, padding="valid" if stride > 1 and self.pad else "same", use_bias=use_bias, activation=activation,
            kernel_initializer=CONV_INIT, dtype=self.dtype_policy, name=f"{self.name}_{suffix}",
        )

    def _bn(self, suffix):
        batch_norm = FusedBatchNorm if self.fused_bn else layers.BatchNormalization
        return batch_norm(momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype_policy, name=f"{self.name}_{suffix}")

    def _chain(self) -> list[tuple[keras.layers.Layer | None, int]]:
        """(sublayer or None, its input channels) in the order keras.applications creates them."""
        raise NotImplementedError

    def build(self, input_shape):
        for layer, channels in self._chain():
            if layer is not None:  # spatial sizes do not matter to any sublayer
                layer.build((None, None, None, channels))

    def sublayers(self) -> list[keras.layers.Layer]:
        """The sublayers that own weights, in the order keras.applications creates them."""
        return [layer for layer, _ in self._chain() if layer is not None]

    # -- shared pieces of call ----------------------------------------------------------------------
    def _pad(self, conv, x):
        """Explicit zero padding before the strided convolution of a 'symmetric' block (its padding is 'valid')."""
        if conv.padding != "valid":
            return x
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])

    def _conv_bn(self, conv, bn, x, training):
        """``bn(conv(x))``; in inference (``fold_bn``) one convolution with BN folded into kernel and bias.

        Folding: ``scale = gamma / sqrt(moving_variance + eps)``, kernel * scale per output channel,
        ``bias = beta - moving_mean * scale``, computed in float32 from the live weights on every
        call (so it follows training and EMA swaps, and nothing extra is stored; the serving paths
        freeze the weights, so grappler computes it once: effnet.models.InferenceFunction). A
        convolution plus bias is what grappler fuses with the activation into one oneDNN/cuDNN
        kernel, in bfloat16 too, where it does not fuse Conv2D with FusedBatchNorm.
        """
        x = self._pad(conv, x)
        if training or not self.fold_bn or conv.use_bias:
            return bn(conv(x), training=training)
        scale = tf.cast(bn.gamma, tf.float32) * tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
        bias = tf.cast(bn.beta, tf.float32) - tf.cast(bn.moving_mean, tf.float32) * scale
        dtype = self.compute_dtype
        x = tf.cast(x, dtype)
        stride = (1, *conv.strides, 1)
        if isinstance(conv, layers.DepthwiseConv2D):  # ours too (a subclass)
            kernel = _float32(conv.kernel) * tf.reshape(scale, (1, 1, -1, 1))
            y = tf.nn.depthwise_conv2d(x, tf.cast(kernel, dtype), strides=stride, padding=conv.padding.upper())
        else:
            kernel = _float32(conv.kernel) * scale
            y = tf.nn.conv2d(x, tf.cast(kernel, dtype), strides=stride, padding=conv.padding.upper())
        return tf.nn.bias_add(y, tf.cast(bias, dtype))

    def _squeeze_excite(self, x):
        if self.se_reduce is None:
            return x
        return x * self.se_expand(self.se_reduce(_spatial_mean(x)))

    def _residual(self, x, inputs, training):
        if not self.has_skip:
            return x
        rate = self.drop_probability
        if training and rate > 0.0:
            x = _drop_path(x, rate, self.seed_generator)
        return x + inputs

    # -- progressive stages -------------------------------------------------------------------------
    @property
    def drop_probability(self) -> float:
        """This block's current drop probability (0 for blocks without an identity skip)."""
        return self.drop_path_rate * self.block_fraction if self.has_skip else 0.0

    def apply_stage(self, params: Mapping[str, float]) -> None:
        if "drop_path" in params:
            self.drop_path_rate = check_rate("drop_path", params["drop_path"])

    def stage_values(self) -> dict[str, float]:
        return {"drop_path": self.built_drop_path_rate}

    def compute_output_shape(self, input_shape):
        size = [None if d is None else -(-d // self.stride) for d in input_shape[1:3]]
        return (input_shape[0], *size, self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kernel": self.kernel,
            "stride": self.stride, "expand": self.expand, "se_ratio": self.se_ratio,
            "activation": self.activation, "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
            "fused_bn": self.fused_bn, "fold_bn": self.fold_bn, "padding": self.padding,
            "drop_path_rate": self.built_drop_path_rate, "block_fraction": self.block_fraction, "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="effnet")
class MBConv(Block):
    """[1x1 expand conv-BN-act] -> kxk depthwise conv-BN-act -> [SE] -> 1x1 project conv-BN (+ identity skip)."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        if self.expand != 1:
            self.expand_conv = self._conv(self.hidden, 1, 1, "expand_conv")
            self.expand_bn = self._bn("expand_bn")
        else:
            self.expand_conv = self.expand_bn = None
        self.dwconv = DepthwiseConv2D(
            self.kernel, self.stride, padding="valid" if self.pad else "same", use_bias=False, depthwise_initializer=CONV_INIT,
            dtype=self.dtype_policy, name=f"{self.name}_dwconv",
        )
        self.bn = self._bn("bn")
        self.project_conv = self._conv(self.out_channels, 1, 1, "project_conv")
        self.project_bn = self._bn("project_bn")

    def _chain(self):
        c, h = self.in_channels, self.hidden
        return [
            (self.expand_conv, c), (self.expand_bn, h), (self.dwconv, h), (self.bn, h),
            (self.se_reduce, h), (self.se_expand, self.squeezed), (self.project_conv, h), (self.project_bn, self.out_channels),
        ]

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self._act(self._conv_bn(self.expand_conv, self.expand_bn, x, training))
        x = self._act(self._conv_bn(self.dwconv, self.bn, x, training))
        x = self._squeeze_excite(x)
        x = self._conv_bn(self.project_conv, self.project_bn, x, training)
        return self._residual(x, inputs, training)


@keras.saving.register_keras_serializable(package="effnet")
class FusedMBConv(Block):
    """kxk expand conv-BN-act -> [SE] -> 1x1 project conv-BN (+ identity skip).

    With expand ratio 1 the kxk conv is the projection itself and keeps its activation.
    """

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        if self.expand != 1:
            self.expand_conv = self._conv(self.hidden, self.kernel, self.stride, "expand_conv")
            self.expand_bn = self._bn("expand_bn")
            self.project_conv = self._conv(self.out_channels, 1, 1, "project_conv")
        else:
            self.expand_conv = self.expand_bn = None
            self.project_conv = self._conv(self.out_channels, self.kernel, self.stride, "project_conv")
        self.project_bn = self._bn("project_bn")

    def _chain(self):
        c, h = self.in_channels, self.hidden
        return [
            (self.expand_conv, c), (self.expand_bn, h), (self.se_reduce, h), (self.se_expand, self.squeezed),
            (self.project_conv, h), (self.project_bn, self.out_channels),
        ]

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self._act(self._conv_bn(self.expand_conv, self.expand_bn, x, training))
        x = self._squeeze_excite(x)
        x = self._conv_bn(self.project_conv, self.project_bn, x, training)
        if self.expand_conv is None:
            x = self._act(x)
        return self._residual(x, inputs, training)

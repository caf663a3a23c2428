"""Building a model through its plugin and checking the contract the engine relies on.

The contract (written out for plugin authors in :func:`effnet.hookspecs.effnet_models`):

* ``factory(num_classes=N)`` returns a ``keras.Model`` taking ``[batch, H, W, 3]`` RGB values in
  [0, 255] (uint8 or float) and returning float32 logits ``[batch, N]`` (no softmax);
* ``model.min_input_size`` (optional, default :data:`MIN_INPUT_SIZE`) is the smallest square input
  it accepts;
* the classifier is the model's last ``keras.layers.Dense`` layer (``--replace-head`` re-initialises
  it when the number of classes differs);
* layers that react to progressive stages have ``apply_stage(params)`` (and ``stage_values()``).

Every place that builds a model (training, eval, predict, export, benchmark) calls
:func:`build_model`, so a plugin that breaks the contract fails the same way everywhere.
"""

from __future__ import annotations

import contextlib
import math

from effnet import registry
from effnet.errors import UserError

#: The minimum input size of a model that does not state its own ``min_input_size``.
MIN_INPUT_SIZE = 32


def walk_layers(model) -> list:
    """Every layer inside ``model``, nested ones included (depth first, without the model itself).

    Keras 3 has no public recursive walk; this is the one place that uses its private
    ``_flatten_layers`` (tests/architecture pins that it still exists and recurses).
    """
    return list(model._flatten_layers(include_self=False))


def min_input_size(model) -> int:
    return int(getattr(model, "min_input_size", MIN_INPUT_SIZE))


def check_image_size(model, size: int, model_name: str, what: str = "image size", detail: str = "", hint: str = "") -> None:
    """UserError when ``size`` is below the model's minimum input size: '{what} {size}{detail} is smaller ...{hint}'."""
    minimum = min_input_size(model)
    if int(size) < minimum:
        raise UserError(f"{what} {size}{detail} is smaller than {model_name}'s minimum of {minimum} px{hint}")


def classifier_layer(model):
    """The classifier: the model's last Dense layer (None for a model without one)."""
    import keras

    dense = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.Dense)]
    return dense[-1] if dense else None


def head_variables(model) -> list:
    head = classifier_layer(model)
    return list(head.weights) if head is not None else []


def count_params(model) -> int:
    """Floating-point weights (trainable and not), as keras.applications counts them."""
    return int(sum(math.prod(v.shape) for v in model.trainable_variables + model.non_trainable_variables
                   if "float" in str(v.dtype)))


def build_model(name: str, num_classes: int, *, scope=None, fresh_session: bool = False):
    """Build registered model ``name`` with ``num_classes`` outputs and check the contract.

    ``scope``: a context (a distribution strategy's) in which the variables are created.
    ``fresh_session``: clear Keras' global state first (layer names, graphs) so a rebuilt model
    gets the same variable names as the run that trained it.
    """
    import keras

    if fresh_session:
        keras.backend.clear_session()
    with scope or contextlib.nullcontext():
        model = registry.get("model", name)(num_classes=num_classes)
    if not isinstance(model, keras.Model):
        raise UserError(f"model {name!r} returned {type(model).__name__}, not a keras.Model; a model plugin must "
                        f"return a keras.Model (see effnet/hookspecs.py, effnet_models)")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) == 1:
        shape, dtype = outputs[0].shape, str(outputs[0].dtype)
        if shape[-1] is not None and int(shape[-1]) != int(num_classes):
            raise UserError(f"model {name!r} returns {shape[-1]} logits for num_classes={num_classes}; a model plugin "
                            f"must return [batch, num_classes] logits")
        if "float32" not in dtype:
            raise UserError(f"model {name!r} returns {dtype} logits; a model plugin must return float32 logits "
                            f"(give the classifier dtype='float32' under mixed precision)")
    return model


class InferenceFunction:
    """``output(model(images, training=False))`` compiled for serving, with the weights frozen into the graph.

    Freezing (``freeze=True``) turns every variable the forward pass reads into a constant of the
    traced graph, so grappler computes once, when the function is built, all the work that depends
    on the weights alone: each block's BatchNorm folding (scale, folded kernel and bias), the
    bfloat16/float16 casts of every kernel under mixed precision, and the variable reads. Measured
    on EfficientNetV2-S bf16 at 128 px (docs/performance.md): batch-1 p50 47.9 -> 33.5 ms, batch 16
    114 -> 127 img/s, same outputs (bit-identical in float32).

    The weights are taken when the function is first called for an input dtype and image shape
    (traced with a free batch dimension), so build it after loading weights: it does not follow
    later changes. ``freeze=False`` gives a plain ``tf.function`` over the live variables, for
    callers whose weights change between calls (evaluation during training, EMA swaps).
    """

    def __init__(self, model, output=None, *, jit_compile: bool = False, freeze: bool = True):
        import tensorflow as tf

        self.model = model
        self.freeze = bool(freeze)

        def forward(images):
            logits = model(images, training=False)
            return output(logits) if output is not None else logits

        self._forward = forward
        self._live = tf.function(forward, jit_compile=jit_compile, reduce_retracing=True)
        self._jit_compile = jit_compile
        self._frozen: dict = {}  # (dtype, image shape) -> callable
        self.graphs: dict = {}  # (dtype, image shape) -> the frozen ConcreteFunction

    def __call__(self, images):
        import tensorflow as tf

        if not self.freeze:
            return self._live(images)
        images = tf.convert_to_tensor(images)
        key = (images.dtype, tuple(images.shape[1:]))
        if key not in self._frozen:
            self._frozen[key] = self._build(key, tf.TensorSpec([None, *images.shape[1:]], images.dtype))
        return self._frozen[key](images)

    def _build(self, key, spec):
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        with tf.init_scope():  # eagerly, also when first called while another tf.function is traced
            frozen = convert_variables_to_constants_v2(tf.function(self._forward).get_concrete_function(spec))
        self.graphs[key] = frozen

        def call(images):
            outputs = frozen(images)
            return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

        return tf.function(call, jit_compile=True) if self._jit_compile else call


__all__ = ["MIN_INPUT_SIZE", "InferenceFunction", "build_model", "check_image_size", "classifier_layer", "count_params",
           "head_variables", "min_input_size", "walk_layers"]

"""The few private names of other libraries effnet relies on, each used in one place and pinned here
(and listed once, in docs/architecture.md).

When a Keras or gin-config release renames or changes one of them, these tests fail first and say
which wrapper to fix, instead of a run failing somewhere deep inside.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.extras import requires_module

ROOT = Path(__file__).resolve().parents[2]

# private name -> the only files allowed to use it (the wrapper)
ALLOWED = {
    "_flatten_layers": {"effnet/models.py"},  # effnet.models.walk_layers
    "_use_weight_decay": {"plugins/nvlamb.py"},  # a keras Optimizer subclass asking its base class
    "_moments": {"plugins/backends.py"},  # Horovod's synchronised BatchNorm replaces it per layer
    "_reduction_axes": {"plugins/backends.py"},  # ... and reads the axes BatchNormalization reduces over
    "_all_reduce_sum_gradients": {"plugins/backends.py"},  # tf.distribute: the step already summed them
    # FusedRMSprop finds a variable's slots in Keras' RMSprop lists by Keras' index (nvLAMB, a Keras
    # Optimizer subclass, names its own slot lists the same way)
    "_get_variable_index": {"plugins/optimizers.py", "plugins/nvlamb.py"},
    "_velocities": {"plugins/optimizers.py", "plugins/nvlamb.py"},
    "_momentums": {"plugins/optimizers.py", "plugins/nvlamb.py"},
    # InferenceFunction freezes the weights into the graph (TF's own freezing, not exported under tf.*)
    "convert_variables_to_constants_v2": {"effnet/models.py"},
    # the BN fold reads the float32 weights inside a mixed-precision call (plugins/models/blocks.py: _float32)
    "AutocastScope": {"plugins/models/blocks.py"},
    "gin_config._REGISTRY": {"effnet/config.py"},  # effnet.config._gin_registry
    "gin_config._LOCATION_PREFIXES": {"effnet/config.py"},  # effnet.config._gin_search_path
    "_MacroReference": {"effnet/settings.py"},  # effnet.settings._is_reference: gin exports no macro type
    # tf.distribute backends branch inside the replica context only where the strategy allows it
    "strategy_supports_no_merge_call": {"plugins/backends.py"},
    "_clip_gradients": {"plugins/nvlamb.py"},  # nvLAMB's pre-normalisation replaces Keras' optional clipping
    "keras.src.applications": {"plugins/models/keras_import.py"},  # keras_weights_origin: URL prefix and hashes
    "_trial_id": {"effnet/search.py"},  # effnet.search.trial_id: continue a RUNNING Optuna trial by its storage id
}
DOC = ROOT / "docs" / "architecture.md"


def test_private_names_are_used_only_in_their_wrappers():
    users: dict[str, set[str]] = {name: set() for name in ALLOWED}
    for folder in ("effnet", "plugins", "cli", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for name in ALLOWED:
                if re.search(re.escape(name) + r"\b", text):
                    users[name].add(path.relative_to(ROOT).as_posix())
    assert users == ALLOWED


def test_each_private_name_is_listed_once_in_the_architecture_doc():
    text = DOC.read_text()
    section = text[text.index("## Private names of other libraries"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    assert {name: section.count(f"`{name}`") for name in ALLOWED} == {name: 1 for name in ALLOWED}


def test_keras_applications_keep_weight_urls_and_hashes():
    from effnet.plugins.models.keras_import import keras_weights_origin
    from effnet.plugins.models.specs import get_variant

    for model in ("efficientnet_b0", "efficientnet_v2_s"):
        file_name, url, md5 = keras_weights_origin(get_variant(model))
        assert url.startswith("https://") and url.endswith(file_name) and md5 and len(md5) == 32


def test_keras_optimizer_clips_through_an_overridable_method():
    import keras
    import numpy as np

    variable = keras.Variable([0.0, 0.0])
    optimizer = keras.optimizers.SGD(1.0, global_clipnorm=1.0)
    calls = []
    original = optimizer._clip_gradients
    optimizer._clip_gradients = lambda grads: calls.append(1) or original(grads)
    optimizer.apply([np.array([3.0, 4.0], "float32")], [variable])
    assert calls and np.allclose(variable.numpy(), [-0.6, -0.8])


def test_tf_distribute_says_whether_merge_call_is_needed():
    import tensorflow as tf

    assert tf.__internal__.distribute.strategy_supports_no_merge_call() in (True, False)


def test_gin_macro_references_are_recognised():
    import gin

    from effnet.settings import _is_reference

    gin.clear_config()
    try:
        gin.parse_config("SIZE = 64\ntrain.image_size = %SIZE")
        assert _is_reference(gin.query_parameter("train.image_size"))
        assert not _is_reference(64)
    finally:
        gin.clear_config()


def test_keras_flatten_layers_recurses_into_nested_models():
    import keras

    from effnet.models import walk_layers

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")], name="inner")
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="outer_dense")(inner(inputs)))
    names = [layer.name for layer in walk_layers(outer)]
    assert "inner" in names and "inner_dense" in names and "outer_dense" in names


def test_keras_optimizer_use_weight_decay_follows_exclusions():
    import keras

    a, b = keras.Variable([1.0], name="a"), keras.Variable([[1.0]], name="b")
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_list=[a])
    opt.build([a, b])
    assert opt._use_weight_decay(a) is False and opt._use_weight_decay(b) is True


def test_keras_batchnorm_computes_moments_through_an_overridable_method():
    """Horovod's sync BatchNorm (plugins/backends.py) swaps ``layer._moments``; training must call it."""
    import keras
    import numpy as np

    layer = keras.layers.BatchNormalization(momentum=0.0)
    layer.build((None, 2, 2, 3))
    assert tuple(layer._reduction_axes) == (0, 1, 2)
    calls = []
    original = layer._moments

    def spy(inputs, mask):
        calls.append(1)
        return original(inputs, mask)

    layer._moments = spy
    layer(np.ones([2, 2, 2, 3], np.float32), training=True)
    assert calls


def test_keras_tf_optimizer_all_reduces_through_an_overridable_method():
    """tf.distribute backends replace ``_all_reduce_sum_gradients`` on the optimizer instance (the step sums once)."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variable = keras.Variable([1.0])
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build([variable])
    calls = []
    original = optimizer._all_reduce_sum_gradients

    def spy(grads_and_vars):
        calls.append(1)
        return original(grads_and_vars)

    optimizer._all_reduce_sum_gradients = spy

    @tf.function
    def step():
        strategy.run(lambda: optimizer.apply([tf.constant([1.0])], [variable]))

    step()
    assert calls and abs(float(variable.numpy()[0]) - 0.9) < 1e-6


def test_keras_autocast_scope_none_reads_a_variable_as_stored():
    """Inside a mixed-precision layer call Keras hands out float variables in the compute dtype;
    ``_float32`` steps out of that with ``AutocastScope(None)`` to fold BN into the float32 kernel."""
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet.plugins.models.blocks import _float32

    seen = {}

    class Probe(keras.layers.Layer):
        def build(self, _):
            self.w = self.add_weight(shape=(3,), initializer=keras.initializers.Constant(1.0 + 2.0**-12))

        def call(self, x):
            seen["autocast"], seen["stored"] = tf.convert_to_tensor(self.w), _float32(self.w)
            return x

    Probe(dtype="mixed_bfloat16")(np.zeros((1, 3), "float32"))
    assert seen["autocast"].dtype.name == "bfloat16"  # Keras' copy: 1 + 2^-12 rounds to 1
    assert seen["stored"].dtype.name == "float32" and np.all(seen["stored"].numpy() == np.float32(1.0 + 2.0**-12))


def test_keras_rmsprop_keeps_its_slots_where_fused_rmsprop_reads_them():
    import keras

    a, b = keras.Variable([1.0, 2.0], name="a"), keras.Variable([[3.0]], name="b")
    opt = keras.optimizers.RMSprop(1e-3, momentum=0.9)
    opt.build([a, b])
    for var in (a, b):
        index = opt._get_variable_index(var)
        assert opt._velocities[index].shape == var.shape and opt._momentums[index].shape == var.shape
    assert {id(v) for v in opt._velocities + opt._momentums} <= {id(v) for v in opt.variables}


def test_gin_registry_and_search_path_wrappers():
    from effnet import config

    registry = config._gin_registry()
    assert callable(getattr(registry, "get_match")) and any(True for _ in registry.items())
    assert "train" in config.configurable_names()
    assert "epochs" in config.configurable_parameters("train")
    path = config._gin_search_path()
    assert isinstance(path, list)
    config._set_search_path([ROOT / "gin"])  # untrusted: exactly the given folders
    assert config._gin_search_path() == [str(ROOT / "gin")]
    config._set_search_path([ROOT / "gin"], trust=True)  # trusted: the current folder and absolute paths too
    assert config._gin_search_path() == ["", str(ROOT / "gin")]


@requires_module("optuna", "optuna")
def test_optuna_frozen_trial_keeps_its_storage_id():
    """effnet.search.trial_id: a FrozenTrial's id is what ``optuna.trial.Trial(study, id)`` continues."""
    import optuna

    from effnet.search import trial_id

    study = optuna.create_study()
    asked = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    frozen = study.get_trials()[0]
    again = optuna.trial.Trial(study, trial_id(frozen))
    again.report(0.5, 1)
    assert again.number == asked.number and study.get_trials()[0].intermediate_values == {1: 0.5}

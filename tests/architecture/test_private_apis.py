"""The few private names of other libraries effnet relies on, each used in one place and pinned here.

When a Keras or gin-config release renames or changes one of them, these tests fail first and say
which wrapper to fix, instead of a run failing somewhere deep inside.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# private name -> the only files allowed to use it (the wrapper)
ALLOWED = {
    "_flatten_layers": {"effnet/models.py"},  # effnet.models.walk_layers
    "_use_weight_decay": {"plugins/nvlamb.py"},  # a keras Optimizer subclass asking its base class
    "gin_config._REGISTRY": {"effnet/config.py"},  # effnet.config._gin_registry
    "gin_config._LOCATION_PREFIXES": {"effnet/config.py"},  # effnet.config._gin_search_path
}


def test_private_names_are_used_only_in_their_wrappers():
    users: dict[str, set[str]] = {name: set() for name in ALLOWED}
    for folder in ("effnet", "plugins", "cli", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for name in ALLOWED:
                if re.search(re.escape(name) + r"\b", text):
                    users[name].add(path.relative_to(ROOT).as_posix())
    assert users == ALLOWED


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


def test_gin_registry_and_search_path_wrappers():
    from effnet import config

    registry = config._gin_registry()
    assert callable(getattr(registry, "get_match")) and any(True for _ in registry.items())
    assert "train" in config.configurable_names()
    assert "epochs" in config.configurable_parameters("train")
    path = config._gin_search_path()
    assert isinstance(path, list)
    config._set_search_path([ROOT / "gin"])
    assert config._gin_search_path() == ["", str(ROOT / "gin")]

"""The example in each hook's docstring (effnet/hookspecs.py) works when copied into a package:
loaded as a plugin, it registers its name, and a knob of its factory binds from gin."""

from __future__ import annotations

import inspect
import textwrap

import pytest

# What a plugin module would import; the examples use these names.
HEADER = """
import importlib
import gin
import keras
import tensorflow as tf
import effnet
import effnet.callbacks
import effnet.data
import effnet.distribute
import effnet.loggers
from effnet.stages import Stage
"""
# hook -> (kind, registered name, gin binding of one knob, attribute or parameter to read it back, value).
# effnet_backends re-registers the built-in 'single' and effnet_gin_paths names a package that does not
# exist here: both are checked for their shape only.
KNOBS = {
    # module-qualified: the plugin-package test registers a configurable of the same name in this process
    "effnet_models": ("model", "tiny_cnn", "hookspec_examples.tiny_cnn.width = 8"),
    "effnet_optimizers": ("optimizer", "adagrad", "adagrad.initial_accumulator_value = 0.25"),
    "effnet_lr_schedules": ("lr_schedule", "halving", "halving.every_epochs = 7"),
    "effnet_augmenters": ("augmenter", "invert_colors", "invert_colors.probability = 0.3"),
    "effnet_stage_schedules": ("stage_schedule", "two_halves", "two_halves.small_size = 48"),
    "effnet_datasets": ("dataset", "my_folder", "my_folder.data_dir = '{data_dir}'"),
    "effnet_loggers": ("logger", "print", None),
    "effnet_callbacks": ("callback", "stop_at_top1", "stop_at_top1.target = 0.5"),
}


def _examples() -> dict[str, str]:
    from effnet import hookspecs

    found = {}
    for name, hook in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("effnet_"):
            continue
        doc = inspect.getdoc(hook)
        assert "Example::" in doc, f"{name} has no example"
        found[name] = textwrap.dedent(doc.split("Example::", 1)[1]).strip("\n")
    return found


def test_every_hook_has_an_example_and_a_check():
    assert set(_examples()) == set(KNOBS) | {"effnet_backends", "effnet_gin_paths"}


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    from effnet.registry import reset_registry

    code = HEADER + "\n\n".join(_examples()[hook] for hook in KNOBS)
    (tmp_path / "hookspec_examples.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EFFNET_PLUGINS", "hookspec_examples")
    reset_registry()
    yield tmp_path
    reset_registry()  # the module stays imported: gin refuses to register its configurables twice


def test_each_example_registers_and_binds_a_knob_from_gin(example_plugin, tmp_path):
    import gin

    from effnet import config as config_mod
    from effnet import registry

    data_dir = tmp_path / "images" / "train" / "cat"
    data_dir.mkdir(parents=True)
    bindings = [knob.format(data_dir=tmp_path / "images") for _, _, knob in KNOBS.values() if knob]
    config_mod.parse([], params=bindings)
    try:
        for hook, (kind, name, _) in KNOBS.items():
            assert registry.get_registry().entry(kind, name).plugin == "hookspec_examples", hook
        assert registry.get("model", "tiny_cnn")(num_classes=3).layers[2].filters == 8
        optimizer = registry.get("optimizer", "adagrad")(learning_rate=0.1)
        assert optimizer.initial_accumulator_value == 0.25
        schedule = registry.get("lr_schedule", "halving")(base_lr=1.0, steps_per_epoch=10, total_steps=1000)
        assert float(schedule(69)) == 1.0 and float(schedule(70)) == 0.5  # halves every 7 epochs of 10 steps
        assert registry.get("augmenter", "invert_colors")().probability == 0.3
        stages = registry.get("stage_schedule", "two_halves")(epochs=4, final={"image_size": 64})
        assert [s.params["image_size"] for s in stages] == [48, 64]
        assert registry.get("dataset", "my_folder")().data_dir == str(tmp_path / "images")
        assert registry.get("callback", "stop_at_top1")().target == 0.5
        assert registry.get("logger", "print")(model_dir=None) is not None
    finally:
        gin.clear_config()

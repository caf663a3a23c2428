"""Deliberate differences from the reference scripts that no other test pins (docs/differences.md)."""

import pytest

from effnet import config
from effnet.errors import UserError


def _train_config(*params):
    from effnet.settings import TrainConfig

    config.parse(["quickstart"], list(params), macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    return TrainConfig()


def test_boolean_settings_turn_off_and_reject_strings():
    """The reference's boolean flags that default to True could not be turned off and took "0" as true."""
    cfg = _train_config("train.xla = False", "train.plot = False", "train.deterministic = True")
    assert (cfg.xla, cfg.plot, cfg.deterministic) == (False, False, True)
    for binding, name in (("train.xla = '0'", "xla"), ("train.plot = 'False'", "plot"), ("train.deterministic = 1", "deterministic")):
        with pytest.raises(UserError, match=rf"^train\.{name}=.* must be True or False"):
            _train_config(binding)

    from effnet.data.options import pipeline_options

    assert pipeline_options(random_flip=False).random_flip is False
    with pytest.raises(UserError, match=r"^input_pipeline\.random_flip='0' must be True or False"):
        pipeline_options(random_flip="0")


def test_fp32_means_fp32_and_tf32_is_asked_for():
    """TensorFlow turns TF32 math on by default on Ampere GPUs, so the reference's "FP32" ran TF32 there;
    here 'fp32' turns it off and 'tf32' on (a no-op on CPUs, but the setting is visible)."""
    import keras
    import tensorflow as tf

    from effnet import precision

    try:
        precision.configure("tf32")
        assert tf.config.experimental.tensor_float_32_execution_enabled()
        precision.configure("fp32")
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        assert keras.mixed_precision.global_policy().name == "float32"
        from effnet.settings import TrainConfig

        assert TrainConfig.__dataclass_fields__["precision"].default == "fp32"
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
        keras.mixed_precision.set_global_policy("float32")

"""One place builds what trains: the trainer, `effnet benchmark train` and the memory probe get the same step."""

import pytest

from tests.engine import runs

STEP_GIN = """
train.optimizer = 'adamw'
train.clip_norm = 1.5
train.decay_bias = True
train.weight_decay = 1e-5
train.label_smoothing = 0.2
train.ema_decay = 0.95
train.grad_accum_steps = 2
"""


@pytest.fixture
def step_config(tmp_path, monkeypatch):
    from effnet import config as config_mod

    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "cache"))
    gin_path = runs.write_gin(tmp_path, STEP_GIN)
    config_mod.parse([str(gin_path)], params=[f"train.model_dir = '{tmp_path / 'run'}'"])
    yield


def test_trainer_benchmark_and_probe_build_the_same_step(step_config):
    import keras

    from effnet import assembly, memory_probe
    from effnet.benchmarking import build_train_step
    from effnet.models import build_model
    from effnet.settings import BenchmarkConfig, TrainConfig
    from effnet.trainer import Trainer

    trainer = Trainer(TrainConfig())
    trainer.setup()
    trained = assembly.describe_step(trainer.step)
    trainer.log.close()

    keras.backend.clear_session()
    bench = BenchmarkConfig(mode="train", num_classes=trainer.num_classes).resolved()
    benchmarked = assembly.describe_step(build_train_step(bench, build_model(bench.model, bench.num_classes), False))

    keras.backend.clear_session()
    spec = assembly.probe_spec(TrainConfig(), trainer.num_classes)
    probed = assembly.describe_step(memory_probe.build(spec)[1])

    assert trained == benchmarked == probed
    # the settings of the config, not defaults, reached all three
    assert trained["optimizer"] == "AdamW" and trained["clip_norm"] == 1.5 and trained["accumulation"] == 2
    assert trained["label_smoothing"] == pytest.approx(0.2) and trained["weight_decay"] == pytest.approx(1e-5)
    assert trained["ema_decay"] == pytest.approx(0.95)
    assert any(path.endswith("bias") for path in trained["decayed"])  # train.decay_bias = True


def test_run_defaults_are_decided_once(tmp_path):
    from effnet.assembly import eval_batch
    from effnet.settings import TrainConfig

    cfg = TrainConfig(model_dir=str(tmp_path), model="m", dataset="d", batch_size=32, grad_accum_steps=2,
                      image_size=64)
    assert eval_batch(cfg) == 16 and eval_batch(cfg, planned_micro_batch=4) == 4 and cfg.eval_size == 64
    cfg = TrainConfig(model_dir=str(tmp_path), model="m", dataset="d", eval_batch_size=7, eval_image_size=80)
    assert eval_batch(cfg, planned_micro_batch=4) == 7 and cfg.eval_size == 80

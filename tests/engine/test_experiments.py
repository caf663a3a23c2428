"""Every packaged experiment resolves with `effnet config`, and the V2-S recipe gives the published schedule."""

import pytest

from effnet import config
from tests.clitools import run_inprocess

EXPERIMENTS = [name for name in config.available_gin_files([config.packaged_gin_dir()])
               if not name.startswith(("base/", "data/", "models/"))]


def test_the_seed_recipes_are_all_there():
    assert set(EXPERIMENTS) >= {
        "quickstart", "efficientnet_v2_s/amp_8xA100", "efficientnet_v2_s/tf32_8xA100", "efficientnet_v2_s/amp_8xV100",
        "efficientnet_v2_s/fp32_8xV100", "efficientnet_v2_s/lamb_80xA100", "efficientnet_b0/amp_8xA100",
        "efficientnet_b4/amp_8xA100",
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_resolves_and_validates(name, capsys):
    result = run_inprocess(capsys, "config", "--gin", name, "--model-dir", "/tmp/x", "--data-dir", "/data")
    assert result.code == 0, result.err
    assert "train.model = " in result.out
    from effnet.settings import TrainConfig

    config.parse([name], macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    cfg = TrainConfig()  # every value passes validation
    assert cfg.model and cfg.dataset


@pytest.mark.parametrize("name,precision,batch", [
    ("efficientnet_v2_s/amp_8xA100", "amp", 460), ("efficientnet_v2_s/tf32_8xA100", "tf32", 230),
    ("efficientnet_v2_s/amp_8xV100", "amp", 128), ("efficientnet_v2_s/fp32_8xV100", "fp32", 64),
])
def test_v2s_recipe_values(name, precision, batch):
    from effnet.settings import TrainConfig

    config.parse([name], macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    cfg = TrainConfig()
    assert (cfg.model, cfg.precision, cfg.batch_size, cfg.epochs) == ("efficientnet_v2_s", precision, batch, 350)
    assert (cfg.optimizer, cfg.lr_schedule, cfg.lr_init, cfg.reference_batch) == ("rmsprop", "cosine", 0.005, 128)
    assert (cfg.weight_decay, cfg.label_smoothing, cfg.ema_decay) == (5e-6, 0.1, 0.9999)
    assert (cfg.image_size, cfg.eval_image_size, cfg.xla) == (300, 384, True)


def test_v2s_progressive_table_from_the_recipe_file():
    import keras

    from effnet.trainer import TrainConfig, build_stages
    from effnet import registry

    config.parse(["efficientnet_v2_s/amp_8xA100"], macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    cfg = TrainConfig()
    with keras.StatelessScope(initialize_variables=False):
        model = registry.get("model", cfg.model)(num_classes=1000)
    stages = build_stages(cfg, model)
    rows = [(s.start_epoch, s.end_epoch, s.params["image_size"], round(s.params["randaugment.magnitude"], 2),
             s.params["randaugment.num_layers"], s.params["dropout"], s.params["drop_path"], s.params["batch_size"])
            for s in stages]
    assert rows == [
        (0, 87, 128, 5.0, 2, 0.2, 0.2, 460),
        (87, 175, 185, 8.33, 2, 0.2, 0.2, 460),
        (175, 262, 243, 11.67, 2, 0.2, 0.2, 460),
        (262, 350, 300, 15.0, 2, 0.2, 0.2, 460),
    ]


def test_large_batch_recipe_uses_nvlamb():
    from effnet.settings import TrainConfig

    import gin

    config.parse(["efficientnet_v2_s/lamb_80xA100"], macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr_init, cfg.weight_decay) == ("nvlamb", 5e-5, 0.0)
    assert gin.query_parameter("nvlamb.weight_decay") == 1e-5
    assert gin.query_parameter("cosine.warmup_epochs") == 10


@pytest.mark.parametrize("name,bindings,eval_size,notice", [
    # the own-images recipe at a smaller size evaluates at that size (it used to stay at 64: 12.9% top-1)
    ("image_folder", ["train.image_size = 32"], 32, False),
    ("image_folder", [], 64, False),
    ("quickstart", ["train.image_size = 96"], 96, False),
    # the seed's intended 300 -> 384 says nothing; a bound 384 for a 128 px training does
    ("efficientnet_v2_s/amp_8xA100", [], 384, False),
    ("efficientnet_v2_s/amp_8xA100", ["train.image_size = 128"], 384, True),
    ("image_folder", ["train.image_size = 32", "train.eval_image_size = 64"], 64, True),
])
def test_evaluation_size_follows_the_training_size(name, bindings, eval_size, notice):
    from effnet.settings import TrainConfig

    config.parse([name], bindings, macros={"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"})
    cfg = TrainConfig()
    assert cfg.eval_size == eval_size
    line = cfg.eval_size_notice()
    assert (line is not None) == notice
    if notice:
        assert "\n" not in line and f"train.eval_image_size={eval_size}" in line and "unbind" in line

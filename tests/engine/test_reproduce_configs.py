"""The V100-16GB experiments keep the V100-32GB recipe's global batch and learning rate with
gradient accumulation; every command written in docs/reproduce.md names an existing experiment."""

import re
from pathlib import Path

import pytest

from effnet import config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,big,micro", [
    ("efficientnet_v2_s/amp_8xV100_16G", "efficientnet_v2_s/amp_8xV100", 64),
    ("efficientnet_v2_s/fp32_8xV100_16G", "efficientnet_v2_s/fp32_8xV100", 32),
])
def test_v100_16g_recipes_accumulate_to_the_32g_batch(name, big, micro):
    from effnet.settings import TrainConfig

    macros = {"MODEL_DIR": "/tmp/x", "DATA_DIR": "/data"}
    config.parse([big], macros=macros)
    ref = TrainConfig()
    config.parse([name], macros=macros)
    cfg = TrainConfig()
    assert cfg.batch_size == ref.batch_size and cfg.micro_batch == micro and cfg.grad_accum_steps == 2
    assert (cfg.lr_init, cfg.reference_batch, cfg.precision, cfg.epochs) == (ref.lr_init, ref.reference_batch,
                                                                           ref.precision, ref.epochs)


def test_every_experiment_named_in_the_docs_exists():
    available = set(config.available_gin_files([config.packaged_gin_dir()]))
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    named = set(re.findall(r"--gin[ =]([\w/]+)", docs))
    assert {"efficientnet_v2_s/amp_8xA100", "efficientnet_v2_s/amp_8xV100_16G", "image_folder", "finetune"} <= named
    # (uppercase placeholders such as EXPERIMENT and paths into run folders are not experiment names)
    missing = sorted(n for n in named if n not in available and n.upper() != n and not n.startswith("runs/"))
    assert not missing, f"docs name experiments that do not exist: {missing}"

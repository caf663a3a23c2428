"""The ``wandb`` logger in offline mode: a real tiny run, then its offline run file read back record by record
(W&B's ``.wandb`` file: a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.engine import runs
from tests.extras import requires_module

pytestmark = [pytest.mark.slow, requires_module("wandb", "wandb")]

FAST = """
train.epochs = 2
train.steps_per_epoch = 3
train.log_every_steps = 1
train.eval_batch_size = 8
train.plot = False
train.deterministic = False
loggers.names = ('dllogger', 'wandb')
"""


def read_records(path: Path):
    """Every protobuf record of a W&B run file (7-byte header, 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def test_offline_run_has_params_every_step_once_and_the_artifacts(tmp_path):
    gin = runs.write_gin(tmp_path, FAST)
    model_dir = tmp_path / "run"
    env = {"EFFNET_CACHE": str(tmp_path / "cache"), "WANDB_SILENT": "true"}
    done = runs.run(runs.cli_args(gin, model_dir), env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    state = json.loads((model_dir / "wandb_run.json").read_text())
    files = list((model_dir / "wandb").glob(f"offline-run-*-{state['run_id']}/run-{state['run_id']}.wandb"))
    assert len(files) == 1, list((model_dir / "wandb").iterdir())
    records = read_records(files[0])
    history: dict[int, dict] = {}
    config: dict[str, str] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            step = int(record.history.step.num)
            assert not (set(items) - {"_step", "_runtime", "_timestamp"}) & set(history.get(step, {})), step
            history.setdefault(step, {}).update(items)
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "run" and record.run.run_id:
            assert record.run.run_id == state["run_id"]
    loss_steps = sorted(s for s, items in history.items() if "loss" in items)
    assert loss_steps == [1, 2, 3, 4, 5, 6]
    assert sorted(s for s, items in history.items() if "val_ema_top1" in items) == [3, 6]
    assert history[4]["epoch"] == 2
    assert json.loads(config["train.lr_init"]) == "0.02"
    assert json.loads(config["global_batch"]) == "8"
    saved = {p.name for p in files[0].parent.joinpath("files").iterdir()}
    assert {"report.json", "operative_config.gin", "labels.txt"} <= saved

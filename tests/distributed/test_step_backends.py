"""Real multi-process training steps through each backend (Horovod over Gloo, mirrored, multi_worker).

Each launch trains the same tiny model on the same global batches (tests/distributed/stepworker.py):

* ``equal``: gradient accumulation, no BatchNorm: after every update all ranks hold bit-identical
  model, optimizer and EMA state, and after N updates they equal one process that takes the whole
  global batch at once (float tolerance: the sums run in another order);
* ``nan``: BatchNorm (per-replica statistics averaged each update) and one NaN pixel on one replica in
  update 1: every rank skips that same update, all stay identical, and only rank 0 writes into the
  model dir (under multi_worker the other worker's copy goes to a temporary folder that is removed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.distributed.conftest import horovodrun_cmd, needs_horovod, python_module, run, run_workers, tail

WORKER = "tests.distributed.stepworker"
UPDATES = 4


def load(out: Path, ranks: int) -> list[dict]:
    found = []
    for r in range(ranks):
        info = json.loads((out / f"rank{r}.json").read_text())
        info["arrays"] = dict(np.load(out / f"rank{r}.npz"))
        found.append(info)
    return found


@pytest.fixture(scope="module")
def bn_reference(tmp_path_factory):
    """One process with BatchNorm, global batch 16 in one piece: what synchronised BatchNorm must equal."""
    out = tmp_path_factory.mktemp("single_bn")
    proc = run(python_module(WORKER, "--backend", "single", "--out", str(out), "--global-batch", "16", "--batchnorm",
                             "--updates", str(UPDATES)))
    assert proc.returncode == 0, tail(proc)
    return load(out, 1)[0]


def check_sync_bn_run(ranks: list[dict], bn_reference: dict):
    """With statistics over all replicas, BatchNorm (moving averages included) matches one big batch."""
    for r in ranks:
        assert r["checksums"] == ranks[0]["checksums"] and r["finite"] == [True] * UPDATES
    for key, value in bn_reference["arrays"].items():
        np.testing.assert_allclose(ranks[0]["arrays"][key], value, rtol=1e-4, atol=1e-5, err_msg=key)


SYNC_BN = ["--batchnorm", "--sync-bn", "--accum", "1", "--micro", "8", "--updates", str(UPDATES)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, global batch 16 in one piece (what 2 replicas x 2 micro-batches of 4 must equal)."""
    out = tmp_path_factory.mktemp("single")
    proc = run(python_module(WORKER, "--backend", "single", "--out", str(out), "--global-batch", "16",
                             "--updates", str(UPDATES)))
    assert proc.returncode == 0, tail(proc)
    return load(out, 1)[0]


def check_equal_run(ranks: list[dict], reference: dict, replicas: int = 2):
    assert [r["rank"] for r in ranks] == list(range(len(ranks)))
    assert all(r["replicas"] == replicas for r in ranks)
    for r in ranks:
        assert r["finite"] == [True] * UPDATES
        assert r["global_step"] == r["iterations"] == UPDATES
        assert all(r["copies_identical"]), "the per-device copies of a mirrored variable differ"
        # identical after every update on every rank
        assert r["checksums"] == ranks[0]["checksums"]
        assert r["window"]["examples"] == 16 * UPDATES  # metric sums count every replica's examples once
    for key, value in reference["arrays"].items():
        np.testing.assert_allclose(ranks[0]["arrays"][key], value, rtol=2e-5, atol=2e-6, err_msg=key)
    assert not np.allclose(reference["arrays"]["w0"], ranks[0]["arrays"]["ema0"])  # training moved the weights
    np.testing.assert_allclose(ranks[0]["window"]["loss"], reference["window"]["loss"], rtol=1e-5)


def check_nan_run(ranks: list[dict], model_dir: Path):
    for r in ranks:
        assert r["finite"] == [True, False, True, True], r["finite"]  # the NaN was on one replica only
        assert r["window"]["updates_skipped"] == 1 and r["iterations"] == UPDATES - 1
        assert r["global_step"] == UPDATES
        assert r["checksums"] == ranks[0]["checksums"]
        assert all(r["copies_identical"])
    for key, value in ranks[0]["arrays"].items():
        for other in ranks[1:]:
            np.testing.assert_array_equal(other["arrays"][key], value, err_msg=key)
    # only rank 0 wrote into the model dir
    assert ranks[0]["is_writer"] and ranks[0]["saved"] == str(model_dir / "checkpoints" / "ckpt-000000004")
    for r in ranks[1:]:
        assert not r["is_writer"] and r["saved"] is None
        if r["discarded"]:
            assert not Path(r["discarded"]).is_relative_to(model_dir) and not r["discarded_exists"]
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*"))
    assert files == ["checkpoints", "checkpoints/ckpt-000000004", "checkpoints/ckpt-000000004/ckpt.data-00000-of-00001",
                     "checkpoints/ckpt-000000004/ckpt.index", "checkpoints/ckpt-000000004/manifest.json",
                     "checkpoints/ckpt-000000004/meta.json"]


EQUAL = ["--accum", "2", "--micro", "4", "--updates", str(UPDATES)]
NAN = ["--batchnorm", "--nan-update", "1", "--nan-replica", "1", "--updates", str(UPDATES)]


@needs_horovod
def test_horovod_two_processes(tmp_path, reference):
    out = tmp_path / "equal"
    proc = run(horovodrun_cmd(2, *python_module(WORKER, "--backend", "horovod", "--out", str(out), *EQUAL)))
    assert proc.returncode == 0, tail(proc)
    check_equal_run(load(out, 2), reference)

    out, model_dir = tmp_path / "nan", tmp_path / "model"
    proc = run(horovodrun_cmd(2, *python_module(WORKER, "--backend", "horovod", "--out", str(out), *NAN,
                                                "--model-dir", str(model_dir))))
    assert proc.returncode == 0, tail(proc)
    check_nan_run(load(out, 2), model_dir)


@needs_horovod
def test_horovod_synchronised_batchnorm(tmp_path, bn_reference):
    out = tmp_path / "syncbn"
    proc = run(horovodrun_cmd(2, *python_module(WORKER, "--backend", "horovod", "--out", str(out), *SYNC_BN)))
    assert proc.returncode == 0, tail(proc)
    check_sync_bn_run(load(out, 2), bn_reference)


def test_mirrored_synchronised_batchnorm(tmp_path, bn_reference):
    out = tmp_path / "syncbn"
    proc = run(python_module(WORKER, "--backend", "mirrored", "--cpu-devices", "2", "--out", str(out), *SYNC_BN))
    assert proc.returncode == 0, tail(proc)
    check_sync_bn_run(load(out, 1), bn_reference)


def test_mirrored_two_logical_devices(tmp_path, reference):
    out = tmp_path / "equal"
    proc = run(python_module(WORKER, "--backend", "mirrored", "--cpu-devices", "2", "--out", str(out), *EQUAL))
    assert proc.returncode == 0, tail(proc)
    check_equal_run(load(out, 1), reference)

    out, model_dir = tmp_path / "nan", tmp_path / "model"
    proc = run(python_module(WORKER, "--backend", "mirrored", "--cpu-devices", "2", "--out", str(out), *NAN,
                             "--model-dir", str(model_dir)))
    assert proc.returncode == 0, tail(proc)
    check_nan_run(load(out, 1), model_dir)


def test_mirrored_without_accumulation(tmp_path, reference):
    """Two replicas x micro-batch 8, one micro-batch per update: the same global batch of 16."""
    out = tmp_path / "equal"
    proc = run(python_module(WORKER, "--backend", "mirrored", "--cpu-devices", "2", "--out", str(out),
                             "--accum", "1", "--micro", "8", "--updates", str(UPDATES)))
    assert proc.returncode == 0, tail(proc)
    check_equal_run(load(out, 1), reference)


def test_multi_worker_two_processes(tmp_path, reference):
    out = tmp_path / "equal"
    procs = run_workers(2, python_module(WORKER, "--backend", "multi_worker", "--out", str(out), *EQUAL))
    assert all(p.returncode == 0 for p in procs), "\n".join(tail(p) for p in procs)
    check_equal_run(load(out, 2), reference)

    out, model_dir = tmp_path / "nan", tmp_path / "model"
    procs = run_workers(2, python_module(WORKER, "--backend", "multi_worker", "--out", str(out), *NAN,
                                         "--model-dir", str(model_dir)))
    assert all(p.returncode == 0 for p in procs), "\n".join(tail(p) for p in procs)
    ranks = load(out, 2)
    check_nan_run(ranks, model_dir)
    assert ranks[1]["discarded"], "the non-chief worker must take part in the save"

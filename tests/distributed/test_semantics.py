"""The rules every backend shares (batch plan, replica notice) and what launchers tell a process."""

import pytest

from effnet.distribute import BatchPlan, SingleProcess, check_launcher, launcher_info, replica_notice
from effnet.errors import UserError


def test_batch_plan_global_batch_lr_and_steps():
    plan = BatchPlan(micro_batch=115, accumulation=4, replicas=8, local_replicas=2)
    assert plan.replica_batch == 460 and plan.global_batch == 3680 and plan.process_batch == 230
    assert plan.lr(0.005, 128) == pytest.approx(0.14375)
    assert plan.steps_per_epoch(1_281_167) == 348


def test_replica_notice_names_the_matching_accumulation():
    assert replica_notice(8, BatchPlan(460, 1, 8), 0.005, 128) is None
    assert replica_notice(None, BatchPlan(460, 1, 1), 0.005, 128) is None
    line = replica_notice(8, BatchPlan(460, 1, 2), 0.005, 128)
    assert line == ("effnet: this experiment was written for 8 replicas (global batch 3680, lr 0.14375); running on 2 "
                    "gives global batch 920 and lr 0.0359375; train.grad_accum_steps=4 with train.batch_size=1840 keeps "
                    "the micro-batch of 460 and matches it")
    odd = replica_notice(8, BatchPlan(230, 1, 3), 0.005, 128)
    assert "no whole number of accumulation steps matches it" in odd and "\n" not in odd


@pytest.mark.parametrize("env,expected", [
    ({}, (1, 0, 0, "")),
    ({"HOROVOD_SIZE": "4", "HOROVOD_RANK": "3", "HOROVOD_LOCAL_RANK": "1"}, (4, 3, 1, "HOROVOD_SIZE")),
    ({"OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
     (16, 9, 1, "OMPI_COMM_WORLD_SIZE")),
    ({"SLURM_STEP_NUM_TASKS": "80", "SLURM_PROCID": "17", "SLURM_LOCALID": "1", "SLURM_NTASKS": "80"},
     (80, 17, 1, "SLURM_STEP_NUM_TASKS")),
    ({"SLURM_NTASKS": "80", "SLURM_PROCID": "0"}, (1, 0, 0, "")),  # the sbatch script itself, not an srun task
])
def test_launcher_info(env, expected):
    info = launcher_info(env)
    assert (info.size, info.rank, info.local_rank, info.variable) == expected


def test_a_single_process_backend_under_a_launcher_refuses(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    with pytest.raises(UserError) as err:
        check_launcher(SingleProcess(), "single")
    assert str(err.value).startswith("this process is one of 8 started by a launcher (OMPI_COMM_WORLD_SIZE), but "
                                     "train.backend='single' runs a single process")


def test_multi_worker_without_tf_config_under_a_launcher_refuses(monkeypatch):
    from effnet.plugins.backends import MultiWorkerBackend

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("HOROVOD_SIZE", "2")
    with pytest.raises(UserError, match=r"train.backend='multi_worker' needs TF_CONFIG \(or srun\)"):
        MultiWorkerBackend().setup()


def test_replicas_must_be_a_positive_integer():
    from effnet.settings import TrainConfig

    with pytest.raises(UserError, match=r"train.replicas=0 is out of range: allowed an integer in \[1, 1000000\] or None"):
        TrainConfig(model_dir="x", model="m", dataset="d", replicas=0)
    assert TrainConfig(model_dir="x", model="m", dataset="d", replicas=8).replicas == 8

"""The distribution-backend interface the training and evaluation loops talk to.

A backend answers: which process am I (``rank``, ``size``), how many model replicas take part
(``num_replicas``), where are variables created (``scope``), how does a per-replica function run
(``run``), how are gradients and metric sums combined across replicas, and which process writes
files (``is_writer``). The loop is written once against this interface:

* the per-replica loss is ``sum(per_example_loss) / global_batch``, so gradients combine by
  **summing** across replicas (``reduce_gradients``);
* metric numerators and denominators are summed with ``reduce_sum`` and divided at the end, so
  every example counts once however the data was split.

:class:`SingleProcess` is the default implementation (one process, one replica). Backends for
Horovod and tf.distribute are plugins registered through ``effnet_backends``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from effnet.errors import UserError


@dataclass(frozen=True)
class ShardInfo:
    """Which part of the data an input pipeline must produce."""

    num_shards: int = 1  # number of input pipelines (usually processes)
    index: int = 0  # this pipeline's index in [0, num_shards)


class Backend:
    """One process, one replica; subclasses override what differs."""

    name = "single"

    def setup(self) -> None:
        """Initialise the process group (called once, before any model is built)."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def num_replicas(self) -> int:
        """Model replicas across all processes (a process may drive several devices)."""
        return self.size

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints, logs and reports."""
        return self.rank == 0

    def shard_info(self) -> ShardInfo:
        return ShardInfo(num_shards=self.size, index=self.rank)

    def scope(self):
        """Context in which models and optimizers are created."""
        return contextlib.nullcontext()

    def distribute_dataset(self, dataset):
        """Turn this process's ``tf.data.Dataset`` of local batches into what ``run`` consumes."""
        return dataset

    def run(self, fn: Callable, *args: Any):
        """Run a per-replica function (inside ``tf.function``)."""
        return fn(*args)

    def reduce_gradients(self, grads: Sequence[Any]) -> list[Any]:
        """Sum gradients over replicas, inside the replica function."""
        return list(grads)

    def reduce_sum(self, value):
        """Sum a per-replica value (or nest of values) over all replicas and processes."""
        return value

    def broadcast_variables(self, variables: Sequence[Any]) -> None:
        """Make every process start from the writer's values."""

    def barrier(self) -> None:
        """Wait for all processes."""

    def shutdown(self) -> None:
        """Release the process group."""

    def check_launch(self, name: str) -> None:
        """UserError when a launcher started several processes but this backend runs only one."""
        launched = launcher_world_size()
        if launched > 1 and self.size == 1:
            raise UserError(
                f"this process is one of {launched} started by a launcher, but train.backend={name!r} runs a "
                f"single process: every process would train alone and write the same model dir; pick a multi-process "
                f"backend (see `effnet plugins`) or start one process"
            )


def launcher_world_size() -> int:
    """How many processes horovodrun/mpirun/torchrun-style launchers say they started (1 if none)."""
    for name in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class SingleProcess(Backend):
    """The default: one process, one replica, nothing to reduce."""

    name = "single"


__all__ = ["Backend", "ShardInfo", "SingleProcess", "launcher_world_size"]

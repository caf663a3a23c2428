"""The distribution-backend interface the training and evaluation loops talk to.

A backend owns everything that differs between one process and many:

* who am I: ``rank``, ``size`` (processes), ``local_rank``, ``num_replicas`` (model replicas over
  all processes) and ``local_replicas`` (replicas this process drives), ``is_writer``;
* where state lives: models, optimizers and EMA are created inside ``scope()``; state the step
  keeps is made with :meth:`Backend.variable`: ``kind="shared"`` for values every replica holds
  identically (counters, EMA), ``kind="local"`` for per-replica sums (metric sums, gradient
  accumulators) that are summed when read with :meth:`Backend.read_sum`;
* how the step runs: ``run(fn, *args)`` calls the per-replica function on every local replica with
  its part of a batch from ``distribute_dataset``; inside it ``all_reduce_sum`` sums a list of
  tensors over all replicas (once per optimizer update: the gradients and a non-finite count go
  together), and ``update(fn, *args)`` runs ``fn`` exactly once per process with those identical
  values where shared variables can be assigned (a merge context under tf.distribute, where Keras'
  optimizer does not sum the gradients a second time);
* how processes agree: ``broadcast_variables`` (start and resume), ``barrier``, ``reduce_sum`` of
  host values (the step averages per-replica BatchNorm statistics through ``all_reduce_sum``);
* how files are written: only ``is_writer`` writes; when ``every_process_saves`` is true every
  process must call the checkpoint save (collective ops), non-writers into a temporary place.

The per-replica loss is ``sum(per_example_loss) / global_batch``, so gradients and metric sums
combine by **summing**; every example counts once however the data was split.

Global semantics (one set of rules for every backend, :class:`BatchPlan`)::

    micro_batch   = train.batch_size / train.grad_accum_steps   (per replica, per forward pass)
    global_batch  = micro_batch x grad_accum_steps x replicas    (examples per optimizer update)
    lr            = lr_init x global_batch / reference_batch
    steps/epoch   = train examples // global_batch

:class:`SingleProcess` is the default (one process, one replica). Horovod and tf.distribute
backends are plugins registered through ``effnet_backends`` (``plugins/backends.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from effnet.errors import UserError
from effnet.models import walk_layers

# Environment variables launchers set: (size, rank, local rank), in the order they are trusted.
LAUNCHER_ENV = (
    ("HOROVOD_SIZE", "HOROVOD_RANK", "HOROVOD_LOCAL_RANK"),  # horovodrun (gloo)
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI mpirun
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # MPICH / Intel MPI
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID"),  # srun (a plain sbatch script has no step)
    ("WORLD_SIZE", "RANK", "LOCAL_RANK"),  # torchrun-style launchers
)


@dataclass(frozen=True)
class LauncherInfo:
    """What a process launcher told this process through its environment."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    variable: str = ""  # which environment variable said so ('' when no launcher)


def launcher_info(environ: dict | None = None) -> LauncherInfo:
    """Size, rank and local rank from horovodrun / mpirun / srun / torchrun variables (1, 0, 0 if none)."""
    env = os.environ if environ is None else environ
    for size_var, rank_var, local_var in LAUNCHER_ENV:
        size = env.get(size_var, "")
        if not size.isdigit():
            continue
        rank, local = env.get(rank_var, "0"), env.get(local_var, "0")
        return LauncherInfo(int(size), int(rank) if rank.isdigit() else 0, int(local) if local.isdigit() else 0, size_var)
    return LauncherInfo()


def check_launcher(backend: "Backend", name: str) -> None:
    """Refuse a one-process backend in a job a launcher started with several processes.

    Every process would train alone and write the same model dir; the message says what to pick.
    """
    launched = launcher_info()
    if launched.size > 1 and backend.size == 1:
        raise UserError(
            f"this process is one of {launched.size} started by a launcher ({launched.variable}), but "
            f"train.backend={name!r} runs a single process: every process would train alone and write the same "
            f"model dir; use train.backend='horovod' (or 'multi_worker' with TF_CONFIG), or start one process"
        )


@dataclass(frozen=True)
class ShardInfo:
    """Which part of the data an input pipeline must produce."""

    num_shards: int = 1  # number of input pipelines (usually processes)
    index: int = 0  # this pipeline's index in [0, num_shards)


@dataclass(frozen=True)
class BatchPlan:
    """The batch arithmetic every backend shares (see the module docstring)."""

    micro_batch: int  # per replica, per forward pass
    accumulation: int  # micro-batches per optimizer update
    replicas: int  # over all processes
    local_replicas: int = 1  # replicas driven by this process

    @property
    def replica_batch(self) -> int:
        """Examples per replica per optimizer update (``train.batch_size``)."""
        return self.micro_batch * self.accumulation

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.replicas

    @property
    def process_batch(self) -> int:
        """The batch one process's input pipeline yields per forward pass (split over its replicas)."""
        return self.micro_batch * self.local_replicas

    def lr(self, lr_init: float, reference_batch: int) -> float:
        return lr_init * self.global_batch / reference_batch

    def steps_per_epoch(self, num_examples: int) -> int:
        return num_examples // self.global_batch


def plan_batch(batch_size: int, grad_accum_steps: int, backend: "Backend") -> BatchPlan:
    """The :class:`BatchPlan` of ``train.batch_size`` / ``train.grad_accum_steps`` on ``backend``."""
    return BatchPlan(micro_batch=batch_size // grad_accum_steps, accumulation=grad_accum_steps,
                     replicas=backend.num_replicas, local_replicas=backend.local_replicas)


def replica_notice(written_for: int | None, plan: BatchPlan, lr_init: float, reference_batch: int) -> str | None:
    """One line when a run has another number of replicas than its experiment was written for.

    It names the resulting global batch and learning rate, and the bindings that would give the
    recipe's global batch with the same micro-batch (``None`` when the numbers agree).
    """
    if not written_for or written_for == plan.replicas:
        return None
    recipe = BatchPlan(plan.micro_batch, plan.accumulation, written_for)
    wanted = recipe.global_batch
    per_replica = wanted / (plan.micro_batch * plan.replicas)
    if per_replica == int(per_replica):
        accum = int(per_replica)
        match = (f"train.grad_accum_steps={accum} with train.batch_size={plan.micro_batch * accum} "
                 f"keeps the micro-batch of {plan.micro_batch} and matches it")
    else:
        accum = max(1, math.ceil(per_replica))
        match = (f"no whole number of accumulation steps matches it with a micro-batch of {plan.micro_batch} "
                 f"(train.grad_accum_steps={accum} with train.batch_size={plan.micro_batch * accum} gives "
                 f"{plan.micro_batch * accum * plan.replicas})")
    return (f"effnet: this experiment was written for {written_for} replicas (global batch {wanted}, "
            f"lr {recipe.lr(lr_init, reference_batch):.6g}); running on {plan.replicas} gives global batch "
            f"{plan.global_batch} and lr {plan.lr(lr_init, reference_batch):.6g}; {match}")


class Backend:
    """One process, one replica; subclasses override what differs."""

    name = "single"
    every_process_saves = False  # whether every process must take part in a checkpoint save

    def setup(self) -> None:
        """Initialise the process group (called once, before any model is built)."""

    # -- who am I --------------------------------------------------------------------------------------
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
    def local_replicas(self) -> int:
        """Model replicas driven by this process."""
        return 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints, logs and reports."""
        return self.rank == 0

    def shard_info(self) -> ShardInfo:
        return ShardInfo(num_shards=self.size, index=self.rank)

    # -- where state lives -----------------------------------------------------------------------------
    def scope(self):
        """Context in which models, optimizers and EMA are created."""
        return contextlib.nullcontext()

    def variable(self, initial_value, *, name: str, kind: str = "shared", dtype=None):
        """A non-trainable ``tf.Variable`` for the step's state.

        ``kind="shared"``: one value on every replica, assigned inside :meth:`update` or on the host.
        ``kind="local"``: each replica adds its own part inside :meth:`run`; :meth:`read_sum` sums them.
        """
        import tensorflow as tf

        if kind not in ("shared", "local"):
            raise ValueError(f"variable kind {kind!r} is not 'shared' or 'local'")
        with self.scope():
            return self._make_variable(tf, initial_value, name, kind, dtype)

    def _make_variable(self, tf, initial_value, name, kind, dtype):
        return tf.Variable(initial_value, trainable=False, name=name, dtype=dtype)

    # -- how the step runs -----------------------------------------------------------------------------
    def distribute_dataset(self, dataset):
        """Turn this process's ``tf.data.Dataset`` of process batches into what ``run`` consumes."""
        return dataset

    def run(self, fn: Callable, *args: Any):
        """Run a per-replica function on every local replica (inside ``tf.function``)."""
        return fn(*args)

    def all_reduce_sum(self, values: Sequence[Any], gradients: bool = False) -> list[Any]:
        """Sum a list of tensors over all replicas, inside the per-replica function.

        ``gradients=True`` marks the once-per-update gradient reduction (a backend may compress it).
        """
        return list(values)

    def update(self, finite, on_finite: Callable, on_nonfinite: Callable, *args: Any) -> None:
        """Inside the per-replica function: run ``on_finite(*args)`` if ``finite`` else ``on_nonfinite(*args)``.

        ``finite`` and ``args`` are identical on every replica (they come from ``all_reduce_sum``),
        so every replica takes the same branch. The branches apply the optimizer (whose own
        cross-replica sum :meth:`prepare_optimizer` turned off) and assign shared variables.
        """
        import tensorflow as tf

        tf.cond(finite, lambda: on_finite(*args), lambda: on_nonfinite(*args))

    def prepare_optimizer(self, optimizer) -> None:
        """Adapt a Keras optimizer to gradients that the step has already summed over replicas."""

    def local_value(self, value):
        """This process's first replica's copy of a value returned by ``run``."""
        return value

    # -- how processes agree ---------------------------------------------------------------------------
    def read_sum(self, variable):
        """Host side: a ``kind="local"`` variable summed over all replicas of all processes (numpy)."""
        import numpy as np

        return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)

    def reduce_sum(self, value):
        """Host side: sum a per-process value (or tensor) over all processes."""
        return value

    def broadcast_variables(self, variables: Sequence[Any]) -> None:
        """Make every process start from the writer's values (model, optimizer, EMA, counters)."""

    def barrier(self) -> None:
        """Wait for all processes."""

    def guard(self):
        """Context around collective work: turns a lost peer process into a one-line error."""
        return contextlib.nullcontext()

    def enable_sync_batchnorm(self, model) -> int:
        """Make the model's BatchNorm layers use statistics over all replicas; returns how many."""
        return 0

    def shutdown(self) -> None:
        """Release the process group."""

    def check_launch(self, name: str) -> None:
        """UserError when a launcher started several processes but this backend runs only one."""
        check_launcher(self, name)


class SingleProcess(Backend):
    """The default: one process, one replica, nothing to reduce."""

    name = "single"


def batchnorm_layers(model) -> list:
    import keras

    return [layer for layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def replica_state_variables(model) -> list:
    """Per-replica statistics that must agree across replicas: non-trainable float weights (BN moving stats)."""
    return [v for v in model.non_trainable_weights if "float" in str(v.dtype)]


__all__ = ["Backend", "BatchPlan", "LauncherInfo", "ShardInfo", "SingleProcess", "batchnorm_layers",
           "check_launcher", "launcher_info", "plan_batch", "replica_notice", "replica_state_variables"]

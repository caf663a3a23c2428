"""Built-in distribution backends: ``single``, ``horovod``, ``mirrored``, ``multi_worker``.

* ``horovod``: one process per device, started by ``horovodrun -np N``, ``mpirun`` or ``srun``.
  Gradients are summed with ``hvd.grouped_allreduce`` (NCCL on GPUs, Gloo or MPI on CPUs, as the
  Horovod build and the launcher decide), optionally compressed to float16 on the wire
  (``horovod.fp16_allreduce = True``). Each process sees only the GPU of its local rank. Keras 3
  variables are broadcast through their underlying ``tf.Variable`` (Horovod's Keras integration
  and ``DistributedGradientTape`` do not work with Keras 3). Started without a launcher it runs
  as one process; when Horovod is not installed and no launcher started us, it falls back to
  ``single`` with a notice. When a peer process dies, the survivors stop with one line naming the
  lost rank instead of waiting in an allreduce.
* ``mirrored``: ``tf.distribute.MirroredStrategy``: one process, all local GPUs (or
  ``mirrored.cpu_devices`` logical CPU devices, for trying it out without GPUs).
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over processes described by
  ``TF_CONFIG``, or by Slurm (``srun``) through TensorFlow's ``SlurmClusterResolver``.

Under tf.distribute the step's update runs in the cross-replica context with gradients the step
has already summed, so Keras' optimizer does not sum them again. Checkpoints under
``multi_worker`` are written by every worker (the save runs collective ops); non-chief workers
write into a temporary folder that is deleted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

import gin

import effnet
from effnet.distribute import Backend, SingleProcess, batchnorm_layers, launcher_info
from effnet.errors import UserError


def _already_reduced(grads_and_vars):
    return list(grads_and_vars)


def _notice(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def _pin_gpu(tf, local_rank: int) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    if local_rank >= len(gpus):
        raise UserError(f"local rank {local_rank} has no GPU: this node has {len(gpus)}; start at most {len(gpus)} processes per node")
    tf.config.set_visible_devices(gpus[local_rank], "GPU")
    tf.config.experimental.set_memory_growth(gpus[local_rank], True)


# --------------------------------------------------------------------------------------------------
# Horovod


class LostPeer(UserError):
    """A peer process of the job died; this one stops instead of hanging."""


class HorovodBackend(Backend):
    name = "horovod"

    def __init__(self, fp16_allreduce: bool = False, peer_grace: float = 5.0):
        self.fp16_allreduce = bool(fp16_allreduce)
        self.peer_grace = float(peer_grace)  # seconds the watchdog waits for the main thread to report a loss
        self._hvd = None
        self._peers: list[tuple[str, int]] = []
        self._lost_lock = threading.Lock()
        self._lost_reported = False
        self._stop_watchdog = False

    def setup(self) -> None:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        hvd.init()
        self._hvd = hvd
        _pin_gpu(tf, hvd.local_rank())
        if hvd.size() > 1:
            # (host, pid) of every rank: how a survivor names the rank it lost.
            self._peers = hvd.allgather_object((socket.gethostname(), os.getpid()))
            self._start_watchdog()
            self._on_terminate()

    @property
    def rank(self) -> int:
        return self._hvd.rank() if self._hvd else 0

    @property
    def size(self) -> int:
        return self._hvd.size() if self._hvd else 1

    @property
    def local_rank(self) -> int:
        return self._hvd.local_rank() if self._hvd else 0

    def _compression(self, gradients: bool):
        hvd = self._hvd
        return hvd.Compression.fp16 if (gradients and self.fp16_allreduce) else hvd.Compression.none

    def all_reduce_sum(self, values, gradients: bool = False):
        if self.size == 1:
            return list(values)
        return list(self._hvd.grouped_allreduce(list(values), op=self._hvd.Sum, compression=self._compression(gradients)))

    def read_sum(self, variable):
        import tensorflow as tf

        value = tf.convert_to_tensor(variable)
        if self.size > 1:
            value = self._hvd.allreduce(value, op=self._hvd.Sum)
        return value.numpy()

    def reduce_sum(self, value):
        import tensorflow as tf

        if self.size == 1:
            return value
        return self._hvd.allreduce(tf.convert_to_tensor(value), op=self._hvd.Sum)

    def broadcast_variables(self, variables) -> None:
        if self.size == 1:
            return
        import keras

        # Keras 3 variables are not tf.Variables; Horovod broadcasts the tf.Variable inside each.
        underlying = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        self._hvd.broadcast_variables(underlying, root_rank=0)

    def barrier(self) -> None:
        import tensorflow as tf

        if self.size > 1:
            self._hvd.allreduce(tf.constant(0.0), op=self._hvd.Sum, name="effnet_barrier").numpy()

    def enable_sync_batchnorm(self, model) -> int:
        layers = batchnorm_layers(model)
        if self.size == 1:
            return len(layers)
        hvd = self._hvd
        import tensorflow as tf

        def moments(layer):
            def synced(inputs, mask):
                x = tf.cast(inputs, tf.float32)
                axes = layer._reduction_axes
                count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
                total, squares, n = hvd.grouped_allreduce(
                    [tf.reduce_sum(x, axis=axes), tf.reduce_sum(tf.square(x), axis=axes), count], op=hvd.Sum)
                mean = total / n
                variance = tf.maximum(squares / n - tf.square(mean), 0.0)
                return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)
            return synced

        for layer in layers:
            layer._moments = moments(layer)  # per instance: the layer's statistics over every rank's batch
            layer.use_fused_kernel = False  # a fused-kernel BatchNorm (efficientnet.fused_bn) must take that path
        return len(layers)

    def shutdown(self) -> None:
        if self._hvd is not None and self._hvd.is_initialized():
            self._stop_watchdog = True
            self._hvd.shutdown()

    # -- a lost peer ends the job with one line --------------------------------------------------------
    @contextlib.contextmanager
    def guard(self):
        """Horovod reports a dead peer as an op error in the survivors: say which rank, in one line."""
        try:
            yield
        except Exception as exc:
            message = self._lost_peer_message(exc)
            if message is None or not self._claim_report():
                raise
            raise LostPeer(message) from None

    def _claim_report(self) -> bool:
        with self._lost_lock:
            first, self._lost_reported = not self._lost_reported, True
            return first

    def _lost_ranks(self) -> list[int]:
        host = socket.gethostname()
        return [rank for rank, (h, pid) in enumerate(self._peers) if h == host and rank != self.rank and not _alive(pid)]

    def _lost_words(self, ranks) -> str:
        who = f"rank {', '.join(map(str, ranks))}" if ranks else "a peer rank (on another host)"
        return (f"horovod: lost {who} of {self.size}; rank {self.rank} stops instead of waiting for it; "
                f"relaunch the job to resume from the last checkpoint")

    def _lost_peer_message(self, error: BaseException) -> str | None:
        if self.size == 1:
            return None
        text = str(error)
        markers = ("Horovod", "horovod", "gloo", "Gloo", "Connection closed by peer", "Connection reset", "MPI")
        if not any(m in text for m in markers):
            return None
        return self._lost_words(self._lost_ranks())

    def _on_terminate(self) -> None:
        """horovodrun terminates the survivors as soon as one worker dies: say which one first."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            lost = self._lost_ranks()
            if lost and self._claim_report():
                print(f"error: {self._lost_words(lost)}", file=sys.stderr, flush=True)
                os._exit(UserError.exit_code)
            if callable(previous):
                previous(signum, frame)
            else:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, handler)

    def _start_watchdog(self) -> None:
        """Watch the other ranks' processes on this host and stop this one when one of them is gone.

        Survivors blocked in an allreduce usually get an error from Horovod at once (the guard turns
        it into one line); the watchdog covers a survivor that is busy elsewhere (evaluation, data)
        or waiting on a peer that vanished without closing its connection.
        """
        host = socket.gethostname()
        local_peers = [(rank, pid) for rank, (h, pid) in enumerate(self._peers) if h == host and rank != self.rank]
        if not local_peers:
            return

        def watch():
            while not self._stop_watchdog:
                lost = [rank for rank, pid in local_peers if not _alive(pid)]
                if lost:
                    time.sleep(self.peer_grace)  # let the main thread report it if it is already failing
                    if self._claim_report():
                        print(f"error: {self._lost_words(lost)}", file=sys.stderr, flush=True)
                        os._exit(UserError.exit_code)
                    return
                time.sleep(1.0)

        threading.Thread(target=watch, name="effnet-peer-watchdog", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed but not yet reaped by its launcher) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@gin.configurable("horovod")
def horovod_backend(fp16_allreduce: bool = False) -> Backend:
    """The ``horovod`` backend; ``fp16_allreduce`` sends gradients as float16 (half the bytes)."""
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        launched = launcher_info()
        if launched.size > 1:
            raise UserError(
                f"train.backend='horovod' but Horovod is not installed, and {launched.variable}={launched.size} says a "
                f"launcher started {launched.size} processes; install it with scripts/install_horovod.sh"
            ) from None
        _notice("horovod is not installed and no launcher started this process: running as a single process "
                "(install it with scripts/install_horovod.sh)")
        return SingleProcess()
    return HorovodBackend(fp16_allreduce=fp16_allreduce)


# --------------------------------------------------------------------------------------------------
# tf.distribute


class StrategyBackend(Backend):
    """What MirroredStrategy and MultiWorkerMirroredStrategy share."""

    def __init__(self):
        self.strategy = None

    def _make_strategy(self, tf):
        raise NotImplementedError

    def setup(self) -> None:
        import tensorflow as tf

        self.strategy = self._make_strategy(tf)

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def local_replicas(self) -> int:
        return len(self.strategy.extended.worker_devices)

    def scope(self):
        return self.strategy.scope()

    def _make_variable(self, tf, initial_value, name, kind, dtype):
        if kind == "local":
            return tf.Variable(initial_value, trainable=False, name=name, dtype=dtype,
                               synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.SUM)
        return tf.Variable(initial_value, trainable=False, name=name, dtype=dtype,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def distribute_dataset(self, dataset):
        """Each process batch (micro-batch x local replicas) is split evenly over this process's replicas."""
        import tensorflow as tf

        local = self.local_replicas
        if local > 1:
            def split(batch):
                parts = tf.nest.map_structure(lambda x: tf.reshape(x, [local, -1, *x.shape[1:]]), batch)
                return tf.data.Dataset.from_tensor_slices(parts)

            dataset = dataset.flat_map(split)
        options = tf.data.Options()
        # The input pipeline already reads this process's shard (shard_info()); do not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options)
        # From a function: each element is one replica's batch, as is (no re-batching by the strategy).
        return self.strategy.distribute_datasets_from_function(lambda context: dataset)

    def run(self, fn, *args):
        return self.strategy.run(fn, args=args)

    def all_reduce_sum(self, values, gradients: bool = False):
        import tensorflow as tf

        return list(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, list(values)))

    def update(self, finite, on_finite, on_nonfinite, *args):
        import tensorflow as tf

        if tf.__internal__.distribute.strategy_supports_no_merge_call():  # XLA on GPUs: no merge_call needed
            return tf.cond(finite, lambda: on_finite(*args), lambda: on_nonfinite(*args))

        # A tf.cond whose branch applies a Keras optimizer cannot sit in a replica context (the optimizer
        # calls merge_call): branch in the cross-replica context and run the branch on every replica,
        # as Keras' LossScaleOptimizer does.
        def merged(strategy, finite, *merged_args):
            first = strategy.experimental_local_results(finite)[0]
            each = strategy.extended.call_for_each_replica
            tf.cond(first, lambda: each(on_finite, args=merged_args), lambda: each(on_nonfinite, args=merged_args))

        tf.distribute.get_replica_context().merge_call(merged, args=(finite, *args))

    def prepare_optimizer(self, optimizer) -> None:
        """Stop Keras' optimizer from summing the gradients over replicas: the step already did.

        Keras 3's TF optimizer all-reduces gradients inside ``apply`` when it runs in a replica
        context; the step sums them itself (once per update, after accumulation, so that clipping,
        nvLAMB's global norm and the skip decision see the summed gradients), so that sum would
        count them twice.
        """
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        for opt in {id(optimizer): optimizer, id(inner): inner}.values():
            opt._all_reduce_sum_gradients = _already_reduced

    def local_value(self, value):
        return self.strategy.experimental_local_results(value)[0]

    def _cross_process_sum(self, tensor):
        """Sum a host value over processes: only the first local replica of each process contributes."""
        import tensorflow as tf

        local = self.local_replicas

        def replica(value):
            ctx = tf.distribute.get_replica_context()
            mine = tf.where(ctx.replica_id_in_sync_group % local == 0, value, tf.zeros_like(value))
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        return self.local_value(self.strategy.run(replica, args=(tensor,)))

    def read_sum(self, variable):
        # A SUM/ON_READ variable read in the cross-replica context is already summed over all replicas
        # (MultiWorkerMirroredStrategy runs a collective for it: every worker must read together).
        return variable.numpy()

    def reduce_sum(self, value):
        import tensorflow as tf

        if self.size == 1:
            return value
        return self._cross_process_sum(tf.convert_to_tensor(value))

    def enable_sync_batchnorm(self, model) -> int:
        layers = batchnorm_layers(model)
        for layer in layers:
            layer.synchronized = True  # Keras computes the moments with an all-reduce in the replica context
        return len(layers)


class MirroredBackend(StrategyBackend):
    name = "mirrored"

    def __init__(self, cpu_devices: int = 0):
        super().__init__()
        self.cpu_devices = int(cpu_devices)

    def _make_strategy(self, tf):
        if self.cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
            cpus = tf.config.list_physical_devices("CPU")
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * self.cpu_devices)
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(self.cpu_devices)])
        return tf.distribute.MirroredStrategy()


class MultiWorkerBackend(StrategyBackend):
    name = "multi_worker"
    every_process_saves = True

    def _make_strategy(self, tf):
        resolver = None
        if "TF_CONFIG" not in os.environ:
            if launcher_info().variable == "SLURM_STEP_NUM_TASKS":  # started by srun
                resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
            else:
                launched = launcher_info()
                if launched.size > 1:
                    raise UserError(
                        f"train.backend='multi_worker' needs TF_CONFIG (or srun) to find its peers, but only "
                        f"{launched.variable}={launched.size} is set; use train.backend='horovod' with this launcher"
                    )
        else:
            _pin_gpu(tf, launcher_info().local_rank)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)

    @property
    def rank(self) -> int:
        if not self._has_cluster():
            return 0
        resolver = self.strategy.cluster_resolver
        has_chief = "chief" in resolver.cluster_spec().as_dict()
        if resolver.task_type == "chief":
            return 0
        return int(resolver.task_id or 0) + (1 if has_chief else 0)

    @property
    def size(self) -> int:
        if not self._has_cluster():
            return 1
        spec = self.strategy.cluster_resolver.cluster_spec().as_dict()
        return sum(len(spec.get(job, [])) for job in ("chief", "worker"))

    def _has_cluster(self) -> bool:
        resolver = self.strategy.cluster_resolver
        return resolver is not None and bool(resolver.cluster_spec().as_dict())

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def broadcast_variables(self, variables) -> None:
        """Copy the chief's values everywhere (one all-reduce where only the chief contributes)."""
        if self.size == 1:
            return
        import keras
        import tensorflow as tf

        underlying = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        chief = self.rank == 0
        values = [tf.convert_to_tensor(v) if chief else tf.zeros(v.shape, v.dtype) for v in underlying]
        for var, value in zip(underlying, self._cross_process_sum_list(values)):
            var.assign(value)

    def _cross_process_sum_list(self, tensors):
        """Sum host tensors over processes, one all-reduce per dtype (collectives pack one dtype)."""
        import tensorflow as tf

        local = self.local_replicas

        def replica(*values):
            ctx = tf.distribute.get_replica_context()
            first = ctx.replica_id_in_sync_group % local == 0
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.where(first, v, tf.zeros_like(v)) for v in values])

        out = [None] * len(tensors)
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            idx = [i for i, t in enumerate(tensors) if t.dtype == dtype]
            summed = self.strategy.run(tf.function(replica), args=tuple(tensors[i] for i in idx))
            for i, value in zip(idx, summed):
                out[i] = self.local_value(value)
        return out

    def barrier(self) -> None:
        import tensorflow as tf

        if self.size > 1:
            self._cross_process_sum(tf.constant(0.0)).numpy()


@gin.configurable("mirrored")
def mirrored_backend(cpu_devices: int = 0) -> Backend:
    """``mirrored``: all local GPUs; without GPUs, ``cpu_devices`` > 1 splits the CPU into logical devices."""
    return MirroredBackend(cpu_devices=cpu_devices)


@effnet.hookimpl
def effnet_backends():
    return {"single": SingleProcess, "horovod": horovod_backend, "mirrored": mirrored_backend,
            "multi_worker": MultiWorkerBackend}

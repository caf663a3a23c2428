"""Peak memory of a training step, and the planner behind ``progressive.batch_sizes = 'auto'``.

**Measuring.** :func:`probe` runs one measurement in a fresh child process (``python -m
effnet.memory_probe``), so peaks of different sizes and batches never mix: the child builds the real
model (with the run's gin bindings: ``efficientnet.width`` ...) and the run's own training step
(:func:`effnet.assembly.build_step`: optimizer, EMA, clipping, decay exclusions) with gradient
accumulation, and runs ``updates`` optimizer updates
of two micro-batches each on synthetic uint8 images. It reports

* on CPU ``peak_bytes`` = the process's peak resident set size during the steady-state updates
  (Linux ``VmHWM``, reset after the first update, whose graph tracing and optimisation is a
  one-off peak that does not grow with the batch): Python, TensorFlow, weights, optimizer slots,
  EMA, accumulators and the step's activations and gradients; ``rss_peak_bytes`` is the whole
  process's peak (``ru_maxrss``, tracing included); ``baseline_bytes`` the resident size after
  everything is built and before the first step;
* on a GPU ``peak_bytes`` = the TensorFlow allocator's peak on ``GPU:0``
  (``tf.config.experimental.get_memory_info``, reset after the build, so it is the step's peak
  with the weights already resident).

**Planning.** For every stage, :func:`plan` probes two micro-batches at the stage's image size,
fits ``memory = fixed + per_image x batch`` and takes the largest micro-batch the budget allows
(with the slope raised by :data:`SLOPE_MARGIN`).
The stage's batch per optimizer update (``train.batch_size`` or the stage's) is kept, so the
global batch and the learning rate stay the recipe's: the micro-batch becomes the largest divisor
of that batch (at most the recipe's micro-batch) that fits, and the stage accumulates gradients
over ``batch / micro`` micro-batches. The plan is written to ``<model_dir>/memory_plan.json``
and read back on resume, so a resumed run uses the same micro-batches without probing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet.errors import UserError
from effnet.layout import MEMORY_PLAN
from effnet.files import read_json_dict, write_json_atomic

PLAN_FILE = MEMORY_PLAN
#: Micro-batches the planner measures at each stage's image size (the fit's two points).
PROBE_BATCHES = (4, 16)
#: With no ``train.memory_budget_gb``: this fraction of the memory available to the process (the
#: rest is headroom for the input pipeline, evaluation and the allocator's fragmentation).
DEFAULT_BUDGET_FRACTION = 0.7
GIB = 1024**3
#: The planner raises the fitted per-image slope by this factor: a line through two small batches
#: slightly underestimates large ones (measured: EfficientNet-B0 bf16 at 224 px, batch 32 took 2.4%
#: more than the line through batches 8 and 16 predicted; fp32 0.3%; docs/performance.md).
SLOPE_MARGIN = 1.1
PROBE_TIMEOUT = 3600


# --------------------------------------------------------------------------------------------------
# What the process may use


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def current_rss() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``; 0 where unreadable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> tuple[int, str]:
    """Memory this process may still use plus what it holds, and where that number came from.

    ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's limit minus its usage when the
    process runs in a memory-limited cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); the
    process's own resident size is added back, since a fresh probe process measures it too.
    """
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit and usage is not None and limit < 2**60:
            candidates.append((max(0, limit - usage), f"cgroup limit {limit_file}"))
            break
    if not candidates:
        raise UserError("cannot tell how much memory this machine has (no /proc/meminfo); "
                        "set train.memory_budget_gb for progressive.batch_sizes='auto'")
    free, source = min(candidates)
    return free + current_rss(), source


def _on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def budget_bytes(budget_gb: float | None) -> tuple[int, str]:
    """The budget in bytes and a few words saying where it came from."""
    if budget_gb is not None:
        return int(budget_gb * GIB), "train.memory_budget_gb"
    if _on_gpu():
        raise UserError("progressive.batch_sizes='auto' on a GPU needs train.memory_budget_gb (the GPU memory a "
                        "replica may use, e.g. 0.9 x the device's memory in GiB); bind it in the gin file")
    available, source = available_bytes()
    return int(DEFAULT_BUDGET_FRACTION * available), f"{DEFAULT_BUDGET_FRACTION:.0%} of {source}"


# --------------------------------------------------------------------------------------------------
# One measurement (in the child)


@dataclass(frozen=True)
class ProbeSpec:
    """What one probe builds and runs (JSON between parent and child)."""

    model: str
    image_size: int
    batch: int
    num_classes: int = 1000
    precision: str = "fp32"
    optimizer: str = "rmsprop"
    weight_decay: float = 5e-6
    label_smoothing: float = 0.1
    ema_decay: float | None = 0.9999
    clip_norm: float | None = None
    xla: bool = False
    accumulation: int = 2  # micro-batches per update: includes the accumulators and both compiled steps
    updates: int = 2
    seed: int = 0
    gin_file: str = ""  # the parent's gin config (model knobs), parsed untrusted
    decay_bias: bool = False
    decay_norm: bool = False



def peak_memory(gpu: bool, steady: bool = False) -> dict:
    """``{"peak_bytes", "measure"}``: the TensorFlow allocator's peak on GPU:0 (since its last
    ``reset_memory_stats``), else this process's peak RSS, since the last :func:`reset_peak_rss` when
    ``steady`` (``VmHWM``), else over its whole life (``ru_maxrss``)."""
    if gpu:
        import tensorflow as tf

        return {"peak_bytes": int(tf.config.experimental.get_memory_info("GPU:0")["peak"]),
                "measure": "TensorFlow allocator peak on GPU:0 after the build"}
    if steady:
        return {"peak_bytes": _read_status_bytes("VmHWM") or process_peak_rss(),
                "measure": "peak RSS of the steady-state updates (VmHWM reset after the first, tracing, update)"}
    return {"peak_bytes": process_peak_rss(), "measure": "process peak RSS (ru_maxrss)"}


def process_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux: ``/proc/self/clear_refs``); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _read_status_bytes("VmHWM") is not None
    except OSError:
        return False


def _read_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def probe(spec: ProbeSpec, *, gin_text: str = "", timeout: float = PROBE_TIMEOUT) -> dict:
    """Run :func:`measure` for ``spec`` in a fresh child process; its figures, or a UserError."""
    with tempfile.TemporaryDirectory(prefix="effnet-memory-") as tmp:
        if gin_text:
            (Path(tmp) / "config.gin").write_text(gin_text)
            spec = ProbeSpec(**{**asdict(spec), "gin_file": str(Path(tmp) / "config.gin")})
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(asdict(spec)))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        try:
            done = subprocess.run([sys.executable, "-m", "effnet.memory_probe", str(spec_file)], capture_output=True,
                                  text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise UserError(f"memory probe of {spec.model} at {spec.image_size} px, batch {spec.batch} took over "
                            f"{timeout:.0f} s; set progressive.batch_sizes to a list instead of 'auto'") from None
    for line in done.stdout.splitlines():
        if line.startswith("EFFNET_MEMORY "):
            return json.loads(line[len("EFFNET_MEMORY "):])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
    raise UserError(f"memory probe of {spec.model} at {spec.image_size} px, batch {spec.batch} {how} ({last[:300]}); "
                    f"if it ran out of memory, free memory on the machine or set progressive.batch_sizes "
                    f"to a list instead of 'auto'")


# --------------------------------------------------------------------------------------------------
# The fit and the plan


@dataclass(frozen=True)
class Fit:
    """``memory(batch) = fixed + per_image * batch`` (bytes), from two probes at one image size."""

    fixed: float
    per_image: float

    @classmethod
    def through(cls, points) -> "Fit":
        (b1, m1), (b2, m2) = sorted((int(b), float(m)) for b, m in points)[:2]
        per_image = max((m2 - m1) / (b2 - b1), 1.0)  # noise can make it <= 0 for tiny models: stay increasing
        return cls(fixed=m1 - per_image * b1, per_image=per_image)

    def predict(self, batch: int) -> float:
        return self.fixed + self.per_image * batch

    def largest_batch(self, budget: float) -> int:
        """The largest batch predicted to fit ``budget`` (0 when not even one image does)."""
        return max(0, int((budget - self.fixed) // self.per_image))


def choose_micro_batch(replica_batch: int, fits: int, min_accum: int = 1) -> int:
    """The largest divisor of ``replica_batch`` that is at most ``fits`` and ``replica_batch / min_accum``.

    Divisors keep every update's batch, and so the global batch, exactly the recipe's.
    """
    cap = min(fits, replica_batch // min_accum)
    for accum in range(max(1, min_accum), replica_batch + 1):
        if replica_batch % accum == 0 and replica_batch // accum <= cap:
            return replica_batch // accum
    return 0


@dataclass(frozen=True)
class StagePlan:
    stage: int  # 1-based, as logged
    image_size: int
    batch_size: int  # per replica per update (kept from the recipe)
    micro_batch: int
    grad_accum_steps: int
    predicted_bytes: int
    budget_bytes: int


#: gin bindings that never change what a probe builds (run bookkeeping, data, the plan itself); the
#: ones the probe does use (model, precision, optimizer ...) are fields of :class:`ProbeSpec`.
_NOT_MODEL = re.compile(r"^(train|progressive|loggers|input_pipeline|benchmark|export|[A-Z_][A-Z0-9_]*)\b")


def _probe_key(spec: ProbeSpec, gin_text: str) -> dict:
    """What probes depend on: the spec's settings and the gin bindings of the model and other plugins."""
    model_lines = [line.strip() for line in gin_text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#") and not _NOT_MODEL.match(line.strip())]
    key = {k: v for k, v in asdict(spec).items() if k not in ("image_size", "batch", "gin_file")}
    for name in ("decay_bias", "decay_norm"):  # added later: plans made before them stay valid
        if not key[name]:
            del key[name]
    key["gin_sha256"] = hashlib.sha256("\n".join(model_lines).encode()).hexdigest()
    return key


def _cached_plan(raw: dict, sizes: list[int], batches: list[int]) -> list[StagePlan] | None:
    """The plan in a run folder's memory_plan.json if it is well formed and made for these stages."""
    stages = raw.get("stages")
    if not isinstance(stages, list):
        return None
    plans = []
    for entry in stages:
        if not isinstance(entry, dict) or set(entry) != set(StagePlan.__dataclass_fields__):
            return None
        if not all(_count(v) for v in entry.values()):
            return None
        p = StagePlan(**entry)
        if p.micro_batch < 1 or p.micro_batch * p.grad_accum_steps != p.batch_size:
            return None
        plans.append(p)
    if [p.image_size for p in plans] != sizes or [p.batch_size for p in plans] != batches:
        return None
    return plans


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def _cached_probes(raw: dict) -> dict[int, list[tuple[int, int]]]:
    """``{image_size: [(batch, peak_bytes), ...]}`` from a run folder's memory_plan.json (bad entries dropped)."""
    found: dict[int, list[tuple[int, int]]] = {}
    probes = raw.get("probes")
    if not isinstance(probes, dict):
        return found
    for size, points in probes.items():
        if not (isinstance(size, str) and size.isdigit() and isinstance(points, list)):
            continue
        good = [(p["batch"], p["peak_bytes"]) for p in points
                if isinstance(p, dict) and _count(p.get("batch")) and _count(p.get("peak_bytes"))]
        if len({b for b, _ in good}) >= 2:
            found[int(size)] = good
    return found


def plan(stages, *, model_dir, spec: ProbeSpec, budget_gb: float | None, min_accum: int = 1, gin_text: str = "",
         resuming: bool = False, log=print) -> list[StagePlan]:
    """Choose each stage's micro-batch under the memory budget (see the module docstring).

    ``stages``: the run's stages (``params['image_size']``, ``params['batch_size']``); ``spec``: the
    run's model and step settings (image size and batch are filled in per probe). A resumed run
    (``resuming``) takes the plan of ``<model_dir>/memory_plan.json`` as it is; a new run reuses
    the probes found there for the same model and settings and plans with the current budget.
    """
    path = Path(model_dir) / PLAN_FILE
    sizes = [int(s.params["image_size"]) for s in stages]
    batches = [int(s.params["batch_size"]) for s in stages]
    key = _probe_key(spec, gin_text)
    raw = read_json_dict(path) if path.exists() else None
    same_run = raw is not None and raw.get("key") == key
    if resuming:
        cached = _cached_plan(raw, sizes, batches) if same_run else None
        if cached is None:
            raise UserError(f"{path} does not hold a memory plan for this run's stages and settings (model, precision, "
                            f"gin bindings, image sizes, batches); resuming needs the plan the run started with: "
                            f"restore that file or start in a fresh --model-dir")
        for p in cached:
            log(_line(p, f"from {path}"))
        return cached
    budget, source = budget_bytes(budget_gb)
    measured = _cached_probes(raw) if same_run else {}
    probes: dict[int, list] = {}
    result = []
    for stage, size, batch in zip(stages, sizes, batches):
        if size not in probes:
            probes[size] = measured.get(size) or [
                (b, probe(ProbeSpec(**{**asdict(spec), "image_size": size, "batch": b}), gin_text=gin_text)["peak_bytes"])
                for b in PROBE_BATCHES]
        measured_fit = Fit.through(probes[size])
        fit = Fit(measured_fit.fixed, measured_fit.per_image * SLOPE_MARGIN)
        fits = fit.largest_batch(budget)
        if fits < 1:
            raise UserError(
                f"stage {stage.index + 1} ({size} px): even a micro-batch of 1 needs about {fit.predict(1) / GIB:.2f} GiB, "
                f"over the memory budget of {budget / GIB:.2f} GiB ({source}); raise train.memory_budget_gb, "
                f"or lower train.image_size / progressive.base")
        micro = choose_micro_batch(batch, fits, min_accum)
        entry = StagePlan(stage.index + 1, size, batch, micro, batch // micro, int(fit.predict(micro)), budget)
        log(_line(entry, source))
        result.append(entry)
    write_json_atomic(path, {
        "key": key, "budget_source": source, "probe_batches": list(PROBE_BATCHES),
        "probes": {str(size): [{"batch": b, "peak_bytes": m} for b, m in points] for size, points in probes.items()},
        "stages": [asdict(p) for p in result]})
    return result


def planned_micro_batch(model_dir) -> int | None:
    """The last stage's micro-batch in ``<model_dir>/memory_plan.json`` (None without a usable plan)."""
    path = Path(model_dir) / PLAN_FILE
    raw = read_json_dict(path) if path.exists() else None
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages, list) or not stages or not isinstance(stages[-1], dict):
        return None
    micro = stages[-1].get("micro_batch")
    return micro if _count(micro) and micro >= 1 else None


def _line(p: StagePlan, source: str) -> str:
    return (f"effnet: memory plan stage {p.stage}: {p.image_size} px, micro-batch {p.micro_batch} x "
            f"{p.grad_accum_steps} accumulation = batch {p.batch_size}; predicted {p.predicted_bytes / GIB:.2f} GiB "
            f"of a {p.budget_bytes / GIB:.2f} GiB budget ({source})")


__all__ = ["DEFAULT_BUDGET_FRACTION", "PLAN_FILE", "PROBE_BATCHES", "SLOPE_MARGIN", "Fit", "ProbeSpec", "StagePlan", "available_bytes",
           "budget_bytes", "choose_micro_batch", "current_rss", "peak_memory", "plan", "planned_micro_batch", "probe",
           "reset_peak_rss", "process_peak_rss"]


"""The memory planner's probe, run in a fresh child process: ``python -m effnet.memory_probe SPEC.json``.

:func:`effnet.memory.probe` starts it; it builds the run's step exactly as training does
(:func:`effnet.assembly.build_step` with the run's :class:`~effnet.assembly.StepSettings`, the
model rebuilt with the run's gin bindings), runs ``spec.updates`` optimizer updates of
``spec.accumulation`` micro-batches on :func:`effnet.assembly.synthetic_batch`, and prints its
memory figures (see :mod:`effnet.memory`) as one ``EFFNET_MEMORY {json}`` line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from effnet.assembly import StepSettings, build_step, synthetic_batch
from effnet.memory import ProbeSpec, current_rss, peak_memory, process_peak_rss, reset_peak_rss


def settings(spec: ProbeSpec) -> StepSettings:
    """The probed step's settings (what :func:`effnet.assembly.probe_spec` took from the run)."""
    return StepSettings(optimizer=spec.optimizer, precision=spec.precision, xla=spec.xla,
                        label_smoothing=spec.label_smoothing, weight_decay=spec.weight_decay,
                        decay_bias=spec.decay_bias, decay_norm=spec.decay_norm, clip_norm=spec.clip_norm,
                        ema_decay=spec.ema_decay)


def build(spec: ProbeSpec):
    """``(model, step)``: the probed model and its training step (precision and seed configured)."""
    import keras

    from effnet import precision as precision_mod
    from effnet.models import build_model

    precision_mod.configure(spec.precision)
    keras.utils.set_random_seed(spec.seed)
    model = build_model(spec.model, spec.num_classes)
    _, _, step = build_step(model, settings(spec), 1e-4, global_batch=spec.batch * spec.accumulation,
                            accumulation=spec.accumulation)
    return model, step


def measure(spec: ProbeSpec) -> dict:
    """Build and run ``spec`` in this process; return its memory figures (see :mod:`effnet.memory`)."""
    import tensorflow as tf

    _, step = build(spec)
    batch = synthetic_batch(spec.batch, spec.image_size, spec.num_classes, spec.seed)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    baseline = current_rss()

    def update():
        for _ in range(spec.accumulation - 1):
            step.accumulate(batch)
        step.apply(batch).numpy()  # waits for the step

    # The first update traces and optimises the step's graph: a one-off peak that does not grow with
    # the batch and, for small models, hides the step's own. It runs first; then the high-water mark
    # is reset and the steady-state updates are measured.
    update()
    steady = reset_peak_rss()
    for _ in range(max(1, spec.updates - 1)):
        update()
    return {"device": "GPU:0" if gpu else "CPU", "image_size": spec.image_size, "batch": spec.batch,
            "baseline_bytes": baseline, "rss_peak_bytes": process_peak_rss(), **peak_memory(gpu, steady)}


def main(argv: list[str]) -> int:
    spec = ProbeSpec(**json.loads(Path(argv[0]).read_text()))
    if spec.gin_file:
        from effnet import config as config_mod

        config_mod.parse([spec.gin_file], trust=False)
    print("EFFNET_MEMORY " + json.dumps(measure(spec)), flush=True)
    return 0


__all__ = ["build", "measure", "settings"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

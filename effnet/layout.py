"""The names of a run folder's own files: one place, a leaf every other module may import.

``effnet.runfolder`` documents the layout and reads it; ``effnet.paths`` refuses to let a command
overwrite these files (unless writing there is that command's job).
"""

from __future__ import annotations

OPERATIVE_CONFIG = "operative_config.gin"
LABELS = "labels.txt"
REPORT = "report.json"
CURVES = "training_curves.png"
EVAL_REPORT = "eval_report.json"
EVAL_LOG = "eval_log.json"
LOG = "log.json"  # the dllogger sink's default file name (a run may bind dllogger.filename to another)
MEMORY_PLAN = "memory_plan.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LOCK = ".effnet.lock"  # held by the process training in the folder (effnet.files.take_lock)
#: What `effnet eval` writes per evaluated weights (``raw`` or ``ema``), next to EVAL_REPORT.
EVAL_FILES = {"confusion_csv": "eval_confusion_{weights}.csv", "confusion_png": "eval_confusion_{weights}.png",
              "reliability_png": "eval_reliability_{weights}.png", "errors_png": "eval_errors_{weights}.png"}
EVAL_WEIGHTS = ("raw", "ema")

# A folder holding either marker is a run.
RUN_MARKERS = (OPERATIVE_CONFIG, CHECKPOINTS)
# Every top-level name a run folder owns.
RUN_OWN = frozenset({OPERATIVE_CONFIG, LABELS, REPORT, CURVES, EVAL_REPORT, EVAL_LOG, LOG, MEMORY_PLAN, CHECKPOINTS,
                     TENSORBOARD, LOCK, *(f.format(weights=w) for f in EVAL_FILES.values() for w in EVAL_WEIGHTS)})

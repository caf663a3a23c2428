"""Does a tracker that is down slow training? Tiny `effnet train` runs on the demo data, alternating
between no tracker and ``loggers.names = (..., 'mlflow')`` pointed at a closed localhost port; prints the
training seconds (report.json ``final.seconds``) and whole-process seconds of each, and the ratios of the
medians (down / none).

    python -m benchmarks.tracker_down --repeats 3
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.engine.runs import TINY_GIN

EXTRA = """
train.epochs = 2
train.steps_per_epoch = 20
train.log_every_steps = 1
train.eval_batch_size = 8
train.plot = False
train.deterministic = False
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def one(folder: Path, gin: Path, tracker: bool) -> tuple[float, float]:
    params = []
    if tracker:
        params = ["--gin-param", "loggers.names=('dllogger', 'mlflow')",
                  "--gin-param", f"mlflow.tracking_uri='http://127.0.0.1:{_closed_port()}'"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "effnet.cli.main", "train", "--gin", str(gin), "--model-dir", str(folder),
                           *params], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads((folder / "report.json").read_text())["final"]["seconds"], wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gin = tmp / "tiny.gin"
        gin.write_text(TINY_GIN + EXTRA)
        results: dict[str, list[tuple[float, float]]] = {"none": [], "down": []}
        for i in range(args.repeats):
            for name in ("none", "down"):
                results[name].append(one(tmp / f"{name}{i}", gin, name == "down"))
                print(f"{name} #{i}: train {results[name][-1][0]:.1f} s, process {results[name][-1][1]:.1f} s", flush=True)
    med = {k: (statistics.median(t for t, _ in v), statistics.median(w for _, w in v)) for k, v in results.items()}
    print(f"median train s: none {med['none'][0]:.1f}, down {med['down'][0]:.1f}, ratio {med['down'][0] / med['none'][0]:.3f}")
    print(f"median process s: none {med['none'][1]:.1f}, down {med['down'][1]:.1f}, ratio {med['down'][1] / med['none'][1]:.3f}")


if __name__ == "__main__":
    main()

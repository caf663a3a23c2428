"""Run every benchmark in this folder, one after the other: ``python -m benchmarks.run``.

Each benchmark module has ``main(argv)``, prints a table and writes JSON under runs/benchmarks/.
Absolute numbers depend on the machine; each benchmark reports ratios against a peer measured in
the same run.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["benchmarks.input_pipeline", "benchmarks.train_step"]


def main(argv=None) -> int:
    for name in BENCHMARKS:
        print(f"== {name}")
        importlib.import_module(name).main(list(argv or []))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

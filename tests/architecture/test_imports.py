"""Imports flow one way: cli -> commands -> engine -> primitives, with no cycle anywhere."""

from __future__ import annotations

import sys

from tests.architecture.importgraph import cycles, graph

# The commands: what the CLI and the public API (effnet.api) call. Nothing below them imports them.
COMMANDS = {"effnet.api", "effnet.trainer", "effnet.evaluation", "effnet.prediction", "effnet.exporter",
            "effnet.benchmarking", "effnet.sweep", "effnet.search", "effnet.compare"}
# Leaves: they import nothing of effnet but each other.
PRIMITIVES = {"effnet.errors", "effnet.files", "effnet.native", "effnet.images", "effnet.precision", "effnet.faults",
              "effnet.validate", "effnet.paths", "effnet.layout"}


def test_the_graph_is_read():
    edges = graph()
    assert "effnet.trainer" in edges and "effnet.plugins.models.builder" in edges and "effnet.cli.main" in edges
    assert "effnet.weights" in edges["effnet.trainer"]  # a function-local import counts too
    assert "effnet.models" in edges["effnet.stages"]


def test_no_import_cycles():
    found = cycles(graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_a_cycle_is_detected():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_cli_imports_the_cli():
    offenders = {m: sorted(t for t in ts if t.startswith("effnet.cli")) for m, ts in graph().items()
                 if not m.startswith("effnet.cli")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_commands_are_imported_only_from_above():
    edges = graph()
    allowed = lambda m: m.startswith("effnet.cli") or m in COMMANDS or m == "effnet"  # noqa: E731
    offenders = {m: sorted(ts & COMMANDS) for m, ts in edges.items() if not allowed(m) and ts & COMMANDS}
    assert offenders == {}


def test_the_engine_does_not_import_plugins():
    edges = graph()
    engine = [m for m in edges if not m.startswith(("effnet.plugins", "effnet.cli"))]
    # The registry imports the package's list of built-in modules (effnet.plugins), never a plugin itself.
    offenders = {m: sorted(t for t in edges[m] if t.startswith("effnet.plugins.")) for m in engine}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_primitives_are_leaves():
    edges = graph()
    offenders = {m: sorted(t for t in edges[m] if t not in PRIMITIVES) for m in PRIMITIVES}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_importing_effnet_does_not_import_tensorflow(tmp_path):
    import subprocess

    code = "import effnet, effnet.cli.main, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

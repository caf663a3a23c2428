"""Where we write and what we read, with hostile paths made for real: device nodes (mknod, as root),
FIFOs, symlink loops, links to /dev/zero, a command's own inputs as its output, a run folder's own
files, /proc, names too long for the filesystem, a full tmpfs. Each ends in exit 2 with one line that
names the path and the reason, never a hang, nothing overwritten, no empty folder left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clitools import run_inprocess
from tests.extras import requires_module
from tests.reliability import hostile
from tests.reliability.test_catalogue import error_line, error_line_last

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")


@contextlib.contextmanager
def no_hang(seconds: int = 120):
    """A command that blocks on a FIFO fails the test (TimeoutError) instead of hanging it."""
    def alarm(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def device(folder: Path, name: str, minor: int) -> Path:
    """A private character device node: minor 3 is /dev/null, 7 is /dev/full (major 1)."""
    path = folder / name
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    return path


def fifo(folder: Path, name: str) -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def loop(folder: Path, name: str) -> Path:
    path = folder / name
    os.symlink(path, path)  # points at itself
    return path


def is_char_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(hostile.jpeg(i))
    return folder


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return hostile.copy_run(trained_run, tmp_path / "run")


# ==================================================================================================
# 1. Outputs: one check before any work, used by every writer


@needs_root
@pytest.mark.parametrize("minor", [3, 7], ids=["null_copy", "full_copy"])
def test_predict_output_onto_a_device_node_keeps_the_node(capsys, trained_run, images, tmp_path, minor):
    node = device(tmp_path, "dev", minor)
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(images), "-o", str(node)))
    assert str(node) in line and "a character device" in line
    assert is_char_device(node)


@needs_root
def test_every_writer_refuses_a_device_node(capsys, trained_run, images, tmp_path):
    node = device(tmp_path, "null", 3)
    cases = {
        "compare -o": ["compare", str(trained_run), "-o", str(node)],
        "compare --plot": ["compare", str(trained_run), "--plot", str(node)],
        "import-weights": ["import-weights", str(images / "0.jpg"), str(node) + ".weights.h5"],
        "export -o": ["export", "--model-dir", str(trained_run), "-o", str(node)],
        "data convert": ["data", "convert", str(images), str(node)],
    }
    os.rename(node, str(node) + ".weights.h5")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for name, args in cases.items():
        line = error_line(run_inprocess(capsys, *args))
        assert "a character device" in line, (name, line)
        assert is_char_device(node) and is_char_device(Path(str(node) + ".weights.h5")), name


def test_predict_output_onto_its_own_input_image(capsys, trained_run, images):
    victim = images / "0.jpg"
    before = victim.read_bytes()
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(victim), "-o", str(victim)))
    assert f"'{victim}'" in line and "also an input" in line
    assert victim.read_bytes() == before
    # an image found inside a folder argument counts too
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(images), "-o", str(victim)))
    assert "also an input" in line and victim.read_bytes() == before


def test_outputs_inside_a_run_folder_are_refused(capsys, run_copy, images):
    index = next(run_copy.glob("checkpoints/ckpt-*/ckpt.index"))
    report = run_copy / "report.json"
    saved = {p: p.read_bytes() for p in (index, report)}
    line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(run_copy), str(images), "-o", str(index)))
    assert str(index) in line and "(checkpoints)" in line
    line = error_line(run_inprocess(capsys, "compare", str(run_copy), "-o", str(report)))
    assert str(report) in line and "own file report.json" in line
    line = error_line(run_inprocess(capsys, "export", "--model-dir", str(run_copy), "-o", str(run_copy)))
    assert "training run's folder" in line
    line = error_line(run_inprocess(capsys, "export", "--model-dir", str(run_copy), "-o", str(run_copy / "checkpoints")))
    assert "(checkpoints)" in line
    # what `effnet eval` writes there belongs to the run too (effnet.layout names every such file)
    confusion = run_copy / "eval_confusion_ema.csv"
    line = error_line(run_inprocess(capsys, "compare", str(run_copy), "-o", str(confusion)))
    assert str(confusion) in line and "own file eval_confusion_ema.csv" in line
    assert all(p.read_bytes() == data for p, data in saved.items())


def test_import_weights_onto_its_own_source(capsys, tmp_path):
    source = tmp_path / "x.weights.h5"
    source.write_bytes(b"not really weights")
    line = error_line(run_inprocess(capsys, "import-weights", str(source), str(source)))
    assert "also an input" in line and source.read_bytes() == b"not really weights"


def test_unwritable_and_too_long_outputs(capsys, trained_run, tmp_path):
    source = tmp_path / "x.weights.h5"
    source.write_bytes(b"x")
    line = error_line(run_inprocess(capsys, "compare", str(trained_run), "-o", "/proc/nope.md"))
    assert "'/proc/nope.md' is not writable" in line
    line = error_line(run_inprocess(capsys, "import-weights", str(source), "/proc/x.weights.h5"))
    assert "'/proc/x.weights.h5' is not writable" in line
    long_name = tmp_path / ("a" * 5000 + ".md")
    line = error_line(run_inprocess(capsys, "compare", str(trained_run), "-o", str(long_name)))
    assert "5003 bytes; the filesystem allows 255" in line
    deep = tmp_path.joinpath(*["d" * 200] * 25, "out.md")
    line = error_line(run_inprocess(capsys, "compare", str(trained_run), "-o", str(deep)))
    assert "the filesystem allows 4095" in line


def test_outputs_that_are_a_fifo_a_folder_or_a_loop(capsys, trained_run, images, tmp_path):
    pipe = fifo(tmp_path, "pipe.csv")
    with no_hang():
        line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(images), "-o", str(pipe)))
    assert "a FIFO (named pipe)" in line
    line = error_line(run_inprocess(capsys, "compare", str(trained_run), "-o", str(tmp_path)))
    assert f"'{tmp_path}' is a directory" in line  # click's own check of a file option
    line = error_line(run_inprocess(capsys, "compare", str(trained_run), "--plot", str(loop(tmp_path, "l.png"))))
    assert "a symlink loop" in line
    target = tmp_path / "file"
    target.write_text("keep")
    line = error_line(run_inprocess(capsys, "export", "--model-dir", str(trained_run), "-o", str(target)))
    assert f"'{target}' is a file" in line and target.read_text() == "keep"  # click's own check


def test_data_convert_into_its_own_source(capsys, tmp_path):
    src = tmp_path / "src"
    for split in ("train", "validation"):
        (src / split / "c0").mkdir(parents=True)
        (src / split / "c0" / "0.jpg").write_bytes(hostile.jpeg(0))
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    line = error_line(run_inprocess(capsys, "data", "convert", str(src), str(src)))
    assert "also an input" in line
    line = error_line(run_inprocess(capsys, "data", "convert", str(src), str(src / "records")))
    assert "inside the input folder" in line
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


# ==================================================================================================
# 3. Inputs: a regular file (or a folder), never a FIFO, a device or a loop; the message says what


def test_compare_on_a_run_whose_log_is_a_fifo(capsys, run_copy):
    (run_copy / "log.json").unlink()
    fifo(run_copy, "log.json")
    with no_hang():
        line = error_line(run_inprocess(capsys, "compare", str(run_copy)))
    assert f"{run_copy / 'log.json'} is a FIFO (named pipe), not a regular file" in line


def test_predict_labels_that_are_special(capsys, trained_run, images, tmp_path):
    for path, kind in ((fifo(tmp_path, "labels.txt"), "a FIFO (named pipe)"), (loop(tmp_path, "loop.txt"), "a symlink loop")):
        with no_hang():
            line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(images),
                                            "--labels", str(path)))
        assert f"labels file '{path}' is {kind}" in line


def test_special_files_as_images_gin_and_weights(capsys, trained_run, tmp_path):
    zero = tmp_path / "zero.jpg"
    os.symlink("/dev/zero", zero)
    cases = [(fifo(tmp_path, "pipe.jpg"), "a FIFO (named pipe)"), (loop(tmp_path, "loop.jpg"), "a symlink loop"),
             (zero, "a character device (through a symlink)")]
    for path, kind in cases:
        with no_hang():
            line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), str(path)))
        assert f"image path '{path}' is {kind}" in line, line
    with no_hang():
        line = error_line(run_inprocess(capsys, "config", "--gin", str(fifo(tmp_path, "x.gin"))))
    assert "x.gin' is a FIFO (named pipe)" in line
    with no_hang():
        line = error_line(run_inprocess(capsys, "import-weights", str(fifo(tmp_path, "w.weights.h5")), str(tmp_path / "o.weights.h5")))
    assert "weights file" in line and "a FIFO (named pipe)" in line


def test_check_input_and_what_is_say_what_a_path_is(tmp_path):
    from effnet.errors import UserError
    from effnet.paths import check_input, open_input, what_is

    (tmp_path / "f").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    assert what_is(tmp_path / "f") == "a regular file"
    assert what_is(tmp_path) == "a folder"
    assert what_is(fifo(tmp_path, "p")) == "a FIFO (named pipe)"
    assert what_is(loop(tmp_path, "l")) == "a symlink loop"
    assert what_is(tmp_path / "broken").startswith("a broken symlink")
    assert what_is(tmp_path / "absent") == "missing"
    assert check_input(tmp_path, "data dir", folder=True) == tmp_path
    with pytest.raises(UserError, match="is a folder, not a regular file"):
        check_input(tmp_path, "labels file")
    with no_hang(30), pytest.raises(UserError, match="is a FIFO"):
        open_input(tmp_path / "p", "file")  # O_NONBLOCK: no writer, and still no block
    with pytest.raises(UserError, match="does not exist"):
        open_input(tmp_path / "absent", "file")


# ==================================================================================================
# 5. The smaller ones


def test_compare_with_no_valid_run_is_exit_2(capsys, run_copy, tmp_path):
    other = hostile.copy_run(run_copy, tmp_path / "other")
    for run in (run_copy, other):
        (run / "report.json").write_text("{not json")
    line = error_line(run_inprocess(capsys, "compare", str(run_copy), str(other)))
    assert "no valid run among the 2 folder(s)" in line and "report.json: not valid JSON" in line


def test_export_samples_that_are_not_images(capsys, trained_run, tmp_path):
    out = tmp_path / "out"
    line = error_line(run_inprocess(capsys, "export", "--model-dir", str(trained_run), "-o", str(out), "--format",
                                    "keras", "--samples", "/etc/passwd"))
    assert "--samples image '/etc/passwd' is not an image" in line
    assert not out.exists()


def test_refused_training_leaves_no_model_folder(capsys, tiny_gin, tmp_path):
    model_dir = tmp_path / "new" / "run"
    line = error_line(run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(model_dir),
                                    "--gin-param", "efficientnet.width = -1.0"))
    assert "width" in line
    assert not model_dir.exists()


def test_data_convert_with_every_image_unreadable_refuses(capsys, tmp_path):
    src = tmp_path / "src"
    for split in ("train", "validation"):
        (src / split / "c0").mkdir(parents=True)
        (src / split / "c0" / "0.jpg").write_bytes(b"not an image")
        (src / split / "c0" / "1.jpg").write_bytes(b"")
    dst = tmp_path / "dst"
    line = error_line_last(run_inprocess(capsys, "data", "convert", str(src), str(dst), "--on-error", "skip"))
    assert line.startswith("error: none of the 2 image(s) of train") and "nothing was written" in line
    assert not dst.exists()


def test_resume_when_every_checkpoint_is_damaged_keeps_them(capsys, run_copy, tiny_gin):
    import gin

    from effnet.registry import reset_registry

    found = hostile.checkpoints(run_copy)
    for folder in found:
        hostile.truncate(next(folder.glob("ckpt.data-*")))
    gin.clear_config()
    try:
        result = run_inprocess(capsys, "train", "--gin", str(tiny_gin), "--model-dir", str(run_copy))
    finally:
        gin.clear_config()
        reset_registry()
    assert result.code == 0, result.err[-2000:]
    warning = [line for line in result.err.splitlines() if "starts over from step 0" in line]
    assert len(warning) == 1 and all(f"damaged-{f.name}" in warning[0] for f in found), result.err[-2000:]
    for folder in found:
        assert (folder.parent / f"damaged-{folder.name}").is_dir()
    assert hostile.checkpoints(run_copy), "the new run wrote its own checkpoints"


needs_mounts = pytest.mark.skipif(
    not shutil.which("unshare") or subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                                                  capture_output=True).returncode != 0,
    reason="needs `unshare -m` and tmpfs mounts (root in a sandbox)")


@needs_mounts
@pytest.mark.slow
def test_export_onto_a_full_disk_says_how_much_it_needs(trained_run, tmp_path, cache_dir):
    import shlex

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "export"
    cmd = shlex.join([sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(trained_run), "-o", str(out),
                      "--format", "keras"])
    result = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(mnt))} && "
                             f"{cmd}; code=$?; ls -A {shlex.quote(str(mnt))}; exit $code"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "EFFNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write the export to {out}: No space left on device (this export needs "
                           f"at least "), last
    assert "free)" in last and "internal error" not in result.stderr
    assert result.stdout.strip() == "", "no empty export folder left on the full disk"


def _pages(folder: Path) -> int:
    """Bytes ``folder``'s files take on a tmpfs (each file rounded up to whole 4 KiB pages)."""
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in folder.rglob("*") if f.is_file())


@needs_mounts
@pytest.mark.slow
@pytest.mark.parametrize("fmt", [
    pytest.param("onnx", marks=[requires_module("tf2onnx", "onnx"), requires_module("onnxruntime", "onnx")]),
    pytest.param("openvino", marks=[requires_module("openvino", "openvino")])])
def test_a_disk_that_fills_during_conversion(trained_run, tmp_path, cache_dir, fmt):
    """The float SavedModel fits, the converted artifact does not: tf2onnx's child process (onnx) or
    OpenVINO's serializer (openvino) runs out of space. One line naming the disk, exit 2, nothing left."""
    import shlex

    env = {**os.environ, "EFFNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    export = [sys.executable, "-m", "effnet.cli.main", "export", "--model-dir", str(trained_run), "--format", fmt]
    # how much the conversion writes: the same export stopped right after it wrote, before its check
    probe = tmp_path / "probe"
    killed = subprocess.run([*export, "-o", str(probe)], capture_output=True, text=True, timeout=600,
                            env={**env, "EFFNET_FAULT": "export.after_write:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (work,) = probe.glob(".tmp-export-*")
    source, converted = _pages(work / "float_source"), _pages(work) - _pages(work / "float_source")
    assert converted > 8 * 4096, (source, converted)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "export"
    size = source + converted // 2  # room for the source and half the artifact
    cmd = shlex.join([*export, "-o", str(out)])
    result = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mnt))} "
                             f"&& {cmd}; code=$?; ls -A {shlex.quote(str(mnt))}; exit $code"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write the export to {out}: No space left on device (this export needs "
                           f"at least "), last
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip() == "", "no export folder (nor a half-written artifact) left on the full disk"


def test_checkpoint_and_from_weights_that_are_special(capsys, trained_run, images, tmp_path):
    from effnet.errors import UserError
    from effnet.weights import load_weights

    pipe = fifo(tmp_path, "ckpt-pipe")
    with no_hang():
        line = error_line(run_inprocess(capsys, "predict", "--model-dir", str(trained_run), "--checkpoint", str(pipe),
                                        str(images)))
    assert f"--checkpoint '{pipe}' is a FIFO (named pipe), not a file or a folder" in line
    with no_hang(), pytest.raises(UserError, match=r"--from-weights '.*loop' is a symlink loop, not a file or a folder"):
        load_weights(None, loop(tmp_path, "loop"))

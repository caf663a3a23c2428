"""The install chain of `make test` (Makefile -> scripts/install_horovod.sh -> docker/build_horovod.sh),
exercised the way a fresh machine runs it, without the 10-minute Horovod build.

A fresh clone's `make test` once failed because the Makefile handed a relative `.venv/bin/python` to
the scripts and pip ran the build hook from another folder, where that path does not exist; the
developers' machines had the wheel cached, so nothing showed it. Here the real scripts build a
real wheel with the real pip, from a small sdist laid out like Horovod's (the part the build
script patches included), into an interpreter named by a relative path, from another working
directory, with a wheel cache folder that does not exist yet.
"""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_horovod.sh"
VERSION = "0.0.1"

SETUP_PY = """
import subprocess, sys
from setuptools import setup
# Like Horovod's build (cmake runs `python`): the build itself starts the interpreter it runs under.
subprocess.check_call([sys.executable, "-c", "import sys; assert sys.executable.startswith('/')"])
setup(name="horovod", version="{version}", packages=["horovod", "horovod.tensorflow"])
"""
# What install_horovod.sh's last line checks after installing the wheel.
HVD_INIT = "def init(): pass\ndef gloo_built(): return True\ndef nccl_built(): return False\n"


def _sdist(tmp: Path, broken: bool = False) -> Path:
    src = tmp / f"horovod-{VERSION}"
    (src / "horovod" / "tensorflow").mkdir(parents=True)
    (src / "horovod" / "__init__.py").write_text("")
    (src / "horovod" / "tensorflow" / "__init__.py").write_text(HVD_INIT)
    (src / "horovod" / "tensorflow" / "CMakeLists.txt").write_text("set(SOURCES ops.cc xla_mpi_ops.cc)\n")
    setup = SETUP_PY.format(version=VERSION) + ("raise SystemExit('compiler exploded')\n" if broken else "")
    (src / "setup.py").write_text(setup)
    sdist = tmp / f"horovod-{VERSION}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    shutil.rmtree(src)
    return sdist


@pytest.fixture(scope="module")
def env_root(tmp_path_factory):
    """A fresh virtual environment with a stand-in `tensorflow` that only reports a version: the
    script asks TensorFlow for nothing else before building."""
    root = tmp_path_factory.mktemp("chain")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, capture_output=True)
    py = root / "venv" / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "tensorflow.py").write_text("__version__ = '9.9.9'\n")
    # what `make setup` puts into .venv before anything is built there
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "setuptools>=77", "wheel"], check=True,
                   capture_output=True)
    return root


def _run(env_root: Path, cwd: Path, python: str, cache: Path, sdist: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(PYTHON=python, EFFNET_CACHE=str(cache), HOROVOD_VERSION=VERSION, HOROVOD_SDIST=str(sdist))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_relative_interpreter_from_another_folder_builds_caches_and_installs(env_root, tmp_path):
    elsewhere = env_root / "work" / "elsewhere"
    elsewhere.mkdir(parents=True)
    relative_python = os.path.relpath(env_root / "venv" / "bin" / "python", elsewhere)
    cache = tmp_path / "not" / "yet" / "there"
    done = _run(env_root, elsewhere, relative_python, cache, _sdist(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "works (gloo: True" in done.stdout
    wheels = list((cache / "wheels" / f"horovod-{VERSION}-tf9.9.9").glob("horovod-*.whl"))
    assert len(wheels) == 1
    # installed into the environment the relative path named, and a second run finds it there
    again = _run(env_root, elsewhere, relative_python, cache, _sdist(tmp_path / "x", broken=True))
    assert again.returncode == 0 and "already installed" in again.stdout
    subprocess.run([str(env_root / "venv" / "bin" / "python"), "-m", "pip", "uninstall", "-y", "--quiet", "horovod"],
                   check=True)


def test_a_failed_build_ends_in_one_line_naming_the_log(env_root, tmp_path):
    cache = tmp_path / "cache"
    done = _run(env_root, tmp_path, str(env_root / "venv" / "bin" / "python"), cache, _sdist(tmp_path, broken=True))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("install_horovod.sh: building Horovod") and "failed" in last and "build.log" in last
    assert "compiler exploded" in (cache / "wheels" / f"horovod-{VERSION}-tf9.9.9" / "build.log").read_text()


def test_a_missing_interpreter_is_one_line(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": "no/such/python"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "install_horovod.sh: no Python interpreter at PYTHON=no/such/python; set PYTHON to the environment's "
        "python, e.g. PYTHON=.venv/bin/python"]


def test_the_makefile_hands_the_scripts_absolute_paths(tmp_path):
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "horovod", "VENV=.venv"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if "install_horovod.sh" in ln)
    assert f"PYTHON={ROOT}/.venv/bin/python" in line

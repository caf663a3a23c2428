"""What gets installed: everything under `effnet`, gin files as package data, a console script."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_package_is_listed_in_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = pyproject["tool"]["setuptools"]
    declared = set(tool["packages"])
    mapping = tool["package-dir"]
    found = set()
    for prefix, folder in mapping.items():
        if prefix == "effnet.gin":
            continue
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((prefix, *rel)))
    # sub-packages of mapped packages must be declared or a wheel silently drops them
    assert found <= declared, f"missing from pyproject packages: {sorted(found - declared)}"
    # gin's data folders too, or setuptools fills the install's first screen with warnings about them
    gin_folders = {".".join(("effnet.gin", *d.relative_to(ROOT / "gin").parts))
                   for d in (ROOT / "gin").rglob("*") if d.is_dir() and any(d.glob("*.gin"))}
    assert gin_folders <= declared, f"gin folders missing from pyproject packages: {sorted(gin_folders - declared)}"


def test_wheel_installs_only_under_effnet(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    # the install is a newcomer's first screen: nothing from the build that reads like a problem
    assert "Warning" not in built.stdout + built.stderr, (built.stdout + built.stderr)[-3000:]
    wheel = next(tmp_path.glob("effnet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"effnet", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    gin_files = {n for n in names if n.endswith(".gin")}
    source_gin = {"effnet/gin/" + p.relative_to(ROOT / "gin").as_posix() for p in (ROOT / "gin").rglob("*.gin")}
    assert gin_files == source_gin and gin_files
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "effnet = effnet.cli.main:main" in entry_points


def test_gin_folder_is_not_an_importable_package():
    # a top-level package called `gin` would shadow the gin-config library when run from the repo root
    assert not (ROOT / "gin" / "__init__.py").exists()
    proc = subprocess.run([sys.executable, "-c", "import gin; print(gin.__file__)"], cwd=ROOT, capture_output=True, text=True)
    assert "site-packages" in proc.stdout

#!/usr/bin/env bash
# Install Horovod into the Python environment that runs effnet, building it once per
# (Horovod version, TensorFlow version, GPU/CPU) and caching the wheel outside the repository.
#
#   bash scripts/install_horovod.sh                   # uses `python` on PATH
#   PYTHON=.venv/bin/python bash scripts/install_horovod.sh
#   HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_MPI=1 bash scripts/install_horovod.sh   # GPU nodes
#
# PyPI has only Horovod's source; 0.28.1 needs one patch to build against TensorFlow >= 2.17
# (docker/build_horovod.sh applies it). The wheel is cached in
#   ${EFFNET_CACHE:-~/.cache/effnet}/wheels/horovod-<version>-tf<tf version>[-nccl]/
# so a second install (or CI with that folder cached) takes seconds, not 5-10 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=${HOROVOD_VERSION:-0.28.1}

fail() {  # one line: what failed and what to do
    echo "install_horovod.sh: $*" >&2
    exit 2
}

# The interpreter as an absolute path (not resolving the venv's symlink): the build runs pip from
# other folders, where a relative .venv/bin/python does not exist.
absolute_python() {
    local found
    found=$(command -v "$1") || return 1
    case $found in
        /*) ;;
        *) found="$(cd "$(dirname "$found")" && pwd)/$(basename "$found")" ;;
    esac
    [ -x "$found" ] || return 1
    echo "$found"
}
python=$(absolute_python "${PYTHON:-python}") || fail "no Python interpreter at PYTHON=${PYTHON:-python}; set PYTHON to the environment's python, e.g. PYTHON=.venv/bin/python"
cache_root=${EFFNET_CACHE:-$HOME/.cache/effnet}
case $cache_root in /*) ;; *) cache_root="$PWD/$cache_root" ;; esac

# `--print-paths` prints what the script would use and stops (tests of the install chain).
if [ "${1:-}" = "--print-paths" ]; then
    echo "python=$python"
    echo "cache=$cache_root/wheels"
    exit 0
fi

if "$python" -c "import horovod.tensorflow" 2>/dev/null; then
    echo "install_horovod.sh: Horovod is already installed for $python"
    exit 0
fi
tf_version=$("$python" -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null) || {
    echo "install_horovod.sh: TensorFlow is not installed for $python; install effnet first (make setup)" >&2
    exit 2
}
flavour=""
[ -n "${HOROVOD_GPU_OPERATIONS:-}" ] && flavour="-$(echo "$HOROVOD_GPU_OPERATIONS" | tr '[:upper:]' '[:lower:]')"
cache="$cache_root/wheels/horovod-${version}-tf${tf_version}${flavour}"
mkdir -p "$cache" || fail "cannot create the wheel cache $cache; set EFFNET_CACHE to a writable folder"

(
    # One build at a time per cache folder (parallel CI jobs or two terminals).
    flock 9
    if ! ls "$cache"/horovod-"${version}"-*.whl >/dev/null 2>&1; then
        echo "install_horovod.sh: building Horovod ${version} against TensorFlow ${tf_version} (5-10 minutes on 2 cores)"
        build=$(mktemp -d)
        log="$cache/build.log"
        if ! PYTHON="$python" HOROVOD_VERSION="$version" bash "$here/docker/build_horovod.sh" "$build" >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            rm -rf "$build"
            fail "building Horovod ${version} against TensorFlow ${tf_version} failed (full log: $log; the last lines are above); check that cmake and g++ are installed, or set EFFNET_SKIP_HOROVOD=1 to run without the Horovod tests"
        fi
        mv "$build"/horovod-"${version}"-*.whl "$cache"/
        rm -rf "$build"
    fi
) 9>"$cache/.lock"

"$python" -m pip install --quiet "$cache"/horovod-"${version}"-*.whl cloudpickle psutil \
    || fail "installing the Horovod wheel from $cache failed; delete that folder to rebuild it"
TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} "$python" -c "import horovod.tensorflow as hvd; hvd.init(); print('install_horovod.sh: Horovod', hvd.__version__ if hasattr(hvd, '__version__') else '${version}', 'works (gloo:', hvd.gloo_built(), ', nccl:', hvd.nccl_built(), ')')"

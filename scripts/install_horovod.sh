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
python=${PYTHON:-python}
python=$(command -v "$python")
version=${HOROVOD_VERSION:-0.28.1}

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
cache="${EFFNET_CACHE:-$HOME/.cache/effnet}/wheels/horovod-${version}-tf${tf_version}${flavour}"
mkdir -p "$cache"

(
    # One build at a time per cache folder (parallel CI jobs or two terminals).
    flock 9
    if ! ls "$cache"/horovod-"${version}"-*.whl >/dev/null 2>&1; then
        echo "install_horovod.sh: building Horovod ${version} against TensorFlow ${tf_version} (5-10 minutes on 2 cores)"
        build=$(mktemp -d)
        # build_horovod.sh runs `python -m pip`: make that the target environment's python.
        PATH="$(dirname "$python"):$PATH" HOROVOD_VERSION="$version" bash "$here/docker/build_horovod.sh" "$build"
        mv "$build"/horovod-"${version}"-*.whl "$cache"/
        rm -rf "$build"
    fi
) 9>"$cache/.lock"

"$python" -m pip install --quiet "$cache"/horovod-"${version}"-*.whl cloudpickle psutil
"$python" -c "import horovod.tensorflow as hvd; hvd.init(); print('install_horovod.sh: Horovod', hvd.__version__ if hasattr(hvd, '__version__') else '${version}', 'works (gloo:', hvd.gloo_built(), ', nccl:', hvd.nccl_built(), ')')"

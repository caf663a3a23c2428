#!/usr/bin/env bash
# Build a Horovod 0.28.1 wheel that works with TensorFlow >= 2.17 / Keras 3.
#
#   bash docker/build_horovod.sh OUT_DIR          # GPU/NCCL or CPU/gloo, from the HOROVOD_* env
#   HOROVOD_SDIST=horovod-0.28.1.tar.gz bash docker/build_horovod.sh OUT_DIR   # from a local sdist
#
# The only change to Horovod's source: xla_mpi_ops.cc is removed from the TensorFlow build
# (it includes XLA headers that moved in newer TF). Everything effnet uses (allreduce,
# grouped_allreduce, broadcast) is unaffected. CPU default: gloo, no MPI, no PyTorch/MXNet.
#
# PYTHON names the interpreter whose TensorFlow it builds against (default: `python` on PATH); it
# is made absolute here, because pip runs the build hooks from other folders.
set -euo pipefail
out=${1:?usage: build_horovod.sh OUT_DIR}
python=$(command -v "${PYTHON:-python}") || { echo "build_horovod.sh: no Python interpreter at PYTHON=${PYTHON:-python}" >&2; exit 2; }
case $python in /*) ;; *) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; esac
case $out in /*) ;; *) out="$PWD/$out" ;; esac
# The build's own `python` (setup.py runs it through cmake) must be the same interpreter.
export PATH="$(dirname "$python"):$PATH"
version=${HOROVOD_VERSION:-0.28.1}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# HOROVOD_SDIST: a local horovod-<version>.tar.gz to build instead of downloading it (offline builds).
if [ -n "${HOROVOD_SDIST:-}" ]; then
    cp "$HOROVOD_SDIST" "$work/horovod-${version}.tar.gz"
else
    "$python" -m pip download --no-deps --no-binary=:all: "horovod==${version}" -d "$work"
fi
tar -xzf "$work/horovod-${version}.tar.gz" -C "$work"
src="$work/horovod-${version}"
sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
if grep -q xla_mpi_ops.cc "$src/horovod/tensorflow/CMakeLists.txt"; then
    echo "build_horovod.sh: could not remove xla_mpi_ops.cc from the build" >&2
    exit 1
fi

export HOROVOD_WITH_TENSORFLOW=1
export HOROVOD_WITH_GLOO=${HOROVOD_WITH_GLOO:-1}
export HOROVOD_WITHOUT_PYTORCH=1
export HOROVOD_WITHOUT_MXNET=1
if [ "${HOROVOD_WITH_MPI:-0}" != "1" ]; then export HOROVOD_WITHOUT_MPI=1; fi
export MAKEFLAGS="-j$(nproc)"
"$python" -m pip wheel --no-deps --no-build-isolation "$src" -w "$out"
ls "$out"/horovod-*.whl

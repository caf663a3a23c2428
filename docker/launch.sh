#!/usr/bin/env bash
# Start an interactive effnet container with the data and results folders mounted.
#
#   bash docker/launch.sh IMAGE DATA_DIR RESULTS_DIR [command ...]
#
# Inside, the data is at /data and results go to /results. The 8-GPU recipes bind
# train.backend = 'horovod', so the launcher is the only addition:
#   horovodrun -np 8 effnet train --gin s_amp_8xA100.gin --data-dir /data --model-dir /results/v2s
# or, with tf.distribute in one process driving all GPUs:
#   effnet train --gin s_amp_8xA100.gin --gin-param "train.backend = 'mirrored'" --data-dir /data --model-dir /results/v2s
set -euo pipefail
image=${1:?usage: launch.sh IMAGE DATA_DIR RESULTS_DIR [command ...]}
data=${2:?usage: launch.sh IMAGE DATA_DIR RESULTS_DIR [command ...]}
results=${3:?usage: launch.sh IMAGE DATA_DIR RESULTS_DIR [command ...]}
shift 3
[ -d "$data" ] || { echo "launch.sh: data dir $data does not exist" >&2; exit 2; }
mkdir -p "$results"
tty_flags=()
[ -t 0 ] && tty_flags=(-it)
exec docker run --rm "${tty_flags[@]}" --gpus all --ipc=host --shm-size=16g \
    --ulimit memlock=-1 --ulimit stack=67108864 \
    -v "$(realpath "$data")":/data:ro -v "$(realpath "$results")":/results \
    "$image" "${@:-bash}"

#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#     bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options]
# One process per GPU through srun (OpenMMLab's form); GPUS_PER_NODE=0 asks
# for no GPU (a CPU partition: the processes use gloo).
set -e
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=("${@:5}")
if [ -n "$WORK_DIR" ]; then
    PY_ARGS=(--work-dir "$WORK_DIR" "${PY_ARGS[@]}")
fi
GRES=()
if [ "$GPUS_PER_NODE" -gt 0 ]; then
    GRES=(--gres=gpu:"$GPUS_PER_NODE")
    TASKS_PER_NODE=$GPUS_PER_NODE
else
    TASKS_PER_NODE=$GPUS
fi

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    python -u "$(dirname "$0")/train.py" "$CONFIG" --launcher slurm "${PY_ARGS[@]}"

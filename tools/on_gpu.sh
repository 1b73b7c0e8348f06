#!/usr/bin/env bash
# Run one job line of a sweep's job list (PRINT_JOBS=1) on the GPU of its parallel slot, so that
# several runs share each GPU (packing does not apply to zero-shot, `all`, finetune or mixed
# settings; these also leave a GPU mostly idle when run alone).
#
#   bash tools/on_gpu.sh SLOT 'JOB LINE'       slot 1, 2, 3, ... -> GPU (SLOT - 1) % NGPU
#
#   # GNU parallel, one machine, NGPU GPUs, RUNS_PER_GPU runs at a time on each:
#   parallel -j $((NGPU * RUNS_PER_GPU)) "NGPU=$NGPU bash tools/on_gpu.sh {%} {}" < jobs.txt
#
# NGPU (required): the number of GPUs. Slots 1..NGPU*R then put R runs on every GPU.
set -euo pipefail
(($# == 2)) || { echo "usage: NGPU=N bash $(basename "$0") SLOT 'JOB LINE'" >&2; exit 2; }
[[ ${NGPU:-} =~ ^[1-9][0-9]*$ ]] || { echo "error: NGPU must be a positive integer, got '${NGPU:-}'" >&2; exit 2; }
[[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "error: SLOT must be a positive integer (GNU parallel's {%}), got '$1'" >&2; exit 2; }
export CUDA_VISIBLE_DEVICES=$((($1 - 1) % NGPU))
eval "$2"

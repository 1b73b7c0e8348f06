#!/usr/bin/env bash
# Issue 20's GPU measurement, one prepared script for a lent GPU machine (about 8 minutes on an H200):
# tools/step_benchmark.py on a roberta-large-sized random model, bf16, batch 4, prompt,bias,adapter,
# SST-2 16-shot (16-42): the eager single run (B), the compiled single run (also with CUDA graphs), folded
# packs of 4, 16 and 32; per setting its run-steps per second, peak GPU memory per run and seconds per
# process beyond its steps (tools/launch.py --estimate reads them). A setting that fails is reported
# (failed_NAME) and the others still run.
#
#   bash ../shared/gpu/prepare.sh SST-2                                  # here, once; carry: [".gpu"]
#   source .gpu/setup_on_gpu.sh && bash tools/gpu_check.sh "$OUT"        # the device command
#
# OUT: where gpu_check.tsv goes. SIZE (default large: src/random_models.MODEL_SIZES), STEPS (default 60;
# steps 21..STEPS are timed), PACKS (default "4 16 32") and RUN_ARGS (run.py arguments of every
# setting; default "--bf16 --max_seq_length 128") make another check (tests/test_step_benchmark.py
# runs it on CPU).
set -euo pipefail
(($# == 1)) || { echo "usage: bash $(basename "$0") OUT_DIR" >&2; exit 2; }
out=$1
mkdir -p "$out"
cd "$(dirname "$0")/.."
data=${DATA_ROOT:-../shared/data}/k-shot/SST-2/16-42
settings=(--setting "compiled=--torch_compile --pad_to_multiple_of 16")
if command -v nvidia-smi > /dev/null; then  # CUDA graphs: the compiled step replayed without Python
  settings+=(--setting "cudagraphs=--torch_compile --torch_compile_mode reduce-overhead --pad_to_multiple_of 16")
fi
for k in ${PACKS:-4 16 32}; do
  settings+=(--setting "pack$k=--seed $(seq -s ' ' 1 "$k")")
done
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu\t/' || true
  python3 tools/step_benchmark.py --data_dir "$data" --model_size "${SIZE:-large}" --steps "${STEPS:-60}" \
    --repeats 1 --run_args="${RUN_ARGS---bf16 --max_seq_length 128}" "${settings[@]}"
} | tee "$out/gpu_check.tsv"

#!/usr/bin/env bash
# One run of run.py (16-shot by default), configured through environment variables as in the
# reference scripts. Per-task template, label words and extra arguments come from src/tasks.py
# (through tools/task_args.py); this script never spells them out.
#
#   TASK=SST-2 TAG=exp BS=4 LR=1e-3 SEED=13 TRAIN_PARAM=prompt,adapter PROMPT=prompt bash run_experiment.sh
#
# Required: TASK (or TASK_FILE, a task file: README "Your own task"), TAG; for training runs also BS, LR, SEED.
# Packed runs (src/packed.py): LR and SEED may each hold several space-separated values
# (LR="1e-3 3e-4" SEED="13 21 42"): one run.py process trains every (LR, SEED) together over one
# copy of the frozen model, with data dir $DATA_ROOT/k-shot/$TASK/$K-{seed} (each run its split).
# Optional (default):
#   MODEL (roberta-large)   HARD (Y: manual template; N: soft-only template)
#   PROMPT ('prompt' inserts the soft prompt into the template; else empty)
#   NOTRAIN (1: zero-shot, no --do_train; SEED then defaults to 13)
#   TRAIN_PARAM (--training_params value; several space-separated stages = multi-stage;
#                empty: run.py's default)
#   STAGE_INIT (last|best, multi-stage only)   GPUN (1; >1: torchrun, per-device batch BS/GPUN)
#   K (16)  MAX_STEP (6000)  EVAL_STEP (200)  DATA_ROOT (data)  LOG_FILE (log)  RESULT_DIR (result)
#   DATA_DIR (default $DATA_ROOT/k-shot/$TASK/$K-$SEED; FULLDATA=1: $DATA_ROOT/original/$TASK,
#             with --dev_as_test --skip_train_eval)
#   KEEP_RESULT (1: keep the run's output directory, which holds the trained delta, as
#                $RESULT_DIR/<run name>.XXXXXX; otherwise it is a temporary <run name>.tmp-XXXXXX,
#                removed at the end, or, when the run was killed, by the next sweep of the job)
#   PYTHON (python)
# Extra run.py arguments: the positional arguments. A single argument is split at whitespace like
# the reference's unquoted $1 ("--feature_cache_dir /tmp/cache --seed 1"); several are passed as
# they are. They come last, so they override anything set here.
# PRINT_ARGS=1 prints the run.py arguments (NUL-terminated) instead of running (used by the sweeps).
# Always passes --skip_done: a run already in the log exits 0 at once.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}

die() {
    echo "error: $*" >&2
    exit 2
}

# ---- inputs ---------------------------------------------------------------------------------
NOTRAIN=${NOTRAIN:-0}
[[ $NOTRAIN == 0 || $NOTRAIN == 1 ]] || die "NOTRAIN must be 1 (zero-shot) or 0/empty, got '$NOTRAIN'"
required=(TAG)
[[ -n ${TASK_FILE:-} ]] || required=(TASK TAG)  # a task file names its task
[[ $NOTRAIN == 1 ]] || required+=(BS LR SEED)
for name in "${required[@]}"; do
    [[ -n ${!name:-} ]] || die "$name is not set (required: ${required[*]}; see the header of $(basename "$0"))"
done
[[ $NOTRAIN == 1 ]] && SEED=${SEED:-13}

MODEL=${MODEL:-roberta-large}
HARD=${HARD:-Y}
PROMPT=${PROMPT:-}
TRAIN_PARAM=${TRAIN_PARAM:-}
STAGE_INIT=${STAGE_INIT:-}
GPUN=${GPUN:-1}
K=${K:-16}
MAX_STEP=${MAX_STEP:-6000}
EVAL_STEP=${EVAL_STEP:-200}
DATA_ROOT=${DATA_ROOT:-data}
LOG_FILE=${LOG_FILE:-log}
RESULT_DIR=${RESULT_DIR:-result}
FULLDATA=${FULLDATA:-0}

# HARD (tools/task_args.py), STAGE_INIT, SEED and LR (run.py and the sweeps' launcher, src/multirun.py) are
# checked where their allowed values are declared; the variables only this script reads are checked here.
[[ $FULLDATA == 0 || $FULLDATA == 1 ]] || die "FULLDATA must be 1 or 0/empty, got '$FULLDATA'"
[[ -z $PROMPT || $PROMPT == prompt ]] || die "PROMPT must be 'prompt' or empty, got '$PROMPT'"
[[ $GPUN =~ ^[1-9][0-9]*$ ]] || die "GPUN must be a positive integer, got '$GPUN'"
read -ra LR_LIST <<<"${LR:-}"
read -ra SEED_LIST <<<"$SEED"
for name in K MAX_STEP EVAL_STEP; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a non-negative integer, got '${!name}'"
done
if [[ -n ${BS:-} ]]; then
    [[ $BS =~ ^[1-9][0-9]*$ ]] || die "BS must be a positive integer, got '$BS'"
    ((BS % GPUN == 0)) || die "BS ($BS) must be a multiple of GPUN ($GPUN): per-device batch = BS/GPUN"
fi

# ---- per-task arguments (src/tasks.py) ------------------------------------------------------
task_flags=()
[[ $PROMPT == prompt ]] && task_flags=(--prompt)
[[ $FULLDATA == 1 ]] && task_flags+=(--fulldata)
[[ -n ${TASK:-} ]] && task_flags+=(--task "$TASK")
[[ -n ${TASK_FILE:-} ]] && task_flags+=(--task_file "$TASK_FILE")
task_args_text=$("$PYTHON" "$HERE/tools/task_args.py" --hard "$HARD" "${task_flags[@]}") ||
    exit 2  # task_args.py has said what is wrong
mapfile -t TASK_ARGS <<<"$task_args_text"
TASK_NAME=${TASK_ARGS[1]}  # canonical spelling (SST-2, not sst-2; a task file's name): the data folders use it

if [[ -n ${DATA_DIR:-} ]]; then
    :
elif [[ $FULLDATA == 1 ]]; then
    DATA_DIR=$DATA_ROOT/original/$TASK_NAME
elif ((${#SEED_LIST[@]} > 1)); then
    DATA_DIR="$DATA_ROOT/k-shot/$TASK_NAME/$K-{seed}"  # run.py reports a missing split per run
else
    DATA_DIR=$DATA_ROOT/k-shot/$TASK_NAME/$K-$SEED
fi
[[ $DATA_DIR == *"{seed}"* || -d $DATA_DIR ]] || die "data directory not found: $DATA_DIR (set DATA_ROOT or DATA_DIR)"

# ---- run.py arguments -----------------------------------------------------------------------
ARGS=(--model_name_or_path "$MODEL" --few_shot_type prompt --num_k "$K" --prompt_num 10
    --max_steps "$MAX_STEP" --eval_steps "$EVAL_STEP" --eval_strategy steps
    --per_device_eval_batch_size 16 --seed "${SEED_LIST[@]}" --tag "$TAG" --log_file "$LOG_FILE"
    --do_eval --do_predict --skip_done)
[[ " ${TASK_ARGS[*]} " == *" --max_seq_length "* ]] || ARGS+=(--max_seq_length 256)
ARGS+=("${TASK_ARGS[@]}" --data_dir "$DATA_DIR")
# Full data: GLUE's test labels are hidden, so the dev set is also the test set (as in the
# reference's full-data runs), and the final evaluation leaves out the (large) train split.
[[ $FULLDATA == 1 ]] && ARGS+=(--dev_as_test --skip_train_eval)
[[ $NOTRAIN == 1 ]] || ARGS+=(--do_train)
((${#LR_LIST[@]})) && ARGS+=(--learning_rate "${LR_LIST[@]}")
[[ -n ${BS:-} ]] && ARGS+=(--per_device_train_batch_size "$((BS / GPUN))")
if [[ -n $TRAIN_PARAM ]]; then
    read -ra stages <<<"$TRAIN_PARAM"
    ARGS+=(--training_params "${stages[@]}")
fi
[[ -n $STAGE_INIT ]] && ARGS+=(--stage_init "$STAGE_INIT")
if (($# == 1)); then
    read -ra extra <<<"$1"
    ARGS+=("${extra[@]}")
elif (($# > 1)); then
    ARGS+=("$@")
fi

safe() { printf '%s' "$1" | tr -c 'A-Za-z0-9._,=+-' '_'; }
RUN_NAME=$(safe "$TASK_NAME-$TAG-$HARD-${TRAIN_PARAM:-zero-shot}${PROMPT:+-prompt}-lr${LR:-none}-bs${BS:-none}-seed$SEED")

if [[ ${PRINT_ARGS:-0} == 1 ]]; then
    printf '%s\0' "${ARGS[@]}" --output_dir "$RESULT_DIR/$RUN_NAME"
    exit 0
fi

# ---- run ------------------------------------------------------------------------------------
mkdir -p "$RESULT_DIR"
if [[ ${KEEP_RESULT:-0} == 1 ]]; then
    OUTPUT_DIR=$(mktemp -d "$RESULT_DIR/$RUN_NAME.XXXXXX")
    echo "note: output kept in $OUTPUT_DIR" >&2
else  # a temporary folder: the results log holds the results (as in the reference)
    OUTPUT_DIR=$(mktemp -d "$RESULT_DIR/$RUN_NAME.tmp-XXXXXX")
    trap 'trap "" TERM; rm -rf "$OUTPUT_DIR"' EXIT  # (a second TERM must not stop the cleanup)
    # Locked while this script or the run.py it starts (which inherits the lock) lives: one that a
    # killed run left (its lock free) is removed by the next sweep of this job (src/launch.py).
    exec 9<"$OUTPUT_DIR"
    flock 9 2>/dev/null || true  # (a file system without locks: nothing is removed)
fi
ARGS+=(--output_dir "$OUTPUT_DIR")

if ((GPUN > 1)); then
    COMMAND=(torchrun --standalone --nproc_per_node "$GPUN" "$HERE/run.py")
else
    COMMAND=("$PYTHON" "$HERE/run.py")
fi
echo "+ ${COMMAND[*]} $(printf '%q ' "${ARGS[@]}")" >&2
"${COMMAND[@]}" "${ARGS[@]}"

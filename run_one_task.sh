#!/usr/bin/env bash
# The sweep of one task: for HARD in Y N, zero-shot plus the 7 combinations of prompt / bias /
# adapter, over seeds and learning rates; then the summary (gather_result.py per column, and the
# table from make_table.py). Each run is one call of the experiment script (run_experiment.sh).
#
#   TASK=SST-2 bash run_one_task.sh ["extra run.py arguments"]
#
# Environment:
#   TASK (required; or TASK_FILE, a task file of your own: README "Your own task")
#   TAG (exp)  BS (4)  SEEDS ("13 21 42 87 100"; zero-shot uses the first)
#   LRS (overrides every learning-rate grid; default: SPEC §7, from the delta registry)
#   HARDS ("Y N")  COMBOS (columns to run, default: zero-shot and the paper's 7 combinations, or the
#          6 orders of a multi-stage sweep; "none" = zero-shot; any combination of the registry's
#          methods, e.g. "lora prompt,lora"; stages of a multi-stage order are joined by '-':
#          prompt-bias-adapter). `python tools/sweep_plan.py --sweep fewshot` lists the columns.
#   PRINT_JOBS (1: print one self-contained command line per run instead of running;
#               pending: only the runs that the results log does not hold yet)
#   PACK (1 = off: one process per run; K > 1: up to K runs of one setting (learning rates x
#         seeds) train together in one process over one copy of the frozen model, src/packed.py;
#         a job line is then one such pack, and it is pending while any of its runs is). For GPUs:
#         on CPU only packs that fold pay (README 'Speed'; a warning says so)
#   ENGINE (local: one job after another here; ray: a Ray cluster (RAY_ADDRESS) or a Ray instance
#           started here; slurm: a job array (SBATCH_TIMELIMIT required; SBATCH_PARTITION,
#           SBATCH_GRES, SBATCH_ACCOUNT)). RUNS_PER_GPU, CPUS_PER_JOB: see tools/launch.py --help
#   JOBS_FILE (where the job list is written: $LOG_FILE.jobs/SWEEP-TASK-TAG.txt; its jobs' stderr
#              in JOBS_FILE.state/; `python tools/launch.py --status JOBS_FILE` shows what is left)
#   Passed on to every run when set: MODEL K MAX_STEP EVAL_STEP DATA_ROOT DATA_DIR LOG_FILE
#   RESULT_DIR GPUN STAGE_INIT KEEP_RESULT PYTHON TASK_FILE (see run_experiment.sh).
#   SWEEP (fewshot | mulstage | fulldata): set by run_mulstage_task.sh and run_fulldata_one_task.sh.
# Positional arguments are forwarded to every run (see run_experiment.sh).
# A failed run is reported and the sweep goes on; the exit status is 1 when any run failed.
# Runs already in the results log are not started again (the same test as run.py --skip_done).
# The jobs run through tools/launch.py (src/launch.py), on every engine the same way.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python}
SWEEP=${SWEEP:-fewshot}
LOG=${LOG_FILE:-log}
PRINT_JOBS=${PRINT_JOBS:-0}
PACK=${PACK:-1}

die() {
    echo "error: $*" >&2
    exit 2
}

[[ -n ${TASK:-}${TASK_FILE:-} ]] ||
    die "TASK is not set (e.g. TASK=SST-2 bash $(basename "$0"); or TASK_FILE=FILE, a task file)"
TASK_NAME=$("$PY" "$HERE/tools/task_args.py" ${TASK:+--task "$TASK"} ${TASK_FILE:+--task_file "$TASK_FILE"} |
    sed -n 2p) || exit 2
[[ $PRINT_JOBS == 0 || $PRINT_JOBS == 1 || $PRINT_JOBS == pending ]] ||
    die "PRINT_JOBS must be 1, pending or 0/empty, got '$PRINT_JOBS'"
[[ $PACK =~ ^[1-9][0-9]*$ ]] || die "PACK must be a positive integer, got '$PACK'"

case $SWEEP in
fewshot) EXPERIMENT=run_experiment.sh TAG=${TAG:-exp} BS=${BS:-4} SEEDS=${SEEDS:-13 21 42 87 100} ;;
mulstage) EXPERIMENT=run_mulstage_experiment.sh TAG=${TAG:-exp-mulstage} BS=${BS:-4} SEEDS=${SEEDS:-13 21 42 87 100} ;;
fulldata) EXPERIMENT=run_fulldata_experiment.sh TAG=${TAG:-exp-fulldata} BS=${BS:-64} SEEDS=${SEEDS:-13 21 42} ;;
*) die "SWEEP must be fewshot, mulstage or fulldata, got '$SWEEP'" ;;
esac
read -ra SEED_LIST <<<"$SEEDS"
read -ra HARD_LIST <<<"${HARDS:-Y N}"
((${#SEED_LIST[@]})) || die "SEEDS is empty"

# The columns: COMBO|TRAIN_PARAM|PROMPT|learning rates (tools/sweep_plan.py: registry facts).
plan_text=$("$PY" "$HERE/tools/sweep_plan.py" --sweep "$SWEEP" ${COMBOS:+--combos "$COMBOS"} ${LRS:+--lrs "$LRS"}) ||
    exit 2  # sweep_plan.py has said what is wrong
mapfile -t PLAN <<<"$plan_text"

# ---- the job list ---------------------------------------------------------------------------
# A job is the quoted environment of one run; its command line is
#   cd <current directory> && <environment> bash <experiment script (absolute)> <extra arguments>
# (relative DATA_ROOT, LOG_FILE, RESULT_DIR, MODEL paths keep their meaning wherever it runs).
PASS_ON=(MODEL K MAX_STEP EVAL_STEP DATA_ROOT DATA_DIR LOG_FILE RESULT_DIR GPUN STAGE_INIT KEEP_RESULT PYTHON TASK_FILE)
COMMON=""
for name in "${PASS_ON[@]}"; do
    [[ -n ${!name+set} ]] && COMMON+=" $name=$(printf '%q' "${!name}")"
done
EXTRA=""
for argument in "$@"; do EXTRA+=" $(printf '%q' "$argument")"; done
PREFIX="cd $(printf '%q' "$PWD") &&"
SUFFIX="bash $(printf '%q' "$HERE/$EXPERIMENT")$EXTRA"

JOBS=()
add_job() {  # add_job NAME=VALUE...
    local job="" assignment
    for assignment in "$@"; do
        job+=" ${assignment%%=*}=$(printf '%q' "${assignment#*=}")"
    done
    JOBS+=("TASK=$(printf '%q' "$TASK_NAME") TAG=$(printf '%q' "$TAG")$job$COMMON")
}

add_training_jobs() {  # add_training_jobs HARD PROMPT TRAIN_PARAM LR...: one job per PACK-sized product
    local lrs=("${@:4}") seeds=${#SEED_LIST[@]} per i lr
    if ((PACK >= seeds)); then  # whole seed lists, as many learning rates as fit
        per=$((PACK / seeds))
        for ((i = 0; i < ${#lrs[@]}; i += per)); do
            add_job HARD="$1" PROMPT="$2" NOTRAIN=0 TRAIN_PARAM="$3" BS="$BS" LR="${lrs[*]:i:per}" \
                SEED="${SEED_LIST[*]}"
        done
        return
    fi
    for lr in "${lrs[@]}"; do  # one learning rate, seeds in groups of PACK (PACK=1: one run per job)
        for ((i = 0; i < seeds; i += PACK)); do
            add_job HARD="$1" PROMPT="$2" NOTRAIN=0 TRAIN_PARAM="$3" BS="$BS" LR="$lr" SEED="${SEED_LIST[*]:i:PACK}"
        done
    done
}

for hard in "${HARD_LIST[@]}"; do
    [[ $hard == Y || $hard == N ]] || die "HARDS may hold only Y and N, got '$hard'"
    for row in "${PLAN[@]}"; do
        IFS='|' read -r combo train_param prompt lrs <<<"$row"
        if [[ $combo == none ]]; then
            add_job HARD="$hard" PROMPT= NOTRAIN=1 TRAIN_PARAM= SEED="${SEED_LIST[0]}"
            continue
        fi
        read -ra grid <<<"$lrs"
        add_training_jobs "$hard" "$prompt" "$train_param" "${grid[@]}"
    done
done

print_jobs() {
    local job
    for job in "${JOBS[@]}"; do echo "$PREFIX $job $SUFFIX"; done
}
if [[ $PRINT_JOBS == 1 ]]; then
    print_jobs
    exit 0
fi
if [[ $PRINT_JOBS == pending ]]; then  # the log decides, as run.py --skip_done (tools/launch.py)
    print_jobs | "$PY" "$HERE/tools/launch.py" --pending -
    exit
fi

# ---- run: the job list, handed to the launcher (src/launch.py) -------------------------------
JOBS_FILE=${JOBS_FILE:-$LOG.jobs/$SWEEP-$TASK_NAME-$TAG.txt}
mkdir -p "$(dirname "$JOBS_FILE")" 2>/dev/null && print_jobs 2>/dev/null >"$JOBS_FILE" ||
    die "cannot write the job list $JOBS_FILE (set JOBS_FILE or LOG_FILE)"
status=0
"$PY" "$HERE/tools/launch.py" --engine "${ENGINE:-local}" "$JOBS_FILE" || status=$?
((status == 0 || status == 1)) || exit $status  # 2: the engine refused (nothing started); 130: interrupted

# ---- summary --------------------------------------------------------------------------------
quote() {  # a Python string literal
    local text=${1//\\/\\\\}
    printf "'%s'" "${text//\'/\\\'}"
}
task_key=$(printf '%s' "$TASK_NAME" | tr '[:upper:]' '[:lower:]')
if [[ -s $LOG ]]; then
    CONDITIONS=()  # one per column and template kind, summarised by one gather_result.py call
    for hard in "${HARD_LIST[@]}"; do
        for row in "${PLAN[@]}"; do
            IFS='|' read -r combo train_param prompt lrs <<<"$row"
            condition="{'task_name': $(quote "$task_key"), 'tag': $(quote "$TAG"), 'hard': $(quote "$hard")"
            CONDITIONS+=("$condition, 'combination': $(quote "${train_param:-none}")}")
        done
    done
    echo "Summary: $PY tools/gather_result.py --log_file $LOG --condition \"{...}\" (per column and template kind)"
    "$PY" "$HERE/tools/gather_result.py" --log_file "$LOG" ${TASK_FILE:+--task_file "$TASK_FILE"} \
        --condition "${CONDITIONS[@]}" || true
    echo
    rows=(--task "$TASK_NAME")
    [[ -n ${TASK_FILE:-} ]] && rows=(--task_file "$TASK_FILE")
    if [[ $SWEEP == mulstage ]]; then
        echo "Figure: $PY tools/plot_mulstage.py --log_file $LOG ${rows[*]} --tag $TAG --output mulstage-$TASK_NAME.png"
    else
        echo "Table: $PY tools/make_table.py --log_file $LOG ${rows[*]} --tag $TAG"
        "$PY" "$HERE/tools/make_table.py" --log_file "$LOG" "${rows[@]}" --tag "$TAG" || true
    fi
fi

if ((status)); then
    echo "some jobs failed (listed above); python tools/launch.py --status $JOBS_FILE shows what is left" >&2
fi
exit $status

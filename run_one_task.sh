#!/usr/bin/env bash
# The sweep of one task: for HARD in Y N, zero-shot plus the 7 combinations of prompt / bias /
# adapter, over seeds and learning rates; then the summary (gather_result.py per column, and the
# table from make_table.py). Each run is one call of the experiment script (run_experiment.sh).
#
#   TASK=SST-2 bash run_one_task.sh ["extra run.py arguments"]
#
# Environment:
#   TASK (required)  TAG (exp)  BS (4)  SEEDS ("13 21 42 87 100"; zero-shot uses the first)
#   LRS (overrides every learning-rate grid; default: SPEC §7, from the delta registry)
#   HARDS ("Y N")  COMBOS (columns to run, default: zero-shot and the paper's 7 combinations, or the
#          6 orders of a multi-stage sweep; "none" = zero-shot; any combination of the registry's
#          methods, e.g. "lora prompt,lora"; stages of a multi-stage order are joined by '-':
#          prompt-bias-adapter). `python tools/sweep_plan.py --sweep fewshot` lists the columns.
#   PRINT_JOBS (1: print one self-contained command line per run instead of running;
#               pending: only the runs that the results log does not hold yet)
#   PACK (1 = off: one process per run; K > 1: up to K runs of one setting (learning rates x
#         seeds) train together in one process over one copy of the frozen model, src/packed.py;
#         a job line is then one such pack, and it is pending while any of its runs is)
#   Passed on to every run when set: MODEL K MAX_STEP EVAL_STEP DATA_ROOT DATA_DIR LOG_FILE
#   RESULT_DIR GPUN STAGE_INIT KEEP_RESULT PYTHON (see run_experiment.sh).
#   SWEEP (fewshot | mulstage | fulldata): set by run_mulstage_task.sh and run_fulldata_one_task.sh.
# Positional arguments are forwarded to every run (see run_experiment.sh).
# A failed run is reported and the sweep goes on; the exit status is 1 when any run failed.
# Runs already in the results log are not started again (the same test as run.py --skip_done).
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

[[ -n ${TASK:-} ]] || die "TASK is not set (e.g. TASK=SST-2 bash $(basename "$0"))"
TASK_NAME=$("$PY" "$HERE/tools/task_args.py" --task "$TASK" | sed -n 2p) || exit 2
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
PASS_ON=(MODEL K MAX_STEP EVAL_STEP DATA_ROOT DATA_DIR LOG_FILE RESULT_DIR GPUN STAGE_INIT KEEP_RESULT PYTHON)
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

# Indexes of the jobs whose run the results log does not hold yet. The identity of a run is
# decided by run.py itself (same test as --skip_done), in one Python process for all jobs instead
# of one costly start per finished run.
pending_jobs() {
    local i work status=0
    if [[ ! -s $LOG ]]; then
        seq 0 $((${#JOBS[@]} - 1))
        return
    fi
    work=$(mktemp -d)
    for i in "${!JOBS[@]}"; do
        bash -c "PRINT_ARGS=1 ${JOBS[i]} $SUFFIX" >"$work/$i" 2>/dev/null || rm -f "$work/$i"
    done
    (cd "$HERE" && "$PY" - "$LOG" "$work" "${#JOBS[@]}") <<'EOF'
import os, sys
log_file, work, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
from src.experiment import Experiment
from src.arguments import parse_args
from src.multirun import expand_argv
from src.results import read_results, run_identity

logged = {repr(run_identity(record)) for record in read_results(log_file)}
for index in range(count):
    path = os.path.join(work, str(index))
    try:
        with open(path, "rb") as f:
            argv = [arg.decode() for arg in f.read().split(b"\0")[:-1]]
        identities = [repr(run_identity(Experiment(*parse_args(run)).arguments_record())) for run in expand_argv(argv)]
        done = all(identity in logged for identity in identities)
    except (Exception, SystemExit):  # the run itself will say what is wrong
        done = False
    if not done:
        print(index)
EOF
    status=$?
    rm -rf "$work"
    return $status
}

if [[ $PRINT_JOBS == 1 ]]; then
    for job in "${JOBS[@]}"; do echo "$PREFIX $job $SUFFIX"; done
    exit 0
fi
if pending_text=$(pending_jobs); then
    mapfile -t PENDING < <(printf '%s' "$pending_text" | sed '/^$/d')
else  # never let the shortcut decide: run everything, run.py --skip_done still skips finished runs
    echo "warning: could not check $LOG for finished runs; starting all runs (each skips itself if done)" >&2
    mapfile -t PENDING < <(seq 0 $((${#JOBS[@]} - 1)))
fi
if [[ $PRINT_JOBS == pending ]]; then
    for i in "${PENDING[@]}"; do echo "$PREFIX ${JOBS[i]} $SUFFIX"; done
    exit 0
fi

# ---- run ------------------------------------------------------------------------------------
UNIT=runs
((PACK > 1)) && UNIT="packs of up to $PACK runs"
echo "$SWEEP sweep of $TASK_NAME: ${#JOBS[@]} $UNIT, ${#PENDING[@]} not in $LOG yet" >&2
trap 'echo "interrupted" >&2; exit 130' INT TERM  # Ctrl-C stops the sweep, not just one run
startable() { bash -c "PRINT_ARGS=1 ${JOBS[$1]} $SUFFIX" >/dev/null 2>&1; }
any_startable() {  # does any pending run after the first $1 get past its setup?
    local k
    for k in "${PENDING[@]:$1}"; do
        startable "$k" && return 0
    done
    return 1
}
FAILED=()
done_count=0
for i in "${PENDING[@]}"; do
    done_count=$((done_count + 1))
    echo "=== [$done_count/${#PENDING[@]}] ${JOBS[i]}" >&2
    if bash -c "$PREFIX ${JOBS[i]} $SUFFIX"; then
        :
    else
        status=$?
        FAILED+=("${JOBS[i]} (exit $status)")
        echo "FAILED (exit $status): ${JOBS[i]}" >&2
        # Its setup failed before run.py started (e.g. no data): stop if no remaining run can start either.
        if ! startable "$i" && ! any_startable "$done_count"; then
            echo "error: stopping the sweep: no remaining run can start (see above); fix that and rerun to resume" >&2
            break
        fi
    fi
done

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
    "$PY" "$HERE/tools/gather_result.py" --log_file "$LOG" --condition "${CONDITIONS[@]}" || true
    echo
    if [[ $SWEEP == mulstage ]]; then
        echo "Figure: $PY tools/plot_mulstage.py --log_file $LOG --task $TASK_NAME --tag $TAG --output mulstage-$TASK_NAME.png"
    else
        echo "Table: $PY tools/make_table.py --log_file $LOG --task $TASK_NAME --tag $TAG"
        "$PY" "$HERE/tools/make_table.py" --log_file "$LOG" --task "$TASK_NAME" --tag "$TAG" || true
    fi
fi

if ((${#FAILED[@]})); then
    echo >&2
    echo "${#FAILED[@]} of ${#PENDING[@]} runs failed:" >&2
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi

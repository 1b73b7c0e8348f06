#!/usr/bin/env bash
# The sweep of one task: for HARD in Y N, zero-shot plus the 7 combinations of prompt / bias /
# adapter, over seeds and learning rates; then the summary (gather_result.py per column, and the
# table from make_table.py). Each run is one call of the experiment script (run_experiment.sh).
#
#   TASK=SST-2 bash run_one_task.sh ["extra run.py arguments"]
#
# Environment:
#   TASK (required)  TAG (exp)  BS (4)  SEEDS ("13 21 42 87 100"; zero-shot uses the first)
#   LRS (overrides every learning-rate grid; default: SPEC §7 per method)
#   HARDS ("Y N")  COMBOS (columns to run, default
#          "none prompt bias adapter prompt,adapter bias,adapter prompt,bias prompt,bias,adapter";
#          "none" = zero-shot; stages of a multi-stage order are joined by '-': prompt-bias-adapter)
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

ALL_COMBOS="prompt bias adapter prompt,adapter bias,adapter prompt,bias prompt,bias,adapter"
ALL_ORDERS="prompt-bias-adapter prompt-adapter-bias bias-prompt-adapter bias-adapter-prompt adapter-prompt-bias adapter-bias-prompt"
case $SWEEP in
fewshot)
    EXPERIMENT=run_experiment.sh TAG=${TAG:-exp} BS=${BS:-4}
    SEEDS=${SEEDS:-13 21 42 87 100} COMBOS=${COMBOS:-none $ALL_COMBOS}
    ;;
mulstage)
    EXPERIMENT=run_mulstage_experiment.sh TAG=${TAG:-exp-mulstage} BS=${BS:-4}
    SEEDS=${SEEDS:-13 21 42 87 100} COMBOS=${COMBOS:-$ALL_ORDERS}
    ;;
fulldata)
    EXPERIMENT=run_fulldata_experiment.sh TAG=${TAG:-exp-fulldata} BS=${BS:-64}
    SEEDS=${SEEDS:-13 21 42} COMBOS=${COMBOS:-none $ALL_COMBOS}
    ;;
*) die "SWEEP must be fewshot, mulstage or fulldata, got '$SWEEP'" ;;
esac
read -ra SEED_LIST <<<"$SEEDS"
read -ra COMBO_LIST <<<"$COMBOS"
read -ra HARD_LIST <<<"${HARDS:-Y N}"
((${#SEED_LIST[@]})) || die "SEEDS is empty"

lr_grid() {  # the learning rates of one combination (SPEC §7)
    if [[ -n ${LRS:-} ]]; then
        echo "$LRS"
        return
    fi
    case $SWEEP:$1 in
    fewshot:prompt) echo 1e-2 3e-3 1e-3 3e-4 ;;
    fewshot:bias) echo 3e-3 1e-3 3e-4 1e-4 ;;
    fewshot:*) echo 1e-3 3e-4 1e-4 3e-5 ;;
    mulstage:*) echo 1e-2 3e-3 1e-3 3e-4 ;;
    fulldata:*) echo 1e-2 1e-3 1e-4 1e-5 ;;
    esac
}

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
    for combo in "${COMBO_LIST[@]}"; do
        if [[ $combo == none ]]; then
            add_job HARD="$hard" PROMPT= NOTRAIN=1 TRAIN_PARAM= SEED="${SEED_LIST[0]}"
            continue
        fi
        prompt=
        [[ ",${combo//-/,}," == *,prompt,* ]] && prompt=prompt
        read -ra grid <<<"$(lr_grid "$combo")"
        add_training_jobs "$hard" "$prompt" "${combo//-/ }" "${grid[@]}"
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
    "$PY" - "$HERE" "$LOG" "$work" "${#JOBS[@]}" <<'EOF'
import os, sys
here, log_file, work, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, here)
from run import Experiment
from src.arguments import parse_args
from src.multirun import expand_argv
from src.results import matches, read_results

records = read_results(log_file)
for index in range(count):
    path = os.path.join(work, str(index))
    try:
        with open(path, "rb") as f:
            argv = [arg.decode() for arg in f.read().split(b"\0")[:-1]]
        identities = [Experiment(*parse_args(run)).record_identity() for run in expand_argv(argv)]
        done = all(any(matches(record, identity) for record in records) for identity in identities)
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
    fi
done

# ---- summary --------------------------------------------------------------------------------
quote() {  # a Python string literal
    local text=${1//\\/\\\\}
    printf "'%s'" "${text//\'/\\\'}"
}
task_key=$(printf '%s' "$TASK_NAME" | tr '[:upper:]' '[:lower:]')
if [[ -s $LOG ]]; then
    for hard in "${HARD_LIST[@]}"; do
        for combo in "${COMBO_LIST[@]}"; do
            prompt_flag=()
            [[ ",${combo//-/,}," == *,prompt,* ]] && prompt_flag=(--prompt)
            template=$("$PY" "$HERE/tools/task_args.py" --task "$TASK_NAME" --hard "$hard" "${prompt_flag[@]}" |
                sed -n 4p)
            condition="{'task_name': $(quote "$task_key"), 'tag': $(quote "$TAG"), 'template': $(quote "$template")"
            if [[ $combo == none ]]; then
                condition+=", 'do_train': False}"
            else
                condition+=", 'do_train': True, 'training_params': $(quote "${combo//-/ }")}"
            fi
            echo
            echo "## $TASK_NAME HARD=$hard ${combo//-/ → } (python tools/gather_result.py --log_file $LOG --condition \"$condition\")"
            "$PY" "$HERE/tools/gather_result.py" --log_file "$LOG" --condition "$condition" || true
        done
    done
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

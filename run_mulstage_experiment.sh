#!/usr/bin/env bash
# One multi-stage run (SPEC §2): run_experiment.sh with TRAIN_PARAM holding several stages, one
# after another (default: the first order of `python tools/sweep_plan.py --sweep mulstage`) and soft prompts in the template (PROMPT=prompt by
# default); run.py adds the modules of every method a stage lists.
# STAGE_INIT=best starts each stage from the previous stage's best dev checkpoint (default: last).
#
#   TASK=SST-2 TAG=exp-mulstage BS=4 LR=1e-3 SEED=13 TRAIN_PARAM="bias adapter prompt" bash run_mulstage_experiment.sh
#
# Every other variable and the extra arguments: as run_experiment.sh.
set -euo pipefail
export PROMPT=${PROMPT-prompt}
if [[ -z ${TRAIN_PARAM:-} ]]; then
    HERE=$(dirname "${BASH_SOURCE[0]}")
    TRAIN_PARAM=$("${PYTHON:-python}" "$HERE/tools/sweep_plan.py" --sweep mulstage | sed -n 1p | cut -d '|' -f 2)
fi
export TRAIN_PARAM
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_experiment.sh" "$@"

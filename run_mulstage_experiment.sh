#!/usr/bin/env bash
# One multi-stage run (SPEC §2): run_experiment.sh with TRAIN_PARAM holding several stages, one
# after another (default "prompt bias adapter"), soft prompts in the template (PROMPT=prompt by
# default) and --use_adapter (added by run_experiment.sh because a stage lists adapter).
# STAGE_INIT=best starts each stage from the previous stage's best dev checkpoint (default: last).
#
#   TASK=SST-2 TAG=exp-mulstage BS=4 LR=1e-3 SEED=13 TRAIN_PARAM="bias adapter prompt" bash run_mulstage_experiment.sh
#
# Every other variable and the extra arguments: as run_experiment.sh.
set -euo pipefail
export PROMPT=${PROMPT-prompt}
export TRAIN_PARAM=${TRAIN_PARAM:-prompt bias adapter}
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_experiment.sh" "$@"

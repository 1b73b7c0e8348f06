#!/usr/bin/env bash
# One full-data run: run_experiment.sh on $DATA_ROOT/original/$TASK (FULLDATA=1) with batch 64
# by default. GLUE's test labels are hidden, so, as in the reference, the dev set is also the test
# set (run.py --dev_as_test); the final evaluation skips the train split (--skip_train_eval).
#
#   TASK=SST-2 TAG=exp-fulldata LR=1e-4 SEED=13 TRAIN_PARAM=adapter bash run_fulldata_experiment.sh
#
# Every other variable and the extra arguments: as run_experiment.sh.
set -euo pipefail
export FULLDATA=1
export BS=${BS:-64}
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_experiment.sh" "$@"

#!/usr/bin/env bash
# The full-data sweep of one task: zero-shot + the 7 combinations (run_fulldata_experiment.sh) x
# HARD Y/N x SEEDS (default 13 21 42) x LRS (default 1e-2 1e-3 1e-4 1e-5 for every method), batch
# 64, TAG default exp-fulldata. Interface, PRINT_JOBS, failure and resume behaviour: as
# run_one_task.sh.
#
#   TASK=SST-2 bash run_fulldata_one_task.sh ["extra run.py arguments"]
set -euo pipefail
SWEEP=fulldata exec bash "$(dirname "${BASH_SOURCE[0]}")/run_one_task.sh" "$@"

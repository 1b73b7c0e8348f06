#!/usr/bin/env bash
# The multi-stage sweep of one task (SPEC §2): the 6 orders of prompt / bias / adapter
# (run_mulstage_experiment.sh) x HARD Y/N x SEEDS x LRS (default 1e-2 3e-3 1e-3 3e-4), TAG
# default exp-mulstage, optional STAGE_INIT (last|best). Interface, PRINT_JOBS, failure and
# resume behaviour: as run_one_task.sh. The figure: tools/plot_mulstage.py (command printed at the end).
#
#   TASK=SST-2 bash run_mulstage_task.sh ["extra run.py arguments"]
set -euo pipefail
SWEEP=mulstage exec bash "$(dirname "${BASH_SOURCE[0]}")/run_one_task.sh" "$@"

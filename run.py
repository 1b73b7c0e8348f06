"""Prompt-based delta tuning of a masked LM (LM-BFF / FS-PBA command line). This file is the command
line only: a run is `src/experiment.py`'s Experiment, runs of one setting train packed (src/packed.py).

    python run.py --task_name SST-2 --data_dir data/k-shot/SST-2/16-42 --model_name_or_path roberta-large \
        --template "*cls*prompt*sent_0*_It_was*mask*.*sep+*" --mapping "{'0':'terrible','1':'great'}" \
        --training_params prompt --do_train --do_eval --do_predict --max_steps 1000 --eval_steps 100 ...

Bad input (unknown task, bad template or mapping, missing data) is one line on stderr and exit 2,
before anything is trained or appended to the results log.
"""
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from src.errors import UserError, cli  # noqa: E402
from src.experiment import Experiment  # noqa: E402


@cli
def main(argv=None):
    """Run the command line's run(s); returns the exit status. The process environment is restored on
    return: TrainingArguments exports settings (ACCELERATE_MIXED_PRECISION, ACCELERATE_DYNAMO_*) that
    every later Trainer in the process would otherwise pick up (a later fp32 run computing in bf16)."""
    saved = dict(os.environ)
    try:
        return run_all(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_all(argv):
    from src.multirun import expand_argv, label_of
    runs = expand_argv(sys.argv[1:] if argv is None else argv)
    experiments, status = [], 0
    for run_argv in runs:
        try:
            experiment = Experiment.checked(run_argv)
        except UserError as error:
            if len(runs) == 1:
                raise
            print(f"error: run {label_of(run_argv)}: {error}", file=sys.stderr)  # the pack's other runs go on
            status = 1
            continue
        if experiment.args.skip_done and experiment.already_logged():
            print(f"skip: {experiment.args.log_file} already holds this run", file=sys.stderr)
        else:
            experiments.append(experiment)
    if len(experiments) > 1:
        from src.packed import run_packed
        return max(status, run_packed(experiments))
    for experiment in experiments:
        experiment.run()
    return status


if __name__ == "__main__":
    sys.exit(main())

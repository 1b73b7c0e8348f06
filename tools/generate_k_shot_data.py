"""Generate LM-BFF k-shot splits (same algorithm as LM-BFF's tools/generate_k_shot_data.py).

For each task and seed: shuffle the original train set with numpy's legacy RNG
seeded by the seed, group the shuffled examples by label (labels in order of
first appearance), take the first K of each label as train and the next K
(10K in k-shot-10x mode) as dev. The original dev set (GLUE) or test set (csv
tasks) is copied as test. The output is byte-identical to the published splits.

Usage: python tools/generate_k_shot_data.py [--k 16] [--task T ...] [--seed S ...]
       [--data_dir data/original] [--output_dir data] [--mode k-shot|k-shot-10x]
"""
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.checks import ArgumentParser, at_least, between, typed  # noqa: E402
from src.errors import UserError, cli  # noqa: E402

GLUE_TASKS = ["SST-2", "CoLA", "MRPC", "QQP", "STS-B", "MNLI", "SNLI", "QNLI", "RTE"]
CSV_TASKS = ["sst-5", "mr", "cr", "mpqa", "subj", "trec"]
DEFAULT_SEEDS = [100, 13, 21, 42, 87]
ALL_TASKS = ["SST-2", "sst-5", "mr", "cr", "mpqa", "subj", "trec",
             "CoLA", "MRPC", "QQP", "STS-B", "MNLI", "SNLI", "QNLI", "RTE"]
# Column holding the label in a GLUE tsv line (after strip + split on tab).
LABEL_COLUMN = {"CoLA": 1, "MRPC": 0}


def input_files(task):
    """Original files needed for a task: (train, [eval splits])."""
    if task in CSV_TASKS:
        return "train.csv", ["test.csv"]
    if task == "MNLI":
        return "train.tsv", ["dev_matched.tsv", "dev_mismatched.tsv"]
    return "train.tsv", ["dev.tsv"]


def glue_label(task, line):
    """Label used for balanced sampling. STS-B (regression) is binned at 2.5.

    Like the reference, the line is stripped first, so a trailing empty field
    is dropped before taking the last column.
    """
    fields = line.strip().split("\t")
    if task == "STS-B":
        return 0 if float(fields[-1]) < 2.5 else 1
    return fields[LABEL_COLUMN.get(task, -1)]


def read_lines(path):
    # Text mode on purpose: the reference reads/writes text, so CRLF becomes LF.
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, header=False, index=False)


def balanced_split(examples, labels, order, k, dev_rate):
    """Return (train, dev) lists: per label, first k and next k*(dev_rate-1) examples."""
    groups = {}
    for i in order:
        groups.setdefault(labels[i], []).append(examples[i])
    train = [ex for group in groups.values() for ex in group[:k]]
    dev = [ex for group in groups.values() for ex in group[k:k * dev_rate]]
    return train, dev


def generate_task(task, seeds, k, data_dir, out_dir, dev_rate):
    src = os.path.join(data_dir, task)
    train_name, eval_names = input_files(task)
    if task in CSV_TASKS:
        train_df = pd.read_csv(os.path.join(src, train_name), header=None)
        test_df = pd.read_csv(os.path.join(src, eval_names[0]), header=None)
        examples = train_df.values.tolist()
        labels = [row[0] for row in examples]
        header = []
    else:
        lines = read_lines(os.path.join(src, train_name))
        evals = {name: read_lines(os.path.join(src, name)) for name in eval_names}
        # CoLA's train.tsv has no header; every other GLUE file has one.
        header, examples = ([], lines) if task == "CoLA" else (lines[:1], lines[1:])
        labels = [glue_label(task, line) for line in examples]
    if not examples:
        raise UserError(f"{os.path.join(src, train_name)}: no examples")

    # The reference shuffles the loaded list in place (np.random.seed + shuffle);
    # RandomState(seed).permutation(n) yields exactly that order (same Fisher-Yates draws).
    # For CoLA (no header to slice off) that list is the cached dataset itself,
    # so its shuffles accumulate across seeds in the order given; every other
    # task shuffles a fresh copy per seed.
    accumulate = task == "CoLA"
    order = np.arange(len(examples))
    for seed in seeds:
        perm = np.random.RandomState(seed).permutation(len(examples))
        order = order[perm] if accumulate else perm

        setting_dir = os.path.join(out_dir, task, f"{k}-{seed}")
        os.makedirs(setting_dir, exist_ok=True)
        train, dev = balanced_split(examples, labels, order, k, dev_rate)
        if task in CSV_TASKS:
            # Test is re-written through pandas, not byte-copied.
            test_df.to_csv(os.path.join(setting_dir, "test.csv"), header=False, index=False)
            write_csv(os.path.join(setting_dir, "train.csv"), train)
            write_csv(os.path.join(setting_dir, "dev.csv"), dev)
        else:
            for name, eval_lines in evals.items():
                write_lines(os.path.join(setting_dir, name.replace("dev", "test")), eval_lines)
            write_lines(os.path.join(setting_dir, "train.tsv"), header + train)
            dev_name = "dev_matched.tsv" if task == "MNLI" else "dev.tsv"
            write_lines(os.path.join(setting_dir, dev_name), header + dev)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=typed(int, at_least(1)), default=16, help="examples per label")
    parser.add_argument("--task", nargs="+", default=ALL_TASKS)
    parser.add_argument("--seed", type=typed(int, between(0, 2**32 - 1, integer=True)), nargs="+",
                        default=DEFAULT_SEEDS, help="numpy seeds, in order (CoLA depends on the order)")
    parser.add_argument("--data_dir", default="data/original", help="LM-BFF's original datasets (one folder per task)")
    parser.add_argument("--output_dir", default="data", help="the splits go to OUTPUT_DIR/MODE/TASK/K-SEED/")
    parser.add_argument("--mode", default="k-shot", choices=["k-shot", "k-shot-10x"])
    args = parser.parse_args(argv)

    unknown = [t for t in args.task if t not in ALL_TASKS]
    if unknown:
        raise UserError(f"--task: unknown task(s) {', '.join(unknown)}; choose from {' '.join(ALL_TASKS)}")

    if "CoLA" in args.task and args.seed[:len(DEFAULT_SEEDS)] != DEFAULT_SEEDS:
        print("note: CoLA splits depend on the seed order; only --seed 100 13 21 42 87 "
              "reproduces the published CoLA files", file=sys.stderr)
    out_dir = os.path.join(args.output_dir, args.mode)
    dev_rate = 11 if args.mode == "k-shot-10x" else 2
    failed = False
    for task in args.task:
        train_name, eval_names = input_files(task)
        missing = [os.path.join(args.data_dir, task, name) for name in [train_name] + eval_names
                   if not os.path.isfile(os.path.join(args.data_dir, task, name))]
        if missing:
            print(f"error: {task}: missing original file {missing[0]}"
                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                  + "; skipped", file=sys.stderr)
            failed = True
            continue
        try:
            generate_task(task, args.seed, args.k, args.data_dir, out_dir, dev_rate)
        except (UserError, ValueError, IndexError, UnicodeDecodeError, pd.errors.ParserError) as error:
            print(f"error: {task}: {str(error).strip().splitlines()[0]}; skipped", file=sys.stderr)
            failed = True
            continue
        print(f"{task}: wrote {len(args.seed)} seed(s) to {os.path.join(out_dir, task)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

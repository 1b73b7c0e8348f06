"""The results log: a JSON-lines file, one object per finished run.

Many runs append to one log at the same time, so every write happens under a file lock; a run
killed while writing can leave a partial last line, so readers skip (and report) damaged lines
instead of failing, and the next writer starts its record on a fresh line.

A record is flat: every run.py argument, every metric (`{task}_{split}_eval_{metric}`), and the
facts of the run (`RUN_FACTS`). What makes two runs the same is decided here once, by
`run_identity`, for run.py's --skip_done, the sweeps' resume and gather alike.
"""
import json
import os
import sys

from filelock import FileLock

from src.errors import UserError

_MISSING = object()


def _plain(value):
    """JSON fallback for numpy scalars (metrics often arrive as numpy floats)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the results log")


def append_result(path, record):
    """Append `record` as one line to the log at `path` (created if missing)."""
    line = (json.dumps(record, default=_plain) + "\n").encode()
    path = os.fspath(path)
    with FileLock(path + ".lock"):
        with open(path, "a+b") as f:
            if f.tell() > 0:  # in append mode the position starts at the end
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _warn_stderr(message):
    print(f"warning: {message}", file=sys.stderr)


def read_results(path, warn=_warn_stderr):
    """All records in the log at `path`; each damaged line is skipped and reported through `warn`."""
    path = os.fspath(path)
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UserError(f"results log {path!r} does not exist") from None
    records = []
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                warn(f"{path}:{number}: skipped a damaged line (not a JSON object)")
    return records


# What a run's record states about it besides its arguments and metrics: its combination (canonical
# method names; stages separated by spaces; "none" for zero-shot), its template kind (the sweeps'
# HARD: Y manual, N soft-only; None without template) and whether it trained at all.
RUN_FACTS = ("combination", "hard", "zero_shot")
# The keys that tell the repetitions of one setting apart (one per seed and its data split).
REPLICATE_KEYS = ("seed", "data_dir")


def metric_key(task_key: str, split: str, metric: str) -> str:
    """The record key of a metric: `sst-2_test_eval_acc` (MNLI's mismatched test set: task `mnli-mm`)."""
    return f"{task_key}_{split}_eval_{metric}"


def run_facts(arguments: dict) -> dict:
    """The RUN_FACTS of a run, from its arguments (as recorded)."""
    from src.delta import combination_key
    from src.templates import parse_template
    zero_shot = arguments.get("do_train") is False
    stages = str(arguments.get("training_params", "")).split()
    try:
        combination = "none" if zero_shot else " ".join(combination_key([stage]) for stage in stages) or None
        template = arguments.get("template")
        hard = parse_template(template).hard if isinstance(template, str) else None
    except UserError:  # a record of a method or template part this version does not know
        combination, hard = None, None
    return {"combination": combination, "hard": hard, "zero_shot": zero_shot}


def with_run_facts(record: dict) -> dict:
    """`record`, with the run facts that older logs did not write filled in from its arguments."""
    if all(key in record for key in RUN_FACTS):
        return record
    return {**run_facts(record), **record}


def run_identity(record: dict) -> dict:
    """What makes two runs the same: every run.py argument that can change a result (a key that an
    older record lacks reads as the argument's default). Not: output paths, logging, device, time,
    metrics (`src.arguments.NOT_IDENTITY` lists the arguments that change nothing)."""
    from src.arguments import NOT_IDENTITY, argument_defaults
    identity = {key: record.get(key, default) for key, default in argument_defaults().items()
                if key not in NOT_IDENTITY}
    return json.loads(json.dumps(identity, default=str, sort_keys=True))


def setting_of(record: dict) -> dict:
    """The run's identity without what tells its seeds apart: runs of one setting share it."""
    return {key: value for key, value in run_identity(record).items() if key not in REPLICATE_KEYS}


def is_logged(records, arguments: dict) -> bool:
    """True when `records` hold a run with the same identity as `arguments`."""
    identity = run_identity(arguments)
    return any(run_identity(record) == identity for record in records)


def matches(record, condition):
    """True when the record has every key of `condition` with an equal value."""
    return all(record.get(key, _MISSING) == value for key, value in condition.items())


def find_results(path, condition, warn=_warn_stderr):
    """The records of the log at `path` that match `condition`."""
    return [r for r in read_results(path, warn) if matches(r, condition)]

"""The results log: a JSON-lines file, one object per finished run.

Many runs append to one log at the same time, so every write happens under a file lock; a run
killed while writing can leave a partial last line, so readers skip (and report) damaged lines
instead of failing, and the next writer starts its record on a fresh line. A record that run.py could
not have written (an argument of the wrong type or out of its allowed values, a metric out of range:
`record_problem`) is such a damaged line too.

A record is flat: every run.py argument, every metric (`{task}_{split}_eval_{metric}`), and the
facts of the run (`RUN_FACTS`). What makes two runs the same is decided in src/identity.py.
"""
import json
import os
import re
import sys
import tempfile
from typing import Callable, Optional

from filelock import FileLock, Timeout

from src.arguments import argument_checks, value_problem
from src.checks import Allowed, Local, is_integer, is_number, of_type, one_of, optional
from src.delta import Stages
from src.errors import UserError
from src.files import bounded_lines, open_regular
from src.templates import parse_template

_MISSING = object()


def _plain(value):
    """JSON fallback for numpy scalars (metrics often arrive as numpy floats)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the results log")


def check_writable(log_file: str, output_dir: Optional[str] = None) -> None:
    """Fail early (before any model loads) when the log, its lock or the output folder cannot be written."""
    log_file = os.fspath(log_file)
    if os.path.exists(log_file) and not (os.path.isfile(log_file) and os.access(log_file, os.W_OK)):
        raise UserError(f"--log_file {log_file!r} must be a writable regular file (not a folder or a device)")
    _check_folder("--log_file", os.path.dirname(os.path.abspath(log_file)))
    try:
        with FileLock(log_file + ".lock", timeout=60):
            pass
    except (OSError, Timeout) as error:
        raise UserError(f"--log_file: cannot take the lock {log_file}.lock: {error}") from error
    if output_dir:
        _check_folder("--output_dir", output_dir)


def _check_folder(name, folder):
    """Create `folder` if needed and write a probe in it, so that a full disk fails now and not after training."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise UserError(f"{name}: cannot write in {folder!r}: {error}") from error


def append_result(path, record, skip_if: Optional[Callable[[dict], bool]] = None) -> bool:
    """Append `record` as one line to the log at `path` (created if missing); returns whether it did.

    With `skip_if`, the log is read under the lock first and nothing is appended when a record
    satisfies it (two identical runs finishing together leave one record).
    """
    line = (json.dumps(record, default=_plain) + "\n").encode()
    path = os.fspath(path)
    with FileLock(path + ".lock"):
        if skip_if and os.path.exists(path) and any(skip_if(r) for r in read_results(path)):
            return False
        with open(path, "a+b") as f:
            if f.tell() > 0:  # in append mode the position starts at the end
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    return True


def _warn_stderr(message):
    print(f"warning: {message}", file=sys.stderr)


def _metric(value):
    """A metric is a fraction or a correlation: a number in METRIC_RANGE (not NaN, not infinite)."""
    return is_number(value) and METRIC_RANGE[0] <= value <= METRIC_RANGE[1]


def _scores(value):
    return isinstance(value, dict) and all(isinstance(k, str) and _metric(v) for k, v in value.items())


def _stage(value):
    """One stage result: its methods, best step, dev history [[step, score], ...], and scores per split."""
    return (isinstance(value, dict) and isinstance(value.get("training_params"), str)
            and (value.get("best_step") is None or is_integer(value["best_step"]))
            and isinstance(value.get("eval_history"), list)
            and all(isinstance(p, list) and len(p) == 2 and is_integer(p[0]) and _metric(p[1])
                    for p in value["eval_history"])
            and _scores(value.get("dev"))
            and all(_scores(v) for k, v in value.items() if k not in ("training_params", "best_step", "eval_history")))


# A metric's key, as `metric_key` writes it: e.g. sst-2_test_eval_acc, mnli-mm_test_eval_acc.
METRIC_KEY = re.compile(r"[\w-]+_(train|dev|test)_eval_\w+")
# Every metric of src/tasks.py's METRICS lies here: accuracy and F1 in [0, 1], Matthews and the
# correlations in [-1, 1]. Anything else (NaN, 1e400, 10**4000) is a damaged value.
METRIC_RANGE = (-1, 1)
STRING = of_type(str, "a string")
# What a record holds besides run.py's arguments, and the arguments it spells otherwise than run.py takes them.
# Every other argument in a record is held to the argument's own type and allowed values
# (src.arguments.argument_checks; to its type only where only the machine that wrote it can check the value,
# `Local`: a folder, a GPU); every metric is a number in METRIC_RANGE.
RECORD_FIELDS = {
    # any string: a task this version lacks (a user's or a newer version's) is an error only where a reader
    # asks for it; in any case, as run.py takes it: read_results lower-cases it (a task's key)
    "task_name": STRING,
    "tag": optional(STRING),  # null in older versions' records
    "task_file": optional(of_type(dict, "a task file's content (a JSON object)")),  # what run.py records of --task_file
    "training_params": STRING,  # the stages as one string, as `Stages` spells them
    "trainable_params": Allowed("an integer >= 0", lambda v: is_integer(v) and v >= 0),
    "total_params": Allowed("an integer > 0", lambda v: is_integer(v) and v > 0),
    "trainable_percent": Allowed("a number in [0, 100]", lambda v: is_number(v) and 0 <= v <= 100),
    "stages": Allowed("a list of stage results", lambda v: isinstance(v, list) and all(_stage(s) for s in v)),
    "combination": optional(STRING),
    "hard": optional(one_of("Y", "N")),
    "zero_shot": of_type(bool, "true or false"),
}


def record_problem(record: object) -> Optional[str]:
    """What makes `record` unfit for the readers (tables, plots, --skip_done), or None when it is fit."""
    if not isinstance(record, dict):
        return "not a JSON object"
    arguments = argument_checks()
    for key, value in record.items():
        if key in RECORD_FIELDS:
            if not RECORD_FIELDS[key].test(value):
                return f"{key} is not {RECORD_FIELDS[key].text}"
        elif key in arguments:
            hint, allowed = arguments[key]
            problem = value_problem(value, hint, None if isinstance(allowed, Local) else allowed)
            if problem:
                return f"{key} is not {problem}"
        elif METRIC_KEY.fullmatch(key) and not _metric(value):
            return f"metric {key} is not a number in [{METRIC_RANGE[0]}, {METRIC_RANGE[1]}]"
    return None


def read_results(path, warn=_warn_stderr):
    """All valid records of the log at `path` (a regular file); each damaged or invalid line is skipped and
    reported via `warn`."""
    path = os.fspath(path)
    records = []
    with open_regular(path, "results log") as f:
        for number, line in enumerate(bounded_lines(f), 1):
            if line is None:
                warn(f"{path}:{number}: skipped a damaged line (longer than any record)")
                continue
            if not line.strip():
                continue
            try:
                problem = record_problem(record := json.loads(line))
            except (ValueError, RecursionError):
                problem = "not a JSON object"
            if problem is None:
                records.append({**record, "task_name": record["task_name"].lower()}  # as Task.key spells it
                               if "task_name" in record else record)
            else:
                warn(f"{path}:{number}: skipped a damaged line ({problem})")
    return records


# What a run's record states about it besides its arguments and metrics: its combination (canonical
# method names; stages separated by spaces; "none" for zero-shot), its template kind (the sweeps'
# HARD: Y manual, N soft-only; None without template) and whether it trained at all.
RUN_FACTS = ("combination", "hard", "zero_shot")


def metric_key(task_key: str, split: str, metric: str) -> str:
    """The record key of a metric: `sst-2_test_eval_acc` (MNLI's mismatched test set: task `mnli-mm`)."""
    return f"{task_key}_{split}_eval_{metric}"


def run_facts(arguments: dict) -> dict:
    """The RUN_FACTS of a run, from its arguments (as recorded)."""
    zero_shot = arguments.get("do_train") is False
    try:
        combination = "none" if zero_shot else str(Stages.parse(str(arguments.get("training_params", ""))))
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


def matches(record, condition):
    """True when the record has every key of `condition` with an equal value."""
    return all(record.get(key, _MISSING) == value for key, value in condition.items())


def find_results(path, condition, warn=_warn_stderr):
    """The records of the log at `path` that match `condition`."""
    return [r for r in read_results(path, warn) if matches(r, condition)]

"""The results log: a JSON-lines file, one object per finished run.

Many runs append to one log at the same time, so every write happens under a file lock; a run
killed while writing can leave a partial last line, so readers skip (and report) damaged lines
instead of failing, and the next writer starts its record on a fresh line.
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


def matches(record, condition):
    """True when the record has every key of `condition` with an equal value."""
    return all(record.get(key, _MISSING) == value for key, value in condition.items())


def find_results(path, condition, warn=_warn_stderr):
    """The records of the log at `path` that match `condition`."""
    return [r for r in read_results(path, warn) if matches(r, condition)]

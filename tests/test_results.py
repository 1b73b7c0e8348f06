"""The results log: concurrent appends, a writer killed mid-record, damaged lines."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.errors import UserError
from src.results import append_result, find_results, matches, read_results

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from src.results import append_result
for i in range(50):
    append_result(sys.argv[1], {"writer": int(sys.argv[2]), "i": i, "pad": "x" * 20000})
"""

# Takes the log's lock, writes half a record, and waits to be killed while holding the lock.
KILLED_WRITER = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1] + ".lock"):
    with open(sys.argv[1], "a") as f:
        f.write('{"seed": 99, "task_na')
        f.flush()
    print("ready", flush=True)
    time.sleep(60)
"""


def test_concurrent_appends_give_every_record_once(tmp_path):
    log = str(tmp_path / "log")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, log, str(w)], cwd=ROOT) for w in range(8)]
    assert [p.wait(timeout=120) for p in writers] == [0] * 8
    warnings = []
    records = read_results(log, warn=warnings.append)
    assert warnings == []
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(8) for i in range(50)]


def test_writer_killed_mid_record_leaves_the_log_readable(tmp_path):
    log = str(tmp_path / "log")
    append_result(log, {"seed": 13})
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, log], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "ready\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    writer.stdout.close()

    append_result(log, {"seed": 42})  # the dead writer's lock is released with its process
    lines = Path(log).read_text().splitlines()
    assert lines == ['{"seed": 13}', '{"seed": 99, "task_na', '{"seed": 42}']
    warnings = []
    assert read_results(log, warn=warnings.append) == [{"seed": 13}, {"seed": 42}]
    assert warnings == [f"{log}:2: skipped a damaged line (not a JSON object)"]


def test_damaged_lines_are_reported_with_their_line_number(tmp_path, capsys):
    log = tmp_path / "log"
    log.write_text('{"a": 1}\nnot json\n[1, 2]\n\n"text"\n{"a": 2}\n{"a": 3')
    assert read_results(log) == [{"a": 1}, {"a": 2}]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {log}:{n}: skipped a damaged line (not a JSON object)" for n in (2, 3, 5, 7)]


def test_append_creates_the_log_and_writes_numpy_scalars(tmp_path):
    log = tmp_path / "new"
    append_result(log, {"acc": np.float32(0.5), "steps": np.int64(3)})
    assert log.read_text() == json.dumps({"acc": 0.5, "steps": 3}) + "\n"


def test_missing_log_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_results(tmp_path / "nope")


def test_matches_and_find_results(tmp_path):
    record = {"task_name": "sst-2", "learning_rate": 0.001, "tag": None}
    assert matches(record, {"task_name": "sst-2", "learning_rate": 1e-3})
    assert matches(record, {"tag": None})
    assert not matches(record, {"seed": None})  # a missing key is not equal to None
    assert not matches(record, {"task_name": "cola"})
    log = tmp_path / "log"
    for seed in (13, 42):
        append_result(log, dict(record, seed=seed))
    assert [r["seed"] for r in find_results(log, {"seed": 42})] == [42]

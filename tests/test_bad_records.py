"""Readers never trust the log: wrong-typed records and pathological lines are skipped with a warning
naming file and line, by every reader (read_results, run.py --skip_done, gather, make_table, plot,
the sweeps' resume)."""
import json
import os
from pathlib import Path

import pytest

import run
from src.arguments import parse_args
from src.files import MAX_LINE_CHARS
from src.experiment import Experiment
from src.results import append_result, read_results
from tests.test_bad_input import base_arguments, no_hang, to_argv
from tests.test_gather import SST2
from tests.test_plot_mulstage import mulstage_record
from tests.test_scripts import run_script
from tools import gather_result, make_table, plot_mulstage

# Record fields that the arguments' own checks refuse: (seed, fields) -> why the line is skipped.
IMPOSSIBLE_RECORDS = {
    "num_k is not an integer": (7, {"num_k": "16"}),
    "seed is not an integer in [0, 4294967295]": (-5, {}),
    "learning_rate is not a finite number > 0": (8, {"learning_rate": -1}),
    "data_dir is not a string": (9, {"data_dir": ["k-shot/SST-2/16-9"]}),
    "per_device_train_batch_size is not an integer >= 1": (10, {"per_device_train_batch_size": 0}),
    "model_name_or_path is not a non-empty string": (11, {"model_name_or_path": ""}),
}
BAD_LINES = [
    json.dumps({**SST2[0], "seed": "13"}),
    json.dumps({**SST2[0], "sst-2_test_eval_acc": "0.9"}),
    json.dumps({**SST2[0], "sst-2_dev_eval_acc": None}),
    json.dumps({**SST2[0], "task_name": ["sst-2"]}),
    json.dumps({**SST2[0], "learning_rate": True}),
    json.dumps({**SST2[0], "trainable_percent": "1%"}),
    json.dumps({**mulstage_record(["prompt", "bias"], 1e-3, 0.9), "stages": "prompt bias"}),
    json.dumps({**mulstage_record(["prompt", "bias"], 1e-3, 0.9),
                "stages": [{"training_params": "prompt", "eval_history": [["a", "b"]]}]}),
    json.dumps({**mulstage_record(["prompt", "bias"], 1e-3, 0.9), "stages": [{"training_params": "prompt",
                                                                              "dev": {"acc": "high"}}]}),
    # metrics that are not a fraction or a correlation: too large for a float, infinite, NaN, out of range
    *[json.dumps({**SST2[0], "sst-2_test_eval_acc": 0.123}).replace("0.123", text)
      for text in ("1" + "0" * 4000, "1e400", "NaN", "-Infinity", "1.5", "-2")],
    json.dumps({**mulstage_record(["prompt", "bias"], 1e-3, 0.9), "stages": [{"training_params": "prompt",
                                                                              "eval_history": [],
                                                                              "dev": {"acc": float("nan")}}]}),
    json.dumps({**SST2[0], "learning_rate": 0.123}).replace("0.123", "1e400"),
    # values run.py's arguments cannot take (each a seed of its own: counted, it would change the summary)
    *[json.dumps({**SST2[0], "seed": seed, **fields}) for seed, fields in IMPOSSIBLE_RECORDS.values()],
    json.dumps({**SST2[0], "seed": 7}).replace("7", "1" + "0" * 4000),
    "[" * 100000 + "]" * 100000,
    '{"a":' * 100000 + "1" + "}" * 100000,
    "null", "42", '"text"', "[]",
]


@pytest.fixture
def bad_log(tmp_path):
    """A log of good records with every bad line in between; returns (path, line numbers of bad lines)."""
    path = tmp_path / "log"
    good = SST2 + [mulstage_record(["prompt", "bias"], 1e-3, 0.9)]
    lines = [json.dumps(r) for r in good[:3]] + BAD_LINES + [json.dumps(r) for r in good[3:]]
    path.write_text("\n".join(lines) + "\n")
    return path, list(range(4, 4 + len(BAD_LINES)))


def assert_warned(err, path, numbers):
    assert "Traceback" not in err
    for number in numbers:
        assert f"{path}:{number}: skipped" in err, err[-2000:]


def test_read_results_skips_every_bad_line(bad_log):
    path, numbers = bad_log
    warnings = []
    records = read_results(path, warn=warnings.append)
    assert len(records) == len(SST2) + 1
    assert [int(w.split(":")[1]) for w in warnings] == numbers


@pytest.mark.parametrize("why", IMPOSSIBLE_RECORDS)
def test_an_impossible_argument_value_is_named(why, tmp_path):
    seed, fields = IMPOSSIBLE_RECORDS[why]
    path = tmp_path / "log"
    path.write_text(json.dumps(SST2[0]) + "\n" + json.dumps({**SST2[1], "seed": seed, **fields}) + "\n")
    warnings = []
    assert read_results(path, warn=warnings.append) == SST2[:1]
    assert warnings == [f"{path}:2: skipped a damaged line ({why})"]


def test_a_record_from_another_machine_is_kept(tmp_path):
    """Folders, files and GPUs that only the writing machine has are not checked (their types are)."""
    record = {**SST2[0], "data_dir": "/elsewhere/16-13", "delta_path": "/elsewhere/delta", "fp16": True}
    path = tmp_path / "log"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "fp16": "yes"}) + "\n")
    warnings = []
    assert read_results(path, warn=warnings.append) == [record]
    assert warnings == [f"{path}:2: skipped a damaged line (fp16 is not true or false)"]


def test_a_task_name_in_another_case_is_its_task(tmp_path, capsys):
    """run.py takes a task in any case: a record spelling it `SST-2` is a run of sst-2 for every reader."""
    path = tmp_path / "log"
    path.write_text("".join(json.dumps({**r, "task_name": "SST-2"} if i % 2 else r) + "\n"
                            for i, r in enumerate(SST2)))
    assert {r["task_name"] for r in read_results(path)} == {"sst-2"}
    assert gather_result.main(["--log_file", str(path), "--condition", "{'tag': 'exp'}"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "sst-2_test_eval_acc: 82.67 ± 2.49 (n=3 seeds, protocol lm-bff)" and not err
    records = [{**r, "hard": "N", "training_params": "prompt", "trainable_percent": 0.1} for r in SST2]
    path.write_text("".join(json.dumps({**r, "task_name": "SST-2"} if i % 2 else r) + "\n"
                            for i, r in enumerate(records)))
    assert make_table.main(["--log_file", str(path), "--task", "SST-2"]) == 0
    assert "| SST-2 (acc) |  |  |  |  | 82.7±2.5 |" in capsys.readouterr().out


def test_gather_make_table_and_plot_skip_bad_lines(bad_log, tmp_path, capsys):
    path, numbers = bad_log
    assert gather_result.main(["--log_file", str(path), "--condition", "{'task_name': 'sst-2', 'tag': 'exp'}"]) == 0
    out, err = capsys.readouterr()
    assert "82.67" in out
    assert_warned(err, path, numbers)
    assert make_table.main(["--log_file", str(path), "--task", "SST-2"]) in (0, 1)
    assert_warned(capsys.readouterr().err, path, numbers)
    assert plot_mulstage.main(["--log_file", str(path), "--task", "SST-2", "--output", str(tmp_path / "p.png")]) == 0
    assert_warned(capsys.readouterr().err, path, numbers)


def test_skip_done_reads_past_bad_lines(bad_log, tiny_roberta, data_root, tmp_path, capsys):
    path, numbers = bad_log
    argv = to_argv(base_arguments(tiny_roberta, data_root, tmp_path)) + ["--skip_done"]
    append_result(path, Experiment(*parse_args(argv)).arguments_record())
    assert run.main(argv) == 0
    err = capsys.readouterr().err
    assert "skip:" in err
    assert_warned(err, path, numbers)


def test_sweep_resume_reads_past_bad_lines(bad_log, data_root, tmp_path):
    path, numbers = bad_log
    result = run_script("run_one_task.sh", dict(TASK="SST-2", PRINT_JOBS="pending", LOG_FILE=path, SEEDS=13,
                                                LRS="1e-3", RESULT_DIR=tmp_path / "result", DATA_ROOT=data_root))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 2 * (1 + 7)  # every job is still to run
    assert_warned(result.stderr, path, numbers)


def test_a_line_longer_than_any_record_is_skipped_without_reading_it_whole(tmp_path):
    path = tmp_path / "log"
    path.write_text(json.dumps(SST2[0]) + "\n" + "x" * (MAX_LINE_CHARS + 10) + "\n" + json.dumps(SST2[1]) + "\n")
    warnings = []
    assert read_results(path, warn=warnings.append) == SST2[:2]
    assert warnings == [f"{path}:2: skipped a damaged line (longer than any record)"]


NOT_A_LOG = {  # --log_file that is not a regular file: it would block the reader or never end
    "FIFO": lambda tmp: os.mkfifo(tmp / "fifo") or tmp / "fifo",
    "/dev/zero": lambda tmp: Path("/dev/zero"),
    "/dev/full": lambda tmp: Path("/dev/full"),
    "folder": lambda tmp: tmp,
}
READERS = {"gather_result": (gather_result, ["--condition", "{'task_name': 'sst-2'}"]),
           "make_table": (make_table, ["--task", "SST-2"])}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", NOT_A_LOG)
def test_readers_refuse_a_log_that_is_not_a_regular_file(case, reader, tmp_path, capsys):
    tool, argv = READERS[reader]
    path = NOT_A_LOG[case](tmp_path)
    with no_hang():
        code = tool.main(["--log_file", str(path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines() == [f"error: results log {str(path)!r} is not a regular file (a folder, FIFO "
                                        "or device)"]

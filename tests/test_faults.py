"""Faults around a run: an unwritable log or output, a full disk, an I/O error at the end, a NaN loss,
two identical runs at once, a sweep without data, a sweep killed hard, packs on a machine without GPU.
Nothing computed is lost and nothing half-done is logged.

Tests run as root, which ignores permission bits: an unwritable folder is one under a file, or /proc.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import run
from tests.conftest import ROOT
from tests.test_bad_input import base_arguments, to_argv
from tests.test_scripts import SCRIPT_VARIABLES, run_script
from tools import launch


def never_build(*args, **kwargs):
    raise AssertionError("the model was loaded although the run could not be saved")


def run_main(argv, capsys):
    code = run.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, culprit):
    assert code == 2 and "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and culprit in errors[0], err[-2000:]


UNWRITABLE = {  # where --log_file or --output_dir points -> culprit
    "log folder under a file": ("log_file", "{tmp}/a-file/log", "--log_file"),
    "log folder in /proc": ("log_file", "/proc/delta-tuning-test/log", "--log_file"),
    "log path is a folder": ("log_file", "{tmp}", "--log_file"),
    "log on a full disk (/dev/full)": ("log_file", "/dev/full", "--log_file"),
    "output folder under a file": ("output_dir", "{tmp}/a-file/out", "--output_dir"),
    "output folder in /proc": ("output_dir", "/proc/delta-tuning-test", "--output_dir"),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_unwritable_log_or_output_fails_before_the_model_loads(case, tiny_roberta, data_root, tmp_path, capsys,
                                                              monkeypatch):
    key, where, culprit = UNWRITABLE[case]
    monkeypatch.setattr("src.models.build_model", never_build)
    (tmp_path / "a-file").write_text("not a folder")
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), key: where.format(tmp=tmp_path)}
    code, out, err = run_main(to_argv(arguments), capsys)
    assert_one_line_error(code, err, culprit)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_io_error_at_the_end_prints_the_metrics_and_logs_nothing(tiny_roberta, data_root, tmp_path, capsys,
                                                                monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("src.results.append_result", disk_full)
    code, out, err = run_main(to_argv(base_arguments(tiny_roberta, data_root, tmp_path)), capsys)
    assert_one_line_error(code, err, "No space left on device")
    assert "sst-2_test_eval_acc=" in out and "result: SST-2" in out  # nothing computed is lost
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""
    assert not (tmp_path / "out/delta.safetensors").exists()  # the delta is moved into place only once logged
    assert list((tmp_path / "out").glob("delta.safetensors.*.tmp"))


def test_nan_loss_stops_the_run_and_logs_nothing(tiny_roberta, data_root, tmp_path, capsys):
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "learning_rate": 1e30, "max_steps": 20,
                 "eval_steps": 100, "eval_strategy": "steps"}
    code, out, err = run_main(to_argv(arguments), capsys)
    assert_one_line_error(code, err, "training loss became")
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""
    assert not list((tmp_path / "out").glob("delta*"))


def test_two_identical_runs_started_together_leave_one_record(tiny_roberta, data_root, tmp_path):
    argv = to_argv(base_arguments(tiny_roberta, data_root, tmp_path)) + ["--skip_done"]
    runs = [subprocess.Popen([sys.executable, str(ROOT / "run.py"), *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    records = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert len(records) == 1
    assert (tmp_path / "out/delta.safetensors").is_file() and not list((tmp_path / "out").glob("*.tmp"))


def test_a_sweep_without_data_stops_at_the_first_missing_data_error(tmp_path):
    result = run_script("run_one_task.sh", dict(TASK="SST-2", SEEDS=13, LRS="1e-3", DATA_ROOT=tmp_path / "none",
                                                LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result"))
    assert result.returncode == 1
    assert result.stderr.count("data directory not found") == 1 and "stopping the sweep" in result.stderr
    assert "1 of 16 runs failed" in result.stderr


def test_a_killed_sweep_leaves_no_temporary_folder_after_its_rerun(tmp_path, tiny_roberta, data_root):
    """A sweep killed hard (every process, `kill -9`) leaves its run's temporary output folder, which may hold
    a whole delta; the next sweep of that job removes it, but not a folder a live run holds nor a kept output."""
    env = dict(TASK="SST-2", SEEDS="13", LRS="1e-3", COMBOS="bias", HARDS="Y", MODEL=tiny_roberta, EVAL_STEP=1000,
               DATA_ROOT=data_root, LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result")
    full = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    full.update(PYTHON=sys.executable, **{k: str(v) for k, v in env.items()}, MAX_STEP="100000")
    extra = f"--feature_cache_dir {tmp_path / 'cache'}"
    with open(tmp_path / "killed.err", "w") as err:
        killed = subprocess.Popen(["bash", str(ROOT / "run_one_task.sh"), extra], env=full, stdout=subprocess.DEVNULL,
                                  stderr=err, start_new_session=True)
        ends = time.time() + 120
        while "run.py" not in (tmp_path / "killed.err").read_text() and time.time() < ends:
            time.sleep(0.2)
        time.sleep(1)  # run.py is starting
        for job in (tmp_path / "log.jobs").glob("*.state/*.err"):  # a job runs in a process group of its own
            os.killpg(int(job.read_text().split("job group ")[1].split()[0]), signal.SIGKILL)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    [left] = list((tmp_path / "result").iterdir())
    run_name = left.name.rsplit(".", 1)[0]
    live, kept = tmp_path / "result" / f"{run_name}.tmp-LiVe00", tmp_path / "result" / f"{run_name}.KePt00"
    live.mkdir()
    kept.mkdir()
    lock = os.open(live, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a run of the same job still running
    jobs = next((tmp_path / "log.jobs").glob("*.txt"))  # the sweep again, its runs now 2 steps long
    jobs.write_text(jobs.read_text().replace("MAX_STEP=100000", "MAX_STEP=2"))
    try:
        assert launch.main([str(jobs)]) == 0
    finally:
        os.close(lock)
    assert sorted((tmp_path / "result").iterdir()) == sorted([live, kept])
    assert len((tmp_path / "log").read_text().splitlines()) == 1


def test_packs_without_a_gpu_are_warned_about(tmp_path, data_root):
    """On CPU a pack is slower than its runs one after another (0.79x measured): the sweep says so."""
    env = dict(TASK="SST-2", SEEDS="13 42", LRS="1e-3", COMBOS="bias", HARDS="Y", PACK=2, CUDA_VISIBLE_DEVICES="",
               MODEL=tmp_path / "no-model", DATA_ROOT=data_root, LOG_FILE=tmp_path / "log",
               RESULT_DIR=tmp_path / "result")
    result = run_script("run_one_task.sh", env)
    assert "warning: PACK > 1, but this machine has no GPU: on CPU packed runs are slower" in result.stderr

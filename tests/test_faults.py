"""Faults around a run: an unwritable log or output, a full disk, an I/O error at the end, a NaN loss,
two identical runs at once, a sweep without data, a sweep killed while its run starts. Nothing computed is lost
and nothing half-done is logged.

Tests run as root, which ignores permission bits: an unwritable folder is one under a file, or /proc.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import run
from tests.conftest import ROOT
from tests.test_bad_input import base_arguments, to_argv
from tests.test_dataset import cache_files, make_args


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
    monkeypatch.setattr("src.experiment.append_result", disk_full)
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
    from tests.test_scripts import run_script
    result = run_script("run_one_task.sh", dict(TASK="SST-2", SEEDS=13, LRS="1e-3", DATA_ROOT=tmp_path / "none",
                                                LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result"))
    assert result.returncode == 1
    assert result.stderr.count("data directory not found") == 1 and "stopping the sweep" in result.stderr
    assert "1 of 16 runs failed" in result.stderr


def test_ctrl_c_is_one_line_exit_130_and_nothing_logged(tiny_roberta, data_root, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("src.trainer.train_in_stages", interrupted)  # Ctrl-C while training
    code, out, err = run_main(to_argv(base_arguments(tiny_roberta, data_root, tmp_path)), capsys)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: interrupted (Ctrl-C); nothing unfinished was logged or saved"
    assert not (tmp_path / "log").exists() and not list(tmp_path.rglob("delta*"))


def test_a_hub_name_without_network_fails_at_once(tmp_path, capsys, monkeypatch, tiny_roberta, data_root):
    """No HF_HUB_OFFLINE and no network: one line in seconds, not huggingface_hub's ~25 s of retries."""
    import huggingface_hub.constants
    import transformers.utils.hub

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "model_name_or_path": "no-such-org/no-such-model"}
    started = time.monotonic()
    code, out, err = run_main(to_argv(arguments), capsys)
    assert_one_line_error(code, err, "'no-such-org/no-such-model': it is not in the local Hugging Face cache and the "
                                     "hub is offline (huggingface.co cannot be reached")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("replaced", ["cache file", "its lock"])
def test_a_cache_file_or_lock_replaced_by_a_folder_builds_uncached(replaced, roberta_tokenizer, data_root, tmp_path,
                                                                  capsys):
    from src.dataset import FewShotDataset
    args = make_args("SST-2", data_root / "k-shot/SST-2/16-42")
    fresh = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path).features
    [path] = cache_files(tmp_path)
    folder = path if replaced == "cache file" else path.with_name(path.name + ".lock")
    folder.unlink()
    folder.mkdir()
    assert FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path).features == fresh
    [warning] = capsys.readouterr().err.splitlines()  # one line: no Python source line under it
    assert warning.startswith(f"warning: cannot use the feature cache {path} (") and "Is a directory" in warning
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unwritable_cache_folder_warns_once_per_run(tiny_roberta, data_root, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "feature_cache_dir": str(tmp_path / "a-file/c")}
    code, out, err = run_main(to_argv(arguments), capsys)
    assert code == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if "feature cache" in line]
    assert warnings == [f"warning: cannot write the feature cache in {tmp_path / 'a-file/c'}; building the features "
                        "uncached (pass a writable cache_dir)"], err[-2000:]


def test_a_checkpoint_missing_tensors_is_one_warning_line(headless_bert, data_root, tmp_path, capsys):
    """The tensors a checkpoint lacks (here its MLM head) are named in one line with their count, instead of
    transformers' lines; the run goes on (the saved delta holds them: tests/test_delta_checks.py)."""
    import logging

    import transformers
    arguments = {**base_arguments(headless_bert, data_root, tmp_path), "training_params": ["bias"]}
    del arguments["do_train"]
    logged, handler = [], logging.Handler()
    handler.emit = logged.append
    loader = logging.getLogger("transformers.modeling_utils")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    loader.addHandler(handler)
    try:
        code = run.main(to_argv(arguments))
    finally:
        loader.removeHandler(handler)
        transformers.logging.set_verbosity(verbosity)
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: --model_name_or_path {headless_bert} lacks 5 of the model's tensors "
        "(e.g. mlm.cls.predictions.bias): they are drawn from --seed"]
    assert not [record for record in logged if "newly initialized" in record.getMessage()]


@pytest.mark.slow  # a sweep started, killed, and its run's end waited for: about a minute
@pytest.mark.parametrize("killed", ["the sweep's process group", "the launcher alone"])
def test_a_killed_sweep_leaves_no_run_to_log_late(killed, tmp_path, tiny_roberta, data_root):
    """`kill -9` of the sweep (run_one_task.sh and the launcher), or of the launcher alone, while a run is
    starting: the run's process group stops with it and never logs (it would in seconds: MAX_STEP=2)."""
    from tests.test_engines import ATTEMPT, group_alive, wait_for
    from tests.test_scripts import SCRIPT_VARIABLES
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    env.update(PYTHON=sys.executable, TASK="SST-2", SEEDS="13", LRS="1e-3", COMBOS="bias", HARDS="Y",
               MODEL=tiny_roberta, MAX_STEP="2", EVAL_STEP="1", DATA_ROOT=str(data_root),
               LOG_FILE=str(tmp_path / "log"), RESULT_DIR=str(tmp_path / "result"))
    sweep = subprocess.Popen(["bash", str(ROOT / "run_one_task.sh"), f"--feature_cache_dir {tmp_path / 'cache'}"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def started():  # (launcher pid, job group) once the job's script has started run.py
            for err in (tmp_path / "log.jobs").glob("*.state/*.err"):
                if "run.py" in (text := err.read_text()):
                    return tuple(map(int, ATTEMPT.search(text).groups()))
        launcher, group = wait_for(started, 120, "the job to start run.py")
        if killed == "the launcher alone":
            os.kill(launcher, signal.SIGKILL)
        else:
            os.killpg(sweep.pid, signal.SIGKILL)
        wait_for(lambda: not group_alive(group), 30, "the job's process group to stop with its launcher")
    finally:
        try:
            os.killpg(sweep.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sweep.wait()
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""

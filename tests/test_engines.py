"""The sweeps on their three engines (tools/launch.py, src/launch.py, src/engines.py), each a real one.

One small sweep (tiny RoBERTa, 2 steps; HARDS Y, COMBOS none bias prompt, SEEDS 13 42 87 100, PACK=4):
3 jobs of 9 runs (a zero-shot run and two packs of four seeds). It runs once on the local engine
(the baseline), then on a local Ray instance with one worker killed in the middle of a job, and on a
one-machine Slurm cluster (tools/local_slurm.sh, as root) with its array cancelled half-way and the
sweep resubmitted. Each log must hold every run once, and each record must equal the local engine's
(run identity and every metric). The bad-input cases at the end run in-process, in seconds.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from src.engines import ENGINES, slurm_minutes
from src.identity import run_identity
from src.jobs import state_folder
from src.launch import read_jobs
from src.results import METRIC_KEY, read_results
from tests.test_scripts import ROOT, SCRIPT_VARIABLES, run_script
from tools import launch

# .ci/run spreads tests one by one (--dist loadgroup): this file's share module fixtures
pytestmark = pytest.mark.xdist_group("test_engines")

JOB_LIST = "log.jobs/fewshot-SST-2-exp.txt"  # where run_one_task.sh writes it, beside LOG_FILE=<tmp>/log
ATTEMPT = re.compile(r"--- attempt on \S+: pid (\d+), job group (\d+)")


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory, tiny_roberta, data_root):
    cache = tmp_path_factory.mktemp("engine-cache")
    return dict(TASK="SST-2", MODEL=tiny_roberta, MAX_STEP=2, EVAL_STEP=1, SEEDS="13 42 87 100", LRS="1e-3",
                COMBOS="none bias prompt", HARDS="Y", PACK=4, DATA_ROOT=data_root, OMP_NUM_THREADS=1,
                CUDA_VISIBLE_DEVICES="", EXTRA=f"--feature_cache_dir {cache}")


def sweep(env, folder, **more):
    env = dict(env, LOG_FILE=folder / "log", RESULT_DIR=folder / "result", **more)
    return run_script("run_one_task.sh", {k: v for k, v in env.items() if k != "EXTRA"}, env["EXTRA"])


def start_sweep(env, folder, **more):
    """The sweep in the background, its output in files (read them after `finish`)."""
    env = dict(env, LOG_FILE=folder / "log", RESULT_DIR=folder / "result", **more)
    full = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    full.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
                **{k: str(v) for k, v in env.items() if k != "EXTRA"})
    out, err = open(folder / "sweep.out", "w"), open(folder / "sweep.err", "w")
    return subprocess.Popen(["bash", str(ROOT / "run_one_task.sh"), env["EXTRA"]], cwd=ROOT, env=full,
                            stdout=out, stderr=err, start_new_session=True)


def finish(process, folder, timeout=900):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, (folder / "sweep.err").read_text()


def records_by_run(log):
    """identity -> (every metric, dev histories) of each record; fails when a run is logged twice."""
    runs = {}
    for record in read_results(log):
        identity = json.dumps(run_identity(record), sort_keys=True)
        assert identity not in runs, f"a run is logged twice in {log}"
        runs[identity] = ({k: v for k, v in record.items() if METRIC_KEY.fullmatch(k)}, record["stages"])
    return runs


def wait_for(condition, timeout, what):
    ends = time.time() + timeout
    while time.time() < ends:
        if (value := condition()):
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def group_alive(group):
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def local_runs(sweep_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-engine")
    result = sweep(sweep_env, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 packs of up to 4 runs, 3 not in" in result.stderr
    runs = records_by_run(folder / "log")
    assert len(runs) == 9
    status = launch.main(["--status", str(folder / JOB_LIST)])
    assert status == 0
    return runs


@pytest.mark.slow  # a real Ray instance and a 9-run sweep, under a minute
@pytest.mark.duration(85)  # the Ray instance's start included
def test_ray_sweep_equals_local_and_a_killed_worker_is_retried(sweep_env, local_runs, tmp_path, monkeypatch):
    running = start_sweep(sweep_env, tmp_path, ENGINE="ray")
    state = tmp_path / f"{JOB_LIST}.state"

    def a_job_in_run_py():  # (its .err file, Ray worker pid, job group) once run.py has started
        for err in state.glob("*.err") if state.is_dir() else ():
            text = err.read_text()
            if "run.py" in text and not err.with_suffix(".exit").exists():
                worker, group = map(int, ATTEMPT.search(text).groups())
                return err, worker, group
        assert running.poll() is None, "the sweep ended before a job could be caught running"
    err, worker, group = wait_for(a_job_in_run_py, 300, "a job to start run.py")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not group_alive(group), 30, "the killed worker's job to stop with it")
    code, stderr = finish(running, tmp_path)
    assert code == 0, stderr[-3000:]
    assert len(ATTEMPT.findall(err.read_text())) == 2  # retried once, on another worker
    assert records_by_run(tmp_path / "log") == local_runs  # every run once, the local engine's records
    assert list((tmp_path / "result").iterdir()) == []
    assert_nothing_starts_again(tmp_path, "ray", monkeypatch)


def assert_nothing_starts_again(folder, engine, monkeypatch):
    """The finished sweep's job list again: every job is done, the engine is not even started."""
    before = (folder / "log").read_text()
    monkeypatch.setattr(ENGINES[engine], "start", lambda self: pytest.fail(f"{engine} started for a finished sweep"))
    assert launch.main(["--engine", engine, "--time", "5", str(folder / JOB_LIST)]) == 0
    assert (folder / "log").read_text() == before


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    """A one-machine Slurm cluster for this module (tools/local_slurm.sh; root, slurm-wlm and munge)."""
    folder = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURMCTLD_PORT=str(free_port()), SLURMD_PORT=str(free_port()))
    started = subprocess.run(["bash", str(ROOT / "tools" / "local_slurm.sh"), "start", str(folder)], env=env,
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.fail(f"cannot start a local Slurm cluster (.ci/run installs slurm-wlm and munge; root needed): "
                    f"{started.stderr}")
    yield str(folder / "slurm.conf")
    subprocess.run(["bash", str(ROOT / "tools" / "local_slurm.sh"), "stop", str(folder)], env=env, timeout=120)


def slurm(conf, *command):
    return subprocess.run(command, env=dict(os.environ, SLURM_CONF=conf), capture_output=True, text=True)


@pytest.mark.slow  # a real Slurm cluster; the 9-run sweep cancelled, then resubmitted: about a minute
@pytest.mark.duration(60)
def test_slurm_sweep_cancelled_then_resubmitted_logs_every_run_once(sweep_env, local_runs, slurm_conf, tmp_path,
                                                                     monkeypatch):
    env = dict(sweep_env, ENGINE="slurm", SBATCH_TIMELIMIT="30", SLURM_CONF=slurm_conf)
    running = start_sweep(env, tmp_path)
    state = tmp_path / f"{JOB_LIST}.state"
    wait_for(lambda: state.is_dir() and any(state.glob("*.exit")), 300, "the first job to end")
    assert slurm(slurm_conf, "scancel", "--name=delta-sweep").returncode == 0
    code, stderr = finish(running, tmp_path)
    assert code == 1 and "FAILED" in stderr, stderr[-3000:]
    first = records_by_run(tmp_path / "log")
    assert 0 < len(first) < 9 and all(local_runs[run] == first[run] for run in first)
    # no run of the cancelled array lives on to log late
    wait_for(lambda: str(tmp_path / "log") not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                                 text=True).stdout, 30, "the cancelled runs to end")
    resumed = sweep(env, tmp_path)
    assert resumed.returncode == 0 and "Slurm job array" in resumed.stderr, resumed.stderr[-3000:]
    assert records_by_run(tmp_path / "log") == local_runs
    assert list((tmp_path / "result").iterdir()) == []
    assert_nothing_starts_again(tmp_path, "slurm", monkeypatch)


SLURM_REFUSES = {  # options -> culprit; sbatch --test-only accepts a time above the partition's limit
    "an unknown partition": (["--time", "5", "--partition", "nosuch"], "invalid partition specified: nosuch"),
    "a time above the partition's limit": (["--time", "20", "--partition", "short"],
                                           "above partition short's limit of 10 minutes"),
}


@pytest.mark.slow  # uses the module's Slurm cluster
@pytest.mark.parametrize("case", SLURM_REFUSES)
def test_slurm_option_that_slurm_rejects_is_one_error_line(case, slurm_conf, tmp_path, capsys, monkeypatch, data_root):
    options, culprit = SLURM_REFUSES[case]
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    code = launch.main(["--engine", "slurm", *options, str(job_list(tmp_path, data_root))])
    assert_refused(code, capsys, culprit, tmp_path)
    assert slurm(slurm_conf, "squeue", "--noheader").stdout == ""


@pytest.mark.slow  # uses the module's Slurm cluster
def test_slurm_tasks_held_forever_cancel_the_array(slurm_conf, tmp_path, capsys, monkeypatch, data_root):
    """A limit the launcher cannot see beforehand (here: sinfo says nothing) shows in squeue once submitted."""
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    monkeypatch.setattr(ENGINES["slurm"], "partition_limit", lambda self: None)
    jobs = job_list(tmp_path, data_root)
    code = launch.main(["--engine", "slurm", "--time", "20", "--partition", "short", str(jobs)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and "(PartitionTimeLimit:" in errors[0], err
    assert "goes on" not in err and not (tmp_path / "log").exists()
    wait_for(lambda: slurm(slurm_conf, "squeue", "--noheader").stdout == "", 30, "the array to be cancelled")


# ---- bad input (in-process, seconds) --------------------------------------------------------

def job_list(folder, data_root="/nonexistent"):
    line = (f"cd {folder} && TASK=SST-2 TAG=t HARD=Y NOTRAIN=1 SEED=13 DATA_ROOT={data_root} "
            f"LOG_FILE={folder}/log RESULT_DIR={folder}/result bash {ROOT}/run_experiment.sh")
    (folder / "jobs.txt").write_text(line + "\n")
    return folder / "jobs.txt"


def assert_refused(code, capsys, culprit, folder):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and culprit in errors[0], err
    assert not (folder / "log").exists() and not (folder / "jobs.txt.state").exists()  # nothing started


def test_unknown_engine_in_a_sweep_is_one_error_line(tmp_path):
    result = run_script("run_one_task.sh", dict(TASK="SST-2", ENGINE="kubernetes", LOG_FILE=tmp_path / "log"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "--engine" in errors[0], result.stderr
    assert not (tmp_path / "log").exists()


def test_unreachable_ray_address_is_one_error_line_at_once(tmp_path, capsys):
    started = time.time()
    code = launch.main(["--engine", "ray", "--address", f"127.0.0.1:{free_port()}", str(job_list(tmp_path))])
    assert_refused(code, capsys, "cannot reach a Ray cluster", tmp_path)
    assert time.time() - started < 10
    code = launch.main(["--engine", "ray", "--address", "head-node", str(job_list(tmp_path))])
    assert_refused(code, capsys, "HOST:PORT", tmp_path)


def test_slurm_without_sbatch_or_time_limit_is_one_error_line(tmp_path, capsys, monkeypatch):
    jobs = job_list(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert_refused(launch.main(["--engine", "slurm", "--time", "5", str(jobs)]), capsys, "sbatch is not on PATH",
                   tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("SBATCH_TIMELIMIT", raising=False)
    assert_refused(launch.main(["--engine", "slurm", str(jobs)]), capsys, "time limit", tmp_path)


BAD_JOB_LISTS = {  # case -> (a job list's text from a good line, culprit)
    "a command": (lambda line, tmp: f"touch {tmp}/ran", "jobs.txt:1: not a job line"),
    "a $(...) in a variable": (lambda line, tmp: line.replace("TAG=t", f"TAG=$(touch {tmp}/ran)"), "not a job line"),
    "a `...` in an argument": (lambda line, tmp: f"{line} `touch {tmp}/ran`", "not a job line"),
    "a second command": (lambda line, tmp: f"{line} ; touch {tmp}/ran", "not a job line"),
    "a NUL byte": (lambda line, tmp: f"{line} --tag a\0b", "jobs.txt:1: not a job line"),
    "a 200 kB line": (lambda line, tmp: line + " --tag" * 40000, "jobs.txt:1: a job line of 240"),
}


@pytest.mark.parametrize("mode", [[], ["--status"], ["--pending"]])
@pytest.mark.parametrize("case", BAD_JOB_LISTS)
def test_a_line_that_is_not_a_job_is_refused_before_anything_runs(case, mode, tmp_path, capsys):
    """A job list is parsed, never run as a script: not even --status runs what a line holds."""
    text, culprit = BAD_JOB_LISTS[case]
    jobs = job_list(tmp_path)
    jobs.write_text(text(jobs.read_text().strip(), tmp_path) + "\n")
    assert_refused(launch.main([*mode, str(jobs)]), capsys, culprit, tmp_path)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("how", ["a FIFO", "a process substitution"])
def test_a_job_list_that_is_not_a_regular_file_is_one_error_line_at_once(how, tmp_path):
    """A FIFO would block the launcher; <(...) has no folder for the job list's state."""
    jobs = job_list(tmp_path)
    if how == "a FIFO":
        os.mkfifo(tmp_path / "fifo.txt")
        command = f"{sys.executable} tools/launch.py {tmp_path}/fifo.txt"
    else:
        command = f"{sys.executable} tools/launch.py <(cat {jobs})"
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert "is not a regular file" in errors[0]
    assert not (tmp_path / "log").exists() and not list(tmp_path.glob("*.state"))


def test_a_state_folder_that_is_a_file_is_one_error_line(tmp_path, capsys):
    jobs = job_list(tmp_path)
    (tmp_path / "jobs.txt.state").write_text("not a folder")
    code = launch.main([str(jobs)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and "jobs.txt.state is not a folder" in errors[0]
    assert (tmp_path / "jobs.txt.state").read_text() == "not a folder" and not (tmp_path / "log").exists()


def test_ray_retries_beyond_reason_are_refused_before_ray_starts(tmp_path, capsys, monkeypatch, data_root):
    monkeypatch.setattr(ENGINES["ray"], "start", lambda self: pytest.fail("ray started"))
    code = launch.main(["--engine", "ray", "--retries", str(10 ** 20), str(job_list(tmp_path, data_root))])
    assert_refused(code, capsys, "--retries: must be an integer in [0, 100]", tmp_path)


def test_a_ray_address_where_something_else_listens_is_one_error_line_at_once(tmp_path, capsys, data_root):
    """A live TCP port that is not Ray's: Ray itself would retry for minutes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # the kernel accepts connections; nothing ever answers
        started = time.time()
        code = launch.main(["--engine", "ray", "--address", f"127.0.0.1:{server.getsockname()[1]}",
                            str(job_list(tmp_path, data_root))])
    assert_refused(code, capsys, "something listens there, but not a Ray cluster", tmp_path)
    assert time.time() - started < 15


@pytest.mark.slow  # starts a local Ray instance (seconds to a minute on a busy machine)
def test_more_cpus_per_job_than_any_ray_node_has_is_one_error_line(tmp_path, capsys, data_root):
    code = launch.main(["--engine", "ray", "--cpus-per-job", str(os.cpu_count() + 62),
                        str(job_list(tmp_path, data_root))])
    assert_refused(code, capsys, "no node of the Ray cluster has that many CPUs", tmp_path)


def test_help_says_which_packs_pay_on_cpu(capsys):
    with pytest.raises(SystemExit) as done:
        launch.main(["--help"])
    assert done.value.code == 0 and "on CPU only packs that fold pay" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440),
                                           ("1-2:03", 1563), ("0-0:0:1", 1)])
def test_slurm_times_in_minutes(text, minutes):
    assert slurm_minutes(text) == minutes


def test_status_names_what_failed_with_its_error_line(tmp_path, capsys):
    jobs = job_list(tmp_path)
    assert launch.main([str(jobs)]) == 1  # its data folder is missing: it cannot start
    capsys.readouterr()
    assert launch.main(["--status", str(jobs)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("1 job: 0 done, 1 failed, 0 started, 0 pending")
    assert out[1].startswith("failed (exit 2): TASK=SST-2") and "error: data directory not found" in out[2]


def test_status_calls_a_job_that_ended_well_but_whose_run_left_the_log_pending(tmp_path, capsys):
    """A job that exited 0 and whose run the log no longer holds (a record removed since) runs again: pending."""
    jobs = job_list(tmp_path)
    (job,), _ = read_jobs(str(jobs))
    state = state_folder(str(jobs))
    state.mkdir()
    (state / f"{job.key}.exit").write_text("0 1.0 2.0\n")
    (state / f"{job.key}.err").write_text("")
    assert launch.main(["--status", str(jobs)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("1 job: 0 done, 0 failed, 0 started, 1 pending")
    assert out[1].startswith("pending (exit 0 when it ran; the log lacks some of its runs now): TASK=SST-2")

"""The sweep scripts: run_experiment.sh, run_one_task.sh, the multi-stage and full-data variants,
and tools/task_args.py.

The end-to-end tests run real (tiny) sweeps through run.py: 16 runs for run_one_task.sh, 12 for
run_mulstage_task.sh and one more for the failure test, each ~10 s of imports, so a few minutes.
Nothing is written into the data root: every run gets `--feature_cache_dir <tmp>` as the extra
argument, and the test checks that the data folder holds no cache afterwards. The faults of a sweep at
the end: one killed hard (its temporary output folders removed by the next sweep), packs without a GPU.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import launch

# .ci/run spreads tests one by one (--dist loadgroup): this file's share module fixtures
pytestmark = pytest.mark.xdist_group("test_scripts")

ROOT = Path(__file__).resolve().parents[1]
SOFT_ONE = "*cls*{P}*sent_0**sep+**mask**sep+*"
SST2_MANUAL = "*cls*{P}*sent_0*_It_was*mask*.*sep+*"
COMBOS = ["prompt", "bias", "adapter", "prompt,adapter", "bias,adapter", "prompt,bias", "prompt,bias,adapter"]
ORDERS = ["prompt bias adapter", "prompt adapter bias", "bias prompt adapter", "bias adapter prompt",
          "adapter prompt bias", "adapter bias prompt"]
# Script variables that must not leak in from the environment of whoever runs the tests.
SCRIPT_VARIABLES = ["TASK", "TAG", "BS", "LR", "SEED", "SEEDS", "LRS", "MODEL", "HARD", "HARDS", "PROMPT",
                    "NOTRAIN", "TRAIN_PARAM", "GPUN", "K", "MAX_STEP", "EVAL_STEP", "DATA_ROOT", "DATA_DIR",
                    "LOG_FILE", "RESULT_DIR", "STAGE_INIT", "PRINT_JOBS", "PRINT_ARGS", "COMBOS", "SWEEP",
                    "FULLDATA", "KEEP_RESULT", "PACK", "ENGINE", "JOBS_FILE", "RUNS_PER_GPU", "CPUS_PER_JOB",
                    "RAY_ADDRESS", "SBATCH_PARTITION", "SBATCH_GRES", "SBATCH_ACCOUNT", "SBATCH_TIMELIMIT"]


def run_script(script, env, *args, timeout=1800):
    full_env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    full_env.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
                    **{k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(ROOT / script), *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def template(pattern, prompt):
    return pattern.replace("{P}", "prompt" if prompt else "")


def small_sweep_env(tmp, model, data_root):
    return dict(TASK="SST-2", MODEL=model, MAX_STEP=2, EVAL_STEP=1, SEEDS=13, LRS="1e-3", DATA_ROOT=data_root,
                LOG_FILE=tmp / "log", RESULT_DIR=tmp / "result")


def cache_files(data_root):
    return sorted(str(p) for p in Path(data_root, "k-shot", "SST-2").rglob("cached_*"))


# ---- tools/task_args.py ---------------------------------------------------------------------

def task_args(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "task_args.py"), *args], capture_output=True,
                          text=True)


def test_task_args_prints_one_argument_per_line():
    result = task_args("--task", "sst-2", "--hard", "Y", "--prompt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["--task_name", "SST-2", "--template", template(SST2_MANUAL, True),
                                          "--mapping", "{'0':'terrible','1':'great'}"]
    rte = task_args("--task", "RTE", "--hard", "N").stdout.splitlines()
    assert rte[3] == "*cls**sent_0**sep+**sent_1**sep+**mask**sep+*"
    assert rte[6:] == ["--max_seq_length", "512", "--first_sent_limit", "240"]


def test_task_args_rejects_unknown_task_and_bad_hard():
    for args in (["--task", "nosuchtask"], ["--task", "SST-2", "--hard", "X"]):
        result = task_args(*args)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stdout == ""


# ---- job lists and errors (nothing is run) --------------------------------------------------

@pytest.mark.parametrize("script, env, count", [
    ("run_one_task.sh", {}, 2 * (1 + 7 * 4 * 5)),
    ("run_one_task.sh", {"SEEDS": "13 42", "LRS": "1e-3 1e-4"}, 2 * (1 + 7 * 2 * 2)),
    ("run_mulstage_task.sh", {}, 6 * 2 * 5 * 4),
    ("run_mulstage_task.sh", {"SEEDS": "13", "LRS": "1e-3"}, 6 * 2),
    ("run_fulldata_one_task.sh", {}, 2 * (1 + 7 * 4 * 3)),
])
def test_print_jobs_lists_one_command_per_run(tmp_path, script, env, count):
    result = run_script(script, dict(TASK="SST-2", PRINT_JOBS=1, LOG_FILE=tmp_path / "log",
                                     RESULT_DIR=tmp_path / "result", **env), "--feature_cache_dir /tmp/c")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == count
    experiment = {"run_one_task.sh": "run_experiment.sh", "run_mulstage_task.sh": "run_mulstage_experiment.sh",
                  "run_fulldata_one_task.sh": "run_fulldata_experiment.sh"}[script]
    assert all(f"/{experiment} " in line and "TASK=SST-2 " in line and "SEED=" in line for line in lines)
    assert all(line.endswith(r"--feature_cache_dir\ /tmp/c") for line in lines)
    assert len(set(lines)) == count
    assert not (tmp_path / "log").exists() and not (tmp_path / "result").exists()


def test_print_jobs_lines_are_self_contained(tmp_path, data_root):
    """A printed line, run by `bash` with none of the sweep's variables set, resolves to the same run."""
    result = run_script("run_one_task.sh", dict(TASK="mnli", PRINT_JOBS=1, SEEDS=42, LRS="3e-4", HARDS="N",
                                                LOG_FILE=tmp_path / "log", MAX_STEP=10, DATA_ROOT=data_root))
    line = [ln for ln in result.stdout.splitlines() if "TRAIN_PARAM=prompt\\,bias\\,adapter" in ln][0]
    assert line.startswith(f"cd {ROOT} && ")
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    args = subprocess.run(["bash", "-c", f"export PRINT_ARGS=1; {line}"], env=dict(env, PYTHON=sys.executable),
                          capture_output=True, cwd=tmp_path)
    assert args.returncode == 0, args.stderr
    argv = args.stdout.decode().split("\0")[:-1]
    value = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert value["--task_name"] == "MNLI" and value["--max_seq_length"] == "512" and value["--num_sample"] == "4"
    assert value["--template"] == "*cls*prompt*sent_0**sep+**sent_1**sep+**mask**sep+*"
    assert value["--training_params"] == "prompt,bias,adapter" and "--use_adapter" not in argv
    assert value["--learning_rate"] == "3e-4" and value["--seed"] == "42" and value["--max_steps"] == "10"
    assert value["--log_file"] == str(tmp_path / "log") and "--skip_done" in argv


def test_missing_required_variable_is_a_clear_error(tmp_path):
    result = run_script("run_experiment.sh", {})
    assert result.returncode == 2 and "error: TASK is not set" in result.stderr
    for missing in ("TAG", "BS", "LR", "SEED"):
        env = dict(TASK="SST-2", TAG="t", BS=4, LR="1e-3", SEED=13)
        del env[missing]
        result = run_script("run_experiment.sh", env)
        assert result.returncode == 2 and f"error: {missing} is not set" in result.stderr, result.stderr
    for script in ("run_one_task.sh", "run_mulstage_task.sh", "run_fulldata_one_task.sh"):
        result = run_script(script, {})
        assert result.returncode == 2 and "error: TASK is not set" in result.stderr
    result = run_script("run_one_task.sh", dict(TASK="nosuchtask", PRINT_JOBS=1))
    assert result.returncode == 2 and "unknown task" in result.stderr
    result = run_script("run_experiment.sh", dict(TASK="SST-2", TAG="t", BS=4, LR="1e-3", SEED=13, HARD="maybe"))
    assert result.returncode == 2 and "HARD must be Y or N" in result.stderr
    result = run_script("run_experiment.sh", dict(TASK="SST-2", TAG="t", BS=4, LR="1e-3", SEED=13,
                                                  DATA_ROOT=tmp_path))
    assert result.returncode == 2 and "data directory not found" in result.stderr


def test_multi_gpu_and_multi_stage_arguments(data_root):
    env = dict(TASK="SST-2", TAG="t", BS=4, LR="1e-3", SEED=13, GPUN=2, PRINT_ARGS=1, DATA_ROOT=data_root,
               STAGE_INIT="best")
    argv = run_script("run_mulstage_experiment.sh", env).stdout.split("\0")[:-1]
    assert argv[argv.index("--per_device_train_batch_size") + 1] == "2"
    assert argv[argv.index("--training_params") + 1:argv.index("--training_params") + 4] == ["prompt", "bias",
                                                                                             "adapter"]
    assert argv[argv.index("--stage_init") + 1] == "best"
    assert argv[argv.index("--template") + 1] == template(SST2_MANUAL, True)
    result = run_script("run_experiment.sh", dict(env, BS=3))
    assert result.returncode == 2 and "multiple of GPUN" in result.stderr


def test_full_data_uses_the_original_folder_with_dev_as_test(tmp_path, data_root):
    env = dict(TASK="sst-2", TAG="t", LR="1e-4", SEED=13, TRAIN_PARAM="adapter", PRINT_ARGS=1,
               DATA_ROOT=data_root, RESULT_DIR=tmp_path / "result")
    result = run_script("run_fulldata_experiment.sh", env)
    assert result.returncode == 0, result.stderr
    argv = result.stdout.split("\0")[:-1]
    assert argv[argv.index("--per_device_train_batch_size") + 1] == "64"
    assert argv[argv.index("--data_dir") + 1] == f"{data_root}/original/SST-2"
    assert "--dev_as_test" in argv and "--skip_train_eval" in argv


# ---- end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_task_sweep(tmp_path_factory, tiny_roberta, data_root):
    tmp = tmp_path_factory.mktemp("one-task")
    env = small_sweep_env(tmp, tiny_roberta, data_root)
    before = cache_files(data_root)
    result = run_script("run_one_task.sh", env, f"--feature_cache_dir {tmp / 'cache'}")
    return dict(tmp=tmp, env=env, result=result, cache_before=before)


@pytest.mark.slow  # a real sweep of 12-16 runs
@pytest.mark.duration(140)  # the sweep (its fixture) included
def test_one_task_runs_all_16_settings(one_task_sweep, data_root):
    result, tmp = one_task_sweep["result"], one_task_sweep["tmp"]
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_log(tmp / "log")
    pairs = sorted((r["training_params"], r["template"], r["do_train"]) for r in records)
    expected = sorted([("all", template(pattern, False), False) for pattern in (SST2_MANUAL, SOFT_ONE)]
                      + [(combo, template(pattern, "prompt" in combo), True)
                         for pattern in (SST2_MANUAL, SOFT_ONE) for combo in COMBOS])
    assert pairs == expected
    assert all(r["tag"] == "exp" and r["seed"] == 13 and r["max_steps"] == 2 for r in records)
    assert all(r["max_seq_length"] == 256 and r["prompt_num"] == 10 and r["per_device_eval_batch_size"] == 16
               for r in records)
    assert all(r["learning_rate"] == 1e-3 and r["per_device_train_batch_size"] == 4 for r in records if r["do_train"])
    assert all(r["combination"] == (r["training_params"] if r["do_train"] else "none") for r in records)
    # extra arguments reached every run; nothing was cached into the data root; outputs removed
    assert all(r["feature_cache_dir"] == str(tmp / "cache") for r in records)
    assert cache_files(data_root) == one_task_sweep["cache_before"]
    assert list((tmp / "result").iterdir()) == []
    # the summary: gather_result per column and the table
    assert result.stdout.count("\n## {'task_name': 'sst-2'") == 16
    assert "make_table.py --log_file" in result.stdout


@pytest.mark.slow  # a real sweep of 12-16 runs
def test_one_task_table_has_every_cell(one_task_sweep):
    table = subprocess.run([sys.executable, str(ROOT / "tools" / "make_table.py"), "--log_file",
                            str(one_task_sweep["tmp"] / "log"), "--task", "SST-2"], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| SST-2")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        assert len(cells) == 8 and all("±" in cell for cell in cells), row


@pytest.mark.slow  # a real sweep of 12-16 runs
@pytest.mark.duration(45)
def test_one_task_rerun_appends_nothing_and_is_fast(one_task_sweep):
    tmp, env = one_task_sweep["tmp"], one_task_sweep["env"]
    before = (tmp / "log").read_text()
    started = time.time()
    result = run_script("run_one_task.sh", env, f"--feature_cache_dir {tmp / 'cache'}")
    elapsed = time.time() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp / "log").read_text() == before
    assert "16 runs, 0 not in" in result.stderr
    assert "run.py" not in result.stderr  # no run was started
    assert elapsed < 120
    pending = run_script("run_one_task.sh", dict(env, PRINT_JOBS="pending"))
    assert pending.returncode == 0 and pending.stdout == ""
    # One more identity argument makes every run new; an argument that changes no result does not.
    for extra, count in (("--adapter_reduction_factor 8", 16), ("--logging_steps 7", 0)):
        pending = run_script("run_one_task.sh", dict(env, PRINT_JOBS="pending"),
                             f"--feature_cache_dir {tmp / 'cache'} {extra}")
        assert pending.returncode == 0 and len(pending.stdout.splitlines()) == count, (extra, pending.stderr)


def test_a_registry_method_sweeps_and_tabulates_without_script_edits(tmp_path, tiny_roberta, data_root):
    env = dict(small_sweep_env(tmp_path, tiny_roberta, data_root), COMBOS="lora prompt,lora", HARDS="Y")
    result = run_script("run_one_task.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_log(tmp_path / "log")
    assert sorted(r["combination"] for r in records) == ["lora", "prompt,lora"]
    header = [line for line in result.stdout.splitlines() if line.startswith("| Task")][0]
    assert header.split(" | ")[-2:] == ["LoRA", "Prompt+LoRA |"]
    row = [line for line in result.stdout.splitlines() if line.startswith("| SST-2")][-1]
    assert [cell.strip() for cell in row.strip("|").split("|")][-2:][0].count("±") == 1


@pytest.mark.slow  # a real sweep of 12-16 runs
@pytest.mark.duration(130)
def test_mulstage_task_runs_the_6_orders(tmp_path, tiny_roberta, data_root):
    env = dict(small_sweep_env(tmp_path, tiny_roberta, data_root), TAG="mul")
    result = run_script("run_mulstage_task.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_log(tmp_path / "log")
    pairs = sorted((r["training_params"], r["template"]) for r in records)
    assert pairs == sorted((order, template(pattern, True)) for pattern in (SST2_MANUAL, SOFT_ONE)
                           for order in ORDERS)
    assert all(r["tag"] == "mul" and r["stage_init"] == "last" for r in records)
    assert all([s["training_params"] for s in r["stages"]] == r["training_params"].split() for r in records)
    assert "plot_mulstage.py" in result.stdout
    figure = tmp_path / "fig.png"
    plot = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_mulstage.py"), "--log_file",
                           str(tmp_path / "log"), "--task", "SST-2", "--output", str(figure)],
                          capture_output=True, text=True)
    assert plot.returncode == 0, plot.stderr
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    rerun = run_script("run_mulstage_task.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert rerun.returncode == 0 and "12 runs, 0 not in" in rerun.stderr
    assert len(read_log(tmp_path / "log")) == 12


def test_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, tiny_roberta, data_root):
    # seed 999 has no data: its run fails; the seed-13 run after it still runs; exit status 1.
    env = dict(small_sweep_env(tmp_path, tiny_roberta, data_root), SEEDS="999 13", COMBOS="bias", HARDS="Y")
    result = run_script("run_one_task.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert result.returncode == 1
    assert "1 of 2 runs failed" in result.stderr and "warning: PACK" not in result.stderr  # no pack, no warning
    assert "FAILED (exit 2):" in result.stderr and "SEED=999" in result.stderr.split("runs failed:")[1]
    records = read_log(tmp_path / "log")
    assert [(r["training_params"], r["seed"]) for r in records] == [("bias", 13)]


def test_bogus_model_fails_the_run(tmp_path, data_root):
    env = dict(TASK="SST-2", TAG="t", NOTRAIN=1, MODEL=tmp_path / "no-such-model", DATA_ROOT=data_root,
               LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result")
    result = run_script("run_experiment.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert result.returncode != 0
    assert "no-such-model" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "log").exists()
    assert list((tmp_path / "result").iterdir()) == []


# ---- faults of a sweep: killed hard, packs without a GPU --------------------------------------

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
    """On CPU only packs that fold pay (a vmapped one measured 0.79x its runs one after another): the sweep says so."""
    env = dict(TASK="SST-2", SEEDS="13 42", LRS="1e-3", COMBOS="bias", HARDS="Y", PACK=2, CUDA_VISIBLE_DEVICES="",
               MODEL=tmp_path / "no-model", DATA_ROOT=data_root, LOG_FILE=tmp_path / "log",
               RESULT_DIR=tmp_path / "result")
    result = run_script("run_one_task.sh", env)
    assert "warning: PACK > 1, but this machine has no GPU: on CPU only packs that fold pay" in result.stderr

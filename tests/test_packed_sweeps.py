"""Sweeps with PACK=K (runs of one setting packed into one process) and the GPU slot helper."""
import os
import shlex
import subprocess

import pytest

from tests.test_scripts import ROOT, read_log, run_script, small_sweep_env


@pytest.mark.parametrize("pack, jobs", [(1, 2 * (1 + 7 * 4 * 5)), (5, 2 * (1 + 7 * 4)), (8, 2 * (1 + 7 * 4)),
                                        (10, 2 * (1 + 7 * 2)), (20, 2 * (1 + 7))])
def test_pack_groups_learning_rates_times_seeds(tmp_path, pack, jobs):
    result = run_script("run_one_task.sh", dict(TASK="SST-2", PRINT_JOBS=1, PACK=pack, LOG_FILE=tmp_path / "log"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == jobs
    runs = 0
    for line in lines:
        if "NOTRAIN=1" in line:
            runs += 1
            continue
        variables = dict(word.split("=", 1) for word in shlex.split(line) if "=" in word)
        size = len(variables["LR"].split()) * len(variables["SEED"].split())
        assert size <= pack
        runs += size
    assert runs == 2 * (1 + 7 * 4 * 5)


def test_bad_pack_is_an_error():
    result = run_script("run_one_task.sh", dict(TASK="SST-2", PRINT_JOBS=1, PACK="two"))
    assert result.returncode == 2 and "PACK must be a positive integer" in result.stderr


def test_packed_sweep_runs_every_run_and_resumes_run_by_run(tmp_path, tiny_roberta, data_root):
    env = dict(small_sweep_env(tmp_path, tiny_roberta, data_root), SEEDS="13 42", COMBOS="bias prompt,bias",
               HARDS="Y", PACK=2)
    extra = f"--feature_cache_dir {tmp_path / 'cache'}"
    result = run_script("run_one_task.sh", env, extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 packs of up to 2 runs, 2 not in" in result.stderr
    records = read_log(tmp_path / "log")
    assert sorted((r["training_params"], r["seed"]) for r in records) == [
        ("bias", 13), ("bias", 42), ("prompt,bias", 13), ("prompt,bias", 42)]
    assert all(r["data_dir"].endswith(f"16-{r['seed']}") for r in records)
    assert list((tmp_path / "result").iterdir()) == []
    # drop one run from the log: only its pack is pending, and only that run runs again
    kept = [line for line in (tmp_path / "log").read_text().splitlines()
            if not ('"seed": 42' in line and '"training_params": "bias"' in line)]
    (tmp_path / "log").write_text("\n".join(kept) + "\n")
    pending = run_script("run_one_task.sh", dict(env, PRINT_JOBS="pending"))
    assert pending.returncode == 0 and len(pending.stdout.splitlines()) == 1
    assert "TRAIN_PARAM=bias " in pending.stdout
    rerun = run_script("run_one_task.sh", env, extra)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 packs of up to 2 runs, 1 not in" in rerun.stderr and "skip: " in rerun.stderr
    assert len(read_log(tmp_path / "log")) == 4


def on_gpu(slot, ngpu, job="echo $CUDA_VISIBLE_DEVICES"):
    env = {k: v for k, v in os.environ.items() if k not in ("NGPU", "CUDA_VISIBLE_DEVICES")}
    if ngpu is not None:
        env["NGPU"] = str(ngpu)
    return subprocess.run(["bash", str(ROOT / "tools" / "on_gpu.sh"), str(slot), job], env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("ngpu, runs_per_gpu", [(1, 3), (4, 1), (4, 2), (3, 4)])
def test_parallel_slots_put_the_same_number_of_runs_on_each_gpu(ngpu, runs_per_gpu):
    gpus = [on_gpu(slot, ngpu).stdout.strip() for slot in range(1, ngpu * runs_per_gpu + 1)]
    assert sorted(gpus) == sorted(str(gpu) for gpu in range(ngpu) for _ in range(runs_per_gpu))


def test_on_gpu_errors():
    assert on_gpu(1, None).returncode == 2 and "NGPU" in on_gpu(1, None).stderr
    assert on_gpu(0, 2).returncode == 2 and "SLOT" in on_gpu(0, 2).stderr
    assert on_gpu(1, 2, "exit 3").returncode == 3

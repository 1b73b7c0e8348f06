"""tools/step_benchmark.py (CPU, end to end through run.py, the deep-narrow stand-in): the compiled step's
per-step time against the eager single run's, measured in the same invocation, through tools/gpu_check.sh
(the GPU script, here on CPU in fp32 with a pack of 2: its settings, run-steps per second, memory per run).

A reduced run (one run of 60 steps per setting, steps 21-60 timed): about 5 minutes on 2 CPU cores, most of
it compiling. The issue's single-run target (at most a third of the eager step) is not met on this machine,
and the test says so (strict xfail: meeting it turns the test red until the mark goes): the compiled step
measured 1.57x the eager run's lean step, 1.92x the Trainer's own step that runs took before
(docs/PERFORMANCE.md, "The lean step in every run"; 2.25x that step before the lean step was every run's).
What remains of a compiled step here is inductor's Python wrapper around its ~1,000 kernels and matrix
products a step (on CPU it has no CUDA graphs), dynamo's guards on ~2,000 tensors (about 3 ms), and dropout
(with dropout 0 the step takes about 20 ms).
"""
import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.test_estimate import line
from tools import launch, step_benchmark


@pytest.fixture(scope="module")
def figures(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "DATA_ROOT": str(data_root), "SIZE": "deep-narrow", "STEPS": "60", "PACKS": "2",
           "RUN_ARGS": ""}
    done = subprocess.run(["bash", "tools/gpu_check.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split("\t") for line in (out / "gpu_check.tsv").read_text().splitlines() if line.strip()]
    assert all(len(parts) == 2 for parts in lines), done.stdout
    return dict(lines)


@pytest.mark.perf
def test_compiled_step_is_faster_than_the_eager_step(figures):
    assert figures["runs_compiled"] == "1" and float(figures["per_run_step_ms_eager"]) > 0
    assert float(figures["speedup_compiled_vs_eager"]) >= 1.2


@pytest.mark.perf
def test_the_gpu_check_gives_each_setting_its_run_steps_per_second_and_memory_per_run(figures):
    assert figures["run_args"] == "" and figures["runs_pack2"] == "2"
    for name in ("eager", "compiled", "pack2"):
        per_run_step_s = float(figures[f"per_run_step_ms_{name}"]) / 1000
        assert float(figures[f"run_steps_per_s_{name}"]) == pytest.approx(1 / per_run_step_s, rel=0.01)
        assert float(figures[f"peak_memory_mb_per_run_{name}"]) > 0
        assert float(figures[f"process_overhead_s_{name}"]) > 0
    # the compiled run's process compiles: seconds a plain run's process does not take
    assert float(figures["process_overhead_s_compiled"]) > float(figures["process_overhead_s_eager"])
    # a pack of 2 shares one process (libraries, base model) between its runs
    assert float(figures["peak_memory_mb_per_run_pack2"]) < float(figures["peak_memory_mb_per_run_eager"])


@pytest.mark.perf
@pytest.mark.xfail(strict=True, reason="1.57x measured on this CPU: inductor's Python wrapper, guards, dropout")
def test_compiled_single_run_step_at_most_a_third_of_the_eager_step(figures):
    assert float(figures["speedup_compiled_vs_eager"]) >= 3.0


@pytest.mark.slow
def test_a_failing_setting_is_reported_and_the_others_are_measured(data_root, tmp_path, capsys):
    """A GPU check must not lose every figure to one setting that fails (e.g. CUDA graphs)."""
    status = step_benchmark.main(["--data_dir", str(data_root / "k-shot" / "SST-2" / "16-42"), "--steps", "30",
                                  "--repeats", "1", "--work_dir", str(tmp_path), "--setting", "bad=--no_such_option"])
    out, err = capsys.readouterr()
    figures = dict(line.split("\t") for line in out.splitlines() if line.strip())
    assert status == 1 and "run.py exited 2" in figures["failed_bad"] and "error: setting 'bad'" in err
    assert float(figures["run_steps_per_s_eager"]) > 0 and "speedup_bad_vs_eager" not in figures
    (tmp_path / "figures.tsv").write_text(out)  # what tools/launch.py --estimate reads: the measured settings
    job = line(tmp_path, data_root, "TRAIN_PARAM=bias BS=4 LR=1e-3 SEED=13 MAX_STEP=360")
    (tmp_path / "jobs.txt").write_text(job + "\n")
    assert launch.main(["--estimate", str(tmp_path / "figures.tsv"), str(tmp_path / "jobs.txt")]) == 0
    rows = [row.split() for row in capsys.readouterr().out.splitlines()[3:]]
    rate, overhead = figures["run_steps_per_s_eager"], figures["process_overhead_s_eager"]
    assert float(overhead) > 0  # start-up at least
    assert rows == [["eager", "1", rate, overhead, f"{(360 / float(rate) + float(overhead)) / 3600:.2f}"]]

"""tools/launch.py --estimate: the pending runs' training steps and the hours they take at measured rates
(src/estimate.py). Job lines as the sweeps print them; figures as tools/step_benchmark.py prints them
(its real output: tests/test_step_benchmark.py)."""
import pytest

from src.arguments import parse_args
from src.experiment import Experiment
from src.jobs import describe
from src.results import append_result
from tests.test_scripts import ROOT
from tools import launch

FIGURES = ("model\troberta large: hidden_size=1024\nruns_eager\t1\nrun_steps_per_s_eager\t0.01\n"
           "per_run_step_ms_eager\t100000\nprocess_overhead_s_eager\t900.0\nruns_pack4\t4\n"
           "run_steps_per_s_pack4\t0.04\n")  # pack4: no overhead line (counted as 0)


def line(folder, data_root, variables, extra=""):
    return (f"cd {folder} && TASK=SST-2 TAG=t HARD=Y {variables} DATA_ROOT={data_root} LOG_FILE={folder}/log "
            f"bash {ROOT}/run_experiment.sh {extra}".rstrip())


def test_estimate_counts_every_stage_run_and_epoch(tmp_path, data_root, capsys):
    """zero-shot 0 steps; one run 100; a pack of two two-stage runs 2 x 2 x 50; by epochs 2 x 32 / 4; and
    each of the 4 jobs a process with its overhead."""
    lines = [line(tmp_path, data_root, "NOTRAIN=1"),
             line(tmp_path, data_root, "TRAIN_PARAM=bias BS=4 LR=1e-3 SEED=13 MAX_STEP=100"),
             line(tmp_path, data_root, "TRAIN_PARAM=prompt\\ bias PROMPT=prompt BS=4 LR=1e-3 SEED=13\\ 42 MAX_STEP=50"),
             line(tmp_path, data_root, "TRAIN_PARAM=bias BS=4 LR=1e-3 SEED=21",
                  "--max_steps\\ -1\\ --num_train_epochs\\ 2")]  # as printf %q writes them
    (tmp_path / "jobs.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "figures.tsv").write_text(FIGURES)
    assert launch.main(["--estimate", str(tmp_path / "figures.tsv"), str(tmp_path / "jobs.txt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 4 packs of up to 2 runs, 4 not in the log yet (a process each): 4 runs that train, "
                           "316 run-steps")
    assert "model roberta large: hidden_size=1024" in out[1]
    rows = {row.split()[0]: row.split()[1:] for row in out[3:5]}
    assert rows == {"eager": ["1", "0.01", "900.0", f"{(316 / 0.01 + 4 * 900) / 3600:.2f}", "*"],
                    "pack4": ["4", "0.04", "0.0", f"{316 / 0.04 / 3600:.2f}", "*"]}
    assert out[5].startswith("* measured with another number of runs per process than these jobs' (1, 2)")
    assert not (tmp_path / "log").exists() and not (tmp_path / "jobs.txt.state").exists()  # nothing ran


def test_estimate_leaves_out_the_logged_runs_of_a_pending_pack(tmp_path, data_root, capsys, monkeypatch):
    """A pack whose one run the log holds is pending, and --skip_done drops that run: its steps are not counted."""
    pack = line(tmp_path, data_root, "TRAIN_PARAM=bias BS=4 LR=1e-3 SEED=13\\ 42 MAX_STEP=50")
    (tmp_path / "jobs.txt").write_text(pack + "\n")
    (tmp_path / "figures.tsv").write_text(FIGURES)
    monkeypatch.chdir(tmp_path)
    first_run = describe(pack).runs[0]
    append_result(str(tmp_path / "log"), Experiment(*parse_args(first_run)).arguments_record())
    assert launch.main(["--estimate", str(tmp_path / "figures.tsv"), str(tmp_path / "jobs.txt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 1 packs of up to 2 runs, 1 not in the log yet (a process each): 1 runs that train, "
                           "50 run-steps (1 of their runs in the log already: skipped)")


BAD_FIGURES = {  # case -> (the figures file's text or None: missing, culprit)
    "a missing file": (None, "cannot read"),
    "no rate": ("model\troberta\nper_run_step_ms_eager\t50\n", "holds no `run_steps_per_s_NAME"),
    "a rate that is not a number": ("run_steps_per_s_eager\tfast\n", "eager: not a number"),
    "a zero rate": ("run_steps_per_s_eager\t0\n", "eager: 0.0 run-steps/s"),
    "an overhead that is not a number": ("run_steps_per_s_eager\t2\nprocess_overhead_s_eager\tnan\n", "nan s"),
}


@pytest.mark.parametrize("case", BAD_FIGURES)
def test_bad_figures_are_one_error_line(case, tmp_path, capsys, data_root):
    text, culprit = BAD_FIGURES[case]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(line(tmp_path, data_root, "NOTRAIN=1") + "\n")
    if text is not None:
        (tmp_path / "figures.tsv").write_text(text)
    code = launch.main(["--estimate", str(tmp_path / "figures.tsv"), str(jobs)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and culprit in errors[0], err


def test_a_job_that_cannot_start_is_one_error_line(tmp_path, capsys):
    job = line(tmp_path, tmp_path / "nowhere", "TRAIN_PARAM=bias BS=4 LR=1e-3 SEED=13")  # no data there
    (tmp_path / "jobs.txt").write_text(job + "\n")
    (tmp_path / "figures.tsv").write_text(FIGURES)
    code = launch.main(["--estimate", str(tmp_path / "figures.tsv"), str(tmp_path / "jobs.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --estimate: TASK=SST-2 TAG=t") and err.count("error:") == 1, err
    assert "data directory not found" in err

"""make_table --compare paper: the paper's Table 2 as data, and our table beside it on logs made of
the paper's own numbers (tests/paper_log.py), with one cell moved, cells missing, both protocols."""
import csv
import os
import re

import numpy as np
import pytest

from src.comparison import AVERAGE, REFERENCE_CSV, ROUNDING, compare, load_paper, paper_tasks
from src.delta import paper_combinations
from src.summary import FULL_DATA
from tests.paper_log import TAG, paper_records, write_log
from src.table import build_table
from src.tasks import get_task
from tools.make_table import main

PAPER = load_paper()
TASKS = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE"]
COLUMNS = ["none"] + paper_combinations()
BLOCKS = [(setting, hard) for setting in ("16-shot", FULL_DATA) for hard in "NY"]
# the Average of rounded task values vs the paper's Average of unrounded ones, itself rounded
AVERAGE_ROUNDING = 2 * ROUNDING + 1e-9


def comparison(records, setting, protocol="lm-bff", tasks=TASKS):
    return compare(build_table(records, [get_task(name) for name in tasks], TAG, protocol, setting), PAPER)


def cells(result):
    return {(block["hard"], cell.task, cell.combination): cell for block in result["blocks"] for cell in block["cells"]}


def test_reference_holds_four_blocks_of_nine_rows_by_eight_columns():
    with open(REFERENCE_CSV, newline="") as f:
        assert len(list(csv.DictReader(f))) == 4 * 9 * 8  # no row twice
    assert paper_tasks(PAPER) == TASKS
    assert sorted(PAPER) == sorted((s, h, t, c) for s, h in BLOCKS for t in TASKS + [AVERAGE] for c in COLUMNS)
    for (setting, hard, task, combination), cell in PAPER.items():
        assert (cell.std is None) == (combination == "none")
        verbatim = setting == FULL_DATA or (hard == "N" and task in ("CoLA", "SST-2"))
        assert cell.source == ("paper" if verbatim else "fs-pba-repo"), (setting, hard, task, combination)


@pytest.mark.parametrize("setting, hard", BLOCKS)
def test_reference_averages_are_the_mean_of_task_means_and_of_task_stds(setting, hard):
    for combination in COLUMNS:
        rows = [PAPER[setting, hard, task, combination] for task in TASKS]
        average = PAPER[setting, hard, AVERAGE, combination]
        assert abs(np.mean([row.mean for row in rows]) - average.mean) <= AVERAGE_ROUNDING, combination
        if combination != "none":
            assert abs(np.mean([row.std for row in rows]) - average.std) <= AVERAGE_ROUNDING, combination


@pytest.mark.parametrize("protocol", ["lm-bff", "reference"])
@pytest.mark.parametrize("setting", ["16-shot", FULL_DATA])
def test_the_papers_own_numbers_match_in_every_cell(setting, protocol):
    result = comparison(paper_records([setting]), setting, protocol)
    assert result["average"] and [block["hard"] for block in result["blocks"]] == ["N", "Y"]
    for block in result["blocks"]:
        assert len(block["cells"]) == 9 * 8
        assert block["counts"] == {"within": 72, "within 2x": 0, "outside": 0, "missing": 0}
        for cell in block["cells"]:
            assert abs(cell.difference) <= (AVERAGE_ROUNDING if cell.task == AVERAGE else 1e-9), cell
            if cell.task != AVERAGE:
                assert cell.ours[1] == pytest.approx(cell.paper.std or 0.0, abs=1e-9)
                assert cell.seeds == (1 if cell.combination == "none" else 3)


@pytest.mark.parametrize("protocol", ["lm-bff", "reference"])
@pytest.mark.parametrize("cell, stds, verdict", [
    (("16-shot", "N", "SST-2", "adapter"), 3, "outside"),      # 92.7 ± 0.4
    (("16-shot", "Y", "MNLI", "prompt,bias"), 3, "outside"),   # 67.1 ± 2.0
    (("16-shot", "Y", "MNLI", "prompt,bias"), 1.5, "within 2x"),
    ((FULL_DATA, "Y", "RTE", "prompt"), -3, "outside"),        # 78.3 ± 0.3
])
def test_a_cell_moved_by_some_stds_is_the_only_one_flagged(cell, stds, verdict, protocol):
    setting, hard, task, combination = cell
    moved = stds * PAPER[cell].std
    result = comparison(paper_records([setting], shift={cell: moved}), setting, protocol)
    flagged = {key: c for key, c in cells(result).items() if c.verdict != "within"}
    assert list(flagged) == [(hard, task, combination)]
    assert flagged[hard, task, combination].verdict == verdict
    assert flagged[hard, task, combination].difference == pytest.approx(moved)


def test_missing_runs_are_named_and_counted(tmp_path, capsys):
    dropped = {("16-shot", "Y", "MRPC", "prompt,bias"), ("16-shot", "N", "CoLA", "none")}
    result = comparison(paper_records(["16-shot"], drop=dropped), "16-shot")
    missing = [key for key, cell in cells(result).items() if cell.verdict == "missing"]
    assert sorted(missing) == [("N", "Average", "none"), ("N", "CoLA", "none"),
                               ("Y", "Average", "prompt,bias"), ("Y", "MRPC", "prompt,bias")]
    assert [block["counts"]["missing"] for block in result["blocks"]] == [2, 2]
    log = write_log(tmp_path / "log", paper_records(["16-shot"], drop=dropped))
    assert main(["--log_file", log, "--compare", "paper"]) == 0
    out = capsys.readouterr().out
    assert "| MRPC | Prompt+BitFit | missing |  | 76.1±2.4 | fs-pba-repo |  | missing |" in out
    assert "16-shot, with templates (HARD=Y): 70 within, 0 within 2x, 0 outside, 2 missing" in out


def test_the_protocols_choose_different_runs():
    """Each trained seed's other learning rate has a worse dev score but a test score 5 points higher:
    lm-bff (best dev per seed) still gives the paper's numbers, reference (best mean test) 5 points more."""
    records = paper_records(["16-shot"], decoy=5.0)
    assert set(c.verdict for c in cells(comparison(records, "16-shot", "lm-bff")).values()) == {"within"}
    for (_, task, combination), cell in cells(comparison(records, "16-shot", "reference")).items():
        expected = 0.0 if combination == "none" else 5.0
        assert cell.difference == pytest.approx(expected, abs=AVERAGE_ROUNDING if task == AVERAGE else 1e-9)


def test_other_tasks_leave_the_average_uncompared_and_unknown_tasks_are_errors(tmp_path, capsys):
    result = comparison(paper_records(["16-shot"]), "16-shot", tasks=["SST-2", "RTE"])
    assert not result["average"] and {c.task for c in cells(result).values()} == {"SST-2", "RTE"}
    log = write_log(tmp_path / "log", paper_records(["16-shot"]))
    assert main(["--log_file", log, "--compare", "paper", "--task", "SST-2", "trec"]) == 2
    assert "error: the paper's Table 2 has no row for trec" in capsys.readouterr().err


@pytest.fixture(scope="module")
def both_settings(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("paper") / "log", paper_records())


def test_markdown_header_names_both_protocols_and_the_counts(both_settings, capsys):
    assert main(["--log_file", both_settings, "--compare", "paper", "--setting", "16-shot",
                 "--protocol", "reference"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Ours vs the paper's Table 2, 16-shot data"
    assert lines[1].startswith("Ours: protocol reference (the setting (learning rate, ...) with the best mean test")
    assert lines[2].startswith("Paper: 16-shot cells chose the learning rate with the best mean test score over "
                               "seeds (our --protocol reference)")
    assert "16-shot, without templates (HARD=N): 72 within, 0 within 2x, 0 outside, 0 missing" in lines
    assert "| SST-2 | Adapter | 92.7±0.4 | 3 | 92.7±0.4 | paper | +0.0 | within |  |" in lines
    assert "| Average | none | 43.4±0.0 |  | 43.4 | fs-pba-repo | +0.0 | within |" in "\n".join(lines)


def test_full_data_latex_csv_and_figures(both_settings, tmp_path, capsys):
    table = tmp_path / "compare.csv"
    assert main(["--log_file", both_settings, "--compare", "paper", "--setting", FULL_DATA, "--latex",
                 "--csv", str(table), "--figure", str(tmp_path / "figures")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("% Ours vs the paper's Table 2, full data\n% Ours: protocol lm-bff")
    assert "dev being the test set" in out.splitlines()[2]
    body = re.search(r"\\begin\{tabular\}\{(\w+)\}\n(.*)\n\\end\{tabular\}$", out.strip(), re.S)
    assert body and body.group(1) == "llcccccl"
    rows = [line for line in body.group(2).splitlines() if line != r"\hline"]
    assert len(rows) == 1 + 2 * (1 + 72)
    assert r"full, with templates (HARD=Y): 72 within, 0 within 2x, 0 outside, 0 missing} \\" in out
    assert r"RTE & Prompt & 78.3$\pm$0.3 & 3 & 78.3$\pm$0.3 & paper & +0.0 & within \\" in rows
    with open(table, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 2 * 72 and {row["setting"] for row in written} == {FULL_DATA}
    qqp = next(r for r in written if (r["hard"], r["task"], r["combination"]) == ("N", "QQP", "prompt"))
    assert (qqp["ours_seeds"], qqp["paper_mean"], qqp["verdict"], qqp["protocol"]) == ("3", "77.2", "within", "lm-bff")
    assert qqp["note"].startswith("FS-PBA repo @8c19d3c: 75.0")
    for hard in "NY":
        png = tmp_path / "figures" / f"table2-full-{hard}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"figure: {png}" in err
    assert sorted(os.listdir(tmp_path / "figures")) == ["table2-full-N.png", "table2-full-Y.png"]  # no temporary


def test_a_log_of_both_settings_needs_setting(both_settings, capsys):
    assert main(["--log_file", both_settings, "--compare", "paper"]) == 2
    assert "choose one with --setting" in capsys.readouterr().err
    assert main(["--log_file", both_settings, "--compare", "paper", "--setting", "8-shot"]) == 2
    assert "--setting 8-shot: the log holds no 8-shot run" in capsys.readouterr().err


UNWRITABLE = {  # make_table's outputs where one cannot be written: (--csv, --figure) -> the error line
    "figure folder a file": (
        lambda tmp: (tmp / "c.csv", tmp / "X"),
        "error: --figure: cannot write '{tmp}/X/table2-16-shot-N.png': [Errno 17] File exists: '{tmp}/X'"),
    "figure folder in /proc": (
        lambda tmp: (tmp / "c.csv", "/proc/self"),
        "error: --figure: cannot write '/proc/self/table2-16-shot-N.png': [Errno 2] No such file or directory: "
        "'/proc/self/.table2-16-shot-N.png.{pid}.tmp'"),
    "figure folder read-only": (
        lambda tmp: (tmp / "c.csv", "/sys"),
        "error: --figure: cannot write '/sys/table2-16-shot-N.png': [Errno 13] Permission denied: "
        "'/sys/.table2-16-shot-N.png.{pid}.tmp'"),
    "figure folder below /proc": (
        lambda tmp: (tmp / "c.csv", "/proc/self/new/figures"),
        "error: --figure: cannot write '/proc/self/new/figures/table2-16-shot-N.png': [Errno 2] No such file or "
        "directory: '/proc/self/new'"),
    "csv a device": (
        lambda tmp: ("/dev/full", tmp / "figures"),
        "error: --csv: '/dev/full' is not a regular file (a folder or a device)"),
    "csv a folder": (
        lambda tmp: (tmp, tmp / "figures"),
        "error: --csv: '{tmp}' is not a regular file (a folder or a device)"),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_output_that_cannot_be_written_leaves_every_output_unwritten(case, tmp_path, capsys):
    outputs, message = UNWRITABLE[case]
    log = write_log(tmp_path / "log", paper_records(["16-shot"]))
    (tmp_path / "X").touch()
    csv_path, figures = outputs(tmp_path)
    assert main(["--log_file", log, "--compare", "paper", "--csv", str(csv_path), "--figure", str(figures)]) == 2
    assert capsys.readouterr().err.splitlines() == [message.format(tmp=tmp_path, pid=os.getpid())]
    assert sorted(os.listdir(tmp_path)) == ["X", "log"]  # no CSV, no figure folder, no temporary file

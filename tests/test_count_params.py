"""The tunable share per combination must round to the paper's Table 2 header (SPEC §1)."""
import subprocess
import sys

from tests.conftest import ROOT

PAPER_ROBERTA_LARGE = {"prompt": "0.003", "bias": "0.09", "adapter": "1.75", "prompt,adapter": "1.76",
                       "bias,adapter": "1.84", "prompt,bias": "0.09", "prompt,bias,adapter": "1.85"}


def run_count_params(model_size):
    out = subprocess.run([sys.executable, "tools/count_params.py", "--model_size", model_size], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    header, *lines = out.strip().splitlines()
    assert header == "combination\ttrainable\tpercent"
    rows = [line.split("\t") for line in lines]
    return {combination: (int(trainable), float(percent)) for combination, trainable, percent in rows}


def test_roberta_large_matches_paper_header():
    rows = run_count_params("roberta-large")
    for combination, paper in PAPER_ROBERTA_LARGE.items():
        decimals = len(paper.split(".")[1])
        assert f"{rows[combination][1]:.{decimals}f}" == paper, combination
    assert rows["prompt"][0] == 10 * 1024
    assert rows["all"][1] == 100.0


def test_other_sizes_print_every_combination():
    rows = run_count_params("bert-base")
    assert len(rows) == 8 and rows["prompt"][0] == 10 * 768
    assert rows["bias"][0] < rows["bias,adapter"][0] < rows["all"][0]

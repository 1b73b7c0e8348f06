"""The tunable share per combination must round to the paper's Table 2 header (SPEC §1)."""
import subprocess
import sys

from tests.conftest import ROOT
from tools import count_params

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


def test_other_sizes_print_every_combination_of_the_registry():
    rows = run_count_params("bert-base")
    assert len(rows) == 16 and rows["prompt"][0] == 10 * 768  # 15 combinations of 4 methods, and all
    assert rows["bias"][0] < rows["bias,adapter"][0] < rows["all"][0]
    # LoRA: rank 8 on query and value of each of the 12 layers: 12 * 2 * (768*8 + 8*768)
    assert rows["lora"][0] == 12 * 2 * 2 * 768 * 8
    assert rows["prompt,lora"][0] == rows["prompt"][0] + rows["lora"][0]
    assert rows["bias,lora"][0] == rows["bias"][0] + rows["lora"][0]  # LoRA has no biases


def test_newer_families_count_what_they_can_run(capsys):
    """ModernBERT-base: BitFit has only the decoder's vocabulary bias, and no row holds adapter with lora
    (the adapters library runs LoRA alone there); DeBERTa-v3-base has its published 184M parameters (the
model card's 86M encoder and 98M embedding layer)."""
    assert count_params.main(["--model_size", "modernbert-base"]) == 0
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert len(rows) == 12 and not any("adapter" in name and "lora" in name for name in rows)
    assert int(rows["bias"][0]) == 50368 and int(rows["prompt"][0]) == 10 * 768
    deberta = count_params.count("deberta-v3-base", "all")
    assert abs(deberta.total - 184e6) < 1e6 and deberta.trainable == deberta.total  # the MLM head adds 0.7M

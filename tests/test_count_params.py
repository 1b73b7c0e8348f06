"""The tunable share per combination must round to the paper's Table 2 header (SPEC §1)."""
from tools import count_params

PAPER_ROBERTA_LARGE = {"prompt": "0.003", "bias": "0.09", "adapter": "1.75", "prompt,adapter": "1.76",
                       "bias,adapter": "1.84", "prompt,bias": "0.09", "prompt,bias,adapter": "1.85"}


def prefix_parameters(hidden, layers, length=30, bottleneck=512):
    """Prefix tuning's trained tensors (src/delta/prefix.py): the embedding of the prefix positions and the
    MLP from it to each layer's keys and values."""
    return length * hidden + (hidden * bottleneck + bottleneck) + (bottleneck + 1) * 2 * layers * hidden


def run_count_params(model_size, capsys):
    assert count_params.main(["--model_size", model_size]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header == "combination\ttrainable\tpercent"
    rows = [line.split("\t") for line in lines]
    return {combination: (int(trainable), float(percent)) for combination, trainable, percent in rows}


def test_roberta_large_matches_paper_header(capsys):
    rows = run_count_params("roberta-large", capsys)
    for combination, paper in PAPER_ROBERTA_LARGE.items():
        decimals = len(paper.split(".")[1])
        assert f"{rows[combination][1]:.{decimals}f}" == paper, combination
    assert rows["prompt"][0] == 10 * 1024
    assert rows["all"][1] == 100.0
    assert rows["prefix"][0] == prefix_parameters(1024, 24) == 25_770_496  # README's row
    assert rows["prefix"][1] == 6.761


def test_other_sizes_print_every_combination_of_the_registry(capsys):
    rows = run_count_params("bert-base", capsys)
    assert len(rows) == 32 and rows["prompt"][0] == 10 * 768  # 31 combinations of 5 methods, and all
    assert rows["bias"][0] < rows["bias,adapter"][0] < rows["all"][0]
    # LoRA: rank 8 on query and value of each of the 12 layers: 12 * 2 * (768*8 + 8*768)
    assert rows["lora"][0] == 12 * 2 * 2 * 768 * 8
    assert rows["prompt,lora"][0] == rows["prompt"][0] + rows["lora"][0]
    assert rows["bias,lora"][0] == rows["bias"][0] + rows["lora"][0]  # LoRA has no biases
    assert rows["prefix"][0] == prefix_parameters(768, 12)
    # BitFit without prefix tuning has no prefix MLP to count: the union is the sum
    assert rows["bias,prefix"][0] == rows["bias"][0] + rows["prefix"][0]


def test_newer_families_count_what_they_can_run(capsys):
    """ModernBERT-base: BitFit has only the decoder's vocabulary bias, no row holds adapter with lora
    (the adapters library runs LoRA alone there) nor prefix (it has no prefix tuning there); DeBERTa-v3-base
    has its published 184M parameters (the model card's 86M encoder and 98M embedding layer)."""
    assert count_params.main(["--model_size", "modernbert-base"]) == 0
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert len(rows) == 12 and not any("adapter" in name and "lora" in name or "prefix" in name for name in rows)
    assert int(rows["bias"][0]) == 50368 and int(rows["prompt"][0]) == 10 * 768
    deberta = count_params.count("deberta-v3-base", "all")
    assert abs(deberta.total - 184e6) < 1e6 and deberta.trainable == deberta.total  # the MLM head adds 0.7M

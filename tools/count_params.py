"""Tunable-parameter share of each delta combination (the header row of the paper's Table 2).

Builds the model from a config on the meta device: no weights, no download. Prints
`combination<TAB>trainable<TAB>percent` per combination, counted against the whole model
including the prompt table and adapters that the combination adds.
"""
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForMaskedLM  # noqa: E402

from src.checks import ArgumentParser, at_least, typed  # noqa: E402
from src.delta import adapter, count_parameters  # noqa: E402
from src.errors import cli  # noqa: E402
from src.models import PromptMLM  # noqa: E402

SIZES = {
    "roberta-large": ("roberta", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096, vocab_size=50265, max_position_embeddings=514,
                                      type_vocab_size=1, pad_token_id=1)),
    "roberta-base": ("roberta", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, vocab_size=50265, max_position_embeddings=514,
                                     type_vocab_size=1, pad_token_id=1)),
    "bert-large": ("bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096, vocab_size=30522)),
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, vocab_size=30522)),
}
COMBINATIONS = ["prompt", "bias", "adapter", "prompt,adapter", "bias,adapter", "prompt,bias",
                "prompt,bias,adapter", "all"]


def build(model_size, with_prompt, with_adapter, prompt_num=10):
    model_type, sizes = SIZES[model_size]
    with torch.device("meta"):
        mlm = AutoModelForMaskedLM.from_config(AutoConfig.for_model(model_type, **sizes))
        if with_adapter:
            adapter.attach(mlm)
        return PromptMLM(mlm, [0], prompt_num=prompt_num if with_prompt else 0)


def count(model_size, combination, prompt_num=10):
    methods = combination.split(",")
    model = build(model_size, "prompt" in methods or methods == ["all"], "adapter" in methods, prompt_num)
    trainable, total = count_parameters(model, methods)
    return SimpleNamespace(trainable=trainable, total=total, percent=100.0 * trainable / total)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--model_size", default="roberta-large", choices=sorted(SIZES))
    parser.add_argument("--prompt_num", type=typed(int, at_least(1)), default=10, help="soft-prompt vectors")
    args = parser.parse_args(argv)
    print("combination\ttrainable\tpercent")
    for combination in COMBINATIONS:
        result = count(args.model_size, combination, args.prompt_num)
        print(f"{combination}\t{result.trainable}\t{result.percent:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

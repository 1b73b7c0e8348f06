"""Tunable-parameter share of each delta combination (the header row of the paper's Table 2).

Builds the model from a config on the meta device: no weights, no download. Prints a header and
`combination<TAB>trainable<TAB>percent` per combination of the delta registry's methods (the
paper's seven first, then those with other methods such as LoRA, then `all`; those that the
model's family cannot run are left out), counted against the whole model including the modules
the combination adds (prompt table, adapters, LoRA, the prefix tuning MLP).
"""
import sys
from types import SimpleNamespace

import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from src.arguments import argument_defaults
from src.delta import METHODS, attach_methods, count_parameters, paper_combinations, split_combination
from src.checks import ArgumentParser, at_least, typed
from src.errors import UserError, cli
from src.families import FAMILIES, check_methods
from src.models import PromptMLM
from src.random_models import SIZES

def combinations():
    """The paper's combinations, then every other combination of combinable methods, then the rest."""
    paper = paper_combinations()
    combinable = [m.name for m in METHODS.values() if m.combinable]
    others = [c for c in paper_combinations(combinable) if c not in paper]
    return paper + others + [m.name for m in METHODS.values() if not m.combinable]


def build(model_size: str, methods, options):
    """A PromptMLM of `model_size` on the meta device with the modules of `methods` attached."""
    model_type, sizes = SIZES[model_size]
    with torch.device("meta"):
        model = PromptMLM(AutoModelForMaskedLM.from_config(AutoConfig.for_model(model_type, **sizes)), [0])
        attach_methods(model, methods, options)
    return model


def count(model_size: str, combination: str, prompt_num: int = 10):
    methods = split_combination(combination)
    options = SimpleNamespace(**{**argument_defaults(), "prompt_num": prompt_num})  # run.py's defaults
    model = build(model_size, methods, options)
    trainable, total = count_parameters(model, methods)
    return SimpleNamespace(trainable=trainable, total=total, percent=100.0 * trainable / total)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--model_size", default="roberta-large", choices=sorted(SIZES))
    parser.add_argument("--prompt_num", type=typed(int, at_least(1)), default=10, help="soft-prompt vectors")
    args = parser.parse_args(argv)
    family = FAMILIES[SIZES[args.model_size][0]]
    print("combination\ttrainable\tpercent")
    for combination in combinations():
        try:
            check_methods(family, split_combination(combination))
        except UserError:  # a combination that the family cannot run (ModernBERT: adapter with lora)
            continue
        result = count(args.model_size, combination, args.prompt_num)
        print(f"{combination}\t{result.trainable}\t{result.percent:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

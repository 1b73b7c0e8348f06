"""The model-family rows (src/families.py) hold what the installed libraries do.

Per family elsewhere: label-word scores equal the full vocabulary's (test_models.py), every
combination trains only its parameters (test_delta_training.py), the forward runs under vmap
(test_lean_step.py), packed runs equal single runs (test_packed.py), a delta saves and reloads
(test_run_cli.py), a method that cannot attach is one error line (test_bad_input.py).
"""
import importlib
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig

from src.families import FAMILIES, family_of
from src.models import build_model
from src.random_models import TINY_MODELS
from src.tasks import get_task


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_tiny_model(family, tiny_of):
    """The family tests run over the rows of src/families.py (tests/conftest.py): each row's tiny model is made
    and is of its family; a tiny model without a row would be untested."""
    assert family_of(AutoConfig.from_pretrained(tiny_of(family))) is FAMILIES[family]
    assert list(FAMILIES) == list(TINY_MODELS)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_rows_match_the_adapters_library(family):
    """A family the library supports natively (a module of its own) takes every method type; one it
    reaches through a plugin interface takes those that the interface lists."""
    from adapters.wrappers.interfaces import get_adapter_interface
    from adapters.wrappers.model import get_module_name
    interface = get_adapter_interface(family)
    row = FAMILIES[family].adapters_methods
    if interface is None:
        module = get_module_name(family)
        importlib.import_module(f"adapters.models.{module}.modeling_{module}")  # what adapters.init loads
        assert row == {"bottleneck", "lora", "prefix_tuning"}
    else:
        assert row == {"bottleneck", "lora", "prefix_tuning"} & set(interface.adapter_methods)


def test_modernbert_runs_one_adapters_method_at_a_time(tiny_of):
    """Why its row says so: with the Houlsby adapter and LoRA both active, the library refuses the forward."""
    args = SimpleNamespace(few_shot_type="prompt", model_name_or_path=tiny_of("modernbert"), prompt_num=2,
                           adapter_reduction_factor=16, lora_r=8, lora_alpha=8, reference_mode=False)
    model = build_model(args, get_task("SST-2"), [100, 200], ["adapter", "lora"])
    assert FAMILIES["modernbert"].adapters_alone
    with pytest.raises(ValueError, match="Cannot use Stack"):
        model(input_ids=torch.tensor([[50258, 100, 50261, 50259]]), mask_pos=torch.tensor([2]))


# family -> (position offset, takes segment ids) of its tiny model; a family row missing here fails below.
POSITIONS_AND_SEGMENT_IDS = {"roberta": (2, False), "bert": (0, True), "deberta-v2": (0, False),
                             "modernbert": (0, False)}


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_and_segment_ids(family, tiny_of):
    """RoBERTa counts positions from pad_token_id + 1; BERT has two segment embeddings; DeBERTa-v3 none
    (type_vocab_size 0: the tokenizer's token_type_ids are not passed), unless a config gives it some."""
    config = AutoConfig.from_pretrained(tiny_of(family))
    row = family_of(config)
    assert (row.position_offset(config), row.takes_segment_ids(config)) == POSITIONS_AND_SEGMENT_IDS[family]
    if family == "deberta-v2":
        config.type_vocab_size = 2
        assert row.takes_segment_ids(config)

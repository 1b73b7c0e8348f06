"""Model families: what differs between the masked LMs this project runs, one row per `config.model_type`.

A row says where the MLM head's transform and vocabulary projection are (label-word scoring at the
mask uses them directly, `PromptMLM.label_word_scores`), how positions are counted, which attention
mask form avoids a host sync, whether the model takes segment ids, which method types of the
`adapters` library attach to it (and whether they run together).
Adding a family is one row (and a tiny model in `src/random_models.py` for the tests).
"""
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, NamedTuple, Optional

import torch
from torch import nn
from transformers.activations import gelu

from src.delta import METHODS
from src.errors import UserError


class MLMHead(NamedTuple):
    """A masked LM's head as `bias + weight @ transform(hidden)`: transform, then the vocabulary rows."""
    transform: Callable[[torch.Tensor], torch.Tensor]
    weight: torch.Tensor
    bias: Optional[torch.Tensor]


def _roberta_head(mlm) -> MLMHead:
    head = mlm.lm_head  # RobertaLMHead applies gelu whatever config.hidden_act says
    return MLMHead(lambda hidden: head.layer_norm(gelu(head.dense(hidden))), head.decoder.weight, head.decoder.bias)


def _bert_head(mlm) -> MLMHead:
    predictions = mlm.cls.predictions
    return MLMHead(predictions.transform, predictions.decoder.weight, predictions.decoder.bias)


def _deberta_v2_head(mlm) -> MLMHead:
    if mlm.legacy:  # config.legacy (the default): a BERT-style head under `cls`
        return _bert_head(mlm)
    # the original DeBERTa head (v1/v2 checkpoints' `lm_predictions`): projects onto the word embeddings
    head = mlm.lm_predictions.lm_head
    return MLMHead(lambda hidden: head.LayerNorm(head.transform_act_fn(head.dense(hidden))),
                   mlm.get_input_embeddings().weight, head.bias)


def _modernbert_head(mlm) -> MLMHead:
    return MLMHead(mlm.head, mlm.decoder.weight, mlm.decoder.bias)


def _deberta_v2_overrides(config) -> Dict[str, object]:
    # With legacy=False, transformers 4.57 takes the head's hidden-to-hidden dense layer for the output
    # embeddings and ties it to the word embeddings (the head then fails); that head multiplies by the
    # word embeddings itself, so untied it computes the original DeBERTa head.
    return {} if getattr(config, "legacy", True) else {"tie_word_embeddings": False}


@dataclass(frozen=True)
class Family:
    name: str                                   # config.model_type
    head: Callable[[nn.Module], MLMHead]        # the masked LM's head (transform, vocabulary rows)
    adapters_methods: FrozenSet[str]            # `adapters` method types (AdapterMethod) that attach to it
    adapters_alone: str = ""                    # why its `adapters` methods cannot be active together ("": they can)
    positions_after_pad: bool = False           # position ids start at pad_token_id + 1 (RoBERTa)
    pairwise_mask: bool = True                  # attention takes a (batch, query, key) mask (models.pairwise_mask)
    segment_ids: bool = False                   # has segment (token type) embeddings when type_vocab_size > 0
    load_overrides: Callable[[object], Dict[str, object]] = lambda config: {}  # config values set at loading

    def position_offset(self, config) -> int:
        """Positions the model uses before the first token's (RoBERTa: pad_token_id + 1)."""
        return (config.pad_token_id or 0) + 1 if self.positions_after_pad else 0

    def takes_segment_ids(self, config) -> bool:
        return self.segment_ids and getattr(config, "type_vocab_size", 0) > 0


# The `adapters` method types of the registry's methods: a family the library supports natively takes them all.
ALL_ADAPTERS_METHODS = frozenset(m.adapters_method for m in METHODS.values() if m.adapters_method)

FAMILIES: Dict[str, Family] = {f.name: f for f in [
    Family("roberta", _roberta_head, ALL_ADAPTERS_METHODS, positions_after_pad=True),
    Family("bert", _bert_head, ALL_ADAPTERS_METHODS, segment_ids=True),
    # DeBERTa's embeddings multiply by the 2-D mask; its 2-D mask needs no host sync anyway.
    Family("deberta-v2", _deberta_v2_head, ALL_ADAPTERS_METHODS, pairwise_mask=False, segment_ids=True,
           load_overrides=_deberta_v2_overrides),
    # ModernBERT expands a 2-D mask itself (with its sliding window). `adapters` reaches it through its
    # plugin interface (adapters.wrappers.interfaces), which has no prefix tuning. Its own per-module
    # torch.compile (reference_compile) stays off: --torch_compile compiles the whole step.
    Family("modernbert", _modernbert_head, frozenset({"bottleneck", "lora"}), pairwise_mask=False,
           adapters_alone="the adapters library runs LoRA on its merged query-key-value projection only alone",
           load_overrides=lambda config: {"reference_compile": False}),
]}


def family_of(config) -> Family:
    """The row of a model's config; a model type without one is a UserError."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise UserError(f"--model_name_or_path: model type {config.model_type!r} is not one of the supported "
                        f"families ({', '.join(FAMILIES)}; src/families.py)")
    return family


def check_methods(family: Family, methods: Iterable[str]) -> None:
    """A UserError naming the method(s) of `methods` that cannot attach to `family`."""
    through_adapters = [name for name in METHODS if name in set(methods) and METHODS[name].adapters_method]
    for name in through_adapters:
        needs = METHODS[name].adapters_method
        if needs not in family.adapters_methods:
            raise UserError(f"the {name} method cannot attach to {family.name} models: the adapters library has "
                            f"no {needs} support for {family.name} "
                            f"(it has {', '.join(sorted(family.adapters_methods))})")
    if len(through_adapters) > 1 and family.adapters_alone:
        raise UserError(f"the {' and '.join(through_adapters)} methods cannot attach together to {family.name} "
                        f"models ({family.adapters_alone}); attach one of them")

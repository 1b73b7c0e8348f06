"""Models: a masked LM scored through label words at the mask, or a classification head (finetune).

Prompt mode: logits[c] = MLM score of label word c at `mask_pos`. The encoder runs once; only the
mask position goes through the LM head, and only the label words' rows of its vocabulary
projection (the reference scores the whole vocabulary at every
position: `reference_mode=True` does that, for benchmarks and equivalence tests).
"""
import contextlib
import logging
import os
from typing import Iterable, List, Optional, Tuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

from src.dataset import uses_template
from src.delta import attach_methods, methods_for_template
from src.errors import UserError, first_line
from src.families import family_of
from src.tasks import Task


class PromptMLM(nn.Module):
    def __init__(self, mlm, label_word_ids, label_range=None, reference_mode=False):
        """`label_range` (low, high): a regression task's score range (STS-B); None: classification.
        The soft prompt table is attached by the `prompt` delta method (src/delta/prompt.py)."""
        super().__init__()
        self.mlm = mlm
        self.config = mlm.config
        self.family = family_of(mlm.config)
        self.soft_prompt = None
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids, dtype=torch.long), persistent=False)
        self.label_range = label_range
        self.reference_mode = reference_mode

    def get_input_embeddings(self):
        """The masked LM's word embeddings (the Trainer's NEFTune hooks them)."""
        return self.mlm.get_input_embeddings()

    @property
    def regression(self):
        return self.label_range is not None

    def label_word_scores(self, hidden):
        """MLM scores of the label words only: the head's transform, then just the label rows of
        the vocabulary projection (exact; 1.4x faster evaluation than the full vocabulary)."""
        head = self.family.head(self.mlm)
        ids = self.label_word_ids
        if head.bias is None or head.bias.dim() == 1:
            return nn.functional.linear(head.transform(hidden), head.weight[ids],
                                        None if head.bias is None else head.bias[ids])
        # a folded pack's per-run bias [K, vocabulary] (src/fold.py): run k's rows are the k-th chunk
        scores = nn.functional.linear(head.transform(hidden), head.weight[ids])
        return (scores.unflatten(0, (head.bias.size(0), -1)) + head.bias[:, ids].unsqueeze(1)).flatten(0, 1)

    def forward(self, input_ids, mask_pos, attention_mask=None, token_type_ids=None, labels=None):
        word_embeddings = self.mlm.get_input_embeddings()
        embeds = (self.soft_prompt(input_ids, word_embeddings) if self.soft_prompt is not None
                  else word_embeddings(input_ids))
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        extra = {}
        if token_type_ids is not None and self.family.takes_segment_ids(self.config):
            # `*sep+*` counts segments up (0, 1, 2, ... with two sentences or demonstrations); BERT has
            # two segment embeddings, so later segments share the last one.
            extra["token_type_ids"] = token_type_ids.clamp(max=self.config.type_vocab_size - 1)
        if attention_mask is not None and self.family.pairwise_mask:
            attention_mask = pairwise_mask(attention_mask)
        if self.reference_mode:
            vocab_scores = self.mlm(inputs_embeds=embeds, attention_mask=attention_mask, **extra).logits
            mask_scores = vocab_scores[rows, mask_pos][:, self.label_word_ids]
        else:
            hidden = self.mlm.base_model(inputs_embeds=embeds, attention_mask=attention_mask, **extra)[0]
            mask_scores = self.label_word_scores(hidden[rows, mask_pos])
        logits = mask_scores.float()
        if self.regression:
            logits = torch.log_softmax(logits, dim=-1)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = self.loss(logits, labels)
        return output

    def loss(self, logits, labels):
        if not self.regression:
            return nn.functional.cross_entropy(logits, labels)
        # STS-B, as in the reference: the target (1-p, p), p = score/5, is given as probabilities
        # although log_target=True (a quirk that produced the published numbers).
        # Written out as nn.KLDivLoss(log_target=True, reduction="mean") computes it, without
        # that class's per-call warning about 'mean'.
        low, high = self.label_range
        p = (labels.float() - low) / (high - low)
        target = torch.stack([1 - p, p], dim=-1)
        return (target.exp() * (target - logits)).mean()


def pairwise_mask(attention_mask):
    """(batch, length) -> (batch, length, length), the same mask per query position. Given a 2-D mask,
    transformers first asks `torch.all(mask == 1)` (a host-device sync in every forward, and a
    data-dependent branch that torch.func.vmap cannot follow); a 3-D mask goes straight to the
    additive mask, with the same values."""
    return attention_mask[:, None, :].expand(-1, attention_mask.size(-1), -1)


def regression_prediction(logits, label_range: Tuple[float, float]) -> torch.Tensor:
    """STS-B score. Finetune mode's head outputs it (one column, trained with MSE on the score); prompt mode
    gives the (log p_low, log p_high) pair: low + exp(log p_high) * (high - low)."""
    logits = torch.as_tensor(logits)
    if logits.size(-1) == 1:
        return logits[..., 0]
    low, high = label_range
    return low + logits[..., 1].exp() * (high - low)


def load_pretrained(cls, name_or_path: str, what: str = "model", **kwargs):
    """`cls.from_pretrained`; a folder or hub name that does not load is one UserError line naming it.

    A folder must hold config.json (transformers guesses a model type from the folder's name otherwise).
    A hub name while the hub cannot be reached is looked up in the local cache only: huggingface_hub
    would retry for about 25 s before saying the same."""
    is_folder = os.path.isdir(name_or_path)
    if is_folder and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise UserError(f"--model_name_or_path: the folder {name_or_path!r} holds no config.json (not a saved model)")
    offline = None if is_folder else _hub_unreachable()
    if offline:
        kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except Exception as error:  # a model fails to load in many ways (OSError, SafetensorError, a tokenizer's
        # ImportError or AttributeError, ...): each is a fault of the model's files, said in one line
        if offline and isinstance(error, OSError):
            why = f"it is not in the local Hugging Face cache and the hub is offline ({offline})"
        else:
            why = first_line(error)
        raise UserError(f"--model_name_or_path: cannot load {what} {name_or_path!r}: {why}") from error


def _hub_unreachable() -> Optional[str]:
    """Why the Hugging Face hub cannot be reached, or None. Behind a proxy it is not probed (None)."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants
    from transformers.utils import is_offline_mode
    if is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if urllib.request.getproxies():
        return None
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        return f"{endpoint.hostname} cannot be reached: {error}"
    return None


def build_model(model_args, task: Task, label_word_ids: Optional[List[int]], methods: Iterable[str],
                template_parts: Iterable[str] = (), config=None) -> nn.Module:
    """The model for `few_shot_type`, with the modules of every delta method in `methods` attached,
    and those that the template's parts need (the soft prompt table for a *prompt* part). `config`: the
    model's config, when the caller has read it.

    `model.initialised` names the parameters that the checkpoint lacks (transformers initialises them from
    the seed; e.g. the MLM head of a sentence encoder): a saved delta holds them (src/delta/checkpoint.py)."""
    if config is None:
        config = load_pretrained(AutoConfig, model_args.model_name_or_path, "model config")
    overrides = family_of(config).load_overrides(config)
    with without_new_tensor_lines():
        if not uses_template(model_args.few_shot_type):
            # LM-BFF: regression (STS-B) is one output trained with MSE on the score. problem_type is set, as a
            # checkpoint's own (a classifier's) would make it a cross-entropy over one class.
            model, loading = load_pretrained(AutoModelForSequenceClassification, model_args.model_name_or_path,
                                             num_labels=1 if task.regression else len(task.labels),
                                             problem_type="regression" if task.regression
                                             else "single_label_classification",
                                             output_loading_info=True, **overrides)
            prefix = ""
        else:
            mlm, loading = load_pretrained(AutoModelForMaskedLM, model_args.model_name_or_path,
                                           output_loading_info=True, **overrides)
            model = PromptMLM(mlm, label_word_ids, label_range=task.label_range,
                              reference_mode=model_args.reference_mode)
            prefix = "mlm."
    missing = {prefix + name for name in loading["missing_keys"]}
    model.initialised = [name for name, _ in model.named_parameters() if name in missing]
    attach_methods(model, set(methods) | set(methods_for_template(template_parts)), model_args)
    return model


@contextlib.contextmanager
def without_new_tensor_lines():
    """transformers' lines about the tensors a checkpoint lacks left out (`initialised` names them); its
    other messages stay (a logger's level is left alone: transformers reads it to decide what to check)."""
    log = logging.getLogger("transformers.modeling_utils")

    def other(record):
        return " and are newly initialized: " not in record.getMessage()
    log.addFilter(other)
    try:
        yield
    finally:
        log.removeFilter(other)

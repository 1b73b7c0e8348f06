"""Soft prompt: a table of `prompt_num` vectors behind negative token ids (-k -> vector k-1)."""
from dataclasses import dataclass

import torch
from torch import nn

from src.checks import at_least, option
from src.errors import UserError

PREFIX = "soft_prompt."


@dataclass(frozen=True)
class Options:
    prompt_num: int = option(10, "Number of soft-prompt vectors (*prompt* in the template).", allowed=at_least(1))

    def check(self, model_config) -> None:
        """The vectors fit in the model's positions (the run checks them against --max_seq_length too)."""
        positions = getattr(model_config, "max_position_embeddings", None)
        if positions is not None and self.prompt_num > positions:
            raise UserError(f"--prompt_num must be at most {positions} (the positions of {model_config.name_or_path}),"
                            f" got {self.prompt_num}")


def selects(name: str) -> bool:
    return name.startswith(PREFIX)


def attach(model, options: Options) -> None:
    """Give a PromptMLM its prompt table (N(0, initializer_range), SPEC §1) unless it has one."""
    if model.soft_prompt is None:
        config = model.config
        model.soft_prompt = SoftPrompt(options.prompt_num, config.hidden_size, config.initializer_range)


class SoftPrompt(nn.Module):
    def __init__(self, prompt_num, hidden_size, initializer_range):
        super().__init__()
        self.embedding = nn.Embedding(prompt_num, hidden_size)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=initializer_range)

    def forward(self, input_ids, word_embeddings):
        """Embed ids: non-negative through the word table, negative through the prompt table.

        No data-dependent branch: no host-device sync per call, and it works under torch.func.vmap."""
        words = word_embeddings(input_ids.clamp(min=0))
        prompts = self.embedding((-input_ids - 1).clamp(min=0))
        return torch.where((input_ids < 0).unsqueeze(-1), prompts, words)

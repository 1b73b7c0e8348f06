"""Soft prompt: a table of `prompt_num` vectors behind negative token ids (-k -> vector k-1)."""
import torch
from torch import nn

PREFIX = "soft_prompt."


def selects(name):
    return name.startswith(PREFIX)


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

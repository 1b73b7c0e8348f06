"""Prefix tuning (Li & Liang, 2021) through the `adapters` library: `prefix_length` trained key and
value vectors put before the sequence's own in every attention layer (the padding mask of the sequence
grows by as many always-visible positions; the library does that on the mask form each family is given).

What trains is the library's reparametrisation: an embedding of the prefix positions through a tanh MLP
(hidden -> prefix_bottleneck_size -> 2 x layers x hidden). The saved delta and the trained-parameter
counts are those tensors (the delta reloads with --delta_path and can train on); the prefix they compute,
prefix_length x 2 x layers x hidden values, is all an inference needs (`eject_prefix_tuning` in `adapters`).
"""
from dataclasses import dataclass

from src.checks import at_least, option
from src.delta import adapterhub
from src.errors import UserError

NAME = "prefix"


@dataclass(frozen=True)
class Options:
    prefix_length: int = option(30, "prefix: key and value vectors put before the sequence in every attention "
                                "layer.", allowed=at_least(1))
    prefix_bottleneck_size: int = option(512, "prefix: width of the MLP that computes the prefix while it "
                                         "trains.", allowed=at_least(1))

    def check(self, model_config) -> None:
        """The prefix is at most as long as the model's positions, and its MLP (hidden -> bottleneck ->
        2 x layers x hidden) holds at most as many weights as the model itself."""
        positions = getattr(model_config, "max_position_embeddings", None)
        if positions is not None and self.prefix_length > positions:
            raise UserError(f"--prefix_length must be at most {positions} (the positions of "
                            f"{model_config.name_or_path}), got {self.prefix_length}")
        hidden = model_config.hidden_size
        size = model_size(model_config)
        widest = size // (hidden + 2 * model_config.num_hidden_layers * hidden)
        if self.prefix_bottleneck_size > widest:
            raise UserError(f"--prefix_bottleneck_size must be at most {widest} (a wider MLP would hold more weights "
                            f"than the {size} of the model {model_config.name_or_path}), got "
                            f"{self.prefix_bottleneck_size}")


def model_size(model_config) -> int:
    """The parameters of the masked LM of `model_config` (built on the meta device: no memory, no weights)."""
    import torch
    from transformers import AutoModelForMaskedLM
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForMaskedLM.from_config(model_config).parameters())


def selects(name: str) -> bool:
    return f".prefix_tunings.{NAME}." in name


# The `adapters` method type of the PrefixTuningConfig below (src/families.py: the families that take it).
ADAPTERS_METHOD = "prefix_tuning"


def config(options: Options):
    from adapters import PrefixTuningConfig
    return PrefixTuningConfig(prefix_length=options.prefix_length, bottleneck_size=options.prefix_bottleneck_size)


def attach(model, options: Options) -> None:
    adapterhub.add(model, NAME, config(options))

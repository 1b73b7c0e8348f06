"""LoRA through the `adapters` library: low-rank updates of the attention query and value projections."""
from dataclasses import dataclass

from src.checks import at_least, between, option
from src.delta import adapterhub
from src.errors import UserError

NAME = "lora"
# LoRA's alpha in use is a few to a few hundred; far beyond it the update overflows float32 at once.
ALPHA_MAX = 4096


@dataclass(frozen=True)
class Options:
    lora_r: int = option(8, "lora: rank of the low-rank update.", allowed=at_least(1))
    lora_alpha: int = option(8, "lora: scaling numerator (the update is scaled by alpha / r).",
                             allowed=between(1, ALPHA_MAX, integer=True))

    def check(self, model_config) -> None:
        """The rank is at most the hidden size."""
        if self.lora_r > model_config.hidden_size:
            raise UserError(f"--lora_r must be at most {model_config.hidden_size} (the hidden size of "
                            f"{model_config.name_or_path}), got {self.lora_r}")


def selects(name: str) -> bool:
    return f".loras.{NAME}." in name


# The `adapters` method type of the LoRAConfig below (src/families.py: the families that take it).
ADAPTERS_METHOD = "lora"


def config(options: Options):
    from adapters import LoRAConfig
    return LoRAConfig(r=options.lora_r, alpha=options.lora_alpha)


def attach(model, options: Options) -> None:
    adapterhub.add(model, NAME, config(options))

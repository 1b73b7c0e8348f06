"""LoRA through the `adapters` library: low-rank updates of the attention query and value projections."""
from src.delta import adapterhub

NAME = "lora"


def selects(name: str) -> bool:
    return f".loras.{NAME}." in name


def attach(model, lora_r: int = 8, lora_alpha: int = 8) -> None:
    from adapters import LoRAConfig
    adapterhub.add(model, NAME, LoRAConfig(r=lora_r, alpha=lora_alpha))

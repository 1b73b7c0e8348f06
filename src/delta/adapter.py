"""Houlsby adapters through the `adapters` library (successor of adapter-transformers 1.1.1).

DoubleSeqBnConfig = 'houlsby': a bottleneck after the attention output and one after the FFN
output (swish, residual).
"""
from dataclasses import dataclass

from src.checks import at_least, option
from src.delta import adapterhub
from src.errors import UserError

NAME = "houlsby"


@dataclass(frozen=True)
class Options:
    adapter_reduction_factor: int = option(16, "adapter: bottleneck = hidden size / this.", allowed=at_least(1))

    def check(self, model_config) -> None:
        """The bottleneck keeps at least one unit."""
        if model_config.hidden_size // self.adapter_reduction_factor < 1:
            raise UserError(f"--adapter_reduction_factor must be at most {model_config.hidden_size} (the hidden size "
                            f"of {model_config.name_or_path}), got {self.adapter_reduction_factor}")


def selects(name: str) -> bool:
    return f".adapters.{NAME}." in name


# The `adapters` method type of the DoubleSeqBnConfig below (src/families.py: the families that take it).
ADAPTERS_METHOD = "bottleneck"


def config(options: Options):
    from adapters import DoubleSeqBnConfig
    return DoubleSeqBnConfig(reduction_factor=options.adapter_reduction_factor)


def attach(model, options: Options) -> None:
    adapterhub.add(model, NAME, config(options))

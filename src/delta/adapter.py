"""Houlsby adapters through the `adapters` library (successor of adapter-transformers 1.1.1).

DoubleSeqBnConfig = 'houlsby': a bottleneck after the attention output and one after the FFN
output (swish, residual).
"""
from src.delta import adapterhub

NAME = "houlsby"


def selects(name: str) -> bool:
    return f".adapters.{NAME}." in name


def attach(model, adapter_reduction_factor: int = 16) -> None:
    from adapters import DoubleSeqBnConfig
    adapterhub.add(model, NAME, DoubleSeqBnConfig(reduction_factor=adapter_reduction_factor))

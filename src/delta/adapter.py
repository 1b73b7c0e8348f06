"""Houlsby adapters through the `adapters` library (successor of adapter-transformers 1.1.1).

DoubleSeqBnConfig = 'houlsby': a bottleneck after the attention output and one after the FFN output.
"""
import adapters
from adapters import DoubleSeqBnConfig

NAME = "houlsby"


def selects(name):
    return f".adapters.{NAME}." in name


def attach(mlm, reduction_factor=16):
    """Add the adapters to a `...ForMaskedLM` model in place and keep them active in forward."""
    adapters.init(mlm)
    mlm.add_adapter(NAME, config=DoubleSeqBnConfig(reduction_factor=reduction_factor))
    mlm.set_active_adapters(NAME)
    return mlm

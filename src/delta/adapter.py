"""Houlsby adapters through the `adapters` library (successor of adapter-transformers 1.1.1).

DoubleSeqBnConfig = 'houlsby': a bottleneck after the attention output and one after the FFN output.
"""
import logging

NAME = "houlsby"


def selects(name):
    return f".adapters.{NAME}." in name


def attach(mlm, reduction_factor=16):
    """Add the adapters to a `...ForMaskedLM` model in place and keep them active in forward."""
    import adapters  # here, not above: importing it takes ~3 s, and runs without adapters never need it
    from adapters import DoubleSeqBnConfig, model_mixin

    # Setting up runs a forward before the adapter is active; the warning about that is noise.
    quiet = logging.getLogger(model_mixin.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        adapters.init(mlm)
        mlm.add_adapter(NAME, config=DoubleSeqBnConfig(reduction_factor=reduction_factor))
        mlm.set_active_adapters(NAME)
    finally:
        quiet.setLevel(level)
    return mlm

"""BitFit: every parameter whose name contains `bias` (adapter biases too, when adapters exist)."""


def selects(name):
    return "bias" in name

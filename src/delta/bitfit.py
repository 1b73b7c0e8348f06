"""BitFit: every parameter whose name contains `bias` (adapter biases too, when adapters exist)."""


def selects(name: str) -> bool:
    return "bias" in name

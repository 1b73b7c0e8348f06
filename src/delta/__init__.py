"""Delta methods: a registry name -> which parameters the method trains.

`--training_params` values are stage specs; each is a comma list of method names whose union is
trained in that stage. Adding a method = one module with a `selects(name)` rule + one line below.
"""
from dataclasses import dataclass
from typing import Callable

from src.delta import adapter, bitfit, prompt
from src.errors import UserError


@dataclass(frozen=True)
class DeltaMethod:
    name: str
    selects: Callable[[str], bool]   # parameter name -> trained by this method?


METHODS = {m.name: m for m in [
    DeltaMethod("prompt", prompt.selects),
    DeltaMethod("bias", bitfit.selects),
    DeltaMethod("adapter", adapter.selects),
    DeltaMethod("all", lambda name: True),
]}


def parse_stages(training_params, *, use_adapter, has_prompt):
    """['prompt,bias', 'adapter'] -> [['prompt', 'bias'], ['adapter']], checked against the model setup."""
    if not training_params:
        raise UserError("--training_params is empty")
    stages = []
    for spec in training_params:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in METHODS]
        if unknown or not names:
            raise UserError(f"unknown delta method {unknown[0] if unknown else spec!r} in --training_params "
                            f"(known: {', '.join(METHODS)})")
        if "adapter" in names and not use_adapter:
            raise UserError("--training_params lists 'adapter' but --use_adapter is not set")
        if "prompt" in names and not has_prompt:
            raise UserError("--training_params lists 'prompt' but the template has no *prompt* part")
        stages.append(names)
    return stages


# A freshly initialised classification head (finetune mode) is always trained.
NEW_HEAD_PREFIX = "classifier."


def rules_for(methods):
    return [METHODS[m].selects for m in methods] + [lambda name: name.startswith(NEW_HEAD_PREFIX)]


def set_trainable(model, methods):
    """Freeze every parameter, then unfreeze the union of `methods`; returns the trainable names."""
    rules = rules_for(methods)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(rule(name) for rule in rules))
        if param.requires_grad:
            trainable.append(name)
    return trainable


def count_parameters(model, methods):
    """(trainable, total) unique parameter counts for the union of `methods` (tied weights once)."""
    rules = rules_for(methods)
    trainable = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if any(rule(name) for rule in rules):
            trainable += param.numel()
    return trainable, total

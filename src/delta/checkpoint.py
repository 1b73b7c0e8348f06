"""Delta checkpoints: only the trained tensors, as safetensors, plus the run's arguments."""
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from src.delta import METHODS, rules_for, split_combination
from src.errors import UserError

WEIGHTS = "delta.safetensors"
CONFIG = "delta_config.json"


def save_delta(model, methods, output_dir, arguments) -> Callable[[bool], None]:
    """Write the delta under temporary names; returns `commit(keep)`, which moves it into place
    (or, with keep=False, removes it)."""
    rules = rules_for(methods)
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
             if any(rule(name) for rule in rules)}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    save_file(state, str(output_dir / (WEIGHTS + suffix)))
    (output_dir / (CONFIG + suffix)).write_text(json.dumps({**arguments, "delta_methods": list(methods)},
                                                           indent=1, default=str))

    def commit(keep=True):
        for name in (WEIGHTS, CONFIG):
            if keep:
                os.replace(output_dir / (name + suffix), output_dir / name)
            else:
                os.remove(output_dir / (name + suffix))
    return commit


def saved_methods(path) -> set:
    """The delta methods whose modules a saved delta holds (from its delta_config.json), so that a
    model gets those modules before the weights are loaded; empty when the config is unreadable."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        arguments = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        methods = {name for stage in str(arguments.get("training_params", "")).split()
                   for name in split_combination(stage)}
        methods |= set(arguments.get("delta_methods", [])) & set(METHODS)
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return set()  # load_delta then says what does not fit
    return methods | ({"adapter"} if arguments.get("use_adapter") else set())


def load_delta(model, path):
    """Copy saved delta tensors into a model built with the same setup (adapters, prompt).

    Every tensor must name a parameter of the model with its shape, a floating dtype and finite
    values; when `delta_config.json` lists the saved methods, every parameter they select must be there.
    """
    file = Path(path) / WEIGHTS if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"no delta weights at {file}")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"delta weights {file} are unreadable (corrupt or partial file): {error}") from None
    parameters = dict(model.named_parameters())
    for name, tensor in state.items():
        if name not in parameters:
            raise UserError(f"delta weights {file} do not fit this model ({name} is not one of its parameters); "
                            "use the same --template/--prompt_num as the saved run")
        if tensor.shape != parameters[name].shape:
            raise UserError(f"delta weights {file}: {name} has shape {list(tensor.shape)}, the model's is "
                            f"{list(parameters[name].shape)}")
        if not tensor.is_floating_point():
            raise UserError(f"delta weights {file}: {name} has dtype {tensor.dtype}, not a floating type")
        if not torch.isfinite(tensor).all():
            raise UserError(f"delta weights {file}: {name} holds NaN or infinite values")
    missing = [name for name in _expected(model, file.parent / CONFIG) if name not in state]
    if missing:
        raise UserError(f"delta weights {file} are incomplete: {len(missing)} tensors missing (e.g. {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)


def _expected(model, config_file):
    """Names of the parameters the saved run trained, from its delta_config.json (none if absent)."""
    if not config_file.is_file():
        return []
    try:
        methods = json.loads(config_file.read_text(encoding="utf-8")).get("delta_methods", [])
        rules = rules_for(methods)
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError) as error:
        raise UserError(f"{config_file} is unreadable: {error}") from None
    return [name for name, _ in model.named_parameters() if any(rule(name) for rule in rules)]

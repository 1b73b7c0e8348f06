"""Delta checkpoints: only the trained tensors, as safetensors, plus the run's arguments."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from src.delta import rules_for, split_combination
from src.errors import UserError

WEIGHTS = "delta.safetensors"
CONFIG = "delta_config.json"


def save_delta(model, methods, output_dir, arguments):
    rules = rules_for(methods)
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
             if any(rule(name) for rule in rules)}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(output_dir / WEIGHTS))
    (output_dir / CONFIG).write_text(json.dumps(arguments, indent=1, default=str))


def saved_methods(path) -> set:
    """The delta methods whose modules a saved delta holds (from its delta_config.json), so that a
    model gets those modules before the weights are loaded; empty when the config is unreadable."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        arguments = json.loads((folder / CONFIG).read_text())
        methods = {name for stage in str(arguments.get("training_params", "")).split()
                   for name in split_combination(stage)}
    except (OSError, ValueError, AttributeError):
        return set()
    return methods | ({"adapter"} if arguments.get("use_adapter") else set())


def load_delta(model, path):
    """Copy saved delta tensors into a model built with the same setup (adapters, prompt)."""
    file = Path(path) / WEIGHTS if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"no delta weights at {file}")
    state = load_file(str(file))
    parameters = dict(model.named_parameters())
    missing = [name for name in state if name not in parameters]
    if missing:
        raise UserError(f"delta weights {file} do not fit this model (e.g. {missing[0]}); "
                        "use the same --template/--prompt_num as the saved run")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)

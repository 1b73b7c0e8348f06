"""Delta checkpoints: only the trained tensors, as safetensors, plus the run's arguments."""
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from src.delta import METHODS, attached_methods, trained_by
from src.errors import UserError
from src.files import read_regular

WEIGHTS = "delta.safetensors"
CONFIG = "delta_config.json"


def save_delta(model, methods, output_dir, arguments) -> Callable[[bool], None]:
    """Write the delta under temporary names; returns `commit(keep)`, which moves it into place
    (or, with keep=False, removes it)."""
    trained = trained_by(methods)
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if trained(name)}
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


def _files(path):
    """(weights file, config file) of a --delta_path: a folder holding both, or the weights file itself."""
    file = Path(path) / WEIGHTS if Path(path).is_dir() else Path(path)
    return file, file.parent / CONFIG


def read_config(path) -> dict:
    """The saved run's arguments (its delta_config.json), whose `delta_methods` say which tensors the
    delta may hold. A delta without it is refused: nothing would tell its tensors from the frozen model's."""
    file, config = _files(path)
    if not file.is_file():
        raise UserError(f"no delta weights at {file}")
    if not config.exists():
        raise UserError(f"{config} is missing: it names the methods whose tensors the delta {file} may hold "
                        f"(save_delta writes it beside {WEIGHTS})")
    try:
        arguments = json.loads(read_regular(config, "delta config"))
    except (ValueError, RecursionError) as error:
        raise UserError(f"{config} is unreadable: {error}") from None
    methods = arguments.get("delta_methods") if isinstance(arguments, dict) else None
    if not (isinstance(methods, list) and methods and all(isinstance(m, str) and m in METHODS for m in methods)):
        raise UserError(f"{config}: delta_methods must list the saved delta methods (of {', '.join(METHODS)}), "
                        f"got {methods!r}")
    return arguments


def saved_methods(path) -> set:
    """The delta methods whose modules a saved delta holds (from its delta_config.json), so that a
    model gets those modules before the weights are loaded."""
    arguments = read_config(path)
    return set(arguments["delta_methods"]) | set(attached_methods(arguments))


def check_delta(path) -> list:
    """The saved delta methods of a --delta_path, after the checks that need no model: its config (see
    `read_config`), a readable weights file, and only tensors those methods train (a delta never
    overwrites the frozen model). Cheap: the weights file's header only."""
    file, _ = _files(path)
    methods = read_config(path)["delta_methods"]
    try:
        with safe_open(str(file), "pt") as weights:
            names = list(weights.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"delta weights {file} are unreadable (corrupt or partial file): {error}") from None
    trained = trained_by(methods)
    for name in names:
        if not trained(name):
            raise UserError(f"delta weights {file}: {name} is not trained by its methods ({', '.join(methods)}, "
                            f"from {CONFIG}); it would overwrite the frozen model")
    return methods


def load_delta(model, path):
    """Copy saved delta tensors into a model built with the same setup (adapters, prompt).

    After `check_delta`: every tensor must name a parameter of the model with its shape, a floating dtype
    and finite values; every parameter the saved methods train must be there.
    """
    file, _ = _files(path)
    methods = check_delta(path)
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
                            f"{list(parameters[name].shape)}; use the saved run's method options ({CONFIG} holds them)")
        if not tensor.is_floating_point():
            raise UserError(f"delta weights {file}: {name} has dtype {tensor.dtype}, not a floating type")
        if not torch.isfinite(tensor).all():
            raise UserError(f"delta weights {file}: {name} holds NaN or infinite values")
    trained = trained_by(methods)
    missing = [name for name in parameters if trained(name) and name not in state]
    if missing:
        raise UserError(f"delta weights {file} are incomplete: {len(missing)} tensors missing (e.g. {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)

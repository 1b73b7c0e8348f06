"""Delta checkpoints: every tensor a run's result depends on that the pretrained checkpoint does not
give, as safetensors, plus the run's arguments (delta_config.json).

A delta holds the tensors its methods trained, those of the modules its run attached without training
them (drawn from --seed: an attached prompt table, frozen adapters) and the model's tensors that its
checkpoint lacks (transformers initialises them from --seed: e.g. the MLM head of a sentence encoder),
so that reloading it reproduces the run whatever the reload's --seed. Its config names each kind:
`delta_methods` (trained), `delta_modules` (attached), `initialised` (tensor names). A delta of an
older version (no `initialised`) held only the trained tensors: it reproduces its run only with the
run's --seed, so another one is refused.
"""
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Set, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from src.delta import METHODS, attached_methods, check_template, trained_by
from src.errors import UserError
from src.files import read_regular

WEIGHTS = "delta.safetensors"
CONFIG = "delta_config.json"


def holds(modules: Iterable[str], initialised: Iterable[str]) -> Callable[[str], bool]:
    """parameter name -> is it part of a delta whose model had the modules of `modules` and the freshly
    initialised tensors `initialised`?"""
    of_modules, fresh = trained_by(modules), set(initialised)
    return lambda name: name in fresh or of_modules(name)


def save_delta(model, methods, modules, output_dir, arguments) -> Callable[[bool], None]:
    """Write the delta (the tensors `methods` train, those of the modules of `modules`, and the model's
    `initialised` ones) under temporary names; returns `commit(keep)`, which moves it into place (or, with
    keep=False, removes it). Both files get the same permissions (the process's umask)."""
    initialised = list(getattr(model, "initialised", ()))
    kept = holds([*methods, *modules], initialised)
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if kept(name)}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    config = {**arguments, "delta_methods": list(methods), "delta_modules": list(modules), "initialised": initialised}
    (output_dir / (CONFIG + suffix)).write_text(json.dumps(config, indent=1, default=str))
    save_file(state, str(output_dir / (WEIGHTS + suffix)))
    shutil.copymode(output_dir / (CONFIG + suffix), output_dir / (WEIGHTS + suffix))  # safetensors writes 0600

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


def _method_list(config: Path, arguments: dict, key: str, required: bool) -> Optional[List[str]]:
    """The method names under `key` of a delta config (None when absent and not `required`)."""
    names = arguments.get(key)
    if names is None and not required:
        return None
    if not (isinstance(names, list) and (names or not required) and all(isinstance(m, str) and m in METHODS
                                                                        for m in names)):
        raise UserError(f"{config}: {key} must list the saved delta methods (of {', '.join(METHODS)}), got {names!r}")
    return names


@dataclass(frozen=True)
class SavedDelta:
    """A --delta_path, read and checked once per run without the model (`read_delta`): its weights file,
    the arguments of the run that saved it (`config`) and the names of its tensors."""
    file: Path
    config_file: Path
    config: dict
    names: Tuple[str, ...]

    @property
    def methods(self) -> List[str]:
        """The methods its run trained."""
        return self.config["delta_methods"]

    @property
    def modules(self) -> List[str]:
        """The methods whose modules its model had: a model gets them before the delta loads. An older
        version's config names them through the trained methods and --attach (or use_adapter)."""
        if "delta_modules" in self.config:
            return [name for name in METHODS if name in {*self.methods, *self.config["delta_modules"]}]
        return [name for name in METHODS if name in {*self.methods, *attached_methods(self.config)}]

    @property
    def initialised(self) -> Optional[List[str]]:
        """The model's tensors that its checkpoint lacked, saved with it (None: an older version's delta,
        which saved only the trained tensors)."""
        return self.config.get("initialised")

    @property
    def holds(self) -> Callable[[str], bool]:
        """parameter name -> may this delta hold it (and must it, when the model has it)?"""
        if self.initialised is None:
            return trained_by(self.methods)
        return holds(self.modules, self.initialised)

    def check_run(self, seed: int, template_parts: Iterable[str]) -> None:
        """A UserError when the run that loads it would not reproduce its run: an older delta under another
        --seed (its untrained tensors came from its run's seed), or a template without the part that its
        modules need (a prompt table that no input would use)."""
        check_template(self.modules, template_parts, f"--delta_path {self.file.parent} (its {CONFIG})")
        saved_seed = self.config.get("seed")
        if self.initialised is None and saved_seed != seed:
            raise UserError(f"--delta_path {self.file.parent} was saved by an older version with only its trained "
                            f"tensors; the model's other new tensors came from its run's --seed {saved_seed}: "
                            f"reload it with --seed {saved_seed} (this run's is {seed}), or train it again")

    def take_options(self, model_args: Any, given: Set[str]) -> None:
        """Set the options of its modules' methods on `model_args` (run.py's) to the saved run's: its tensors
        have their shapes and its results their values. An option this run gives itself with another value
        is a UserError naming both."""
        for name in self.modules:
            options = METHODS[name].options
            for option in dataclasses.fields(options) if options else ():
                saved = self.config.get(option.name, option.default)
                allowed = option.metadata.get("allowed")
                if allowed is not None and not allowed.test(saved):
                    raise UserError(f"{self.config_file}: {option.name} must be {allowed.text}, got {saved!r}")
                value = getattr(model_args, option.name)
                if value != saved and option.name in given:
                    raise UserError(f"--{option.name} {value} differs from the saved delta's {saved} "
                                    f"({self.config_file}), with which its {name} tensors were made; leave "
                                    f"--{option.name} out to use the delta's")
                setattr(model_args, option.name, saved)


def read_delta(path) -> SavedDelta:
    """A --delta_path read once per run, after the checks that need no model: its config (the saved run's
    arguments, whose `delta_methods` say which tensors the delta may hold; a delta without one is refused:
    nothing would tell its tensors from the frozen model's), a readable weights file, and only tensors that
    it may hold (a delta never overwrites the frozen model). Cheap: the weights file's header only."""
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
    if not isinstance(arguments, dict):
        arguments = {}
    _method_list(config, arguments, "delta_methods", required=True)
    _method_list(config, arguments, "delta_modules", required=False)
    initialised = arguments.get("initialised")
    if initialised is not None and not (isinstance(initialised, list) and all(isinstance(n, str) for n in initialised)):
        raise UserError(f"{config}: initialised must list tensor names, got {initialised!r}")
    try:
        with safe_open(str(file), "pt") as weights:
            names = tuple(weights.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"delta weights {file} are unreadable (corrupt or partial file): {error}") from None
    delta = SavedDelta(file, config, arguments, names)
    for name in names:
        if not delta.holds(name):
            raise UserError(f"delta weights {file}: {name} is not trained by its methods ({', '.join(delta.methods)}, "
                            f"from {CONFIG}); it would overwrite the frozen model")
    return delta


def load_delta(model, delta: SavedDelta) -> None:
    """Copy a delta's tensors (see `read_delta`) into a model built with the modules of its methods.

    Every tensor must name a parameter of the model with its shape, a floating dtype and finite values;
    every parameter it must hold is there, the model's freshly initialised ones (`model.initialised`)
    included."""
    file = delta.file
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"delta weights {file} are unreadable (corrupt or partial file): {error}") from None
    parameters = dict(model.named_parameters())
    for name, tensor in state.items():
        if name not in parameters:
            origin = " ".join(f"--{key} {delta.config[key]}" for key in ("model_name_or_path", "few_shot_type")
                              if key in delta.config)
            raise UserError(f"delta weights {file} do not fit this model ({name} is not one of its parameters)"
                            + (f": it was saved by a run with {origin}; load it with the same" if origin else ""))
        if tensor.shape != parameters[name].shape:
            raise UserError(f"delta weights {file}: {name} has shape {list(tensor.shape)}, the model's is "
                            f"{list(parameters[name].shape)}; use the saved run's method options ({CONFIG} holds them)")
        if not tensor.is_floating_point():
            raise UserError(f"delta weights {file}: {name} has dtype {tensor.dtype}, not a floating type")
        if not torch.isfinite(tensor).all():
            raise UserError(f"delta weights {file}: {name} holds NaN or infinite values")
    missing = [name for name in parameters if delta.holds(name) and name not in state]
    if missing:
        raise UserError(f"delta weights {file} are incomplete: {len(missing)} tensors missing (e.g. {missing[0]})")
    fresh = set(getattr(model, "initialised", ()))
    if delta.initialised is not None:  # the model's new tensors must be the delta's: neither more nor fewer
        differ = sorted(({name for name in fresh if name not in state}
                         | {name for name in delta.initialised if name in parameters and name not in fresh}))
        if differ:
            raise UserError(f"delta weights {file} were saved over another checkpoint: {len(differ)} tensors (e.g. "
                            f"{differ[0]}) are new in one model and pretrained in the other; use its run's "
                            f"--model_name_or_path ({delta.config.get('model_name_or_path')})")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)

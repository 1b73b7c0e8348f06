"""The registry of delta methods: everything the project knows about a method, in one entry.

`--training_params` values are stage specs; each is a comma list of method names whose union is
trained in that stage (`Stages`). A method entry says what it adds to a model (`attach`), which
parameters it trains (`selects`), its options (a dataclass: run.py's flags, their defaults, help and
allowed values, and its checks against a model's config), its labels in tables and figures, and its
few-shot learning-rate grid. run.py's arguments, tools, tables, plots and sweep scripts iterate over
`METHODS`; adding a method is one module plus one entry below. The registry checks its entries as it is
built (`registry`): names, labels and titles each once, the `adapters` method types known.
"""
import dataclasses
import itertools
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from src.delta import adapter, adapterhub, bitfit, lora, prefix, prompt
from src.errors import UserError

# SPEC §7: few-shot learning rates of a combination of several methods (and of the adapter alone).
COMBINATION_LR_GRID = (1e-3, 3e-4, 1e-4, 3e-5)
# SPEC §7: every method and combination in multi-stage and in full-data sweeps.
SWEEP_LR_GRIDS = {"mulstage": (1e-2, 3e-3, 1e-3, 3e-4), "fulldata": (1e-2, 1e-3, 1e-4, 1e-5)}


@dataclass(frozen=True)
class DeltaMethod:
    name: str                                  # as written in --training_params
    label: str                                 # short label in figures (PT, BF, AP, LA, PF)
    title: str                                 # word in table columns (Prompt, BitFit, ...)
    selects: Callable[[str], bool]             # parameter name -> trained by this method?
    attach: Optional[Callable] = None          # attach(model, options): adds the method's modules
    options: Optional[type] = None             # its options: a dataclass of run.py fields (src/checks.py: option),
                                               # with check(model_config) where they depend on the model
    lr_grid: Tuple[float, ...] = COMBINATION_LR_GRID   # few-shot grid when trained alone (SPEC §7)
    in_paper: bool = True                      # one of the paper's combinable methods (default sweeps)
    trains_base: bool = False                  # trains the pretrained weights themselves (`all`)
    template_part: Optional[str] = None        # a template part the method needs (prompt: *prompt*)
    adapters_method: Optional[str] = None      # the `adapters` method type it attaches (its module's
                                               # ADAPTERS_METHOD, beside the config; src/families.py)

    @property
    def combinable(self) -> bool:
        """May be combined with other methods: not when it trains the whole base model."""
        return not self.trains_base

    def options_of(self, arguments: Any) -> Any:
        """This method's options read off `arguments` (run.py's, or any object; a missing one is its default)."""
        if self.options is None:
            return None
        return self.options(**{f.name: getattr(arguments, f.name, f.default) for f in dataclasses.fields(self.options)})

    def check(self, arguments: Any, model_config: Any) -> None:
        """A UserError when this method's options (read off `arguments`) do not fit the model's config."""
        options = self.options_of(arguments)
        if hasattr(options, "check"):
            options.check(model_config)


def registry(methods: Iterable[DeltaMethod]) -> Dict[str, DeltaMethod]:
    """name -> method, in the given order; a ValueError when two methods share a name, a label or a title, or a
    method's `adapters` method type is not one of the library's (adapterhub.METHOD_TYPES)."""
    methods = list(methods)
    for attribute in ("name", "label", "title"):
        values = [getattr(m, attribute) for m in methods]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"delta methods with the same {attribute}: {', '.join(repeated)}")
    unknown = [m.name for m in methods if m.adapters_method is not None
               and m.adapters_method not in adapterhub.METHOD_TYPES]
    if unknown:
        raise ValueError(f"delta methods of an unknown adapters method type: {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(adapterhub.METHOD_TYPES))})")
    return {m.name: m for m in methods}


METHODS: Dict[str, DeltaMethod] = registry([
    DeltaMethod("prompt", "PT", "Prompt", prompt.selects, prompt.attach, prompt.Options,
                lr_grid=(1e-2, 3e-3, 1e-3, 3e-4), template_part="prompt"),
    DeltaMethod("bias", "BF", "BitFit", bitfit.selects, lr_grid=(3e-3, 1e-3, 3e-4, 1e-4)),
    DeltaMethod("adapter", "AP", "Adapter", adapter.selects, adapter.attach, adapter.Options,
                adapters_method=adapter.ADAPTERS_METHOD),
    DeltaMethod("lora", "LA", "LoRA", lora.selects, lora.attach, lora.Options, in_paper=False,
                adapters_method=lora.ADAPTERS_METHOD),
    DeltaMethod("prefix", "PF", "Prefix", prefix.selects, prefix.attach, prefix.Options, in_paper=False,
                adapters_method=prefix.ADAPTERS_METHOD),
    DeltaMethod("all", "FT", "Fine-tuning", lambda name: True, in_paper=False, trains_base=True),
])


def split_combination(spec: str, option: str = "--training_params") -> List[str]:
    """'bias, prompt' -> ['prompt', 'bias']: known names, each once, in registry order (errors name `option`).
    An empty name ('prompt,,bias') or a repeated one ('bias,bias') is an error: the spelling of a
    combination is part of a run's identity."""
    names = [n.strip() for n in spec.split(",")]
    if "" in names:
        raise UserError(f"{option} {spec!r}: an empty method name (known: {', '.join(METHODS)})")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise UserError(f"unknown delta method {unknown[0]!r} in {option} (known: {', '.join(METHODS)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{option} {spec!r}: {', '.join(repeated)} listed twice")
    if len(names) > 1 and not all(METHODS[n].combinable for n in names):
        raise UserError(f"{option} {spec!r}: {', '.join(n for n in names if not METHODS[n].combinable)} "
                        "cannot be combined with other methods")
    return sorted(set(names), key=list(METHODS).index)


def combination_key(names: Iterable[str]) -> str:
    """The canonical spelling of a combination: registry order, comma-joined."""
    return ",".join(split_combination(",".join(names)))


@dataclass(frozen=True)
class Stages:
    """What each stage trains, in order (`--training_params prompt,bias adapter`: two stages), each
    stage's names in registry order. `str()` is its one spelling, in records, stage results and delta
    configs alike: 'prompt,bias adapter'."""
    stages: Tuple[Tuple[str, ...], ...]

    @classmethod
    def parse(cls, value: Union[str, Sequence[str]]) -> "Stages":
        """From the command line's values (['bias,prompt', 'adapter']) or a record's string ('prompt,bias adapter')."""
        specs = value.split() if isinstance(value, str) else list(value)
        if not specs:
            raise UserError("--training_params is empty")
        return cls(tuple(tuple(split_combination(spec)) for spec in specs))

    def __iter__(self):
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def specs(self) -> List[str]:
        """Each stage's spelling: ['prompt,bias', 'adapter']."""
        return [",".join(stage) for stage in self.stages]

    def __str__(self) -> str:
        return " ".join(self.specs)

    @property
    def methods(self) -> List[str]:
        """Every method some stage trains, in registry order."""
        return [name for name in METHODS if any(name in stage for stage in self.stages)]

    def check_template(self, template_parts: Iterable[str]) -> None:
        """A UserError when a method's `template_part` is not among the template's kinds of parts."""
        check_template(self.methods, template_parts, "--training_params")


def attachable(spec: str, option: str = "--attach") -> List[str]:
    """The methods of a comma list that add modules to a model (checked: known, each once, with modules)."""
    names = split_combination(spec, option)
    without = [name for name in names if METHODS[name].attach is None]
    if without:
        raise UserError(f"{option} {spec!r}: {', '.join(without)} adds no modules to a model (methods with modules: "
                        f"{', '.join(m.name for m in METHODS.values() if m.attach is not None)})")
    return names


def attached_methods(arguments: Any) -> List[str]:
    """The methods --attach names (checked), with the adapter of the old --use_adapter, in registry order.
    `arguments`: run.py's ModelArguments, or a record or delta config (a dict) of this or an older version."""
    get = arguments.get if isinstance(arguments, dict) else partial(getattr, arguments)
    names = attachable(get("attach")) if get("attach") else []
    if get("use_adapter") and "adapter" not in names:
        names = [name for name in METHODS if name in {*names, "adapter"}]
    return names


def check_template(names: Iterable[str], template_parts: Iterable[str], option: str) -> None:
    """A UserError when a method of `names` (which `option` lists) needs a template part (its `template_part`)
    that is not among the template's kinds of parts: its modules would never be used."""
    parts = set(template_parts)
    for name in names:
        part = METHODS[name].template_part
        if part and part not in parts:
            raise UserError(f"{option} lists {name!r} but the template has no *{part}* part")


def methods_for_template(template_parts: Iterable[str]) -> List[str]:
    """The methods whose modules a template's parts need (a *prompt* part needs the prompt table)."""
    parts = set(template_parts)
    return [m.name for m in METHODS.values() if m.template_part in parts]


def template_parts_needed(names: Iterable[str]) -> List[str]:
    """The template parts that the methods `names` need (the sweeps' PROMPT=prompt)."""
    return sorted({METHODS[n].template_part for n in names if METHODS[n].template_part})


def attach_methods(model, names: Iterable[str], arguments: Any) -> None:
    """Attach each named method's modules to `model`, its options read off `arguments`."""
    for name in sorted(set(names), key=list(METHODS).index):
        method = METHODS[name]
        if method.attach is not None:
            method.attach(model, method.options_of(arguments))


def paper_combinations(methods: Optional[Sequence[str]] = None) -> List[str]:
    """Every combination of the combinable methods (default: the paper's), in the paper's column order
    (Adapter, BitFit, BitFit+Adapter, Prompt, ...: binary counting, the first method the highest bit)."""
    names = list(methods) if methods is not None else [m.name for m in METHODS.values() if m.in_paper]
    combos = [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
    return [combination_key(c) for c in sorted(combos, key=combination_rank)]


def combination_rank(names: Iterable[str]) -> int:
    """Column order of a combination: binary counting over the registry, earlier methods higher bits."""
    order = list(METHODS)
    return sum(1 << (len(order) - order.index(name)) for name in names)


def combination_title(spec: str) -> str:
    """'prompt,bias' -> 'Prompt+BitFit' (table column)."""
    return "+".join(METHODS[n].title for n in split_combination(spec))


def combination_label(spec: str) -> str:
    """'prompt,bias' -> 'PT+BF' (figure legend)."""
    return "+".join(METHODS[n].label for n in split_combination(spec))


def lr_grid(stages: Sequence[str], sweep: str = "fewshot") -> Tuple[float, ...]:
    """The learning rates of one sweep column (SPEC §7): a multi-stage order and every column of a
    multi-stage or full-data sweep use the sweep's grid; a few-shot column its method's or COMBINATION_LR_GRID."""
    if sweep != "fewshot" and sweep not in SWEEP_LR_GRIDS:
        raise UserError(f"unknown sweep {sweep!r} (fewshot, {', '.join(SWEEP_LR_GRIDS)})")
    if len(stages) > 1:
        return SWEEP_LR_GRIDS["mulstage"]
    if sweep in SWEEP_LR_GRIDS:
        return SWEEP_LR_GRIDS[sweep]
    names = split_combination(stages[0])
    return METHODS[names[0]].lr_grid if len(names) == 1 else COMBINATION_LR_GRID


# A freshly initialised classification head (finetune mode) is always trained.
NEW_HEAD_PREFIX = "classifier."


def trained_by(methods: Iterable[str]) -> Callable[[str], bool]:
    """parameter name -> is it trained by one of `methods` (or is it the fresh classification head)?"""
    selects = [METHODS[m].selects for m in methods]
    return lambda name: name.startswith(NEW_HEAD_PREFIX) or any(rule(name) for rule in selects)


def set_trainable(model, methods: Iterable[str]) -> List[str]:
    """Freeze every parameter, then unfreeze the union of `methods`; returns the trainable names."""
    trained = trained_by(methods)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(trained(name))
        if param.requires_grad:
            trainable.append(name)
    return trainable


def count_parameters(model, methods: Iterable[str]) -> Tuple[int, int]:
    """(trainable, total) unique parameter counts for the union of `methods` (tied weights once)."""
    trained = trained_by(methods)
    trainable = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if trained(name):
            trainable += param.numel()
    return trainable, total

"""The registry of delta methods: everything the project knows about a method, in one entry.

`--training_params` values are stage specs; each is a comma list of method names whose union is
trained in that stage. A method entry says what it adds to a model (`attach`), which parameters it
trains (`selects`), which run.py options it reads, its labels in tables and figures, and its
few-shot learning-rate grid. Tools, tables, plots and sweep scripts iterate over `METHODS`;
adding a method is one module plus one entry below.
"""
import itertools
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from src.delta import adapter, bitfit, lora, prompt
from src.errors import UserError

# SPEC §7: few-shot learning rates of a combination of several methods (and of the adapter alone).
COMBINATION_LR_GRID = (1e-3, 3e-4, 1e-4, 3e-5)
# SPEC §7: every method and combination in multi-stage and in full-data sweeps.
SWEEP_LR_GRIDS = {"mulstage": (1e-2, 3e-3, 1e-3, 3e-4), "fulldata": (1e-2, 1e-3, 1e-4, 1e-5)}


@dataclass(frozen=True)
class DeltaMethod:
    name: str                                  # as written in --training_params
    label: str                                 # short label in figures (PT, BF, AP, LA)
    title: str                                 # word in table columns (Prompt, BitFit, ...)
    selects: Callable[[str], bool]             # parameter name -> trained by this method?
    attach: Optional[Callable] = None          # attach(model, **options): adds the method's modules
    options: Tuple[str, ...] = ()              # run.py arguments passed to attach
    lr_grid: Tuple[float, ...] = COMBINATION_LR_GRID   # few-shot grid when trained alone (SPEC §7)
    in_paper: bool = True                      # one of the paper's combinable methods (default sweeps)
    trains_base: bool = False                  # trains the pretrained weights themselves (`all`)
    template_part: Optional[str] = None        # a template part the method needs (prompt: *prompt*)
    adapters_method: Optional[str] = None      # the `adapters` method type it attaches (src/families.py)

    @property
    def combinable(self) -> bool:
        """May be combined with other methods: not when it trains the whole base model."""
        return not self.trains_base


METHODS: Dict[str, DeltaMethod] = {m.name: m for m in [
    DeltaMethod("prompt", "PT", "Prompt", prompt.selects, prompt.attach, ("prompt_num",),
                lr_grid=(1e-2, 3e-3, 1e-3, 3e-4), template_part="prompt"),
    DeltaMethod("bias", "BF", "BitFit", bitfit.selects, lr_grid=(3e-3, 1e-3, 3e-4, 1e-4)),
    DeltaMethod("adapter", "AP", "Adapter", adapter.selects, adapter.attach, ("adapter_reduction_factor",),
                adapters_method="bottleneck"),
    DeltaMethod("lora", "LA", "LoRA", lora.selects, lora.attach, ("lora_r", "lora_alpha"), in_paper=False,
                adapters_method="lora"),
    DeltaMethod("all", "FT", "Fine-tuning", lambda name: True, in_paper=False, trains_base=True),
]}


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


def parse_stages(training_params: Sequence[str], *, template_parts: Iterable[str]) -> List[List[str]]:
    """['prompt,bias', 'adapter'] -> [['prompt', 'bias'], ['adapter']], checked against the kinds of
    parts the template has (a method's `template_part` must be among them)."""
    if not training_params:
        raise UserError("--training_params is empty")
    stages = [split_combination(spec) for spec in training_params]
    parts = set(template_parts)
    for name in {name for stage in stages for name in stage}:
        part = METHODS[name].template_part
        if part and part not in parts:
            raise UserError(f"--training_params lists {name!r} but the template has no *{part}* part")
    return stages


def methods_for_template(template_parts: Iterable[str]) -> List[str]:
    """The methods whose modules a template's parts need (a *prompt* part needs the prompt table)."""
    parts = set(template_parts)
    return [m.name for m in METHODS.values() if m.template_part in parts]


def template_parts_needed(names: Iterable[str]) -> List[str]:
    """The template parts that the methods `names` need (the sweeps' PROMPT=prompt)."""
    return sorted({METHODS[n].template_part for n in names if METHODS[n].template_part})


def attach_methods(model, names: Iterable[str], options) -> None:
    """Attach each named method's modules to `model`, reading the method's options off `options`."""
    for name in sorted(set(names), key=list(METHODS).index):
        method = METHODS[name]
        if method.attach is not None:
            method.attach(model, **{option: getattr(options, option) for option in method.options})


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


def rules_for(methods: Iterable[str]) -> list:
    return [METHODS[m].selects for m in methods] + [lambda name: name.startswith(NEW_HEAD_PREFIX)]


def set_trainable(model, methods: Iterable[str]) -> List[str]:
    """Freeze every parameter, then unfreeze the union of `methods`; returns the trainable names."""
    rules = rules_for(methods)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(rule(name) for rule in rules))
        if param.requires_grad:
            trainable.append(name)
    return trainable


def count_parameters(model, methods: Iterable[str]) -> Tuple[int, int]:
    """(trainable, total) unique parameter counts for the union of `methods` (tied weights once)."""
    rules = rules_for(methods)
    trainable = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if any(rule(name) for rule in rules):
            trainable += param.numel()
    return trainable, total

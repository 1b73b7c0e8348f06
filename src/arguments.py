"""Command-line arguments (LM-BFF / FS-PBA names), parsed with HfArgumentParser and checked up front.

Each project field declares its allowed values once, as `metadata["allowed"]` (an `Allowed`), its help
group as `metadata["group"]` and whether it is part of a run's identity as `metadata["identity"]`
(`src.checks.option`; src/identity.py reads it); the delta methods' options come from
their registry entries (`src/delta`: each method's options dataclass); the Trainer fields this
project relies on get theirs from `TRAINER_FIELDS`. `check_fields` tests every field's type and
allowed values when a dataclass is built (command line or JSON file alike), so a bad value is one
`error:` line before anything loads.
"""
import argparse
import copy
import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass
from collections import Counter
from functools import lru_cache
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

import torch
from safetensors import SafetensorError, safe_open
from transformers import HfArgumentParser, TrainingArguments, get_scheduler
from transformers.trainer_utils import SchedulerType

from src.checks import Allowed, Local, above, at_least, between, one_of, option, typed
from src.dataset import MODES, input_length, uses_template
from src.delta import METHODS, Stages, attached_methods, check_template
from src.delta.checkpoint import read_delta
from src.errors import UserError, first_line
from src.families import check_methods, family_of
from src.files import read_regular
from src.placeholders import fill_placeholders
from src.tasks import TASKS, Task, data_file, named_task, read_examples
from src.templates import parse_mapping, parse_template, shortest_length

# Old spellings used by the reference scripts and README, mapped to today's names.
ARGUMENT_ALIASES = {
    "--evaluation_strategy": "--eval_strategy",
    "--use_adapters": "--use_adapter",
    "--max_seq_len": "--max_seq_length",
    "--no_train": "--notrain",
}


NON_EMPTY = Allowed("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
EXISTING = Local("an existing file or folder", lambda v: os.path.exists(v))
FOLDER = Local("an existing folder", lambda v: os.path.isdir(v))
SEED = between(0, 2**32 - 1, integer=True)


def _has_cuda():
    return torch.cuda.is_available()


# A built-in task's name, checked when the run's task is found (src/tasks.py: named_task), or a task file's.
TASK = Allowed("one of " + ", ".join(t.name for t in TASKS.values()) + " (any case), or the task of --task_file",
               lambda v: isinstance(v, str) and v.strip() != "")
NEEDS_GPU = Local("false on a machine without a CUDA GPU (none found here)", lambda v: not v or _has_cuda())


def _installed_loggers(names) -> bool:
    from transformers.integrations import get_available_reporting_integrations
    return set(names) <= {"none", "all", *get_available_reporting_integrations()}


LOGGERS = Local("none, all, or Trainer loggers whose package is installed here (wandb, tensorboard, mlflow, ...)",
                _installed_loggers)


# Trainer fields this project's runs use: help group "training" and their allowed values.
TRAINER_FIELDS = {
    "do_train": None, "do_eval": None, "do_predict": None, "overwrite_output_dir": None,
    "learning_rate": above(0), "max_steps": at_least(-1), "num_train_epochs": at_least(0, integer=False),
    "per_device_train_batch_size": at_least(1), "per_device_eval_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1), "eval_strategy": one_of("no", "steps", "epoch"),
    "eval_steps": above(0), "seed": SEED, "data_seed": SEED, "weight_decay": at_least(0, integer=False),
    "adam_beta1": between(0, 1, high_open=True), "adam_beta2": between(0, 1, high_open=True),
    "adam_epsilon": above(0), "max_grad_norm": at_least(0, integer=False), "warmup_ratio": between(0, 1),
    "warmup_steps": at_least(0), "logging_steps": above(0), "dataloader_num_workers": at_least(0),
    "bf16": None, "fp16": NEEDS_GPU, "disable_tqdm": None,
    # reduce_lr_on_plateau steps on the evaluation loss, which the evaluation here does not compute
    "lr_scheduler_type": Allowed(
        f"one of {', '.join(t.value for t in SchedulerType if t is not SchedulerType.REDUCE_ON_PLATEAU)} "
        "(not reduce_lr_on_plateau: the evaluation computes no loss for it)",
        lambda v: v in {t.value for t in SchedulerType} - {SchedulerType.REDUCE_ON_PLATEAU.value}),
    # Trainer options run.py does not honour
    "load_best_model_at_end": Allowed("false (each stage ends in its best dev state anyway: the task's main metric, "
                                      "kept in memory, which the final evaluation scores)", lambda v: not v),
    "resume_from_checkpoint": Allowed("unset (run.py does not resume a run from a Trainer checkpoint; --delta_path "
                                      "loads the delta a checkpoint holds, --skip_done skips the runs the log holds)",
                                      lambda v: False),
    "gradient_checkpointing": Allowed("false (not supported by the prompt model)", lambda v: not v),
    "past_index": Allowed("-1 (the masked LMs here keep no past)", lambda v: v == -1),
    "use_liger_kernel": Allowed("false (not supported by the prompt model)", lambda v: not v),
    "push_to_hub": Allowed("false (run.py saves the delta in --output_dir, not a model for the hub)", lambda v: not v),
    "prediction_loss_only": Allowed("false (the scores need the predictions)", lambda v: not v),
    "eval_do_concat_batches": Allowed("true (the scores need every batch's predictions together)", lambda v: v),
    "dataloader_drop_last": Allowed("false (the evaluation would drop examples too: the scores need every one)",
                                    lambda v: not v),
    "fp16_full_eval": Allowed("false (the Trainer would cast the model to half precision for good: the training "
                              "after an evaluation and the saved delta too)", lambda v: not v),
    "bf16_full_eval": Allowed("false (the Trainer would cast the model to bfloat16 for good: the training after an "
                              "evaluation and the saved delta too; --bf16 autocasts the evaluation as well)",
                              lambda v: not v),
    "fsdp": Local("empty on a machine without a CUDA GPU (none found here)", lambda v: not v or _has_cuda()),
    "report_to": LOGGERS,
}
GROUPS = {"data": "data", "model": "model", "delta": "delta (what is trained)", "training": "training",
          "log": "results log and sweeps"}


def with_method_options(cls: type) -> type:
    """The dataclass `cls` with, after its own fields, one field per option of each registered delta method
    (its options dataclass in src/delta: name, type, default, help, allowed values), in help group delta."""
    fields = []
    for method in METHODS.values():
        if method.options is not None:
            hints = typing.get_type_hints(method.options)
            fields += [(f.name, hints[f.name],
                        option(f.default, f.metadata["help"], "delta", f.metadata.get("allowed"),
                               identity=f.metadata["identity"]))
                       for f in dataclasses.fields(method.options)]
    names = [name for name, _, _ in fields] + [f.name for f in dataclasses.fields(cls)]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise TypeError(f"delta method options named like another run.py argument: {', '.join(clashes)}")
    generated = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,))
    generated.__module__, generated.__qualname__, generated.__doc__ = cls.__module__, cls.__qualname__, cls.__doc__
    return generated


@with_method_options
@dataclass
class ModelArguments:
    """The model, the mode and the delta: what is trained, in which stages, with which methods' options."""
    model_name_or_path: str = option(help="Hub name (roberta-large) or local model folder.", group="model",
                                     allowed=NON_EMPTY)
    few_shot_type: str = option("prompt", "prompt: through the template; finetune: a new classification head; "
                                "prompt-demo: with demonstrations.", "model", one_of(*MODES))
    training_params: List[str] = option(
        help="Delta methods to train, comma-joined (prompt,bias,adapter); several values are trained one after "
             "another as stages.", group="delta",
        allowed=Allowed("a non-empty list", lambda v: len(v) > 0), default_factory=lambda: ["all"])
    attach: Optional[str] = option(None, "Delta methods whose modules are added without being trained, "
                                   "comma-joined (e.g. adapter: frozen adapters while the biases train); those "
                                   "--training_params lists are added anyway.", "delta", NON_EMPTY)
    use_adapter: bool = option(False, "The old spelling of --attach adapter.", "delta")
    stage_init: str = option("last", "Multi-stage: start each stage from the previous stage's 'last' parameters "
                             "(reference) or its 'best' dev state.", "delta", one_of("last", "best"))
    delta_path: Optional[str] = option(None, "Load delta weights saved by an earlier run before training or "
                                       "evaluation.", "delta", EXISTING)
    reference_mode: bool = option(False, "Compute like the reference: pad to max_seq_length and score the whole "
                                  "vocabulary at every position (slower, same results).", "model")

    def __post_init__(self):
        check_fields(self)


@dataclass
class DataArguments:
    data_dir: str = option(help="Folder with the task's train/dev/test files.", group="data", allowed=FOLDER)
    task_name: Optional[str] = option(None, f"The task: {TASK.text}.", "data", TASK)
    task_file: Optional[str] = option(None, "A task of your own: its task file (JSON, README 'Your own task'), "
                                      "which names the task. A run's record keeps the file's content.", "data",
                                      Allowed("an existing file", os.path.isfile))
    template: Optional[str] = option(None, "LM-BFF template, e.g. *cls**sent_0*_It_was*mask*.*sep+*", "data")
    mapping: Optional[str] = option(None, "Label words as a Python dict literal, e.g. "
                                    "\"{'0':'terrible','1':'great'}\".", "data")
    max_seq_length: int = option(128, "Tokens per example (doubled with --double_demo); at most the model's "
                                 "positions.", "data", at_least(8))
    first_sent_limit: Optional[int] = option(None, "Truncate the first sentence to this many tokens.", "data",
                                             at_least(1))
    other_sent_limit: Optional[int] = option(None, "Truncate the other sentences to this many tokens.", "data",
                                             at_least(1))
    truncate_head: bool = option(False, "Truncate from the head instead of the tail.", "data")
    num_k: int = option(16, "Examples per class (recorded for bookkeeping); must match a k-shot train split "
                        "(the same count for every label).", "data", at_least(1))
    num_sample: int = option(16, "prompt-demo: demonstration sets per test example.", "data", at_least(1))
    num_demo: int = option(1, "prompt-demo: demonstrations per class.", "data", at_least(1))
    double_demo: bool = option(False, "prompt-demo: twice max_seq_length.", "data")
    demo_filter: bool = option(False, "prompt-demo: draw demonstrations from the most similar train examples.",
                               "data")
    demo_filter_model: Optional[str] = option(None, "demo_filter: name of the embeddings files "
                                              "({split}_{model}.npy).", "data")
    demo_filter_rate: float = option(0.5, "demo_filter: share of the most similar examples kept.", "data",
                                     between(0, 1, low_open=True))
    overwrite_cache: bool = option(False, "Rebuild the cached features.", "data", identity=False)
    skip_train_eval: bool = option(False, "Leave the train split out of the final evaluation (large train sets).",
                                   "data")
    dev_as_test: bool = option(False, "Full data: the dev set is also the test set (GLUE test labels are hidden), "
                               "as in the reference's full-data runs.", "data")
    feature_cache_dir: Optional[str] = option(None, "Where tokenised features are cached (default: the user "
                                              "cache folder, see README).", "data", identity=False)
    pad_to_multiple_of: Optional[int] = option(None, "Round each batch's length up to a multiple of this (e.g. 16): "
                                               "fewer distinct shapes, so --torch_compile does not recompile per "
                                               "length (results change only by float noise).", "training", at_least(1),
                                               identity=False)

    def __post_init__(self):
        check_fields(self)


@dataclass
class DeltaTrainingArguments(TrainingArguments):
    output_dir: str = option("result/tmp", "Where the trained delta is saved.", "training", NON_EMPTY, identity=False)
    notrain: bool = option(False, "Evaluate the untrained model (zero-shot).", "training")
    do_eval: bool = option(False, "Accepted as in the reference's commands: dev is always evaluated (every "
                           "--eval_steps, it picks the best state).", "training", identity=False)
    do_predict: bool = option(False, "Accepted as in the reference's commands: train, dev and test are always "
                              "scored at the end (the record and the tables need them).", "training", identity=False)
    tag: str = option("", "Free label stored in the results log.", "log")
    log_file: str = option("log", "Results log (JSON lines), appended under a lock.", "log", NON_EMPTY, identity=False)
    skip_done: bool = option(False, "Exit at once if the log already holds a record of this run (resume).", "log",
                             identity=False)
    report_to: Optional[List[str]] = option(
        help="Trainer loggers (wandb, tensorboard, ...); none by default: the results log holds each run.",
        default_factory=lambda: ["none"], identity=False)
    save_strategy: str = option("no", "Trainer checkpoints (OUTPUT_DIR/checkpoint-STEP; a multi-stage run's in "
                                "OUTPUT_DIR/stageN/checkpoint-STEP), each holding the run's delta "
                                "at that step as run.py saves it at the end (--delta_path loads it) beside the "
                                "Trainer's optimizer and state; none by default: the best dev state of the delta is "
                                "kept in memory.", identity=False)
    remove_unused_columns: bool = option(False, "Kept False: the features are ours.")
    label_names: Optional[List[str]] = option(help="The batch key holding the labels.",
                                              default_factory=lambda: ["labels"])
    logging_nan_inf_filter: bool = option(False, "HF's per-step isnan/isinf check of the logged loss: a host-device "
                                          "sync every step; off by default (a NaN or infinite loss stops the run "
                                          "anyway, see README).", identity=False)

    def __post_init__(self):
        check_fields(self, TRAINER_FIELDS)
        if self.bf16 and not (self.use_cpu or _has_cuda()):
            raise UserError("--bf16 needs a CUDA GPU (none found here); add --use_cpu for bf16 autocast on the CPU")
        if self.disable_tqdm is None:  # progress bars only on a terminal, not in a log file
            self.disable_tqdm = not sys.stderr.isatty()
        try:
            super().__post_init__()
        except (ValueError, TypeError) as error:  # the Trainer's own checks
            raise UserError(first_line(error)) from error
        except ImportError as error:  # a package that an option needs (--deepspeed's)
            raise UserError(f"a package these Trainer options need is missing: {first_line(error)}") from error
        if self.eval_steps is not None and self.eval_strategy.value == "no":
            raise UserError(f"--eval_steps {self.eval_steps:g} evaluates nothing with --eval_strategy no (the "
                            "default): add --eval_strategy steps")
        if self.save_strategy.value == "best" and not self.metric_for_best_model:
            raise UserError("--save_strategy best needs --metric_for_best_model (the dev metric that names the best "
                            "checkpoint, e.g. acc)")
        check_optimizer(self)
        check_schedule(self)
        if self.torch_compile:
            check_compile_options(self.torch_compile_backend, self.torch_compile_mode)


# run.py's arguments, in the order parse_args returns them.
ARGUMENT_CLASSES = (ModelArguments, DataArguments, DeltaTrainingArguments)


def check_optimizer(args: TrainingArguments) -> None:
    """--optim's class, as the Trainer finds it: an optimizer whose package is missing (lomo, schedule-free,
    bitsandbytes, ...) fails here instead of once the model and data are loaded."""
    from transformers import Trainer
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as error:
        raise UserError(f"--optim {args.optim.value}: {first_line(error)}") from error


def check_schedule(args: TrainingArguments) -> None:
    """Build the learning-rate schedule once over a dummy optimizer: a schedule that needs
    --lr_scheduler_kwargs (cosine_with_min_lr, warmup_stable_decay, ...) fails here, with the Trainer's
    own message, instead of once the model and data are loaded."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    steps = max(args.max_steps, 1)
    try:
        get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(steps),
                      num_training_steps=steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    except (ValueError, TypeError) as error:
        raise UserError(f"--lr_scheduler_type {args.lr_scheduler_type.value} needs --lr_scheduler_kwargs: "
                        f"{first_line(error)}") from error


def check_compile_options(backend: Optional[str], mode: Optional[str]) -> None:
    """--torch_compile_backend and --torch_compile_mode against what this torch offers, before anything loads
    (torch.compile would otherwise fail at the first training step). Imported here: torch's compiler takes
    about a second to import, and only --torch_compile needs it."""
    import torch._dynamo
    import torch._inductor
    if backend is not None and backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise UserError(f"--torch_compile_backend must be a backend of this torch (e.g. "
                        f"{', '.join(torch._dynamo.list_backends())}), got {backend!r}")
    modes = list(torch._inductor.list_mode_options())
    if mode is not None and mode not in modes:
        raise UserError(f"--torch_compile_mode must be one of {', '.join(modes)}, got {mode!r}")


def parse_value(name: str, text: str) -> Any:
    """`--name text` converted and checked as the command line does it (a UserError naming the option), for
    an option with allowed values: the values of a packed flag (src/multirun.py), checked before any run starts."""
    dtype, found = next((d, f) for d in ARGUMENT_CLASSES
                        for f in dataclasses.fields(d) if f.name == name)
    kind = typing.get_type_hints(dtype)[name]
    allowed = found.metadata.get("allowed") or TRAINER_FIELDS[name]
    try:
        return typed(kind, allowed)(text)
    except argparse.ArgumentTypeError as error:
        raise UserError(f"--{name} {error}") from None


def _type_problem(value, hint):
    """What is wrong with the type of `value` for the annotation `hint`, or None (unchecked types pass)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        rest = [o for o in options if o is not type(None)]
        return _type_problem(value, rest[0]) if len(rest) == 1 else None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if typing.get_origin(hint) is list:
        return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "a list of strings"
    return None


def value_problem(value: Any, hint: Any, allowed: Optional[Allowed]) -> Optional[str]:
    """What `value` must be and is not (of the type annotation `hint`, then `allowed`), or None when it fits."""
    wrong = _type_problem(value, hint)
    if wrong:
        return wrong
    if allowed is not None and value is not None and not allowed.test(value):
        return allowed.text
    return None


def _checked_fields(cls: type, extra: dict):
    """(name, type annotation, allowed values) of each field of `cls` that check_fields checks: the project's
    (those with a help group) and those in `extra`; the Trainer checks its own."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.metadata.get("allowed") or extra.get(f.name))
            for f in dataclasses.fields(cls) if f.metadata.get("group") or f.name in extra]


def check_fields(obj: Any, extra: Optional[dict] = None) -> None:
    """Raise a UserError naming the first field of `obj` whose value has a wrong type or is not allowed."""
    for name, hint, allowed in _checked_fields(type(obj), extra or {}):
        value = getattr(obj, name)
        problem = value_problem(value, hint, allowed)
        if problem:
            raise UserError(f"--{name} must be {problem}, got {value!r}")


@lru_cache(maxsize=1)
def argument_checks() -> Dict[str, Tuple[Any, Optional[Allowed]]]:
    """Every run.py argument that check_fields checks -> (its type annotation, its allowed values or None):
    what a log record's copy of the argument is checked against (src/results.py)."""
    return {name: (hint, allowed) for cls, extra in ((ModelArguments, {}), (DataArguments, {}),
                                                    (DeltaTrainingArguments, TRAINER_FIELDS))
            for name, hint, allowed in _checked_fields(cls, extra)}


class Consistent(NamedTuple):
    """What check_consistency parsed: the stages, the methods attached without training (--attach), the
    template's kinds of parts."""
    stages: Stages
    attached: List[str]
    template_parts: Set[str]


def task_of(data_args: DataArguments) -> Task:
    """The run's task: --task_name's, or the one its --task_file defines."""
    return named_task(data_args.task_name, data_args.task_file)


def check_consistency(model_args: ModelArguments, data_args: DataArguments, args: DeltaTrainingArguments,
                      task: Task) -> Consistent:
    """Checks across arguments (template, mapping against the task's labels, stages, attached methods, step
    count)."""
    prompt_mode = uses_template(model_args.few_shot_type)
    if prompt_mode and not (data_args.template and data_args.mapping):
        raise UserError("--template and --mapping are required unless --few_shot_type finetune")
    try:
        template_parts = {part.kind for part in parse_template(data_args.template).parts} if prompt_mode else set()
    except UserError as error:
        raise UserError(f"--template: {error}") from None
    try:
        if prompt_mode:
            parse_mapping(data_args.mapping, task.labels)
    except UserError as error:
        raise UserError(f"--mapping: {error}") from None
    stages = Stages.parse(model_args.training_params)
    stages.check_template(template_parts)
    attached = attached_methods(model_args)
    check_template(attached, template_parts, "--attach")
    if args.label_smoothing_factor and task.regression:
        raise UserError(f"--label_smoothing_factor smooths class labels; {task.name} is a regression task")
    if args.do_train and not args.notrain and (args.max_steps == 0 or (args.max_steps < 0 and
                                                                        args.num_train_epochs <= 0)):
        raise UserError(f"--max_steps {args.max_steps} with --num_train_epochs {args.num_train_epochs} trains 0 "
                        "steps; give --max_steps > 0 (or leave out --do_train for a zero-shot evaluation)")
    return Consistent(stages, attached, template_parts)


def check_files(model_args: ModelArguments, data_args: DataArguments, task: Task) -> Optional[Any]:
    """Checks that read the run's input files (its train split, a saved delta); returns the --delta_path
    delta, read (src/delta/checkpoint.py: SavedDelta), or None. Apart from check_consistency: a run's
    identity (--skip_done, the sweeps' resume) reads no data file."""
    check_num_k(task, data_args)
    return read_delta(model_args.delta_path) if model_args.delta_path else None


def check_num_k(task: Any, data_args: DataArguments) -> None:
    """--num_k against the train split: a k-shot split (the same count for every label) must hold num_k
    examples per label. Other splits (full data) are not checked: there num_k only labels the run."""
    examples = read_examples(task, data_args.data_dir, "train")
    # Regression: the k-shot generator's two classes, scores below the task's split and the others.
    labels = [e.label < task.regression_split if task.regression else e.label for e in examples]
    counts = set(Counter(labels).values())
    if len(counts) == 1 and data_args.num_k not in counts:
        raise UserError(f"--num_k {data_args.num_k} does not match the data: "
                        f"{data_file(task, data_args.data_dir, 'train')} holds {counts.pop()} examples per label")


def check_model_config(config: Any, model_args: ModelArguments, data_args: DataArguments,
                       methods: Iterable[str]) -> None:
    """Checks against the model's config (read before the weights): family, positions, and the `methods` whose
    modules the run attaches (can they attach to the family, do their options fit the model)."""
    family = family_of(config)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None:
        positions -= family.position_offset(config)
        length = input_length(data_args.max_seq_length, model_args.few_shot_type, data_args.double_demo)
        if length > positions:
            doubled = length != data_args.max_seq_length
            raise UserError(f"--max_seq_length must be at most {positions // (2 if doubled else 1)} "
                            f"for {model_args.model_name_or_path} ({positions} positions"
                            f"{', halved by --double_demo' if doubled else ''}), got {data_args.max_seq_length}")
        multiple = data_args.pad_to_multiple_of
        if multiple and -(-length // multiple) * multiple > positions:
            raise UserError(f"--pad_to_multiple_of {multiple} rounds batches of up to {length} tokens up to "
                            f"{-(-length // multiple) * multiple}, more than the {positions} positions of "
                            f"{model_args.model_name_or_path}")
    check_methods(family, methods)
    for name in methods:
        METHODS[name].check(model_args, config)
    check_weight_files(model_args.model_name_or_path)


def check_template_room(tokenizer: Any, model_args: ModelArguments, data_args: DataArguments, task: Any) -> None:
    """The template's soft-prompt vectors and fixed tokens, and one token of each sentence part, must fit in
    --max_seq_length: otherwise truncation leaves some input without its sentence (every example the same)."""
    template = parse_template(data_args.template)
    sentences = sum(part.kind == "sent" for part in template.parts)
    prompts = sum(part.kind == "prompt" for part in template.parts) * model_args.prompt_num
    needed = shortest_length(template, tokenizer, model_args.prompt_num)
    if needed > input_length(data_args.max_seq_length, model_args.few_shot_type, data_args.double_demo):
        vectors = f" ({prompts} soft-prompt vectors of --prompt_num {model_args.prompt_num})" if prompts else ""
        raise UserError(f"--max_seq_length {data_args.max_seq_length} leaves no room for the sentences: the template "
                        f"{data_args.template!r} takes {needed - sentences} tokens{vectors}, and each of its "
                        f"{sentences} sentence part(s) at least one more: {needed} in all")


def check_weight_files(folder: str) -> None:
    """Read the header of every safetensors file of a local model folder (a few kilobytes each): a
    truncated or foreign weights file fails before the data and the model load, not after."""
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(folder, name), "pt"):
                    pass
            except (SafetensorError, OSError) as error:
                raise UserError(f"--model_name_or_path: {os.path.join(folder, name)} is not a complete safetensors "
                                f"file (truncated or damaged): {error}") from None


class _Parser(HfArgumentParser):
    """HfArgumentParser with one-line errors, the project's arguments first in --help, grouped."""

    @staticmethod
    def _parse_dataclass_field(parser, field):
        field = copy.copy(field)
        field.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items()
                                                 if k not in ("group", "allowed", "identity")})
        HfArgumentParser._parse_dataclass_field(parser, field)

    def error(self, message):
        raise UserError(message)

    def group_help(self):
        """Move each action into its help group: the project's groups first, the other Trainer options last."""
        group_of = {f.name: f.metadata.get("group") or ("training" if f.name in TRAINER_FIELDS else None)
                    for dtype in self.dataclass_types for f in dataclasses.fields(dtype)}
        groups = {key: self.add_argument_group(title) for key, title in GROUPS.items()}
        trainer = self.add_argument_group("other Trainer options (transformers.TrainingArguments)")
        for old in list(self._action_groups):
            if old in groups.values() or old is trainer:
                continue
            for action in list(old._group_actions):
                if action.dest in group_of:
                    old._group_actions.remove(action)
                    groups.get(group_of[action.dest], trainer)._group_actions.append(action)
        self._action_groups.sort(key=lambda g: 0 if g.title == "options" else 1)


def make_parser() -> HfArgumentParser:
    parser = _Parser(ARGUMENT_CLASSES,
                     usage="python run.py --task_name T | --task_file F --data_dir D --model_name_or_path M "
                           "[options]\n"
                           "       python run.py ARGUMENTS.json",
                     description="Prompt-based delta tuning of a masked LM (see README.md).")
    parser.group_help()
    return parser


def parse_args(argv=None):
    """Parse argv (or a single JSON file of arguments) into the three argument objects, all checked."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict(_read_json_arguments(argv[0], parser))
    argv = [_rename(a) for a in argv]
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True,
                                                          look_for_args_file=False)
    if unknown:
        raise UserError(f"unknown argument(s): {' '.join(unknown)} (see python run.py --help)")
    return tuple(parsed)


def given_arguments(argv) -> Set[str]:
    """The names of the arguments that `argv` (run.py's, parsed already) gives itself: the keys of a JSON
    argument file, or the options on the command line (abbreviated, `--name=value`, `--no_name` alike)."""
    argv = list(argv)
    parser = make_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        return set(_read_json_arguments(argv[0], parser))
    unset = object()
    parser.set_defaults(**{f.name: unset for dtype in parser.dataclass_types for f in dataclasses.fields(dtype)})
    given, _ = parser.parse_known_args([_rename(a) for a in argv])
    return {name for name, value in vars(given).items() if value is not unset}


def _read_json_arguments(path, parser):
    try:
        values = json.loads(read_regular(path, "argument file"))
    except (ValueError, RecursionError) as error:
        raise UserError(f"cannot read argument file {path}: {error}") from error
    if not isinstance(values, dict):
        raise UserError(f"argument file {path} must hold a JSON object, got {type(values).__name__}")
    known = {f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"argument file {path}: unknown argument(s) {', '.join(unknown)}")
    missing = [name for name in ("model_name_or_path", "data_dir") if name not in values]
    if missing:
        raise UserError(f"argument file {path}: missing required argument(s) {', '.join(missing)}")
    return fill_placeholders(values, f"argument file {path}")


def _rename(arg):
    name, sep, value = arg.partition("=")
    return ARGUMENT_ALIASES.get(name, name) + sep + value


@lru_cache(maxsize=1)
def argument_defaults() -> Dict[str, object]:
    """Every run.py argument (the three dataclasses) -> its default (None where it has none)."""
    defaults = {}
    for cls in ARGUMENT_CLASSES:
        for f in dataclasses.fields(cls):
            if f.init:
                defaults[f.name] = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                                    else None if f.default is dataclasses.MISSING else f.default)
    return defaults

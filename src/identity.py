"""What makes two runs the same, decided here once for run.py's --skip_done, the sweeps' resume and gather alike.

A run's identity is every run.py argument that can change a result. The project's own fields say at their
definition whether they are part of it (`src.checks.option(..., identity=False)`: output paths, logging,
caches); the Trainer's fields are classified below, each once (a test holds that every field of the installed
transformers' TrainingArguments is). A key that an older record lacks reads as the argument's default, and
values spelled in several ways count in one spelling, so logs of earlier versions resume and group the same.

Apart from src/results.py (the log file): that module reads and writes records and checks each against the
arguments' declared types and allowed values, but knows nothing of what makes two runs the same; this one
sits above src/arguments.py, whose declarations it reads.
"""
import dataclasses
import json
from functools import lru_cache
from typing import Any, Callable, Dict, Iterable

from src.arguments import ARGUMENT_CLASSES, argument_defaults
from src.delta import Stages, attached_methods
from src.errors import UserError

# Trainer fields (transformers.TrainingArguments) that change no result: logging, checkpoints, devices and
# distribution, the hub, data loading, compilation.
TRAINER_NOT_IDENTITY = frozenset({
    "overwrite_output_dir", "log_level", "log_level_replica", "log_on_each_node", "logging_dir",
    "logging_strategy", "logging_first_step", "logging_steps", "save_steps", "save_total_limit", "save_safetensors",
    "save_on_each_node", "save_only_model", "restore_callback_states_from_checkpoint", "no_cuda", "use_cpu",
    "use_mps_device", "local_rank", "ddp_backend", "ddp_timeout", "ddp_find_unused_parameters",
    "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "tpu_num_cores", "tpu_metrics_debug", "debug",
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_pin_memory", "dataloader_persistent_workers",
    "run_name", "disable_tqdm", "project", "trackio_space_id", "skip_memory_metrics", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token", "torch_compile", "torch_compile_backend", "torch_compile_mode",
    "include_tokens_per_second", "include_num_input_tokens_seen", "torch_empty_cache_steps",
})
# Trainer fields that can change a result (the optimisation, its schedule and precision, evaluation, seeds).
# A field of a newer transformers in neither set counts as identity until it is classified.
TRAINER_IDENTITY = frozenset({
    "accelerator_config", "adafactor", "adam_beta1", "adam_beta2", "adam_epsilon", "auto_find_batch_size",
    "average_tokens_across_devices", "batch_eval_metrics", "bf16", "bf16_full_eval", "data_seed",
    "dataloader_drop_last", "deepspeed", "do_train", "eval_accumulation_steps", "eval_delay",
    "eval_do_concat_batches", "eval_on_start", "eval_steps", "eval_strategy", "eval_use_gather_object", "fp16",
    "fp16_backend", "fp16_full_eval", "fp16_opt_level", "fsdp", "fsdp_config", "fsdp_min_num_params",
    "fsdp_transformer_layer_cls_to_wrap", "full_determinism", "gradient_accumulation_steps",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "greater_is_better", "group_by_length",
    "half_precision_backend", "ignore_data_skip", "include_for_metrics", "include_inputs_for_metrics",
    "jit_mode_eval", "label_smoothing_factor", "learning_rate", "length_column_name", "liger_kernel_config",
    "load_best_model_at_end", "lr_scheduler_kwargs", "lr_scheduler_type", "max_grad_norm", "max_steps",
    "metric_for_best_model", "mp_parameters", "neftune_noise_alpha", "num_train_epochs", "optim", "optim_args",
    "optim_target_modules", "parallelism_config", "past_index", "per_device_eval_batch_size",
    "per_device_train_batch_size", "per_gpu_eval_batch_size", "per_gpu_train_batch_size", "prediction_loss_only",
    "ray_scope", "resume_from_checkpoint", "seed", "tf32", "torchdynamo", "use_legacy_prediction_loop",
    "use_liger_kernel", "warmup_ratio", "warmup_steps", "weight_decay",
})
# The keys that tell the repetitions of one setting apart (one per seed and its data split).
REPLICATE_KEYS = ("seed", "data_dir")


def is_identity(field: dataclasses.Field) -> bool:
    """Whether the run.py argument `field` is part of a run's identity: as its definition says, or for a
    Trainer field that the project does not declare, by the sets above."""
    return field.metadata.get("identity", field.name not in TRAINER_NOT_IDENTITY)


@lru_cache(maxsize=1)
def identity_defaults() -> Dict[str, Any]:
    """Each argument of a run's identity -> its default (what a record that lacks the key ran with)."""
    defaults = argument_defaults()
    return {f.name: defaults[f.name] for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)
            if f.init and is_identity(f)}


def canonical_arguments(arguments: Dict[str, Any]) -> Dict[str, Any]:
    """`arguments` (run.py's, or a record of this or an older version) with one spelling of each value that
    has several: the stages as `Stages` spells them ('bias,prompt' is 'prompt,bias'), the attached methods as
    one --attach list (registry order; the old --use_adapter folded in, its key dropped). A value this
    version cannot read (a method it does not know) stays as it is."""
    canonical = dict(arguments)
    try:
        canonical["training_params"] = str(Stages.parse(arguments["training_params"]))
    except (KeyError, TypeError, UserError):
        pass
    try:
        canonical["attach"] = ",".join(attached_methods(arguments)) or None
        canonical.pop("use_adapter", None)
    except (AttributeError, UserError):  # not a comma list, or an unknown method
        pass
    return canonical


def run_identity(record: dict) -> dict:
    """What makes two runs the same: every argument of `identity_defaults`, in its one spelling
    (`canonical_arguments`). Not: output paths, logging, device, time, metrics."""
    record = canonical_arguments(record)
    identity = {key: record.get(key, default) for key, default in identity_defaults().items()}
    return json.loads(json.dumps(identity, default=str, sort_keys=True))


def setting_of(record: dict) -> dict:
    """The run's identity without what tells its seeds apart: runs of one setting share it."""
    return {key: value for key, value in run_identity(record).items() if key not in REPLICATE_KEYS}


def same_run_as(arguments: dict) -> Callable[[dict], bool]:
    """A test `record -> is it a record of the run with these arguments?` (identity computed once)."""
    identity = run_identity(arguments)
    return lambda record: run_identity(record) == identity


def is_logged(records: Iterable[dict], arguments: dict) -> bool:
    """True when `records` hold a run with the same identity as `arguments`."""
    return any(map(same_run_as(arguments), records))

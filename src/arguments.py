"""Command-line arguments (LM-BFF / FS-PBA names), parsed with HfArgumentParser."""
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional

from transformers import HfArgumentParser, TrainingArguments

from src.errors import UserError

# Old spellings used by the reference scripts and README, mapped to today's names.
ARGUMENT_ALIASES = {
    "--evaluation_strategy": "--eval_strategy",
    "--use_adapters": "--use_adapter",
    "--max_seq_len": "--max_seq_length",
    "--no_train": "--notrain",
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Hub name (roberta-large) or local directory."})
    few_shot_type: str = field(default="prompt", metadata={"help": "prompt | finetune | prompt-demo"})
    training_params: List[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": "Delta groups to train, comma-joined (prompt,bias,adapter); several values "
                          "are trained one after another as stages."})
    use_adapter: bool = field(
        default=False, metadata={"help": "Add the Houlsby adapters even when no stage trains them (they are added "
                                          "anyway when --training_params lists adapter)."})
    adapter_reduction_factor: int = field(default=16, metadata={"help": "adapter: hidden size / bottleneck size."})
    lora_r: int = field(default=8, metadata={"help": "lora: rank of the low-rank update."})
    lora_alpha: int = field(default=8, metadata={"help": "lora: scaling numerator (update scaled by alpha / r)."})
    prompt_num: int = field(default=10, metadata={"help": "Number of soft-prompt vectors."})
    stage_init: str = field(
        default="last", metadata={"help": "Multi-stage: start each stage from the previous stage's 'last' "
                                           "parameters (reference) or its 'best' dev checkpoint."})
    delta_path: Optional[str] = field(
        default=None, metadata={"help": "Load delta weights saved by an earlier run before training/evaluation."})
    reference_mode: bool = field(
        default=False, metadata={"help": "Compute like the reference: pad to max_seq_length and score the whole "
                                          "vocabulary at every position (slower, same results)."})


@dataclass
class DataArguments:
    task_name: str = field(metadata={"help": "SST-2, sst-5, mr, cr, mpqa, subj, trec, CoLA, MNLI, SNLI, QNLI, "
                                             "RTE, MRPC, QQP, STS-B"})
    data_dir: str = field(metadata={"help": "Folder with the task's train/dev/test files."})
    template: Optional[str] = field(default=None)
    mapping: Optional[str] = field(default=None, metadata={"help": "Label words as a Python dict literal."})
    max_seq_length: int = field(default=128)
    first_sent_limit: Optional[int] = field(default=None)
    other_sent_limit: Optional[int] = field(default=None)
    truncate_head: bool = field(default=False)
    num_k: int = field(default=16, metadata={"help": "Examples per class (recorded for bookkeeping)."})
    num_sample: int = field(default=16, metadata={"help": "prompt-demo: demonstration sets per test example."})
    num_demo: int = field(default=1)
    double_demo: bool = field(default=False)
    demo_filter: bool = field(default=False)
    demo_filter_model: Optional[str] = field(default=None)
    demo_filter_rate: float = field(default=0.5)
    overwrite_cache: bool = field(default=False)
    skip_train_eval: bool = field(
        default=False, metadata={"help": "Leave the train split out of the final evaluation (large train sets)."})
    dev_as_test: bool = field(
        default=False, metadata={"help": "Full data: the dev set is also the test set (GLUE test labels are "
                                          "hidden), as in the reference's full-data runs."})
    feature_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where tokenised features are cached (default: beside the data)."})


@dataclass
class DeltaTrainingArguments(TrainingArguments):
    output_dir: str = field(default="result/tmp")
    tag: str = field(default="", metadata={"help": "Free label stored in the results log."})
    log_file: str = field(default="log", metadata={"help": "Results log (JSON lines), appended under a lock."})
    notrain: bool = field(default=False, metadata={"help": "Evaluate the untrained model (zero-shot)."})
    skip_done: bool = field(
        default=False, metadata={"help": "Exit at once if the log already holds a record of this run (resume)."})
    report_to: Optional[List[str]] = field(default_factory=lambda: ["none"])
    save_strategy: str = field(default="no")
    remove_unused_columns: bool = field(default=False)
    label_names: Optional[List[str]] = field(default_factory=lambda: ["labels"])


def parse_args(argv=None):
    """Parse argv (or a single JSON file of arguments) into the three argument objects."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, DeltaTrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        try:
            return parser.parse_dict(json.load(open(argv[0])))
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read argument file {argv[0]}: {error}") from error
    argv = [_rename(a) for a in argv]
    return parser.parse_args_into_dataclasses(args=argv)


def _rename(arg):
    name, sep, value = arg.partition("=")
    return ARGUMENT_ALIASES.get(name, name) + sep + value


# Arguments that never change a run's results (paths of outputs, logging, devices, caches,
# compilation): every other argument is part of a run's identity (src/results.py: run_identity).
NOT_IDENTITY = frozenset({
    "output_dir", "overwrite_output_dir", "log_file", "skip_done", "feature_cache_dir", "overwrite_cache",
    "do_eval", "do_predict", "log_level", "log_level_replica", "log_on_each_node", "logging_dir",
    "logging_strategy", "logging_first_step", "logging_steps", "logging_nan_inf_filter", "save_strategy",
    "save_steps", "save_total_limit", "save_safetensors", "save_on_each_node", "save_only_model",
    "restore_callback_states_from_checkpoint", "no_cuda", "use_cpu", "use_mps_device", "local_rank",
    "ddp_backend", "ddp_timeout", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers",
    "tpu_num_cores", "tpu_metrics_debug", "debug", "dataloader_num_workers", "dataloader_prefetch_factor",
    "dataloader_pin_memory", "dataloader_persistent_workers", "run_name", "disable_tqdm", "report_to",
    "project", "trackio_space_id", "skip_memory_metrics", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token", "torch_compile", "torch_compile_backend",
    "torch_compile_mode", "include_tokens_per_second", "include_num_input_tokens_seen", "torch_empty_cache_steps",
})


@lru_cache(maxsize=1)
def argument_defaults() -> Dict[str, object]:
    """Every run.py argument (the three dataclasses) -> its default (None where it has none)."""
    defaults = {}
    for cls in (ModelArguments, DataArguments, DeltaTrainingArguments):
        for f in dataclasses.fields(cls):
            if f.init:
                defaults[f.name] = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                                    else None if f.default is dataclasses.MISSING else f.default)
    return defaults

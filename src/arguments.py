"""Command-line arguments (LM-BFF / FS-PBA names), parsed with HfArgumentParser."""
import json
import sys
from dataclasses import dataclass, field
from typing import List, Optional

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
    use_adapter: bool = field(default=False, metadata={"help": "Add Houlsby adapters to the model."})
    adapter_reduction_factor: int = field(default=16)
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
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "Round each batch's length up to a multiple of this (e.g. 16): fewer "
                                         "distinct shapes, so --torch_compile does not recompile per length."})


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
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "HF's per-step isnan/isinf check of the logged loss: a host-device sync "
                                          "every step; off by default (it only changes the logged average)."})


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

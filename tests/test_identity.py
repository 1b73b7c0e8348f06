"""What makes two runs the same (src/identity.py: run_identity), for --skip_done, the sweeps' resume
and gather alike: every run.py argument is covered without listing it here."""
import dataclasses
import json

import pytest
from transformers import TrainingArguments

from src.experiment import Experiment
from src.arguments import ARGUMENT_CLASSES, DeltaTrainingArguments, parse_args
from src.identity import TRAINER_IDENTITY, TRAINER_NOT_IDENTITY, is_identity, is_logged, run_identity, setting_of
from src.results import run_facts, with_run_facts
from src.summary import gather
from tests.conftest import DATA_ROOT

BASE_ARGV = ["--task_name", "SST-2", "--data_dir", str(DATA_ROOT / "k-shot/SST-2/16-13"), "--model_name_or_path", "m",
             "--template", "*cls**sent_0*_It_was*mask*.*sep+*", "--mapping", "{'0':'terrible','1':'great'}",
             "--training_params", "bias", "--do_train", "--learning_rate", "1e-3", "--seed", "13",
             "--output_dir", "out/a", "--log_file", "log"]
FIELDS = {f.name: f for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init}
NOT_IDENTITY = frozenset(name for name, f in FIELDS.items() if not is_identity(f))


def arguments(argv=()):
    """The record run.py writes for these arguments (arguments part), through JSON as in the log."""
    return json.loads(json.dumps(Experiment(*parse_args(BASE_ARGV + list(argv))).arguments_record(), default=str))


def changed(value):
    """Some other value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value + ["other"]
    if isinstance(value, dict):
        return {**value, "other": 1}
    return f"{value}-other" if value is not None else "other"


BASE = arguments()
IDENTITY = sorted(name for name in FIELDS if name not in NOT_IDENTITY)


@pytest.mark.parametrize("name", IDENTITY)
def test_runs_differing_in_one_identity_argument_are_both_run(name):
    other = dict(BASE, **{name: changed(BASE.get(name))})
    assert is_logged([BASE], BASE)
    assert not is_logged([BASE], other), f"--skip_done would skip a run with another {name}"


@pytest.mark.parametrize("name", sorted(NOT_IDENTITY))
def test_arguments_that_change_no_result_do_not_make_another_run(name):
    other = dict(BASE, **{name: changed(BASE.get(name))})
    assert is_logged([BASE], other)


def test_every_argument_is_classified_and_identity_covers_the_former_allowlist():
    assert NOT_IDENTITY <= set(FIELDS)
    former = {"task_name", "tag", "seed", "learning_rate", "per_device_train_batch_size",
              "gradient_accumulation_steps", "max_steps", "eval_steps", "template", "mapping", "few_shot_type",
              "training_params", "do_train", "model_name_or_path", "prompt_num", "use_adapter", "stage_init",
              "data_dir", "max_seq_length", "num_sample", "num_k"}
    missed_before = {"adapter_reduction_factor", "first_sent_limit", "other_sent_limit", "truncate_head",
                     "num_demo", "double_demo", "demo_filter", "warmup_steps", "weight_decay", "delta_path"}
    assert former | missed_before <= set(run_identity(BASE))


def test_every_trainer_field_is_classified_once():
    """Each field of the installed transformers' TrainingArguments is either declared by this project (with its
    identity) or in exactly one of src/identity.py's two Trainer sets; a field a new transformers adds fails
    here until it is classified."""
    trainer = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    declared = {name for name in DeltaTrainingArguments.__annotations__}
    assert not TRAINER_IDENTITY & TRAINER_NOT_IDENTITY
    assert sorted(trainer - declared - TRAINER_IDENTITY - TRAINER_NOT_IDENTITY) == []
    assert sorted((TRAINER_IDENTITY | TRAINER_NOT_IDENTITY) - (trainer - declared)) == []


def test_the_projects_own_fields_say_whether_they_are_identity():
    own = [f for name, f in FIELDS.items() if name not in TRAINER_IDENTITY | TRAINER_NOT_IDENTITY]
    assert [f.name for f in own if not isinstance(f.metadata.get("identity"), bool)] == []
    assert {"output_dir", "log_file", "skip_done", "feature_cache_dir", "pad_to_multiple_of"} <= NOT_IDENTITY


def test_a_cli_argument_change_changes_identity():
    assert run_identity(arguments(["--adapter_reduction_factor", "8"])) != run_identity(BASE)
    assert run_identity(arguments(["--logging_steps", "7", "--output_dir", "out/b"])) == run_identity(BASE)


def record(seed, lr, dev, test, **changes):
    return {**BASE, **run_facts(BASE), "seed": seed, "learning_rate": lr, "data_dir": f"k-shot/SST-2/16-{seed}",
            "sst-2_dev_eval_acc": dev, "sst-2_test_eval_acc": test, "device": f"gpu-{seed % 2}",
            "time": f"2026-01-{seed % 28 + 1:02d}", "wall_time": seed, "output_dir": f"out/{seed}-{lr}", **changes}


RECORDS = [record(13, 1e-3, .9, .8), record(13, 1e-4, .8, .9), record(42, 1e-3, .7, .7), record(42, 1e-4, .8, .6)]


def test_device_time_and_outputs_never_split_a_setting():
    assert setting_of(RECORDS[0]) == setting_of(RECORDS[2])  # two seeds on two GPU models, other times
    result = gather(RECORDS, {"task_name": "sst-2"}, protocol="reference")
    assert result["n"] == 2 and result["setting"] == {"learning_rate": 1e-3, "per_device_train_batch_size": 8}


def previous_version(record):
    """A record as the previous versions wrote it: no LoRA, prefix or --attach options, no run facts; the
    attached adapter as use_adapter."""
    old = {key: value for key, value in record.items()
           if key not in ("lora_r", "lora_alpha", "prefix_length", "prefix_bottleneck_size", "attach", "combination",
                          "hard", "zero_shot")}
    return {**old, "use_adapter": record.get("attach") == "adapter"}


def test_a_log_of_the_previous_version_reads_resumes_and_groups_the_same():
    old = [previous_version(r) for r in RECORDS]
    assert is_logged(old, BASE | {"seed": 13, "data_dir": "k-shot/SST-2/16-13", "output_dir": "elsewhere"})
    for protocol in ("lm-bff", "reference"):
        assert gather(old, {"task_name": "sst-2"}, protocol=protocol) == gather(RECORDS, {"task_name": "sst-2"},
                                                                              protocol=protocol)
    facts = with_run_facts(old[0])
    assert (facts["combination"], facts["hard"], facts["zero_shot"]) == ("bias", "Y", False)
    zero_shot = with_run_facts(previous_version(dict(RECORDS[0], do_train=False, training_params="all")))
    assert (zero_shot["combination"], zero_shot["zero_shot"]) == ("none", True)


def test_an_old_record_with_use_adapter_is_the_run_that_attaches_the_adapter():
    """The old --use_adapter is --attach adapter: a record that says use_adapter true (older versions) is the
    run of --use_adapter and of --attach adapter today; one without the key, or false, the run without."""
    with_adapter = previous_version(arguments(["--attach", "adapter"]))
    without = previous_version(BASE)
    assert with_adapter["use_adapter"] is True and "attach" not in with_adapter
    for argv in (["--use_adapter"], ["--use_adapters"], ["--attach", "adapter"],
                 ["--attach", "adapter", "--use_adapter"]):
        new = arguments(argv)
        assert new["attach"] == "adapter" and "use_adapter" not in new  # recorded in one spelling
        assert is_logged([with_adapter], new) and not is_logged([without], new), argv
    assert is_logged([without], BASE) and not is_logged([with_adapter], BASE)
    assert is_logged([{key: value for key, value in without.items() if key != "use_adapter"}], BASE)
    assert not is_logged([with_adapter], arguments(["--attach", "lora"]))
    assert arguments(["--attach", "lora,adapter"])["attach"] == "adapter,lora"


def test_stages_are_recorded_in_one_spelling_and_old_spellings_resume():
    """A combination is recorded in registry order, as the stage results and run facts spell it; an older
    record of another order of the same methods is the same run (its facts were that spelling already)."""
    record = arguments(["--training_params", "bias,prompt", "adapter", "--template", "*cls*prompt*sent_0**mask*"])
    assert record["training_params"] == run_facts(record)["combination"] == "prompt,bias adapter"
    old = dict(record, training_params="bias,prompt adapter")
    assert is_logged([old], record) and with_run_facts(previous_version(old))["combination"] == "prompt,bias adapter"
    assert not is_logged([dict(old, training_params="adapter bias,prompt")], record)  # the order of stages counts

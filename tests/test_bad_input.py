"""Bad input through the command line, in-process: exit status 2, one `error:` line naming the
argument, no traceback, nothing written (no log, no output folder, no cache).

The run.py cases are generated from the argument dataclasses (the delta methods' options included):
values just outside each field's allowed values on the command line (`rejected`: derived from a
`Number`'s bounds or a `Choice`, or listed in REJECTED), and a wrong-typed value in a JSON argument
file. A new field with bounds or choices is covered without editing this file.
"""
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import typing

import pytest

import run
from src.arguments import TRAINER_FIELDS, DataArguments, DeltaTrainingArguments, ModelArguments
from src.checks import Choice, Number
from tools import (benchmark, count_params, gather_result, generate_k_shot_data, launch, make_table, plot_mulstage,
                   task_args)

WRONG_TYPE = {int: "12", float: "x", str: 5, bool: "yes"}


def project_fields():
    """(field, allowed, type) for every run.py argument this project declares (those with a help group)
    or relies on (TRAINER_FIELDS)."""
    for dtype in (ModelArguments, DataArguments, DeltaTrainingArguments):
        for f in dataclasses.fields(dtype):
            if f.metadata.get("group") or f.name in TRAINER_FIELDS:
                yield f, f.metadata.get("allowed") or TRAINER_FIELDS.get(f.name), typing.get_type_hints(dtype)[f.name]


def wrong_type(hint):
    """A JSON value of the wrong type for `hint`, or None where the type is not a plain one."""
    if typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return wrong_type(rest[0]) if len(rest) == 1 else None
    if typing.get_origin(hint) is list:
        return "prompt"
    return WRONG_TYPE.get(hint)


# Command-line values that fields with other kinds of allowed values refuse.
REJECTED = {"model_name_or_path": ("",), "output_dir": ("",), "log_file": ("",), "task_name": ("SST-7",),
            "task_file": ("/nonexistent/task.json",),
            "data_dir": ("/nonexistent/folder",), "delta_path": ("/nonexistent/path",), "fp16": ("true",),
            "lr_scheduler_type": ("reduce_lr_on_plateau", "bogus"), "attach": ("",),
            "load_best_model_at_end": ("true",), "resume_from_checkpoint": ("out/checkpoint-2",),
            "gradient_checkpointing": ("true",), "past_index": ("0",), "use_liger_kernel": ("true",),
            "push_to_hub": ("true",), "prediction_loss_only": ("true",), "eval_do_concat_batches": ("false",),
            "dataloader_drop_last": ("true",), "fp16_full_eval": ("true",), "bf16_full_eval": ("true",),
            "fsdp": ("full_shard",), "report_to": ("no_such_logger",)}


def rejected(name, allowed):
    """Command-line spellings just outside what `allowed` allows: below and above a Number's bounds (the
    bound itself where it is open), NaN and infinity where it takes floats, an unknown choice."""
    if isinstance(allowed, Number):
        bounds = [str(allowed.low if allowed.low_open else allowed.low - 1)] if allowed.low is not None else []
        bounds += [str(allowed.high if allowed.high_open else allowed.high + 1)] if allowed.high is not None else []
        return tuple(bounds) + (() if allowed.integer else ("nan",) if allowed.high is not None else ("nan", "inf"))
    return ("bogus",) if isinstance(allowed, Choice) else REJECTED.get(name, ())


FIELD_CASES = {}
for _field, _allowed, _hint in project_fields():
    for _bad in rejected(_field.name, _allowed):
        FIELD_CASES[f"--{_field.name} {_bad}"] = ({"cli": [f"--{_field.name}", _bad]}, f"--{_field.name}")
    if wrong_type(_hint) is not None:
        FIELD_CASES[f"json {_field.name}={wrong_type(_hint)!r}"] = ({"json": {_field.name: wrong_type(_hint)}},
                                                                    f"--{_field.name}")

CONSISTENCY_CASES = {
    "unknown flag": ({"cli": ["--bogus_flag", "1"]}, "--bogus_flag"),
    "bad int": ({"cli": ["--max_steps", "many"]}, "--max_steps"),
    "bad bool": ({"cli": ["--use_adapter", "maybe"]}, "--use_adapter"),
    "attach an unknown method": ({"cli": ["--attach", "adapter,lorax"]}, "unknown delta method 'lorax' in --attach"),
    "attach a method without modules": ({"cli": ["--attach", "bias"]}, "--attach 'bias': bias adds no modules"),
    "template without mask": ({"cli": ["--template", "*cls**sent_0*.*sep+*"]}, "--template"),
    "no template": ({"cli": ["--template", ""]}, "--template"),
    "mapping not a dict": ({"cli": ["--mapping", "['great']"]}, "--mapping"),
    "mapping label missing": ({"cli": ["--mapping", "{'0':'terrible'}"]}, "--mapping"),
    "unknown method": ({"cli": ["--training_params", "prompt,lorax"]}, "--training_params"),
    "all combined": ({"cli": ["--training_params", "all,bias"]}, "--training_params"),
    "prompt without *prompt*": ({"cli": ["--training_params", "prompt",
                                         "--template", "*cls**sent_0*_It_was*mask*.*sep+*"]}, "--training_params"),
    "zero steps": ({"cli": ["--max_steps", "0"]}, "--max_steps"),
    **{f"schedule {name} without its kwargs": ({"cli": ["--lr_scheduler_type", name]}, "--lr_scheduler_type")
       for name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")},
    "bf16 without a GPU": ({"cli": ["--bf16"]}, "--bf16"),
    "no steps, no epochs": ({"cli": ["--max_steps", "-1", "--num_train_epochs", "0"]}, "--max_steps"),
    "beyond the positions": ({"cli": ["--max_seq_length", "100000"]}, "--max_seq_length"),
    "adapter wider than the model": ({"cli": ["--training_params", "adapter", "--adapter_reduction_factor", "1000"]},
                                     "--adapter_reduction_factor"),
    "LoRA rank above the hidden size": ({"cli": ["--training_params", "lora", "--lora_r", "1000"]}, "--lora_r"),
    "attached LoRA rank above the hidden size": ({"cli": ["--attach", "lora", "--lora_r", "1000"]}, "--lora_r"),
    "attached adapter wider than the model": ({"cli": ["--use_adapter", "--adapter_reduction_factor", "1000"]},
                                              "--adapter_reduction_factor"),
    "missing model": ({"cli": ["--model_name_or_path", "/nonexistent/model"]}, "--model_name_or_path"),
    # the methods' sizes against the model (its 514 positions, its parameters), before any allocation
    "prompt vectors beyond the positions": ({"cli": ["--prompt_num", str(10**9)]}, "--prompt_num must be at most 514"),
    "prefix beyond the positions": ({"cli": ["--training_params", "prefix", "--prefix_length", str(10**9)]},
                                    "--prefix_length must be at most 514"),
    "prefix MLP larger than the model": ({"cli": ["--training_params", "prefix", "--prefix_bottleneck_size",
                                                  str(10**9)]}, "--prefix_bottleneck_size must be at most"),
    # soft prompts that leave no token of the sentence: every input would be the same
    "500 prompt vectors in 128 tokens": ({"cli": ["--prompt_num", "500"]},
                                         "--max_seq_length 128 leaves no room for the sentences: the template"),
    "10 prompt vectors in 8 tokens": ({"cli": ["--max_seq_length", "8"]},
                                      "takes 16 tokens (10 soft-prompt vectors of --prompt_num 10)"),
    "attach prompt without *prompt*": ({"cli": ["--training_params", "bias", "--attach", "prompt",
                                                "--template", "*cls**sent_0*_It_was*mask*.*sep+*"]},
                                       "--attach lists 'prompt' but the template has no *prompt* part"),
    # a copy of the tiny model in the folder named, damaged: (folder, damage(weights file))
    "model weights truncated": ({"model": ("model", lambda w: w.write_bytes(w.read_bytes()[:w.stat().st_size // 2]))},
                                "model.safetensors is not a complete safetensors file"),
    "model weights random bytes": ({"model": ("model", lambda w: w.write_bytes(random.Random(0).randbytes(10**5)))},
                                   "model.safetensors is not a complete safetensors file"),
    # (transformers guesses a model type from the folder's name: 'mpt' in 'empty')
    "model folder empty": ({"model": ("empty", lambda w: shutil.rmtree(w.parent) or w.parent.mkdir())},
                           "holds no config.json"),
    "pad beyond the positions": ({"cli": ["--pad_to_multiple_of", "100000"]}, "--pad_to_multiple_of"),
    "unknown compile backend": ({"cli": ["--torch_compile", "--torch_compile_backend", "no_such_backend"]},
                                "--torch_compile_backend"),
    "unknown compile mode": ({"cli": ["--torch_compile_mode", "bogus-mode"]}, "--torch_compile_mode"),
    "the Trainer's best model at the end": ({"cli": ["--load_best_model_at_end", "--save_strategy", "steps",
                                                     "--eval_strategy", "steps"]},
                                            "--load_best_model_at_end must be false (each stage ends in its best "
                                            "dev state anyway"),
    "resuming from a Trainer checkpoint": ({"cli": ["--resume_from_checkpoint", "out/checkpoint-2"]},
                                           "--resume_from_checkpoint must be unset (run.py does not resume a run"),
    "eval_steps without eval_strategy steps": ({"cli": ["--eval_steps", "2"]},
                                              "--eval_steps 2 evaluates nothing with --eval_strategy no"),
    "the best checkpoint without a metric": ({"cli": ["--save_strategy", "best"]},
                                             "--save_strategy best needs --metric_for_best_model"),
    "an optimizer whose package is missing": ({"cli": ["--optim", "lomo"]}, "--optim lomo: You need to install"),
    "deepspeed, not installed": ({"cli": ["--deepspeed", "ds.json"]},
                                 "a package these Trainer options need is missing"),
    "label smoothing on a regression task": ({"cli": ["--label_smoothing_factor", "0.1", "--task_name", "STS-B",
                                                      "--data_dir", "{data}/k-shot/STS-B/16-42"]},
                                             "STS-B is a regression task"),
    "num_k other than the split's": ({"cli": ["--num_k", "8"]}, "--num_k 8 does not match the data"),
    "LoRA alpha 1e29": ({"cli": ["--training_params", "lora", "--lora_alpha", str(10**29)]}, "--lora_alpha"),
    "empty method name": ({"cli": ["--training_params", "prompt,,bias"]}, "an empty method name"),
    "method listed twice": ({"cli": ["--training_params", "bias,bias"]}, "bias listed twice"),
    # packed flags: every value checked before any run starts
    "--seed without a value": ({"cli": ["--seed"]}, "--seed needs a value"),
    "--seed 13 x": ({"cli": ["--seed", "13", "x"]}, "--seed must be an integer in [0, 4294967295], got 'x'"),
    "--seed 13 -1": ({"cli": ["--seed", "13", "-1"]}, "got '-1'"),
    "--learning_rate 1e-3 0": ({"cli": ["--learning_rate", "1e-3", "0"]}, "--learning_rate must be"),
    "--seed 13 013": ({"cli": ["--seed", "13", "013"]}, "13 and 013 are the same value"),
    "--learning_rate 1e-3 0.001": ({"cli": ["--learning_rate", "1e-3", "0.001"]}, "1e-3 and 0.001 are the same"),
    "packed runs sharing a folder": ({"cli": ["--learning_rate", "1e-3", "--seed", "13", "21",
                                              "--output_dir", "out/lr{learning_rate}"]},
                                     "runs of different --seed values would all write out/lr1e-3; put {seed} in it"),
    "json unknown key": ({"json": {"learning_rte": 1e-3}}, "learning_rte"),
    "json not an object": ({"json_text": "[1, 2]"}, "JSON object"),
    "json not json": ({"json_text": "{'task_name': 'SST-2'"}, "argument file"),
    "json nested": ({"json_text": "[" * 100000 + "]" * 100000}, "argument file"),
    "json {seed} without seed": ({"json": {"output_dir": "out/{seed}"}}, "{seed} is used but seed is not given"),
}


def base_arguments(tiny_roberta, data_root, tmp_path):
    return {"task_name": "SST-2", "data_dir": str(data_root / "k-shot/SST-2/16-42"),
            "model_name_or_path": tiny_roberta, "template": "*cls*prompt*sent_0*_It_was*mask*.*sep+*",
            "mapping": "{'0':'terrible','1':'great'}", "training_params": ["prompt,bias"], "do_train": True,
            "max_steps": 2, "output_dir": str(tmp_path / "out"), "log_file": str(tmp_path / "log"),
            "feature_cache_dir": str(tmp_path / "cache")}


def to_argv(arguments):
    argv = []
    for key, value in arguments.items():
        argv += [f"--{key}"] + (value if isinstance(value, list) else [] if value is True else [str(value)])
    return argv


def assert_one_line_error(code, capsys, culprit, tmp_path, before):
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
    assert culprit in errors[0], errors[0]
    assert sorted(tmp_path.rglob("*")) == before  # no log, lock, output or cache


@pytest.mark.parametrize("case", {**FIELD_CASES, **CONSISTENCY_CASES})
def test_bad_run_argument(case, tiny_roberta, data_root, tmp_path, capsys, monkeypatch):
    spec, culprit = {**FIELD_CASES, **CONSISTENCY_CASES}[case]
    monkeypatch.chdir(tmp_path)
    arguments = base_arguments(tiny_roberta, data_root, tmp_path)
    if "model" in spec:
        folder, damage = spec["model"]
        shutil.copytree(tiny_roberta, tmp_path / folder)
        damage(tmp_path / folder / "model.safetensors")
        arguments["model_name_or_path"] = str(tmp_path / folder)
    if "json" not in spec and "json_text" not in spec:
        argv = to_argv(arguments) + [arg.replace("{data}", str(data_root)) for arg in spec.get("cli", [])]
    else:
        text = spec.get("json_text") or json.dumps({**arguments, **spec["json"]})
        (tmp_path / "args.json").write_text(text)
        argv = [str(tmp_path / "args.json")]
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error(run.main(argv), capsys, culprit, tmp_path, before)


def test_every_checked_field_has_a_case_and_help():
    for f, allowed, hint in project_fields():
        assert f.metadata.get("help"), f.name
        assert rejected(f.name, allowed) or wrong_type(hint) is not None, f"no bad-input case for {f.name}"


@contextlib.contextmanager
def no_hang(seconds=30):
    """Fail instead of hanging: a TimeoutError after `seconds` (e.g. in a blocking read of a FIFO)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a blocking read?)")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def parsed_runs(monkeypatch):
    """Record the (seed, learning rate) of each run run.py parses, then stop that run (a UserError):
    what a command line asks for, without loading any model."""
    from src import arguments
    from src.errors import UserError
    seen, parse = [], arguments.parse_args

    def record(argv):
        training = parse(argv)[2]
        seen.append((training.seed, training.learning_rate))
        raise UserError("stopped by the test")
    monkeypatch.setattr(arguments, "parse_args", record)
    monkeypatch.setattr("src.experiment.parse_args", record)  # where a run parses its argument list
    return seen


def script_arguments(data_root, tiny_roberta, tmp_path, extra):
    """run_experiment.sh's run.py arguments (PRINT_ARGS=1) for SEED=13 LR=1e-3 and `extra` as its argument."""
    from tests.test_scripts import run_script
    result = run_script("run_experiment.sh", dict(TASK="SST-2", TAG="t", BS=4, LR="1e-3", SEED=13, MODEL=tiny_roberta,
                                                  DATA_ROOT=data_root, LOG_FILE=tmp_path / "log",
                                                  RESULT_DIR=tmp_path / "result", PRINT_ARGS=1), extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]


@pytest.mark.parametrize("extra, runs", [
    ("--seed 42 --learning_rate 3e-3", [(42, 3e-3)]),
    ("--seed 21 42", [(21, 1e-3), (42, 1e-3)]),
], ids=["one value", "several values"])
def test_run_experiment_extra_arguments_override(extra, runs, data_root, tiny_roberta, tmp_path, monkeypatch, capsys):
    argv = script_arguments(data_root, tiny_roberta, tmp_path, extra)
    seen = parsed_runs(monkeypatch)
    run.main(argv)
    assert seen == runs, capsys.readouterr().err[-2000:]


def test_quickstart_arguments_override(monkeypatch, capsys):
    from examples import quickstart
    seen = parsed_runs(monkeypatch)
    quickstart.main(["--learning_rate", "3e-3"])
    assert seen == [(42, 3e-3)], capsys.readouterr().err[-2000:]


def test_an_argument_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path, capsys):
    os.mkfifo(tmp_path / "args.json")
    before = sorted(tmp_path.rglob("*"))
    with no_hang():
        code = run.main([str(tmp_path / "args.json")])
    assert_one_line_error(code, capsys, "is not a regular file", tmp_path, before)


TOOL_CASES = {  # (tool, argv, culprit)
    "k-shot --k 0": (generate_k_shot_data, ["--k", "0"], "--k"),
    "k-shot --k -16": (generate_k_shot_data, ["--k", "-16"], "--k"),
    "k-shot --seed -1": (generate_k_shot_data, ["--seed", "13", "-1"], "--seed"),
    "k-shot --seed 2**32": (generate_k_shot_data, ["--seed", "4294967296"], "--seed"),
    "k-shot --mode": (generate_k_shot_data, ["--mode", "k-shot-2x"], "--mode"),
    "k-shot --task": (generate_k_shot_data, ["--task", "SST-7"], "--task"),
    "k-shot unknown flag": (generate_k_shot_data, ["--kk", "16"], "--kk"),
    "count_params --prompt_num 0": (count_params, ["--prompt_num", "0"], "--prompt_num"),
    "count_params --model_size": (count_params, ["--model_size", "huge"], "--model_size"),
    "gather --condition set": (gather_result, ["--condition", "{'sst-2'}"], "--condition"),
    "gather --protocol": (gather_result, ["--condition", "{}", "--protocol", "best"], "--protocol"),
    "make_table --protocol": (make_table, ["--task", "SST-2", "--protocol", "best"], "--protocol"),
    "make_table no --task": (make_table, [], "--task"),
    "make_table --compare": (make_table, ["--compare", "lm-bff"], "--compare"),
    "make_table --csv without --compare": (make_table, ["--task", "SST-2", "--csv", "t.csv"], "--csv"),
    "gather --seeds -1": (gather_result, ["--condition", "{}", "--seeds", "13", "-1"], "--seeds"),
    "plot no --output": (plot_mulstage, ["--task", "SST-2"], "--output"),
    "task_args --hard": (task_args, ["--task", "SST-2", "--hard", "X"], "HARD"),
    "task_args --task": (task_args, ["--task", "SST-7"], "SST-7"),
    "launch --engine": (launch, ["--engine", "kubernetes", "jobs.txt"], "--engine"),
    "launch --runs-per-gpu 0": (launch, ["--runs-per-gpu", "0", "jobs.txt"], "--runs-per-gpu"),
    "launch --cpus-per-job 0": (launch, ["--cpus-per-job", "0", "jobs.txt"], "--cpus-per-job"),
    "launch --retries -1": (launch, ["--retries", "-1", "jobs.txt"], "--retries"),
    "launch --time": (launch, ["--time", "1:2:3:4", "jobs.txt"], "--time"),
    "launch --time 0": (launch, ["--time", "0", "jobs.txt"], "--time"),
    "launch --array-parallelism 0": (launch, ["--array-parallelism", "0", "jobs.txt"], "--array-parallelism"),
    "launch no job list": (launch, ["jobs.txt"], "jobs.txt"),
    "launch --status and --pending": (launch, ["--status", "--pending", "jobs.txt"], "--pending"),
    **{f"benchmark {option} {value}": (benchmark, ["--data_dir", "x", option, value], option)
       for option, value in [("--max_seq_length", "7"), ("--train_batch_size", "0"), ("--eval_batch_size", "0"),
                             ("--train_steps", "0"), ("--reference_train_steps", "0"), ("--slow_eval_stride", "0"),
                             ("--threads", "-1"), ("--seed", "-1"), ("--device", "tpu"), ("--model_size", "huge"),
                             ("--packed_methods", "all"), ("--packed_methods", "prompt,foo")]},
}


@pytest.mark.parametrize("case", TOOL_CASES)
def test_bad_tool_option(case, tmp_path, capsys, monkeypatch):
    tool, argv, culprit = TOOL_CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log").write_text("")
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error(tool.main(argv), capsys, culprit, tmp_path, before)


def test_tokenizer_larger_than_the_model_vocabulary(tiny_roberta, data_root, tmp_path, capsys):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_roberta, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    code = run.main(to_argv({**base_arguments(tiny_roberta, data_root, tmp_path), "model_name_or_path": str(model)}))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: --model_name_or_path: its tokenizer has ")
    assert not (tmp_path / "log").exists() and not (tmp_path / "out").exists()


FAMILY_CASES = {  # family, extra arguments, the error's words (src/families.py)
    "adapter with lora on ModernBERT": ("modernbert", ["--training_params", "adapter,lora"],
                                        "the adapter and lora methods cannot attach together to modernbert models"),
    "lora, then adapter, on ModernBERT": ("modernbert", ["--training_params", "lora", "adapter"],
                                          "the adapter and lora methods cannot attach together to modernbert models"),
    "--use_adapter with lora on ModernBERT": ("modernbert", ["--training_params", "lora", "--use_adapter"],
                                              "the adapter and lora methods cannot attach together to modernbert"),
    "prefix tuning on ModernBERT": ("modernbert", ["--training_params", "prefix"],
                                    "the prefix method cannot attach to modernbert models: the adapters library "
                                    "has no prefix_tuning support for modernbert"),
    "prefix tuning attached on ModernBERT": ("modernbert", ["--training_params", "bias", "--attach", "prefix"],
                                             "the prefix method cannot attach to modernbert models"),
    "a model type without a row": ("electra", [], "--model_name_or_path: model type 'electra' is not one of"),
}


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_method_or_model_the_family_cannot_take(case, tiny_of, data_root, tmp_path, capsys, monkeypatch):
    """One error line naming the method(s) and the family, before the model loads."""
    import shutil

    from src import models
    family, extra, words = FAMILY_CASES[case]
    monkeypatch.setattr(models, "build_model", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    model = tmp_path / "model"
    if family == "electra":  # a BERT-shaped model of a type that has no row
        shutil.copytree(tiny_of("bert"), model)
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "electra"}))
    else:
        shutil.copytree(tiny_of(family), model)
    arguments = {**base_arguments(str(model), data_root, tmp_path), "training_params": None}
    before = sorted(tmp_path.rglob("*"))
    code = run.main(to_argv({k: v for k, v in arguments.items() if v is not None}) + extra)
    assert_one_line_error(code, capsys, words, tmp_path, before)

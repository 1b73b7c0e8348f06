"""run.py --help: the project's arguments first, in groups, each with help; the Trainer's after them."""
import re

import pytest

import run


def test_help_shows_the_project_groups_before_the_trainer_options(capsys):
    with pytest.raises(SystemExit) as done:
        run.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    headers = [line[:-1] for line in text.splitlines() if re.fullmatch(r"[a-z][^:]*:", line)]
    assert headers == ["options", "data", "model", "delta (what is trained)", "training", "results log and sweeps",
                       "other Trainer options (transformers.TrainingArguments)"]
    project, trainer = text.split("other Trainer options")
    for name in ("--task_name", "--template", "--model_name_or_path", "--training_params", "--learning_rate",
                 "--max_steps", "--log_file", "--skip_done"):
        assert name in project
    assert "--optim " in trainer and "--optim " not in project
    delta = text.split("delta (what is trained):")[1].split("\ntraining:")[0]
    for name in ("--attach", "--use_adapter", "--prompt_num", "--adapter_reduction_factor", "--lora_r", "--lora_alpha",
                 "--prefix_length", "--prefix_bottleneck_size"):  # generated from the delta registry's options
        assert name in delta, name

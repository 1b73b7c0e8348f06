"""run.py end to end through the command line, on the real k-shot data and tiny models."""
import json
import subprocess
import sys

import pytest

from run import main
from tests.conftest import ROOT


def run_cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True)


def readme_example(model, data_root, tmp_path, **overrides):
    """The README quick-start command, with a tiny model and a short schedule."""
    args = {"--task_name": "SST-2", "--data_dir": str(data_root / "k-shot/SST-2/16-42"),
            "--evaluation_strategy": "steps", "--model_name_or_path": model, "--num_k": "16",
            "--max_steps": "4", "--eval_steps": "2", "--per_device_train_batch_size": "2",
            "--learning_rate": "1e-3", "--num_train_epochs": "0", "--output_dir": str(tmp_path / "result/tmp"),
            "--seed": "42", "--prompt_num": "10", "--template": "*cls*prompt*sent_0*_It_was*mask*.*sep+*",
            "--mapping": "{'0':'terrible','1':'great'}", "--num_sample": "16",
            "--training_params": "prompt,bias,adapter", "--feature_cache_dir": str(tmp_path / "cache")}
    args.update(overrides)
    flat = ["--overwrite_output_dir", "--do_train", "--do_eval", "--do_predict", "--use_adapters"]
    for key, value in args.items():
        if value is not None:
            flat += [key, *(value if isinstance(value, list) else [value])]
    return flat


def log_records(tmp_path):
    log = tmp_path / "log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_readme_example_trains_logs_and_saves_a_reloadable_delta(tiny_model, data_root, tmp_path, monkeypatch):
    """Every model family (in process, as the bad-input table: the other tests here run run.py as a script)."""
    monkeypatch.chdir(tmp_path)
    assert main(readme_example(tiny_model, data_root, tmp_path)) == 0
    [record] = log_records(tmp_path)
    assert record["task_name"] == "sst-2" and record["do_train"] is True
    assert record["training_params"] == "prompt,bias,adapter"
    for split in ["train", "dev", "test"]:
        assert 0.0 <= record[f"sst-2_{split}_eval_acc"] <= 1.0
    assert 0 < record["trainable_params"] < record["total_params"]
    assert [step for step, _ in record["stages"][0]["eval_history"]] == [2, 4]
    delta = tmp_path / "result/tmp/delta.safetensors"
    assert delta.is_file() and delta.stat().st_size < 1_000_000

    # The saved delta, loaded onto the base model, reproduces the final test score without training.
    reload = readme_example(tiny_model, data_root, tmp_path, **{"--delta_path": str(delta.parent),
                                                               "--output_dir": str(tmp_path / "result/eval")})
    reload.remove("--do_train")
    assert main(reload) == 0
    evaluated = log_records(tmp_path)[-1]
    assert evaluated["do_train"] is False
    assert evaluated["sst-2_test_eval_acc"] == record["sst-2_test_eval_acc"]


def test_multi_stage_run_records_each_stage(tiny_roberta, data_root, tmp_path):
    args = readme_example(tiny_roberta, data_root, tmp_path,
                          **{"--training_params": ["prompt", "bias", "adapter"], "--stage_init": "best"})
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = log_records(tmp_path)
    assert record["training_params"] == "prompt bias adapter"
    assert [stage["training_params"] for stage in record["stages"]] == ["prompt", "bias", "adapter"]
    assert all("acc" in stage["dev"] and "acc" in stage["test"] for stage in record["stages"])


def test_zero_shot_and_json_arguments(tiny_roberta, data_root, tmp_path):
    args = readme_example(tiny_roberta, data_root, tmp_path, **{"--training_params": None})
    args.remove("--do_train")
    assert run_cli(args, tmp_path).returncode == 0
    config = {"task_name": "SST-2", "data_dir": str(data_root / "k-shot/SST-2/16-{seed}"), "seed": 42,
              "model_name_or_path": tiny_roberta, "template": "*cls**sent_0*_It_was*mask*.*sep+*",
              "mapping": "{'0':'terrible','1':'great'}", "output_dir": str(tmp_path / "json-{seed}"), "tag": "json",
              "feature_cache_dir": str(tmp_path / "cache"), "log_file": str(tmp_path / "log")}
    (tmp_path / "args.json").write_text(json.dumps(config))
    assert run_cli(["args.json"], tmp_path).returncode == 0
    zero_shot, from_json = log_records(tmp_path)
    assert zero_shot["do_train"] is False and zero_shot["stages"] == [] and zero_shot["trainable_params"] == 0
    assert from_json["tag"] == "json" and "sst-2_test_eval_acc" in from_json
    # {seed} in a file's strings is the run's seed, as on the command line
    assert from_json["data_dir"].endswith("16-42") and from_json["output_dir"] == str(tmp_path / "json-42")


def test_skip_done_runs_nothing_twice(tiny_roberta, data_root, tmp_path):
    args = readme_example(tiny_roberta, data_root, tmp_path, **{"--training_params": "bias"}) + ["--skip_done"]
    args.remove("--use_adapters")
    assert run_cli(args, tmp_path).returncode == 0
    again = run_cli(args, tmp_path)
    assert again.returncode == 0 and "skip" in again.stderr
    assert len(log_records(tmp_path)) == 1


BAD_INPUTS = {
    "template without mask": ({"--template": "*cls**sent_0*_It_was.*sep+*"}, "mask"),
    "unknown template part": ({"--template": "*cls**sent_9x**mask*.*sep+*"}, "sent_9x"),
    "label word of two tokens": ({"--mapping": "{'0':'terrible','1':'supercalifragilistic'}"}, "supercalifragilistic"),
    "mapping not a literal": ({"--mapping": "{'0': terrible}"}, "mapping"),
    "unknown task": ({"--task_name": "SST-7"}, "SST-7"),
    "missing data": ({"--data_dir": "/nonexistent/SST-2/16-42"}, "/nonexistent"),
    "unknown delta method": ({"--training_params": "prompt,lorax"}, "lorax"),
    "all combined": ({"--training_params": "all,bias"}, "all"),
    "missing model": ({"--model_name_or_path": "/nonexistent/model"}, "/nonexistent/model"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_error_and_nothing_logged(case, tiny_roberta, data_root, tmp_path, monkeypatch, capsys):
    overrides, culprit = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    assert main(readme_example(tiny_roberta, data_root, tmp_path, **overrides)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and culprit in lines[-1] and "Traceback" not in err, err[-1500:]
    assert log_records(tmp_path) == []


def test_methods_attach_what_they_train_and_a_saved_delta_reloads(tiny_roberta, data_root, tmp_path):
    """No --use_adapter: the stages' methods (adapter, LoRA) are attached; the record states its
    combination, template kind and zero-shot-ness; the delta reloads without naming its methods."""
    args = readme_example(tiny_roberta, data_root, tmp_path, **{"--training_params": "lora,adapter,prompt"})
    args.remove("--use_adapters")
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = log_records(tmp_path)
    assert (record["combination"], record["hard"], record["zero_shot"]) == ("prompt,adapter,lora", "Y", False)
    reload = readme_example(tiny_roberta, data_root, tmp_path, **{
        "--delta_path": str(tmp_path / "result/tmp"), "--output_dir": str(tmp_path / "result/eval"),
        "--training_params": None})
    reload.remove("--do_train")
    reload.remove("--use_adapters")
    assert run_cli(reload, tmp_path).returncode == 0
    evaluated = log_records(tmp_path)[-1]
    assert (evaluated["combination"], evaluated["zero_shot"]) == ("none", True)
    assert evaluated["sst-2_test_eval_acc"] == record["sst-2_test_eval_acc"]


def test_prefix_tuning_beside_an_attached_method_saves_its_trained_tensors(tiny_bert, data_root, tmp_path,
                                                                           monkeypatch):
    """Prefix tuning trains (and saves, and counts) its embedding and MLP; --attach lora adds frozen LoRA
    modules; the delta's config names both, so the reload attaches both and scores the same (in process).
    The modules attached untrained (LoRA, the template's prompt table) start from --seed: saved too."""
    from safetensors.torch import load_file

    from src.delta import METHODS
    monkeypatch.chdir(tmp_path)
    options = {"--training_params": "prefix", "--prefix_length": "4", "--prefix_bottleneck_size": "16"}
    args = readme_example(tiny_bert, data_root, tmp_path, **options) + ["--attach", "lora"]
    args.remove("--use_adapters")
    assert main(args) == 0
    [record] = log_records(tmp_path)
    assert (record["combination"], record["attach"], record["prefix_length"]) == ("prefix", "lora", 4)
    delta = load_file(str(tmp_path / "result/tmp/delta.safetensors"))
    trained = {name: tensor for name, tensor in delta.items() if METHODS["prefix"].selects(name)}
    assert trained and record["trainable_params"] == sum(tensor.numel() for tensor in trained.values())
    untrained = [name for name in delta if name not in trained]
    assert untrained and all(METHODS["lora"].selects(name) or METHODS["prompt"].selects(name) for name in untrained)
    reload = readme_example(tiny_bert, data_root, tmp_path, **{**options, "--training_params": None,
                                                               "--delta_path": str(tmp_path / "result/tmp"),
                                                               "--output_dir": str(tmp_path / "result/eval")})
    reload.remove("--do_train")
    reload.remove("--use_adapters")
    assert main(reload) == 0
    evaluated = log_records(tmp_path)[-1]
    assert evaluated["total_params"] == record["total_params"]  # the same modules: prefix and LoRA
    assert evaluated["sst-2_test_eval_acc"] == record["sst-2_test_eval_acc"]


MODES = {  # (few_shot_type, model family, task, HARD, training_params)
    "demonstrations, BERT": ("prompt-demo", "bert", "SST-2", "Y", "prompt,bias"),
    "finetune head, RoBERTa": ("finetune", "roberta", "SST-2", "Y", "bias"),
    "two sentences soft-only, BERT": ("prompt", "bert", "MRPC", "N", "prompt,bias"),
}


@pytest.mark.parametrize("case", MODES)
def test_modes_and_families_run_end_to_end(case, tiny_roberta, tiny_bert, data_root, tmp_path):
    from src.tasks import get_task
    mode, family, task_name, hard, training_params = MODES[case]
    task = get_task(task_name)
    args = readme_example({"bert": tiny_bert, "roberta": tiny_roberta}[family], data_root, tmp_path, **{
        "--task_name": task.name, "--data_dir": str(data_root / "k-shot" / task.name / "16-42"),
        "--template": task.template(hard, prompt=True), "--mapping": task.mapping, "--few_shot_type": mode,
        "--num_sample": "2", "--training_params": training_params})
    args.remove("--use_adapters")
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = log_records(tmp_path)
    assert record["few_shot_type"] == mode
    assert f"{task.key}_test_eval_{task.main_metric}" in record

"""--delta_path files that do not fit are one clear error each: corrupt, partial, wrong names, shapes,
dtypes, NaN values, missing tensors."""
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM

import run
from src.delta.checkpoint import CONFIG, WEIGHTS, load_delta, read_delta, save_delta
from src.errors import UserError
from tests.test_bad_input import base_arguments, no_hang, to_argv


@pytest.fixture
def saved(tiny_roberta, tmp_path):
    """A tiny model and the folder of its saved BitFit delta."""
    model = AutoModelForMaskedLM.from_pretrained(tiny_roberta)
    save_delta(model, ["bias"], ["bias"], tmp_path / "delta", {"task_name": "sst-2"})()
    return model, tmp_path / "delta"


def rewrite(folder, change):
    state = load_file(str(folder / WEIGHTS))
    save_file(change(state), str(folder / WEIGHTS))


FROZEN = "roberta.embeddings.word_embeddings.weight"


def first(state):
    return next(iter(state))


DAMAGE = {
    "corrupt file": (lambda d: (d / WEIGHTS).write_bytes(b"\x00garbage" * 10), "unreadable"),
    "partial file": (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-100]), "unreadable"),
    "empty file": (lambda d: (d / WEIGHTS).write_bytes(b""), "unreadable"),
    "wrong shape": (lambda d: rewrite(d, lambda s: {**s, first(s): torch.zeros(3)}), "has shape"),
    "NaN values": (lambda d: rewrite(d, lambda s: {**s, first(s): torch.full_like(s[first(s)], float("nan"))}),
                   "NaN"),
    "integer dtype": (lambda d: rewrite(d, lambda s: {**s, first(s): s[first(s)].long()}), "dtype"),
    "unknown tensor": (lambda d: rewrite(d, lambda s: {**s, "extra.weight": torch.zeros(2)}), "extra.weight"),
    "a tensor this model lacks": (lambda d: rewrite(d, lambda s: {**s, "roberta.extra.bias": torch.zeros(2)}),
                                  "(roberta.extra.bias is not one of its parameters)"),
    "tensors missing": (lambda d: rewrite(d, lambda s: {first(s): s[first(s)]}), "incomplete"),
    "config not JSON": (lambda d: (d / CONFIG).write_text("{"), CONFIG),
    # the config says which tensors the delta may hold: without it (or with a FIFO) nothing can be checked
    "config missing": (lambda d: (d / CONFIG).unlink(), f"{CONFIG} is missing"),
    "config a FIFO": (lambda d: (d / CONFIG).unlink() or os.mkfifo(d / CONFIG), "not a regular file"),
    "config a folder": (lambda d: (d / CONFIG).unlink() or (d / CONFIG).mkdir(), "not a regular file"),
    "config naming no method": (lambda d: (d / CONFIG).write_text('{"delta_methods": ["bogus"]}'), "delta_methods"),
    "a tensor of the frozen model": (lambda d: rewrite(d, lambda s: {**s, FROZEN: torch.zeros(2)}),
                                     f"{FROZEN} is not trained by its methods (bias"),
}


def test_a_saved_delta_loads_back(saved):
    model, folder = saved
    load_delta(model, read_delta(folder))
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG, WEIGHTS])
    assert json.loads((folder / CONFIG).read_text())["delta_methods"] == ["bias"]


@pytest.mark.parametrize("config, modules", [
    ({}, {"bias"}), ({"use_adapter": True}, {"bias", "adapter"}), ({"use_adapter": False}, {"bias"}),
    ({"attach": "adapter,lora"}, {"bias", "adapter", "lora"})], ids=["plain", "old use_adapter", "old no adapter",
                                                                   "attach"])
def test_a_saved_delta_names_the_modules_to_attach_before_it_loads(config, modules, saved):
    """Its methods, and those its run attached without training: --attach, or an older version's use_adapter."""
    _, folder = saved
    (folder / CONFIG).write_text(json.dumps({"delta_methods": ["bias"], **config}))
    assert set(read_delta(folder).modules) == modules


@pytest.mark.parametrize("case", DAMAGE)
def test_a_delta_that_does_not_fit_is_one_error(case, saved):
    model, folder = saved
    damage, message = DAMAGE[case]
    damage(folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with no_hang(), pytest.raises(UserError, match=re.escape(message)) as error:
        load_delta(model, read_delta(folder))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())  # nothing half-loaded


def test_run_with_a_corrupt_delta_exits_2(saved, tiny_roberta, data_root, tmp_path, capsys):
    _, folder = saved
    (folder / WEIGHTS).write_bytes(b"not safetensors")
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "delta_path": str(folder)}
    del arguments["do_train"]
    assert run.main(to_argv(arguments)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: delta weights")
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""


def test_a_delta_that_would_overwrite_the_frozen_model_is_refused(saved):
    """A BitFit delta also holding the word embeddings (with their real shape): the base stays as it is."""
    model, folder = saved
    rewrite(folder, lambda s: {**s, FROZEN: torch.ones_like(model.get_parameter(FROZEN))})
    before = model.get_parameter(FROZEN).detach().clone()
    with pytest.raises(UserError, match=f"{FROZEN} is not trained by its methods"):
        load_delta(model, read_delta(folder))
    assert torch.equal(model.get_parameter(FROZEN), before)


@pytest.mark.parametrize("damage", ["a tensor of the frozen model", "config a FIFO", "config missing"])
def test_run_refuses_a_delta_before_the_model_loads(damage, saved, tiny_roberta, data_root, tmp_path, capsys,
                                                    monkeypatch):
    from tests.test_faults import never_build
    _, folder = saved
    DAMAGE[damage][0](folder)
    monkeypatch.setattr("src.models.build_model", never_build)
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "delta_path": str(folder)}
    with no_hang():
        code = run.main(to_argv(arguments))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: ") and DAMAGE[damage][1] in err
    assert not (tmp_path / "log").exists() and not (tmp_path / "out").exists()


def test_both_delta_files_are_readable_alike(saved):
    """safetensors writes 0600; a shared cluster folder needs the weights readable as the config is."""
    _, folder = saved
    assert (folder / WEIGHTS).stat().st_mode == (folder / CONFIG).stat().st_mode


def write_delta(folder, tensors, config):
    folder.mkdir()
    save_file(tensors, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(config))


def this_version(methods, **arguments):
    """A delta config of this version: `methods` trained, their modules, nothing initialised, --seed 42."""
    return {"delta_methods": methods, "delta_modules": methods, "initialised": [], "seed": 42, **arguments}


PROMPT_TABLE = {"soft_prompt.embedding.weight": torch.zeros(10, 32)}
NO_PROMPT = "*cls**sent_0*_It_was*mask*.*sep+*"
DELTA_RUN_CASES = {  # family, delta tensors, its config, the run's other arguments, the error's words
    "a prefix delta on ModernBERT": (
        "modernbert", {"mlm.model.layers.0.attn.prefix_tunings.prefix.wte.weight": torch.zeros(2)},
        this_version(["prefix"]), [], "the prefix method cannot attach to modernbert models"),
    "an adapter delta and --training_params lora on ModernBERT": (
        "modernbert", {"mlm.model.layers.0.attn.adapters.houlsby.adapter_up.weight": torch.zeros(2)},
        this_version(["adapter"]), ["--training_params", "lora"],
        "the adapter and lora methods cannot attach together to modernbert models"),
    "a prompt delta and a template without *prompt*": (
        "roberta", PROMPT_TABLE, this_version(["prompt"]), ["--training_params", "bias", "--template", NO_PROMPT],
        "lists 'prompt' but the template has no *prompt* part"),
    "an explicit option other than the delta's": (
        "roberta", PROMPT_TABLE, this_version(["prompt"], prompt_num=10), ["--prompt_num", "12"],
        "--prompt_num 12 differs from the saved delta's 10"),
    "an abbreviated option other than the delta's": (
        "roberta", PROMPT_TABLE, this_version(["prompt"], prompt_num=10), ["--prompt_n=12"],
        "--prompt_num 12 differs from the saved delta's 10"),
    "an option of the delta outside its allowed values": (
        "roberta", PROMPT_TABLE, this_version(["prompt"], prompt_num=0), [], "prompt_num must be an integer >= 1"),
    "an older delta (trained tensors only) under another --seed": (
        "roberta", PROMPT_TABLE, {"delta_methods": ["prompt"], "seed": 42}, ["--seed", "7"],
        "was saved by an older version with only its trained tensors; the model's other new tensors came from its "
        "run's --seed 42: reload it with --seed 42"),
}


@pytest.mark.parametrize("case", DELTA_RUN_CASES)
def test_a_delta_the_run_cannot_reproduce_is_refused_before_the_model_loads(case, tiny_of, data_root, tmp_path,
                                                                           capsys, monkeypatch):
    """What the delta's methods need from the run (the family, the template, their options) is checked
    with the run's own arguments, before any model loads."""
    from tests.test_faults import assert_one_line_error, never_build
    family, tensors, config, extra, words = DELTA_RUN_CASES[case]
    write_delta(tmp_path / "delta", tensors, config)
    monkeypatch.setattr("src.models.build_model", never_build)
    arguments = {**base_arguments(tiny_of(family), data_root, tmp_path), "delta_path": str(tmp_path / "delta")}
    with no_hang():
        code = run.main(to_argv(arguments) + extra)
    assert_one_line_error(code, capsys.readouterr().err, words)
    assert not (tmp_path / "log").exists() and not (tmp_path / "out").exists()


def records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]


def reload_of(arguments, tmp_path, **changes):
    """The arguments of a run that reloads the delta that `arguments` trained, evaluating only."""
    reload = {**arguments, "delta_path": str(tmp_path / "out"), "output_dir": str(tmp_path / "eval"), **changes}
    del reload["do_train"]
    return reload


def test_a_reload_reproduces_its_run_whatever_its_seed(headless_bert, tiny_bert, data_root, tmp_path, capsys):
    """The quick start's case: the MLM head starts from --seed (its checkpoint lacks it), the run trains biases
    and adapters. The delta holds the head too, so a reload under another seed scores as the run did, and
    refuses a checkpoint that holds another head."""
    arguments = {**base_arguments(headless_bert, data_root, tmp_path), "template": NO_PROMPT,
                 "training_params": ["bias,adapter"], "seed": 42, "learning_rate": 1e-2}
    assert run.main(to_argv(arguments)) == 0
    capsys.readouterr()
    assert run.main(to_argv(reload_of(arguments, tmp_path, seed=7))) == 0, capsys.readouterr().err[-2000:]
    trained, reloaded = records(tmp_path)
    assert (reloaded["seed"], reloaded["do_train"]) == (7, False)
    for split in ("dev", "test"):
        assert reloaded[f"sst-2_{split}_eval_acc"] == trained[f"sst-2_{split}_eval_acc"], split
    capsys.readouterr()
    assert run.main(to_argv(reload_of(arguments, tmp_path, model_name_or_path=tiny_bert))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"error: delta weights {tmp_path / 'out' / WEIGHTS} were saved over another checkpoint: 5 tensors (e.g. "
        "mlm.cls.predictions.bias) are new in one model and pretrained in the other"), err[-2000:]
    assert len(records(tmp_path)) == 2


def test_a_reload_takes_its_methods_options_from_the_delta(tiny_roberta, data_root, tmp_path, capsys, monkeypatch):
    """A LoRA delta trained with --lora_alpha 16 reloads with 16 (not the default 8), and scores as its run
    did; the run reads the model config and delta_config.json once each."""
    from src import models
    from src.delta import checkpoint
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "training_params": ["lora"], "lora_alpha": 16,
                 "learning_rate": 1e-2}
    assert run.main(to_argv(arguments)) == 0
    reads = []
    load, read = models.load_pretrained, checkpoint.read_regular
    monkeypatch.setattr(models, "load_pretrained",
                        lambda cls, *a, **k: reads.append(cls.__name__) or load(cls, *a, **k))
    monkeypatch.setattr(checkpoint, "read_regular", lambda *a, **k: reads.append(CONFIG) or read(*a, **k))
    reload = reload_of({k: v for k, v in arguments.items() if k != "lora_alpha"}, tmp_path)
    assert run.main(to_argv(reload)) == 0, capsys.readouterr().err[-2000:]
    trained, reloaded = records(tmp_path)
    assert reloaded["lora_alpha"] == 16
    assert [reloaded[f"sst-2_{split}_eval_acc"] for split in ("dev", "test")] == [
        trained[f"sst-2_{split}_eval_acc"] for split in ("dev", "test")]
    assert sorted(reads) == sorted(["AutoConfig", "AutoTokenizer", "AutoModelForMaskedLM", CONFIG])
